"""Language identification (py3langid, restricted to the languages the platform serves)."""

from __future__ import annotations

from functools import lru_cache

from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

SUPPORTED = ("en", "es", "fr", "de")
# Below this probability a short or mixed message says too little; the caller's default
# (the tenant's main language) is the better guess.
MIN_CONFIDENCE = 0.8


@lru_cache(maxsize=1)
def _identifier() -> LanguageIdentifier:
    identifier = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(SUPPORTED))
    return identifier


def detect_language(text: str, default: str = "en") -> str:
    if not text.strip():
        return default
    language, probability = _identifier().classify(text)
    return str(language) if probability >= MIN_CONFIDENCE else default
