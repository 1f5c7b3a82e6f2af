"""The closed loop, through the HTTP API and the real stores: conversations the live model
misses, ingest and the pipeline, the review queue, a label, a gated and promoted model that
now recognises the phrasing without an API restart; wrong labels rejected by the gate;
rollback; and an erased speaker's utterance gone from the next training set."""

from __future__ import annotations

import io
import json
import zipfile
from uuid import uuid4

from chatlake.keyspace import redis_sync_client
from pipelines.nlu import retrain_tenant, training_set
from pipelines.run import run_pipeline, run_retraining
from tests.e2e.test_cli import run
from tests.e2e.test_erasure import converse
from tests.integration.test_ingest import run_ingest
from tests.utils.factories import create_tenant

INTENTS = {
    "order_status": [
        "where is my order", "track my order", "has my order shipped yet",
        "when will my order arrive", "order status please", "check the status of order 123",
    ],
    "greet": ["hello", "hi there", "good morning", "hey", "hello bot", "good evening"],
    "refund": [
        "i want my money back", "can i get a refund", "refund my purchase",
        "how do i return an item for a refund", "give me a refund", "refund policy",
    ],
}  # fmt: skip
MISSED = "my parcel never showed up"


def _tenant_with_model(client, admin_headers, name):
    tenant = create_tenant(client, admin_headers, name=name)
    for intent, examples in INTENTS.items():
        answer = client.put(f"/v1/intents/{intent}", json={"examples": examples},
                            headers=tenant.headers)  # fmt: skip
        assert answer.status_code == 200, answer.text
    assert client.post("/v1/nlu/train", headers=tenant.headers).status_code == 200
    return tenant


def _intent(client, tenant, text):
    parsed = client.post("/v1/nlu/parse", json={"text": text}, headers=tenant.headers).json()
    return parsed["intent"]["name"] if parsed["intent"] else None


def _pipeline(settings, home):
    assert run_ingest(home, f"loop-{uuid4().hex[:6]}").returncode == 0
    result = run_pipeline(settings, retrain=True)
    assert result["success"], result
    return result["retraining"]


def test_a_labelled_phrasing_is_learnt_by_a_promoted_model_without_a_restart(
    client, admin_headers, settings, home, endpoints
):
    tenant = _tenant_with_model(client, admin_headers, "loop")
    assert _intent(client, tenant, MISSED) is None  # the live model misses the phrasing
    for user in ("ana", "ben", "cy"):
        converse(client, tenant, user, [MISSED])
    converse(client, tenant, "dee", ["where is my order"])  # understood: not for review
    _pipeline(settings, home)
    items = client.get("/v1/nlu/review", headers=tenant.headers).json()["items"]
    assert [(i["text"], i["occurrences"]) for i in items] == [(MISSED, 3)]
    assert items[0]["intent"] is None and "low_confidence" in items[0]["reasons"]

    refused = client.post("/v1/nlu/labels", json={"event_id": "nope", "intent": "greet"},
                          headers=tenant.headers)  # fmt: skip
    assert refused.status_code == 404
    label = {"event_id": items[0]["event_id"], "intent": "order_status"}
    answer = client.post("/v1/nlu/labels", json=label, headers=tenant.headers)
    assert answer.status_code == 201 and answer.json()["new_intent"] is False
    assert client.get("/v1/nlu/review", headers=tenant.headers).json()["items"] == []

    retraining = run_retraining(settings)  # no new conversations: the retraining job alone
    assert retraining["success"] and tenant.tenant_id in retraining["promoted"], retraining
    models = client.get("/v1/nlu/models", headers=tenant.headers).json()["models"]
    live = next(m for m in models if m["active"])
    assert live["model_version"] == 2 and live["status"] == "promoted"
    assert live["lineage"]["label_event_ids"] == [items[0]["event_id"]]
    assert {"silver_turns_version", "postgres_snapshot", "code", "erasures_honoured"} <= set(
        live["lineage"]
    )
    assert live["gate"]["passed"] is True
    assert {"held_out", "regression"} <= set(live["metrics"])
    # the same API process, no restart: the promoted version answers
    assert _intent(client, tenant, MISSED) == "order_status"
    reply = client.post("/v1/messages", json={"user_id": "eve", "text": MISSED},
                        headers=tenant.headers).json()  # fmt: skip
    assert reply["intent"]["name"] == "order_status"

    # rolling back to the first version takes effect at once, and forward again
    assert client.post("/v1/nlu/models/1/activate", headers=tenant.headers).status_code == 200
    assert _intent(client, tenant, MISSED) is None
    client.post("/v1/nlu/models/2/activate", headers=tenant.headers)
    assert _intent(client, tenant, MISSED) == "order_status"

    # nothing new: retraining leaves the live model alone
    assert _retrain(settings, endpoints, tenant)["outcome"] == "skipped"

    # the labelled utterance's speaker is erased: the next training set no longer holds it
    speaker = _speaker(settings, tenant.tenant_id, items[0]["event_id"])
    bundle = client.post("/v1/compliance/exports", json={"user_id": speaker},
                         headers=tenant.headers)  # fmt: skip
    with zipfile.ZipFile(io.BytesIO(bundle.content)) as archive:
        held = json.loads(archive.read("subject.json"))["stores"]["postgresql"]
    assert [label["event_id"] for label in held["intent_labels"]] == [items[0]["event_id"]]
    erased = run("erase", "--tenant", tenant.tenant_id, "--user", speaker, home=home, check=False)
    certificate = json.loads(erased.stdout)
    assert certificate["verification"]["passed"], certificate["verification"]
    assert certificate["stores"]["postgresql"]["rows_deleted"]["nlu_labels"] == 1
    # (the subject key went with the queue rebuild that no longer held their utterance;
    # the verification checks that no key is left)
    after = training_set(settings, tenant.tenant_id)
    assert after["lineage"]["label_event_ids"] == []
    assert MISSED not in {text for text, _, _ in after["labelled"]}
    assert certificate["request_id"] in after["lineage"]["erasures_honoured"]


