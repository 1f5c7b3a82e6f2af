"""`chatlake bench intents`: train and evaluate the classifier the platform serves.

Data: the JSON layout of CLINC150 (`train` and `test` lists of [text, intent], optional
`oos_train`, `oos_val`, `oos_test`). By default CLINC150 from ../shared/data; `--data FILE`
measures any other intent set the same way. The model is trained on `train` only: no
out-of-scope examples, no tuning to the data set (the out-of-scope threshold is learned
from a held-out fifth of `train`).

Reported: `in_scope_accuracy` (CLINC's measure: the top intent is right and not rejected
as out of scope), `in_scope_top1_accuracy` (the top intent alone), `oos_recall` on
`oos_test`, `train_seconds`, and `inference_ms` per single-message call (median and p99
over the test set).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.output import write_results
from chatlake.errors import ChatlakeError
from nlu.classifier import OUT_OF_SCOPE, IntentClassifier

BENCH_DIR = Path(__file__).parent
DEFAULT_DATA = BENCH_DIR.parent.parent / "shared" / "data" / "clinc150" / "data_full.json"


def run(data_path: str | None, out: str | None, with_oos: bool = True) -> dict[str, Any]:
    path = Path(data_path) if data_path else DEFAULT_DATA
    if not path.exists():
        raise ChatlakeError(f"no data set at {path}; pass --data FILE")
    try:
        data = json.loads(path.read_text())
        train = [(str(t), str(i)) for t, i in data["train"]]
        test = [(str(t), str(i)) for t, i in data["test"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ChatlakeError(f"{path} is not in the CLINC150 layout: {exc}") from None
    oos = [str(t) for t, _ in data.get("oos_test", [])]
    # Out-of-scope training examples, when the data set has them, are taught as what a
    # tenant would give the `out_of_scope` intent (CLINC's "oos-train" setting).
    oos_train = [(str(t), OUT_OF_SCOPE) for t, _ in data.get("oos_train", [])] if with_oos else []

    started = time.perf_counter()
    examples = train + oos_train
    classifier = IntentClassifier.fit([t for t, _ in examples], [i for _, i in examples])
    train_seconds = time.perf_counter() - started

    timings = []
    correct = top1 = 0
    for text, intent in test:
        started = time.perf_counter()
        prediction = classifier.predict(text)
        timings.append((time.perf_counter() - started) * 1000)
        top1 += prediction.ranking[0].name == intent
        correct += prediction.intent is not None and prediction.intent.name == intent
    rejected = sum(classifier.predict(text).intent is None for text in oos)
    timings.sort()
    result = {
        "benchmark": "intents",
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "data": {"path": str(path), "train": len(train), "test": len(test), "oos_test": len(oos),
                 "intents": len({i for _, i in train})},
        "model": "tf-idf word 1-2 + char 1-5 n-grams + wordllama 256-d, linear SVM",
        "oos_train_examples": len(oos_train),
        "in_scope_accuracy": round(correct / len(test), 4),
        "in_scope_top1_accuracy": round(top1 / len(test), 4),
        "oos_recall": round(rejected / len(oos), 4) if oos else None,
        "train_seconds": round(train_seconds, 2),
        "inference_ms": {
            "median": round(statistics.median(timings), 4),
            "p99": round(timings[int(0.99 * (len(timings) - 1))], 4),
        },
    }  # fmt: skip
    return write_results(result, out, "intents.json")
