"""Intents, training, parsing and model versions through the API, against real stores."""

from __future__ import annotations

import threading

import pytest

from tests.utils.factories import TenantHandle, create_tenant

INTENTS = {
    "en": {
        "order_status": [
            "where is my order", "track my package", "has my order shipped yet",
            "when will my parcel arrive", "order status please", "is my delivery on its way",
            "where's my stuff", "check the status of order 123",
        ],
        "greet": [
            "hello", "hi there", "good morning", "hey", "hello bot", "hi, how are you",
            "good evening", "greetings",
        ],
        "refund": [
            "i want my money back", "can i get a refund", "refund my purchase",
            "how do i return an item for a refund", "give me a refund",
            "i'd like to be reimbursed", "return and refund", "refund policy",
        ],
        "human": [
            "talk to a person", "i want a human", "connect me to an agent",
            "speak to customer service", "real person please", "get me a human agent",
            "can i talk to someone", "operator",
        ],
    },
    "es": {
        "order_status": [
            "dónde está mi pedido", "rastrear mi paquete", "cuándo llega mi pedido",
            "estado de mi pedido", "mi pedido ya fue enviado", "seguimiento del envío",
        ],
        "greet": [
            "hola", "buenos días", "buenas tardes", "hola, qué tal", "saludos", "buenas noches",
        ],
    },
    "fr": {
        "order_status": [
            "où est ma commande", "suivre mon colis", "quand arrive ma commande",
            "état de ma commande", "ma commande est-elle expédiée", "suivi de la livraison",
        ],
        "greet": ["bonjour", "salut", "bonsoir", "bonjour, ça va", "coucou", "salutations"],
    },
    "de": {
        "order_status": [
            "wo ist meine bestellung", "mein paket verfolgen", "wann kommt meine bestellung",
            "status meiner bestellung", "wurde meine bestellung versendet", "sendungsverfolgung",
        ],
        "greet": [
            "hallo", "guten morgen", "guten abend", "hallo, wie geht's", "grüß dich", "servus",
        ],
    },
}  # fmt: skip


def load_intents(client, tenant: TenantHandle, languages=("en", "es", "fr", "de")) -> None:
    for language in languages:
        for name, examples in INTENTS[language].items():
            response = client.put(
                f"/v1/intents/{name}",
                json={"examples": examples, "language": language},
                headers=tenant.headers,
            )
            assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def trained(client, admin_headers) -> TenantHandle:
    tenant = create_tenant(client, admin_headers, name="nlu")
    load_intents(client, tenant)
    response = client.post("/v1/nlu/train", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return tenant


def parse(client, tenant, text, **extra):
    response = client.post("/v1/nlu/parse", json={"text": text, **extra}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_intents_are_stored_listed_and_private(client, trained, other_tenant):
    listed = client.get("/v1/intents", headers=trained.headers).json()["intents"]
    assert {(i["name"], i["language"]) for i in listed} >= {("order_status", "en"), ("greet", "de")}
    assert client.get("/v1/intents", headers=other_tenant.headers).json()["intents"] == []
    bad = client.put("/v1/intents/bad name!", json={"examples": ["x"]}, headers=trained.headers)
    assert bad.status_code == 422
    empty = client.put("/v1/intents/x", json={"examples": []}, headers=trained.headers)
    assert empty.status_code == 422


def test_training_makes_a_live_versioned_model_with_lineage(client, trained):
    models = client.get("/v1/nlu/models", headers=trained.headers).json()["models"]
    assert [m["model_version"] for m in models] == [1]
    assert models[0]["active"] is True
    assert models[0]["metrics"]["languages"] == ["de", "en", "es", "fr"]
    assert len(models[0]["lineage"]["examples_sha256"]) == 64


def test_parse_names_the_intent_with_a_ranking(client, trained):
    result = parse(client, trained, "where is my parcel, has it shipped?")
    assert result["intent"]["name"] == "order_status"
    assert result["intent"]["confidence"] >= 0.5
    assert result["ranking"][0]["name"] == "order_status"
    assert result["model_version"] == 1
    assert result["language"] == "en"


def test_out_of_scope_text_has_no_intent(client, trained):
    result = parse(client, trained, "xq zzvv plorkt wibbix")
    assert result["intent"] is None
    assert result["ranking"]  # the ranking is still there for review


def test_entities_come_with_the_parse(client, trained):
    result = parse(client, trained, "where is order 12345? mail me at ana@example.com")
    entities = {(e["entity"], str(e["value"])) for e in result["entities"]}
    assert ("number", "12345") in entities
    assert ("email", "ana@example.com") in entities


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("¿dónde está mi pedido?", "es"),
        ("où est ma commande s'il vous plaît", "fr"),
        ("wo ist meine bestellung bitte", "de"),
        ("where is my order please", "en"),
    ],
)
def test_four_languages_are_detected_and_classified(client, trained, text, language):
    result = parse(client, trained, text)
    assert result["language"] == language
    assert result["intent"]["name"] == "order_status"