def test_wrong_labels_are_rejected_by_the_gate_and_the_live_model_stays(
    client, admin_headers, settings, home, endpoints
):
    tenant = _tenant_with_model(client, admin_headers, "wrong-labels")
    # a flow that answers nothing itself: every message gets the fallback, so even
    # utterances the model knows reach the review queue
    flow = {"start": "main", "states": {"main": {}}, "fallback": {"reply_chain": True}}
    assert client.put("/v1/flow", json=flow, headers=tenant.headers).status_code == 200
    for n, text in enumerate(INTENTS["order_status"]):
        converse(client, tenant, f"user-{n}", [text])
    _pipeline(settings, home)
    items = client.get("/v1/nlu/review", headers=tenant.headers).json()["items"]
    assert {i["text"] for i in items} == set(INTENTS["order_status"])
    for item in items:  # deliberately wrong: order questions labelled as greetings
        answer = client.post("/v1/nlu/labels", json={"event_id": item["event_id"],
                             "intent": "greet"}, headers=tenant.headers)  # fmt: skip
        assert answer.status_code == 201

    outcome = _retrain(settings, endpoints, tenant)  # the job's step, for this tenant alone
    assert outcome["outcome"] == "rejected", outcome
    assert any("regression accuracy" in reason for reason in outcome["reasons"]), outcome
    models = client.get("/v1/nlu/models", headers=tenant.headers).json()["models"]
    assert [(m["model_version"], m["active"], m["status"]) for m in models] == [
        (1, True, "promoted"), (2, False, "rejected")
    ]  # fmt: skip
    assert models[1]["gate"]["reasons"] and models[1]["gate"]["passed"] is False
    assert _intent(client, tenant, "where is my order") == "order_status"  # v1 still live


def _retrain(settings, endpoints, tenant):
    redis = redis_sync_client(endpoints.redis_url)
    try:
        return retrain_tenant(settings, redis, tenant.tenant_id)
    finally:
        redis.close()


def _speaker(settings, tenant_id, event_id):
    from lake.readers import scan
    from lake.schemas import MESSAGES_TABLE

    rows = scan(settings.lake_root, MESSAGES_TABLE, tenant_id).collect()
    return rows.filter(rows["event_id"] == event_id)["user_id"][0]
