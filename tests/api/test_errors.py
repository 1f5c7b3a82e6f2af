"""The error contract: every bad input gets its status and `{"error": {code, message}}`."""

from __future__ import annotations

import pytest

from tests.utils.factories import send


def _error(response, status, code=None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def test_missing_key_is_401(client):
    response = client.post("/v1/messages", json={"user_id": "a", "text": "hi"})
    _error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer nonsense",
        "Bearer clk_00000000000000000000000000000000_" + "x" * 43,
        "Basic dXNlcjpwYXNz",
    ],
)
def test_bad_keys_are_401(client, header):
    response = client.post(
        "/v1/messages", json={"user_id": "a", "text": "hi"}, headers={"Authorization": header}
    )
    _error(response, 401, "unauthorized")


def test_a_revoked_key_stops_working_at_once(client, tenant):
    created = client.post("/v1/api-keys", json={"name": "ci"}, headers=tenant.headers)
    assert created.status_code == 201
    second = {"Authorization": f"Bearer {created.json()['api_key']}"}
    assert client.get("/v1/tenant", headers=second).status_code == 200
    revoked = client.delete(f"/v1/api-keys/{created.json()['key_id']}", headers=tenant.headers)
    assert revoked.status_code == 204
    _error(client.get("/v1/tenant", headers=second), 401)
    assert client.get("/v1/tenant", headers=tenant.headers).status_code == 200


def test_malformed_json_is_400(client, tenant):
    response = client.post(
        "/v1/messages",
        content=b'{"user_id": "a", "text": ',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    _error(response, 400, "malformed_json")


def test_a_body_that_is_not_json_is_400(client, tenant):
    response = client.post("/v1/messages", content=b"hello", headers=tenant.headers)
    _error(response, 400, "malformed_json")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "hi"}, "user_id"),
        ({"user_id": "", "text": "hi"}, "user_id"),
        ({"user_id": "a", "text": "hi", "channel": "carrier-pigeon"}, "channel"),
        ({"user_id": "a", "text": "hi", "type": "hologram"}, "type"),
        ({"user_id": "a", "text": "hi", "conversation_id": "a:b{c}"}, "conversation_id"),
        ({"user_id": "a", "text": "hi", "unknown": 1}, "unknown"),
        ({"user_id": "a", "text": 42}, "text"),
        ({"user_id": "a", "text": "x" * 9000}, "text"),
    ],
)
def test_schema_errors_are_422_and_name_the_field(client, tenant, body, field):
    error = _error(
        client.post("/v1/messages", json=body, headers=tenant.headers), 422, "validation_error"
    )
    assert field in error["message"]


def test_a_json_array_body_is_422(client, tenant):
    _error(client.post("/v1/messages", json=[1, 2], headers=tenant.headers), 422)


def test_a_body_over_the_limit_is_413(client, tenant, settings):
    body = b'{"user_id": "a", "text": "' + b"x" * settings.max_body_bytes + b'"}'
    response = client.post(
        "/v1/messages", content=body, headers={**tenant.headers, "Content-Type": "application/json"}
    )
    _error(response, 413, "payload_too_large")


def test_a_streamed_body_over_the_limit_is_413(client, tenant, settings):
    def chunks():
        yield b'{"user_id": "a", "text": "'
        for _ in range(settings.max_body_bytes // 1024 + 2):
            yield b"x" * 1024
        yield b'"}'

    response = client.post(
        "/v1/messages",
        content=chunks(),
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    _error(response, 413, "payload_too_large")


def test_unknown_conversation_on_post_is_404(client, tenant):
    _error(send(client, tenant, "hi", conversation_id="nosuchconversation"), 404, "not_found")


def test_unknown_routes_and_methods_use_the_error_shape(client, tenant):
    _error(client.get("/v1/nothing-here", headers=tenant.headers), 404, "not_found")
    _error(client.put("/v1/messages", json={}, headers=tenant.headers), 405, "method_not_allowed")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"\xff\xfe",
        b'{"user_id": null}',
        b'{"user_id": "a", "payload": [1]}',
        b"{}" * 1000,
    ],
)
def test_garbage_never_yields_a_500(client, tenant, raw):
    response = client.post(
        "/v1/messages", content=raw, headers={**tenant.headers, "Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500, (raw, response.status_code, response.text)
    assert "error" in response.json()


def test_every_response_carries_a_request_id(client, tenant):
    response = send(client, tenant)
    assert len(response.headers["x-request-id"]) == 32
    echoed = client.get("/healthz", headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"


def test_nul_characters_are_refused_before_they_reach_a_store(client, tenant, admin_headers):
    response = client.post("/v1/tenants", json={"name": "a\u0000b"}, headers=admin_headers)
    assert response.status_code == 422
    assert "NUL" in response.json()["error"]["message"]
    assert send(client, tenant, "hi\u0000").status_code == 422


def test_a_payload_that_cannot_be_stored_is_422(client, tenant):
    response = send(client, tenant, "", type="postback", payload={"n": 2**70})
    assert response.status_code == 422
    assert "payload" in response.json()["error"]["message"]