def test_a_tenant_without_a_model_gets_entities_and_no_intent(client, tenant):
    result = parse(client, tenant, "call me on +44 20 7946 0958")
    assert result["intent"] is None and result["model_version"] is None
    assert result["entities"][0]["entity"] == "phone_number"


def test_training_without_enough_intents_is_a_clear_422(client, admin_headers):
    tenant = create_tenant(client, admin_headers)
    client.put("/v1/intents/only", json={"examples": ["a", "b"]}, headers=tenant.headers)
    response = client.post("/v1/nlu/train", headers=tenant.headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "cannot_train"


def test_a_new_version_hot_swaps_under_load_and_rolls_back(client, admin_headers):
    tenant = create_tenant(client, admin_headers, name="swap")
    load_intents(client, tenant, languages=("en",))
    assert client.post("/v1/nlu/train", headers=tenant.headers).json()["model_version"] == 1

    errors: list[str] = []
    seen: set[int] = set()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            response = client.post(
                "/v1/nlu/parse", json={"text": "i want to cancel my subscription"},
                headers=tenant.headers,
            )  # fmt: skip
            if response.status_code != 200:
                errors.append(response.text)
            else:
                seen.add(response.json()["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        cancel = [
            "cancel my subscription", "i want to cancel", "stop my plan", "end my membership",
            "cancel the account", "unsubscribe me", "terminate my subscription", "please cancel",
        ]  # fmt: skip
        client.put("/v1/intents/cancel", json={"examples": cancel}, headers=tenant.headers)
        trained = client.post("/v1/nlu/train", headers=tenant.headers).json()
        assert trained["model_version"] == 2
        after = parse(client, tenant, "i want to cancel my subscription")
        assert after["model_version"] == 2 and after["intent"]["name"] == "cancel"
        back = client.post("/v1/nlu/models/1/activate", headers=tenant.headers)
        assert back.status_code == 200
        assert [m["active"] for m in back.json()["models"]] == [True, False]
        rolled = parse(client, tenant, "i want to cancel my subscription")
        assert rolled["model_version"] == 1
        assert rolled["intent"] is None or rolled["intent"]["name"] != "cancel"
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert seen >= {1, 2}
    assert client.post("/v1/nlu/models/9/activate", headers=tenant.headers).status_code == 404


def test_tenant_entities_from_lookups_and_patterns_apply_from_the_next_training(
    client, admin_headers
):
    tenant = create_tenant(client, admin_headers, name="entities")
    load_intents(client, tenant, languages=("en",))
    lookup = {"lookup": {"iPhone 15": ["iphone", "apple phone"], "Galaxy S24": ["galaxy"]}}
    assert (
        client.put("/v1/entities/product", json=lookup, headers=tenant.headers).status_code == 200
    )
    sku = {"pattern": r"SKU-\d{4}"}
    assert client.put("/v1/entities/sku", json=sku, headers=tenant.headers).status_code == 200
    listed = client.get("/v1/entities", headers=tenant.headers).json()["entities"]
    assert [e["name"] for e in listed] == ["product", "sku"]

    before = parse(client, tenant, "my apple phone SKU-1234 broke")
    assert not any(e["entity"] in ("product", "sku") for e in before["entities"])
    client.post("/v1/nlu/train", headers=tenant.headers)
    after = parse(client, tenant, "my apple phone SKU-1234 broke")
    found = {e["entity"]: e["value"] for e in after["entities"]}
    assert found["product"] == "iPhone 15" and found["sku"] == "SKU-1234"

    for bad in ({"pattern": "(unclosed"}, {"pattern": "a", "lookup": {"x": []}}, {}):
        response = client.put("/v1/entities/bad", json=bad, headers=tenant.headers)
        assert response.status_code == 422, bad
    backreference = {"pattern": r"(ab)\1"}  # needs backtracking: RE2 refuses it, clearly
    response = client.put("/v1/entities/bad", json=backreference, headers=tenant.headers)
    assert response.status_code == 422 and "RE2" in response.text
    assert client.delete("/v1/entities/sku", headers=tenant.headers).status_code == 204
    assert client.delete("/v1/entities/sku", headers=tenant.headers).status_code == 404


def test_an_out_of_scope_intent_teaches_what_not_to_answer(client, admin_headers):
    tenant = create_tenant(client, admin_headers, name="oos")
    load_intents(client, tenant, languages=("en",))
    off_topic = [
        "what's the weather tomorrow", "tell me a joke", "who won the football game",
        "what is the capital of peru", "play some music", "how tall is mount everest",
        "recommend a good movie", "what time is it in tokyo",
    ]  # fmt: skip
    client.put("/v1/intents/out_of_scope", json={"examples": off_topic}, headers=tenant.headers)
    client.post("/v1/nlu/train", headers=tenant.headers)
    result = parse(client, tenant, "tell me a joke about the weather")
    assert result["intent"] is None
    assert all(r["name"] != "out_of_scope" for r in result["ranking"])
    assert parse(client, tenant, "where is my order")["intent"]["name"] == "order_status"
