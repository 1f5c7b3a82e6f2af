"""The classifier serves without scikit-learn: its replay of the fitted vectorizers'
tokenisation is scikit-learn's, term for term, and a saved model loads and predicts in a
process that never imports scikit-learn (nor scipy, pandas or pyarrow), with the answers
the model gives where scikit-learn is loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nlu.classifier import CHAR, WORD, IntentModel, _analyzer

TEXTS = [
    "", "a", "ab", "where is my order", "  HELLO   there\t\nfriend ", "Straße naïve café résumé",
    "¿dónde está mi pedido?", "où est ma commande s'il vous plaît", "wo ist meine bestellung",
    "emoji 😀 test 😀😀", "tab\tsep\u00a0nbsp\u2003em\u3000wide",
    "mixed-case WORDS and_underscores", "don't won't can't", "日本語のテキスト", "İstanbul ǅ ß",
    "42 123 4567", "x" * 40,
    "call +44 20 7946 0958 or ana@example.com", "one-word",
]  # fmt: skip
EXAMPLES = [
    (text, intent, "en")
    for intent, texts in {
        "order_status": ["where is my order", "track my package", "has my order shipped yet",
                         "when will my parcel arrive", "order status please",
                         "check the status of order 123"],
        "greet": ["hello", "hi there", "good morning", "hey", "hello bot", "good evening"],
        "refund": ["i want my money back", "can i get a refund", "refund my purchase",
                   "how do i return an item", "give me a refund", "refund policy"],
    }.items()
    for text in texts
]  # fmt: skip
HEAVY = ("sklearn", "scipy", "pandas", "pyarrow")


@pytest.mark.parametrize("params", [WORD, CHAR], ids=["word", "char"])
def test_the_replayed_analyzers_make_scikit_learns_terms(params):
    from sklearn.feature_extraction.text import TfidfVectorizer

    theirs = TfidfVectorizer(**params).build_analyzer()
    ours = _analyzer(params)
    for text in TEXTS:
        assert ours(text) == theirs(text), text


@pytest.mark.parametrize(
    "params", [{**WORD, "strip_accents": "unicode"}, {**CHAR, "analyzer": "char_wb"}]
)
def test_vectorizer_parameters_the_replay_does_not_do_are_refused(params):
    with pytest.raises(ValueError, match="no replay"):
        _analyzer(params)


def answers(model: IntentModel) -> list[list[object]]:
    classifier = model.classifier_for("en")
    found: list[list[object]] = []
    for text in TEXTS[1:] + [text for text, _, _ in EXAMPLES]:
        prediction = classifier.predict(text)
        intent = prediction.intent and [prediction.intent.name, prediction.intent.confidence]
        ranking = [[r.name, r.confidence] for r in prediction.ranking]
        found.append([text, intent, ranking, classifier.scores(text).tolist()])
    return found


def test_a_saved_model_serves_the_same_answers_without_scikit_learn(tmp_path):
    IntentModel.train(EXAMPLES).save(tmp_path)
    expected = answers(IntentModel.load(tmp_path))
    assert any(intent for _, intent, _, _ in expected)  # it does recognise something
    probe = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from nlu.classifier import IntentModel\n"
        "from tests.unit.test_classifier import HEAVY, answers\n"
        "found = answers(IntentModel.load(Path(sys.argv[1])))\n"
        "print(json.dumps({'answers': found,\n"
        "                  'loaded': sorted(m for m in HEAVY if m in sys.modules)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
        check=True, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["loaded"] == []
    assert served["answers"] == json.loads(json.dumps(expected))
