"""The intent classifier: TF-IDF word and character n-grams plus wordllama sentence
embeddings, into a linear SVM (scikit-learn), with a learned out-of-scope threshold.

Nothing here knows any data set: the features are generic, and the out-of-scope threshold
is learned from the tenant's own examples (a held-out fifth of them: the score that keeps
`IN_SCOPE_TARGET` of in-scope messages in scope).

Serving does not go through scikit-learn: a single message is tokenised as the fitted
vectorizers would (`_analyzer`), featurised with their vocabularies and idf weights and
scored with one sparse-by-dense product, which is what keeps inference well under a
millisecond. scikit-learn (and scipy, pandas, pyarrow with it) is imported only to fit, so
a process that only serves never loads it. Models are saved as plain arrays (`.npz`, no
pickle), so loading one can never run code.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from nlu.entities import TenantEntity

FORMAT = 1
# An intent of this name holds examples of what the bot should NOT answer: it is learnt like
# any other, and a message it wins is out of scope.
OUT_OF_SCOPE = "out_of_scope"
IN_SCOPE_TARGET = 0.95  # share of held-out in-scope examples the threshold keeps
CONFIDENCE_SLOPE = 4.0  # confidence = sigmoid(slope * (score - threshold))
WORD = {"ngram_range": (1, 2), "sublinear_tf": True, "lowercase": True}
CHAR = {"analyzer": "char", "ngram_range": (1, 5), "sublinear_tf": True, "min_df": 2}
# scikit-learn's default token pattern (the word featuriser's tokens) and the runs of
# white space its character featuriser folds into one space
WORD_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_WHITE_SPACE = re.compile(r"\s\s+")
# what `_analyzer` replays; anything else (stop words, accent stripping, ...) it would not
_REPLAYED = {"analyzer", "ngram_range", "lowercase", "sublinear_tf", "min_df"}


@lru_cache(maxsize=1)
def _wordllama() -> Any:
    import wordllama
    from wordllama import WordLlama

    # The wheel carries its weights and tokenizer; its loader must be pointed at them.
    return WordLlama.load(cache_dir=os.path.dirname(wordllama.__file__), disable_download=True)


def embed(texts: list[str]) -> np.ndarray:
    return np.asarray(_wordllama().embed(texts, norm=True), dtype=np.float32)


@dataclass(frozen=True)
class Ranked:
    name: str
    confidence: float


@dataclass(frozen=True)
class IntentPrediction:
    intent: Ranked | None  # None: out of scope
    ranking: list[Ranked]


def _analyzer(params: dict[str, Any]) -> Callable[[str], list[str]]:
    """The terms `TfidfVectorizer(**params).build_analyzer()` makes of a text, in its order,
    for the word and character featurisers above (lowercased, n-grams over the tokens or
    over the characters with white space runs folded), without importing scikit-learn."""
    if set(params) - _REPLAYED or params.get("analyzer", "word") not in ("word", "char"):
        raise ValueError(f"no replay of the vectorizer parameters {params}")
    low, high = params["ngram_range"]
    lowercase = params.get("lowercase", True)

    def ngrams(items: Any, join: Callable[[Any], str]) -> list[str]:
        return [
            join(items[i : i + n])
            for n in range(low, min(high, len(items)) + 1)
            for i in range(len(items) - n + 1)
        ]

    if params.get("analyzer", "word") == "char":

        def characters(text: str) -> list[str]:
            text = _WHITE_SPACE.sub(" ", text.lower() if lowercase else text)
            return ngrams(text, str)

        return characters

    def words(text: str) -> list[str]:
        return ngrams(WORD_TOKEN.findall(text.lower() if lowercase else text), " ".join)

    return words


class _Tfidf:
    """A fitted TF-IDF featuriser replayed without scikit-learn."""

    def __init__(self, params: dict[str, Any], terms: list[str], idf: np.ndarray) -> None:
        self.analyzer = _analyzer(params)
        self.vocabulary = {term: i for i, term in enumerate(terms)}
        self.idf = idf
        self.sublinear = bool(params.get("sublinear_tf"))

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        vocabulary = self.vocabulary
        counts = Counter(vocabulary[t] for t in self.analyzer(text) if t in vocabulary)
        if not counts:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        index = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        if self.sublinear:
            tf = 1.0 + np.log(tf)
        values = tf * self.idf[index]
        values /= math.sqrt(float(values @ values))
        return index, values.astype(np.float32)


class IntentClassifier:
    """One language's intents. Train with `fit`, serve with `predict`."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.threshold = float(meta["threshold"])
        self.coef = arrays["coef"]
        self.intercept = arrays["intercept"]
        self.word = _Tfidf(WORD, list(arrays["word_terms"]), arrays["word_idf"])
        self.char = _Tfidf(CHAR, list(arrays["char_terms"]), arrays["char_idf"])
        self.char_offset = len(self.word.vocabulary)
        self.embed_offset = self.char_offset + len(self.char.vocabulary)

    # --- training ----------------------------------------------------------------------

    @staticmethod
    def _fit_arrays(texts: list[str], labels: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
        from scipy.sparse import csr_matrix, hstack
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.svm import LinearSVC

        word = TfidfVectorizer(**WORD)
        char = TfidfVectorizer(**CHAR)
        features = hstack(
            [word.fit_transform(texts), char.fit_transform(texts), csr_matrix(embed(texts))]
        ).tocsr()
        svm = LinearSVC(C=0.5).fit(features, labels)
        coef = svm.coef_.astype(np.float32)
        intercept = svm.intercept_.astype(np.float32)
        if len(svm.classes_) == 2:  # a binary SVM keeps one row: give each class its own
            coef = np.vstack([-coef[0], coef[0]])
            intercept = np.array([-intercept[0], intercept[0]], dtype=np.float32)
        arrays = {
            "coef": coef,
            "intercept": intercept,
            "word_terms": np.array(word.get_feature_names_out(), dtype=str),
            "word_idf": word.idf_.astype(np.float64),
            "char_terms": np.array(char.get_feature_names_out(), dtype=str),
            "char_idf": char.idf_.astype(np.float64),
        }
        return arrays, [str(c) for c in svm.classes_]

    @classmethod
    def fit(cls, texts: list[str], labels: list[str]) -> IntentClassifier:
        if len(set(labels)) < 2:
            raise ValueError("an intent model needs at least two intents")
        threshold = cls._learn_threshold(texts, labels)
        arrays, classes = cls._fit_arrays(texts, labels)
        meta = {"format": FORMAT, "classes": classes, "threshold": threshold}
        return cls(arrays, meta)

    @classmethod
    def _learn_threshold(cls, texts: list[str], labels: list[str]) -> float:
        """The top score that keeps IN_SCOPE_TARGET of held-out in-scope examples."""
        from sklearn.model_selection import train_test_split

        counts = Counter(labels)
        stratify = labels if min(counts.values()) >= 2 and len(labels) >= 5 * len(counts) else None
        if len(labels) < 10:
            return -1.0  # too few examples to hold any out: accept the best guess
        fit_x, held_x, fit_y, held_y = train_test_split(
            texts, labels, test_size=0.2, random_state=0, stratify=stratify
        )
        held_x = [x for x, y in zip(held_x, held_y, strict=True) if y != OUT_OF_SCOPE]
        if len(set(fit_y)) < 2:
            return -1.0
        probe = cls(*cls._fit_arrays(fit_x, fit_y)[:1], {"classes": [], "threshold": 0.0})
        probe.classes = sorted(set(fit_y))
        top = np.array([probe.scores(text).max() for text in held_x])
        return float(np.quantile(top, 1.0 - IN_SCOPE_TARGET))

    # --- serving -----------------------------------------------------------------------

    def scores(self, text: str) -> np.ndarray:
        return self._scores(text)[0]

    def _scores(self, text: str) -> tuple[np.ndarray, int]:
        """The score of every intent, and how many of the text's words the model knows."""
        word_index, word_values = self.word.features(text)
        char_index, char_values = self.char.features(text)
        index = np.concatenate([word_index, char_index + self.char_offset])
        values = np.concatenate([word_values, char_values])
        scores = self.coef[:, index] @ values
        scores += self.coef[:, self.embed_offset :] @ embed([text])[0]
        return scores + self.intercept, len(word_index)

    def predict(self, text: str, threshold: float = 0.5, top: int = 5) -> IntentPrediction:
        scores, known_words = self._scores(text)
        confidences = 1.0 / (1.0 + np.exp(-CONFIDENCE_SLOPE * (scores - self.threshold)))
        order = np.argsort(-confidences)
        best_is_oos = self.classes[order[0]] == OUT_OF_SCOPE
        ranking = [
            Ranked(self.classes[i], round(float(confidences[i]), 4))
            for i in order[: top + 1]
            if self.classes[i] != OUT_OF_SCOPE
        ][:top]
        # A text sharing no word with any example is out of scope, however its letters score;
        # so is one that the tenant's own out-of-scope examples claim.
        in_scope = (
            not best_is_oos and known_words > 0 and ranking and ranking[0].confidence >= threshold
        )
        return IntentPrediction(intent=ranking[0] if in_scope else None, ranking=ranking)

    # --- artifacts ---------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "coef": self.coef,
            "intercept": self.intercept,
            "word_terms": np.array(list(self.word.vocabulary), dtype=str),
            "word_idf": self.word.idf,
            "char_terms": np.array(list(self.char.vocabulary), dtype=str),
            "char_idf": self.char.idf,
        }


