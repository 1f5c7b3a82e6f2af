"""Knowledge documents, hybrid search and knowledge answers through the API."""

from __future__ import annotations

import psycopg

from tests.utils.factories import send

DOCS = {
    "Shipping": (
        "We ship to all EU countries. Standard delivery takes 3 to 5 working days and costs "
        "4.90 EUR; orders over 50 EUR ship free.\n\nExpress delivery arrives the next working "
        "day when ordered before 14:00 and costs 9.90 EUR."
    ),
    "Returns": (
        "You can return any item within 30 days of delivery for a full refund. Print the "
        "prepaid label from your account and drop the parcel at any post office."
    ),
    "Payment": "We accept Visa, Mastercard, PayPal and bank transfer. Invoices come by email.",
}


def upload(client, tenant):
    ids = {}
    for title, text in DOCS.items():
        response = client.post(
            "/v1/knowledge/documents", json={"title": title, "text": text}, headers=tenant.headers
        )
        assert response.status_code == 201, response.text
        assert response.json()["chunks"] >= 1
        ids[title] = response.json()["document_id"]
    return ids


def search(client, tenant, q):
    response = client.get("/v1/knowledge/search", params={"q": q}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_upload_and_search_by_meaning_and_words(client, tenant):
    upload(client, tenant)
    assert search(client, tenant, "can I pay with paypal")[0]["title"] == "Payment"
    assert search(client, tenant, "how long does delivery take")[0]["title"] == "Shipping"
    best = search(client, tenant, "how do I send an item back for my money")[0]
    assert best["title"] == "Returns" and 0 < best["score"] <= 1
    listed = client.get("/v1/knowledge/documents", headers=tenant.headers).json()["documents"]
    assert sorted(d["title"] for d in listed) == sorted(DOCS)


def test_a_tenant_never_retrieves_another_tenants_chunks(client, tenant, other_tenant):
    upload(client, tenant)
    assert search(client, other_tenant, "can I pay with paypal") == []
    assert client.get("/v1/knowledge/documents", headers=other_tenant.headers).json() == {
        "documents": []
    }


def test_deleting_a_document_removes_its_chunks_and_embeddings(client, tenant, endpoints):
    ids = upload(client, tenant)
    gone = client.delete(f"/v1/knowledge/documents/{ids['Payment']}", headers=tenant.headers)
    assert gone.status_code == 204
    assert all(r["title"] != "Payment" for r in search(client, tenant, "pay with paypal"))
    with psycopg.connect(endpoints.database_url) as owner:  # the owner sees every row
        left = owner.execute(
            "select count(*) from knowledge_chunks where document_id::text = %s", (ids["Payment"],)
        ).fetchone()[0]
    assert left == 0
    again = client.delete(f"/v1/knowledge/documents/{ids['Payment']}", headers=tenant.headers)
    assert again.status_code == 404


def test_unmatched_messages_are_answered_from_knowledge_then_rules(client, tenant):
    before = send(client, tenant, "can I pay with paypal?").json()
    assert before["answered_by"] == {"tier": "rules"}  # no documents yet
    upload(client, tenant)
    answered = send(client, tenant, "can I pay with paypal?").json()
    assert answered["answered_by"] == {"tier": "knowledge"}
    assert "PayPal" in answered["replies"][0]["text"]
    declined = send(client, tenant, "zxqv wibble blorp").json()
    assert declined["answered_by"] == {"tier": "rules"}  # below the threshold: knowledge declines
