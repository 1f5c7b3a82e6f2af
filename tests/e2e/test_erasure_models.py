"""Erasure reaches the intent models: a version trained on a label of the subject keeps
their words in its vocabulary, so it is retired (files deleted) and the live one retrained
without them; the verification looks into the model files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg

from pipelines.run import run_retraining
from tests.e2e.test_cli import run
from tests.e2e.test_erasure import converse
from tests.e2e.test_retraining import _pipeline, _speaker, _tenant_with_model

WORD = "zorblaxian"
PHRASE = f"my {WORD} parcel never showed up"


def _files_with_word(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                text = " ".join(str(t) for name in data.files if name.endswith("_terms")
                                for t in data[name].tolist())  # fmt: skip
        elif path.is_file():
            text = path.read_text(errors="replace")
        else:
            continue
        if WORD in text:
            found.append(str(path.relative_to(root)))
    return found


def test_a_model_trained_on_the_subjects_label_is_retired_and_the_live_one_retrained(
    client, admin_headers, settings, home, endpoints
):
    tenant = _tenant_with_model(client, admin_headers, "model-erasure")
    for user in ("mo", "ne", "ol"):
        converse(client, tenant, user, [PHRASE])
    _pipeline(settings, home)
    [item] = client.get("/v1/nlu/review", headers=tenant.headers).json()["items"]
    label = {"event_id": item["event_id"], "intent": "order_status"}
    assert client.post("/v1/nlu/labels", json=label, headers=tenant.headers).status_code == 201
    retraining = run_retraining(settings)
    assert tenant.tenant_id in retraining["promoted"], retraining
    models = client.get("/v1/nlu/models", headers=tenant.headers).json()["models"]
    trained = next(m for m in models if m["active"])["model_version"]
    root = Path(settings.lake_root) / "models" / "intents" / tenant.tenant_id
    assert _files_with_word(root)  # the subject's word is in the live model's vocabulary

    speaker = _speaker(settings, tenant.tenant_id, item["event_id"])
    erased = run("erase", "--tenant", tenant.tenant_id, "--user", speaker, home=home, check=False)
    assert erased.stdout, erased.stderr[-3000:]
    certificate = json.loads(erased.stdout)
    assert certificate["verification"]["passed"], certificate["verification"]
    assert trained in certificate["stores"]["models"]["versions_retired"]
    assert _files_with_word(root) == []
    models = client.get("/v1/nlu/models", headers=tenant.headers).json()["models"]
    live = next(m for m in models if m["active"])
    assert live["model_version"] > trained  # retrained, without the label
    assert item["event_id"] not in live["lineage"]["label_event_ids"]
    assert not (root / f"v{trained}").exists()
    with psycopg.connect(endpoints.database_url) as conn:
        (status,) = conn.execute(
            "select status from nlu_models where tenant_id = %s and version = %s",
            (tenant.tenant_id, trained),
        ).fetchone()
    assert status == "retired"
    # the API answers with the retrained version at once
    parsed = client.post("/v1/nlu/parse", json={"text": "where is my order"},
                         headers=tenant.headers).json()  # fmt: skip
    assert parsed["intent"]["name"] == "order_status"