@dataclass
class IntentModel:
    """A tenant's model: one classifier per language it has intents in, and the tenant's
    entity definitions as they were when it was trained (a version is a snapshot)."""

    classifiers: dict[str, IntentClassifier]
    default_language: str
    entities: list[TenantEntity] = field(default_factory=list)

    @classmethod
    def train(
        cls, examples: list[tuple[str, str, str]], entities: list[TenantEntity] | None = None
    ) -> IntentModel:
        """`examples`: (text, intent, language) triples."""
        by_language: dict[str, tuple[list[str], list[str]]] = {}
        for text, intent, language in examples:
            texts, labels = by_language.setdefault(language, ([], []))
            texts.append(text)
            labels.append(intent)
        trainable = {lang: v for lang, v in by_language.items() if len(set(v[1])) >= 2}
        if not trainable:
            raise ValueError("an intent model needs at least two intents in one language")
        classifiers = {lang: IntentClassifier.fit(*v) for lang, v in trainable.items()}
        default = max(trainable, key=lambda lang: len(trainable[lang][0]))
        return cls(classifiers, default, list(entities or []))

    def classifier_for(self, language: str) -> IntentClassifier:
        return self.classifiers.get(language) or self.classifiers[self.default_language]

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        languages: dict[str, Any] = {}
        for language, classifier in self.classifiers.items():
            arrays: dict[str, Any] = classifier.arrays()
            np.savez_compressed(directory / f"{language}.npz", **arrays)
            languages[language] = classifier.meta
        manifest = {"format": FORMAT, "default_language": self.default_language}
        manifest["languages"] = languages
        manifest["entities"] = [
            {"name": e.name, "pattern": e.pattern, "lookup": e.lookup} for e in self.entities
        ]
        path = directory / "manifest.json"
        path.write_text(json.dumps(manifest))
        return path

    @classmethod
    def load(cls, directory: Path) -> IntentModel:
        manifest = json.loads((directory / "manifest.json").read_text())
        classifiers = {}
        for language, meta in manifest["languages"].items():
            with np.load(directory / f"{language}.npz", allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            classifiers[language] = IntentClassifier(arrays, meta)
        entities = [TenantEntity(**e) for e in manifest.get("entities", [])]
        return cls(classifiers, manifest["default_language"], entities)
