"""Channels through the HTTP API against the real stores: configuration, every channel's
webhook (valid and invalid signatures, expired timestamps, replayed deliveries), replies
sent to loopback servers that speak each channel's send API (errors and rate limits
included), identity links, voice, and the web widget's API."""

from __future__ import annotations

import time
from urllib.parse import urlencode
from xml.sax.saxutils import escape

import orjson
import psycopg
import pytest

from tests.utils import channel_samples as samples
from tests.utils.channels import ChannelServer, meta_headers, slack_headers, twilio_headers
from tests.utils.factories import create_tenant, send

APP_SECRET = "meta-app-secret-123"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
AUTH_TOKEN = "twilio-auth-token-SECRET"
APP_ID = "c9e8c047-2a74-40a2-b28a-b162d5f5327c"

RICH_FLOW = {
    "start": "hub",
    "states": {
        "hub": {
            "transitions": [{"when": {"pattern": "^menu"}, "to": "menu"}],
        },
        "menu": {
            "say": [
                "Here is the menu",
                samples.REPLIES["buttons"],
                samples.REPLIES["carousel"],
                samples.REPLIES["quick_replies"],
            ],
            "next": "hub",
        },
    },
}


@pytest.fixture
def provider():
    server = ChannelServer()
    yield server
    server.close()


@pytest.fixture
def fast_retries(client):
    sender = client.app.state.platform.sender
    saved = sender.backoff_s
    sender.backoff_s = 0.01
    yield
    sender.backoff_s = saved


def configure(client, tenant, channel, secrets, provider=None, **extra):
    body = {"secrets": secrets, **extra}
    if provider is not None:
        body["api_base_url"] = provider.url
    response = client.put(f"/v1/channels/{channel}", json=body, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


def whatsapp_config(client, tenant, provider):
    return configure(
        client,
        tenant,
        "whatsapp",
        {
            "app_secret": APP_SECRET,
            "verify_token": "verify-me",
            "access_token": "EAAG-SECRET",
            "phone_number_id": samples.WA_PHONE_ID,
        },
        provider,
    )


def post_meta(client, channel, tenant, payload, secret=APP_SECRET):
    raw = orjson.dumps(payload)
    return client.post(
        f"/v1/channels/{channel}/{tenant.tenant_id}", content=raw, headers=meta_headers(secret, raw)
    )


def metric(client, name, **labels):
    text = client.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def eventually(probe, timeout_s=5.0):
    """`probe()`'s first truthy answer within `timeout_s`, else its last (replies are sent
    in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def dead_letters(client, tenant, channel):
    """The channel's dead letters, once there is one."""
    url = f"/v1/channels/{channel}/dead-letters"
    return eventually(lambda: client.get(url, headers=tenant.headers).json()["dead_letters"])


def conversation_of(client, tenant, user_id):
    listed = client.get("/v1/conversations", params={"user_id": user_id}, headers=tenant.headers)
    [summary] = listed.json()["conversations"]
    return client.get(
        f"/v1/conversations/{summary['conversation_id']}", headers=tenant.headers
    ).json()


# Configuration


def test_configuration_keeps_secrets_sealed_and_never_returns_them(
    client, tenant, endpoints, provider
):
    shown = whatsapp_config(client, tenant, provider)
    assert shown["secrets_set"] == ["access_token", "app_secret", "phone_number_id", "verify_token"]
    assert shown["webhook_url"] == f"/v1/channels/whatsapp/{tenant.tenant_id}"
    got = client.get("/v1/channels/whatsapp", headers=tenant.headers)
    assert "SECRET" not in got.text and "meta-app-secret" not in got.text
    with psycopg.connect(endpoints.database_url) as owner:
        stored = owner.execute(
            "select sealed_secrets::text from channel_configs where tenant_id = %s",
            (tenant.tenant_id,),
        ).fetchone()[0]
    assert "SECRET" not in stored and APP_SECRET not in stored
    # a PUT without a secret keeps it; an empty one removes it
    kept = configure(client, tenant, "whatsapp", {"verify_token": ""})
    assert "app_secret" in kept["secrets_set"] and "verify_token" not in kept["secrets_set"]
    keys = client.get("/v1/api-keys", headers=tenant.headers).json()
    assert any(k["name"] == "channel:whatsapp" for k in keys["api_keys"])


def test_configuration_is_validated_and_private(client, tenant, other_tenant):
    bad = client.put(
        "/v1/channels/slack", json={"secrets": {"app_secret": "x"}}, headers=tenant.headers
    )
    assert bad.status_code == 422 and "signing_secret" in bad.json()["error"]["message"]
    assert client.put("/v1/channels/pager", json={}, headers=tenant.headers).status_code == 404
    url = client.put("/v1/channels/slack", json={"api_base_url": "ftp://x"}, headers=tenant.headers)
    assert url.status_code == 422
    origins = client.put(
        "/v1/channels/web", json={"allowed_origins": ["example.com"]}, headers=tenant.headers
    )
    assert origins.status_code == 422
    assert client.put("/v1/channels/slack", json={}, headers=tenant.headers).status_code == 200
    assert client.get("/v1/channels/slack", headers=other_tenant.headers).status_code == 404
    assert client.get("/v1/channels/slack").status_code == 401


# WhatsApp and Messenger


def test_whatsapp_message_is_answered_sent_and_streamed_with_its_channel(client, tenant, provider):
    whatsapp_config(client, tenant, provider)
    payload = samples.whatsapp({"id": "wamid.hello1", "type": "text", "text": {"body": "hello"}})
    response = post_meta(client, "whatsapp", tenant, payload)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 1, "answered": 1}
    [sent] = provider.wait_for(1, "/messages")
    assert sent["path"] == f"/v21.0/{samples.WA_PHONE_ID}/messages"
    assert sent["headers"]["Authorization"] == "Bearer EAAG-SECRET"
    assert sent["json"]["to"] == samples.WA_USER
    assert sent["json"]["text"]["body"].startswith("Hello!")
    conversation = conversation_of(client, tenant, f"whatsapp:{samples.WA_USER}")
    assert conversation["channel"] == "whatsapp"
    first = conversation["messages"][0]
    assert first["text"] == "hello" and first["payload"]["provider_message_id"] == "wamid.hello1"


def test_replayed_deliveries_are_handled_once(client, tenant, provider):
    whatsapp_config(client, tenant, provider)
    payload = samples.whatsapp({"id": "wamid.again1", "type": "text", "text": {"body": "hi"}})
    before = metric(client, "chatlake_channel_duplicate_deliveries_total", channel="whatsapp")
    for _ in range(3):
        assert post_meta(client, "whatsapp", tenant, payload).status_code == 200
    provider.wait_for(1, "/messages")
    time.sleep(0.3)
    assert len(provider.sends("/messages")) == 1
    conversation = conversation_of(client, tenant, f"whatsapp:{samples.WA_USER}")
    assert [m["direction"] for m in conversation["messages"]] == ["in", "out"]
    after = metric(client, "chatlake_channel_duplicate_deliveries_total", channel="whatsapp")
    assert after - before == 2


def test_bad_signatures_are_refused_change_nothing_and_are_counted(client, tenant, provider):
    whatsapp_config(client, tenant, provider)
    payload = samples.whatsapp({"id": "wamid.forged", "type": "text", "text": {"body": "hi"}})
    raw = orjson.dumps(payload)
    before = metric(
        client, "chatlake_channel_webhooks_refused_total", channel="whatsapp", reason="signature"
    )
    url = f"/v1/channels/whatsapp/{tenant.tenant_id}"
    forged = client.post(url, content=raw, headers=meta_headers("not-the-secret", raw))
    unsigned = client.post(url, content=raw)
    tampered = client.post(
        url, content=raw.replace(b"hi", b"ho"), headers=meta_headers(APP_SECRET, raw)
    )
    assert [r.status_code for r in (forged, unsigned, tampered)] == [401, 401, 401]
    assert forged.json()["error"]["code"] == "channel_signature"
    after = metric(
        client, "chatlake_channel_webhooks_refused_total", channel="whatsapp", reason="signature"
    )
    assert after - before == 3
    listed = client.get(
        "/v1/conversations",
        params={"user_id": f"whatsapp:{samples.WA_USER}"},
        headers=tenant.headers,
    )
    assert listed.json()["conversations"] == []
    assert provider.sends() == []
    # the forged id was not marked seen: the genuine delivery is handled
    assert post_meta(client, "whatsapp", tenant, payload).json()["answered"] == 1


def test_a_channel_without_its_secret_or_config_refuses_everything(client, tenant, provider):
    configure(client, tenant, "whatsapp", {"access_token": "t"}, provider)
    payload = samples.whatsapp(samples.WHATSAPP_MESSAGES["text"])
    assert post_meta(client, "whatsapp", tenant, payload).status_code == 401
    assert (
        post_meta(
            client, "messenger", tenant, samples.messenger(samples.MESSENGER_ITEMS["text"])
        ).status_code
        == 404
    )
    assert client.post("/v1/channels/whatsapp/not-a-tenant", content=b"{}").status_code == 404
    assert client.post("/v1/channels/pager/" + tenant.tenant_id, content=b"{}").status_code == 404
    configure(client, tenant, "whatsapp", {"app_secret": APP_SECRET}, enabled=False)
    assert post_meta(client, "whatsapp", tenant, payload).status_code == 403


def test_meta_verify_handshake(client, tenant, provider):
    whatsapp_config(client, tenant, provider)
    url = f"/v1/channels/whatsapp/{tenant.tenant_id}"
    ok = client.get(
        url,
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": "verify-me",
            "hub.challenge": "1158201444",
        },
    )
    assert ok.status_code == 200 and ok.text == "1158201444"
    wrong = client.get(
        url, params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"}
    )
    assert wrong.status_code == 403


def test_every_whatsapp_type_is_taken_and_receipts_are_not_answered(client, tenant, provider):
    whatsapp_config(client, tenant, provider)
    for name, message in samples.WHATSAPP_MESSAGES.items():
        response = post_meta(client, "whatsapp", tenant, samples.whatsapp(message))
        assert response.status_code == 200, (name, response.text)
    receipts = post_meta(
        client, "whatsapp", tenant, samples.whatsapp(statuses=samples.WHATSAPP_STATUS)
    )
    assert receipts.json() == {"received": 1, "answered": 0}
    conversation = conversation_of(client, tenant, f"whatsapp:{samples.WA_USER}")
    inbound = [m["type"] for m in conversation["messages"] if m["direction"] == "in"]
    assert set(inbound) >= {
        "text",
        "image",
        "file",
        "audio",
        "video",
        "sticker",
        "location",
        "contact",
        "postback",
        "quick_reply",
    }


def test_rich_replies_are_rendered_natively_and_degradations_recorded(client, tenant, provider):
    assert client.put("/v1/flow", json=RICH_FLOW, headers=tenant.headers).status_code == 200
    whatsapp_config(client, tenant, provider)
    payload = samples.whatsapp({"id": "wamid.menu1", "type": "text", "text": {"body": "menu"}})
    assert post_meta(client, "whatsapp", tenant, payload).json()["answered"] == 1
    sent = provider.wait_for(4, "/messages")
    kinds = [r["json"]["type"] for r in sent]
    assert kinds == ["text", "text", "text", "interactive"]  # in order
    assert sent[2]["json"]["text"]["body"].startswith("Our picks\n1. Boots - $80")  # carousel
    conversation = conversation_of(client, tenant, f"whatsapp:{samples.WA_USER}")
    out = [m for m in conversation["messages"] if m["direction"] == "out"]
    assert [m["type"] for m in out] == ["text", "buttons", "carousel", "quick_replies"]
    assert [(m["payload"] or {}).get("degraded") for m in out] == [
        None,
        "buttons->text",
        "carousel->text",
        "quick_replies->buttons",
    ]
    # the API's answer carries the rich reply for the API's own clients
    api = send(client, tenant, "menu", user_id="api-user").json()
    assert api["replies"][1]["payload"]["buttons"][0]["title"] == "Track order"


def test_send_errors_are_retried_then_dead_lettered(client, tenant, provider, fast_retries):
    whatsapp_config(client, tenant, provider)
    throttled = {
        "error": {
            "message": "(#130429) Rate limit hit",
            "type": "OAuthException",
            "code": 130429,
            "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
        }
    }
    provider.script = [(429, throttled, {"Retry-After": "0"}), (500, {"error": {"code": 2}}, {})]
    payload = samples.whatsapp({"id": "wamid.retry1", "type": "text", "text": {"body": "hi"}})
    post_meta(client, "whatsapp", tenant, payload)
    sent = provider.wait_for(3, "/messages")
    assert sent[0]["json"] == sent[2]["json"]  # delivered on the third attempt
    invalid = {
        "error": {
            "message": "(#100) Invalid parameter",
            "type": "OAuthException",
            "code": 100,
            "fbtrace_id": "x",
        }
    }
    provider.script = [(400, invalid, {})]
    payload = samples.whatsapp({"id": "wamid.dead1", "type": "text", "text": {"body": "bye"}})
    post_meta(client, "whatsapp", tenant, payload)
    provider.wait_for(4, "/messages")
    [letter] = dead_letters(client, tenant, "whatsapp")
    assert "code 100" in letter["error"] and letter["attempts"] == 1
    assert letter["user_id"] == f"whatsapp:{samples.WA_USER}"
    time.sleep(0.2)
    assert len(provider.sends("/messages")) == 4  # a 400 is not retried


def test_messenger_message_and_postback(client, tenant, provider):
    configure(
        client,
        tenant,
        "messenger",
        {"app_secret": APP_SECRET, "access_token": "PAGE-TOK"},
        provider,
    )
    for item in ("text", "postback", "image", "echo", "delivery"):
        response = post_meta(
            client, "messenger", tenant, samples.messenger(samples.MESSENGER_ITEMS[item])
        )
        assert response.status_code == 200
    sent = provider.wait_for(3, "/me/messages")
    assert sent[0]["json"]["recipient"] == {"id": samples.PSID}
    assert sent[0]["json"]["messaging_type"] == "RESPONSE"
    assert sent[0]["headers"]["Authorization"] == "Bearer PAGE-TOK"
    conversation = conversation_of(client, tenant, f"messenger:{samples.PSID}")
    inbound = [m["type"] for m in conversation["messages"] if m["direction"] == "in"]
    assert inbound == ["text", "postback", "image"]  # the echo and the receipt: not answered


# Slack


def test_slack_url_verification_events_and_expired_requests(client, tenant, provider):
    configure(
        client, tenant, "slack", {"signing_secret": SIGNING_SECRET, "bot_token": "xoxb-1"}, provider
    )
    url = f"/v1/channels/slack/{tenant.tenant_id}"
    challenge = orjson.dumps({"token": "x", "challenge": "3eZbrw1aB", "type": "url_verification"})
    answered = client.post(url, content=challenge, headers=slack_headers(SIGNING_SECRET, challenge))
    assert answered.json() == {"challenge": "3eZbrw1aB"}
    raw = orjson.dumps(samples.slack_event(samples.SLACK_EVENTS["text"], "EvSLACK1"))
    stale = client.post(
        url, content=raw, headers=slack_headers(SIGNING_SECRET, raw, at=time.time() - 301)
    )
    assert stale.status_code == 401 and "five minutes" in stale.json()["error"]["message"]
    ok = client.post(url, content=raw, headers=slack_headers(SIGNING_SECRET, raw))
    assert ok.json() == {"received": 1, "answered": 1}
    replay = client.post(
        url, content=raw, headers={**slack_headers(SIGNING_SECRET, raw), "X-Slack-Retry-Num": "1"}
    )
    assert replay.json() == {"received": 1, "answered": 0}
    [sent] = provider.wait_for(1, "/api/chat.postMessage")
    assert sent["headers"]["Authorization"] == "Bearer xoxb-1"
    assert sent["json"]["channel"] == samples.SLACK_CHANNEL
    # a button press arrives form-encoded
    form = urlencode({"payload": orjson.dumps(samples.SLACK_ACTIONS).decode()}).encode()
    pressed = client.post(
        url,
        content=form,
        headers=slack_headers(
            SIGNING_SECRET, form, content_type="application/x-www-form-urlencoded"
        ),
    )
    assert pressed.json()["answered"] == 1


def test_slack_rate_limit_answer_is_honoured(client, tenant, provider, fast_retries):
    configure(
        client, tenant, "slack", {"signing_secret": SIGNING_SECRET, "bot_token": "xoxb-1"}, provider
    )
    provider.script = [
        (429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}),
        (200, {"ok": False, "error": "channel_not_found"}, {}),
    ]
    raw = orjson.dumps(samples.slack_event(samples.SLACK_EVENTS["text"], "EvSLACK2"))
    url = f"/v1/channels/slack/{tenant.tenant_id}"
    client.post(url, content=raw, headers=slack_headers(SIGNING_SECRET, raw))
    first, second = provider.wait_for(2, "/api/chat.postMessage")
    assert second["at"] - first["at"] >= 0.9  # waited as Slack asked
    assert dead_letters(client, tenant, "slack")[0]["error"] == "slack error: channel_not_found"


# Teams


def test_teams_jwt_is_verified_and_the_reply_goes_to_the_service_url(client, tenant, provider):
    configure(
        client,
        tenant,
        "teams",
        {
            "app_id": APP_ID,
            "app_password": "bf-SECRET",
            "openid_metadata_url": f"{provider.url}/openid",
        },
        provider,
    )
    url = f"/v1/channels/teams/{tenant.tenant_id}"
    activity = samples.teams_activity(provider.url + "/")
    raw = orjson.dumps(activity)

    def post(token):
        return client.post(
            url,
            content=raw,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )

    service = provider.url + "/"
    assert post(provider.bot_token("another-bot", service)).status_code == 401  # audience
    assert post(provider.bot_token(APP_ID, service, iss="https://evil")).status_code == 401
    expired = provider.bot_token(APP_ID, service, exp=int(time.time()) - 600)
    assert post(expired).status_code == 401
    assert post(provider.bot_token(APP_ID, "https://elsewhere/")).status_code == 401
    forged = provider.bot_token(APP_ID, service)[:-4] + "AAAA"
    assert post(forged).status_code == 401
    assert client.post(url, content=raw).status_code == 401
    ok = post(provider.bot_token(APP_ID, service))
    assert ok.json() == {"received": 1, "answered": 1}, ok.text
    [token_request] = provider.wait_for(1, "/oauth2/v2.0/token")
    assert token_request["form"]["client_secret"] == "bf-SECRET"
    assert token_request["form"]["scope"] == "https://api.botframework.com/.default"
    [reply] = provider.wait_for(1, "/v3/conversations/")
    assert reply["path"].endswith("/activities/1481567603816")
    assert reply["headers"]["Authorization"] == "Bearer eyJ0eXAi.bot-connector-token"
    assert reply["json"]["type"] == "message" and reply["json"]["replyToId"] == "1481567603816"


# Twilio


def test_twilio_sms_signature_reply_and_errors(client, tenant, provider, fast_retries):
    configure(
        client,
        tenant,
        "twilio",
        {"account_sid": "AC0123456789", "auth_token": AUTH_TOKEN},
        provider,
    )
    url = f"http://testserver/v1/channels/twilio/{tenant.tenant_id}"
    form = samples.twilio_sms("hello")
    bad = client.post(url, data=form, headers=twilio_headers("wrong", url, form))
    assert bad.status_code == 401
    ok = client.post(url, data=form, headers=twilio_headers(AUTH_TOKEN, url, form))
    assert ok.status_code == 200 and ok.text.endswith("<Response/>")
    assert ok.headers["content-type"].startswith("text/xml")
    [sent] = provider.wait_for(1, "/Messages.json")
    assert sent["path"] == "/2010-04-01/Accounts/AC0123456789/Messages.json"
    assert sent["form"]["To"] == "+14155552671" and sent["form"]["From"] == "+15005550006"
    assert sent["form"]["Body"].startswith("Hello!")
    assert sent["headers"]["Authorization"].startswith("Basic ")
    # Twilio's 429 (code 20429) is retried
    provider.script = [(429, {"code": 20429, "message": "Too Many Requests", "status": 429}, {})]
    again = samples.twilio_sms("thanks", sid="SM00000000000000000000000000000002")
    client.post(url, data=again, headers=twilio_headers(AUTH_TOKEN, url, again))
    provider.wait_for(3, "/Messages.json")


def test_twilio_voice_gathers_speech_and_speaks_the_reply(client, tenant, provider):
    configure(client, tenant, "twilio", {"account_sid": "AC0123456789", "auth_token": AUTH_TOKEN})
    url = f"http://testserver/v1/channels/twilio-voice/{tenant.tenant_id}"
    start = samples.twilio_voice()
    greeting = client.post(url, data=start, headers=twilio_headers(AUTH_TOKEN, url, start))
    assert greeting.status_code == 200
    assert '<Gather input="speech"' in greeting.text and "How can I help" in greeting.text
    spoken = samples.twilio_voice("hello there")
    headers = {**twilio_headers(AUTH_TOKEN, url, spoken), "I-Twilio-Idempotency-Token": "tok-1"}
    answer = client.post(url, data=spoken, headers=headers)
    expected = send(client, tenant, "hello there", user_id="voice-twin").json()["replies"]
    assert f'<Say language="en-US">{escape(expected[0]["text"])}' in answer.text
    assert '<Gather input="speech"' in answer.text
    replay = client.post(url, data=spoken, headers=headers)
    assert replay.status_code == 200 and escape(expected[0]["text"]) not in replay.text
    forged = client.post(url, data=spoken, headers={"X-Twilio-Signature": "bm9wZQ=="})
    assert forged.status_code == 401
    conversation = conversation_of(client, tenant, "twilio:+14155552671")
    assert conversation["channel"] == "twilio-voice"
    assert next(m["text"] for m in conversation["messages"]) == "hello there"


# Identity links: one context across channels


def test_linked_identities_share_one_conversation(client, tenant, provider):
    whatsapp_config(client, tenant, provider)
    configure(client, tenant, "twilio", {"account_sid": "AC1", "auth_token": AUTH_TOKEN}, provider)
    for channel, external in (("whatsapp", samples.WA_USER), ("twilio", "+14155552671")):
        linked = client.post(
            "/v1/identities",
            json={"user_id": "customer-42", "channel": channel, "external_id": external},
            headers=tenant.headers,
        )
        assert linked.status_code == 201, linked.text
    post_meta(
        client,
        "whatsapp",
        tenant,
        samples.whatsapp({"id": "wamid.link1", "type": "text", "text": {"body": "hello"}}),
    )
    url = f"http://testserver/v1/channels/twilio/{tenant.tenant_id}"
    form = samples.twilio_sms("thanks", sid="SM00000000000000000000000000000042")
    client.post(url, data=form, headers=twilio_headers(AUTH_TOKEN, url, form))
    conversation = conversation_of(client, tenant, "customer-42")
    inbound = [m["text"] for m in conversation["messages"] if m["direction"] == "in"]
    assert inbound == ["hello", "thanks"]
    assert conversation["channel"] == "twilio"
    listed = client.get(
        "/v1/identities", params={"user_id": "customer-42"}, headers=tenant.headers
    ).json()["identities"]
    assert {i["channel"] for i in listed} == {"whatsapp", "twilio"}
    gone = client.delete(f"/v1/identities/twilio/{'+14155552671'}", headers=tenant.headers)
    assert gone.status_code == 204


def test_another_tenants_webhook_cannot_use_this_tenants_config(client, admin_headers, provider):
    first = create_tenant(client, admin_headers)
    second = create_tenant(client, admin_headers)
    whatsapp_config(client, first, provider)
    payload = samples.whatsapp(samples.WHATSAPP_MESSAGES["text"])
    assert post_meta(client, "whatsapp", second, payload).status_code == 404


# The web widget's API


def test_web_widget_key_origin_and_reload_continuity(client, tenant):
    shown = configure(client, tenant, "web", {}, allowed_origins=["https://shop.example"])
    key = shown["widget_key"]
    assert key.startswith("clkw_")
    snippet = client.get("/v1/channels/web/embed", headers=tenant.headers)
    assert snippet.status_code == 200 and key in snippet.text and "<script" in snippet.text
    assert client.get("/v1/channels/web/widget.js").text.startswith("/* chatlake web widget")
    url = f"/v1/channels/web/{tenant.tenant_id}"
    visitor = "v" * 24
    good = {"Origin": "https://shop.example", "X-Widget-Key": key}
    preflight = client.options(
        url, headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
    evil = client.post(
        url,
        json={"visitor_id": visitor, "text": "hi"},
        headers={**good, "Origin": "https://evil.example"},
    )
    assert evil.status_code == 403
    wrong = client.post(
        url,
        json={"visitor_id": visitor, "text": "hi"},
        headers={**good, "X-Widget-Key": "clkw_guess"},
    )
    assert wrong.status_code == 401
    bad = client.post(url, json={"visitor_id": "short", "text": "hi"}, headers=good)
    assert bad.status_code == 422
    answered = client.post(url, json={"visitor_id": visitor, "text": "hello"}, headers=good)
    assert answered.status_code == 200
    assert answered.headers["access-control-allow-origin"] == "https://shop.example"
    assert answered.json()["replies"][0]["text"].startswith("Hello!")
    history = client.get(url, params={"visitor_id": visitor}, headers=good).json()
    assert next(m["text"] for m in history["messages"]) == "hello"
    assert history["conversation_id"] == answered.json()["conversation_id"]


# Every channel: its other payloads, forged signatures, replays, its errors and rate limits


def test_messenger_every_item_forgery_replay_and_throttling(client, tenant, provider, fast_retries):
    configure(
        client,
        tenant,
        "messenger",
        {"app_secret": APP_SECRET, "access_token": "PAGE-TOK"},
        provider,
    )
    item = samples.messenger({"message": {"mid": "m_replay1", "text": "hello"}})
    raw = orjson.dumps(item)
    url = f"/v1/channels/messenger/{tenant.tenant_id}"
    assert client.post(url, content=raw, headers=meta_headers("forged", raw)).status_code == 401
    throttled = {
        "error": {
            "message": "(#613) Calls to this api have exceeded the rate limit.",
            "type": "OAuthException",
            "code": 613,
            "fbtrace_id": "AbC",
        }
    }
    provider.script = [(400, throttled, {})]
    assert post_meta(client, "messenger", tenant, item).json()["answered"] == 1
    assert post_meta(client, "messenger", tenant, item).json()["answered"] == 0  # replayed
    first, second = provider.wait_for(2, "/me/messages")
    assert first["json"] == second["json"]  # the throttled send, retried
    for name, sample in samples.MESSENGER_ITEMS.items():
        response = post_meta(client, "messenger", tenant, samples.messenger(sample))
        assert response.status_code == 200, (name, response.text)
    conversation = conversation_of(client, tenant, f"messenger:{samples.PSID}")
    inbound = {m["type"] for m in conversation["messages"] if m["direction"] == "in"}
    assert inbound == {
        "text",
        "image",
        "audio",
        "video",
        "file",
        "sticker",
        "location",
        "quick_reply",
        "postback",
    }


def test_slack_forged_signature_and_every_event(client, tenant, provider):
    configure(
        client, tenant, "slack", {"signing_secret": SIGNING_SECRET, "bot_token": "xoxb-1"}, provider
    )
    url = f"/v1/channels/slack/{tenant.tenant_id}"
    raw = orjson.dumps(samples.slack_event(samples.SLACK_EVENTS["text"], "EvFORGED"))
    forged = client.post(url, content=raw, headers=slack_headers("not-the-secret", raw))
    assert forged.status_code == 401
    unsigned = client.post(url, content=raw, headers={"X-Slack-Request-Timestamp": "1"})
    assert unsigned.status_code == 401
    answered = {}
    for i, (name, event) in enumerate(samples.SLACK_EVENTS.items()):
        raw = orjson.dumps(samples.slack_event(event, f"EvALL{i}"))
        answered[name] = client.post(
            url, content=raw, headers=slack_headers(SIGNING_SECRET, raw)
        ).json()["answered"]
    assert answered == {"text": 1, "image": 1, "mention": 1, "reaction": 0, "bot": 0}


def teams_post(client, tenant, provider, activity):
    raw = orjson.dumps(activity)
    token = provider.bot_token(APP_ID, activity["serviceUrl"])
    return client.post(
        f"/v1/channels/teams/{tenant.tenant_id}",
        content=raw,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def test_teams_replays_errors_and_every_activity(client, tenant, provider, fast_retries):
    configure(
        client,
        tenant,
        "teams",
        {
            "app_id": APP_ID,
            "app_password": "bf-SECRET",
            "openid_metadata_url": f"{provider.url}/openid",
        },
        provider,
    )
    service = provider.url + "/"
    # the Bot Connector answers 503, then 401 (the token is refetched), then takes it
    provider.script = [
        (200, {"token_type": "Bearer", "expires_in": 3599, "access_token": "first-token"}, {}),
        (503, {"error": {"code": "ServiceError"}}, {}),
        (401, {"message": "Authorization has been denied"}, {}),
    ]
    activity = samples.teams_activity(service, id="teams-replay-1")
    assert teams_post(client, tenant, provider, activity).json()["answered"] == 1
    assert teams_post(client, tenant, provider, activity).json()["answered"] == 0  # replayed
    replies = provider.wait_for(3, "/v3/conversations/")
    assert [r["headers"]["Authorization"] for r in replies] == [
        "Bearer first-token",
        "Bearer first-token",
        "Bearer eyJ0eXAi.bot-connector-token",
    ]
    assert len(provider.sends("/oauth2/v2.0/token")) == 2
    kinds = {
        "image": {"attachments": [{"contentType": "image/png", "contentUrl": "https://x/y.png"}]},
        "postback": {"text": "", "value": {"choice": "TRACK"}},
        "reaction": {"type": "messageReaction", "reactionsAdded": [{"type": "like"}]},
        "typing": {"type": "typing"},
        "update": {"type": "conversationUpdate"},
    }
    answered = {
        name: teams_post(
            client, tenant, provider, samples.teams_activity(service, id=f"teams-{name}", **fields)
        ).json()["answered"]
        for name, fields in kinds.items()
    }
    assert answered == {"image": 1, "postback": 1, "reaction": 0, "typing": 0, "update": 0}


def test_twilio_replays_media_and_status_callbacks(client, tenant, provider):
    configure(
        client,
        tenant,
        "twilio",
        {"account_sid": "AC0123456789", "auth_token": AUTH_TOKEN},
        provider,
    )
    url = f"http://testserver/v1/channels/twilio/{tenant.tenant_id}"
    forms = [
        samples.twilio_sms("hi", sid="SM00000000000000000000000000000101"),
        samples.twilio_sms("hi", sid="SM00000000000000000000000000000101"),  # Twilio's retry
        samples.twilio_sms(
            "",
            sid="SM00000000000000000000000000000102",
            NumMedia="1",
            MediaContentType0="image/jpeg",
            MediaUrl0="https://api.twilio.com/m/1",
        ),
        samples.twilio_sms(
            "", sid="SM00000000000000000000000000000103", Latitude="52.5", Longitude="13.4"
        ),
        {
            "MessageSid": "SM00000000000000000000000000000104",
            "MessageStatus": "delivered",
            "To": "+14155552671",
            "From": "+15005550006",
            "AccountSid": "AC0123456789",
        },
    ]
    for form in forms:
        response = client.post(url, data=form, headers=twilio_headers(AUTH_TOKEN, url, form))
        assert response.status_code == 200, response.text
    conversation = conversation_of(client, tenant, "twilio:+14155552671")
    inbound = [m["type"] for m in conversation["messages"] if m["direction"] == "in"]
    assert inbound == ["text", "image", "location"]  # the retry and the status: no answer
    replies = [m for m in conversation["messages"] if m["direction"] == "out"]
    provider.wait_for(len(replies), "/Messages.json")
    time.sleep(0.3)
    assert len(provider.sends("/Messages.json")) == len(replies)


def test_signed_but_malformed_payloads_get_a_clear_error_never_a_500(client, tenant, provider):
    whatsapp_config(client, tenant, provider)
    url = f"/v1/channels/whatsapp/{tenant.tenant_id}"
    for raw in (
        b"not json",
        b"[1, 2]",
        b'{"object": "page"}',
        b'{"object": "whatsapp_business_account", "entry": "x"}',
    ):
        response = client.post(url, content=raw, headers=meta_headers(APP_SECRET, raw))
        assert response.status_code == 400, (raw, response.text)
        assert response.json()["error"]["code"] == "malformed"
    nul = samples.whatsapp({"id": "wamid.nul", "type": "text", "text": {"body": "a\x00b"}})
    assert post_meta(client, "whatsapp", tenant, nul).json()["answered"] == 1
    teams_url = f"/v1/channels/teams/{tenant.tenant_id}"
    assert client.post(teams_url, content=b"[]").status_code == 404  # teams not configured


def test_any_spelling_of_the_tenant_id_reaches_the_same_channel(client, tenant, provider):
    whatsapp_config(client, tenant, provider)
    payload = samples.whatsapp({"id": "wamid.upper1", "type": "text", "text": {"body": "hi"}})
    raw = orjson.dumps(payload)
    for spelling in (
        tenant.tenant_id.upper(),
        tenant.tenant_id.replace("-", ""),
        "{" + tenant.tenant_id + "}",
    ):
        response = client.post(
            f"/v1/channels/whatsapp/{spelling}", content=raw, headers=meta_headers(APP_SECRET, raw)
        )
        assert response.status_code == 200, (spelling, response.text)
    assert len(conversation_of(client, tenant, f"whatsapp:{samples.WA_USER}")["messages"]) >= 2
    empty = samples.messenger({"message": {"mid": "", "text": "no id"}})
    configure(client, tenant, "messenger", {"app_secret": APP_SECRET}, provider)
    assert post_meta(client, "messenger", tenant, empty).status_code == 400


def test_a_disabled_channel_stays_disabled_and_urls_must_be_public(client, tenant, provider):
    whatsapp_config(client, tenant, provider)
    configure(client, tenant, "whatsapp", {}, enabled=False)
    assert configure(client, tenant, "whatsapp", {"verify_token": "new"})["enabled"] is False
    settings = client.app.state.platform.settings
    settings.private_urls = False  # as in production
    try:
        private = client.put(
            "/v1/channels/whatsapp", json={"api_base_url": provider.url}, headers=tenant.headers
        )
        assert private.status_code == 422 and "https only" in private.json()["error"]["message"]
        metadata = client.put(
            "/v1/channels/teams",
            headers=tenant.headers,
            json={"secrets": {"openid_metadata_url": "https://169.254.169.254/latest"}},
        )
        assert metadata.status_code == 422
    finally:
        settings.private_urls = None


def test_teams_tokens_belong_to_one_tenant_and_need_the_serviceurl_claim(
    client, admin_headers, provider
):
    first, second = create_tenant(client, admin_headers), create_tenant(client, admin_headers)
    service = provider.url + "/"
    for tenant, password in ((first, "first-SECRET"), (second, "guessed")):
        configure(
            client,
            tenant,
            "teams",
            {
                "app_id": APP_ID,
                "app_password": password,
                "openid_metadata_url": f"{provider.url}/openid",
            },
            provider,
        )
    activity = samples.teams_activity(service, id="teams-iso-1")
    raw = orjson.dumps(activity)
    no_claim = provider.bot_token(APP_ID, service)
    import jwt as pyjwt

    claims = pyjwt.decode(no_claim, options={"verify_signature": False})
    del claims["serviceurl"]
    unsigned_url = pyjwt.encode(
        claims, provider.key, algorithm="RS256", headers={"kid": provider.kid}
    )
    refused = client.post(
        f"/v1/channels/teams/{first.tenant_id}",
        content=raw,
        headers={"Authorization": f"Bearer {unsigned_url}", "Content-Type": "application/json"},
    )
    assert refused.status_code == 401
    assert teams_post(client, first, provider, activity).json()["answered"] == 1
    provider.wait_for(1, "/v3/conversations/")
    second_activity = samples.teams_activity(service, id="teams-iso-2")
    assert teams_post(client, second, provider, second_activity).json()["answered"] == 1
    tokens = provider.wait_for(2, "/oauth2/v2.0/token")
    # the second tenant's reply needed a token of its own, asked with its own password
    assert [t["form"]["client_secret"] for t in tokens] == ["first-SECRET", "guessed"]


def test_replies_a_stopped_process_left_in_the_outbox_are_sent_by_another(
    client, tenant, provider, endpoints
):
    import redis as redis_lib

    from chatlake.keyspace import TenantKeyspace

    whatsapp_config(client, tenant, provider)
    keys = TenantKeyspace(tenant.tenant_id)
    r = redis_lib.Redis.from_url(endpoints.redis_url)
    # a webhook's replies go through the outbox and leave it once delivered
    payload = samples.whatsapp({"id": "wamid.outbox1", "type": "text", "text": {"body": "hi"}})
    post_meta(client, "whatsapp", tenant, payload)
    provider.wait_for(1, "/messages")
    assert eventually(lambda: r.xlen(keys.channel_outbox) == 0)
    # what a process that died mid-send left: an old entry whose lock expired with it
    record = {
        "channel": "whatsapp",
        "config_channel": "whatsapp",
        "user_id": "whatsapp:1555",
        "conversation_id": "c1",
        "address": {"to": "1555", "phone_number_id": "1"},
        "bodies": [{"type": "text", "text": {"body": "left behind"}}],
    }
    left = r.xadd(keys.channel_outbox, {"event": orjson.dumps(record)})
    held = r.xadd(keys.channel_outbox, {"event": orjson.dumps(record)})
    r.set(keys.channel_outbox_lock(held.decode()), "sending", ex=60)  # a live process's
    sender = client.app.state.platform.sender
    assert client.portal.call(sender.recover, 0.0) == 1  # (stale at once, for the test)
    [resent] = [s for s in provider.wait_for(2, "/messages") if s["json"]["to"] == "1555"]
    assert resent["json"]["text"]["body"] == "left behind"
    assert eventually(lambda: r.xlen(keys.channel_outbox) == 1)
    assert [e[0] for e in r.xrange(keys.channel_outbox)] == [held]
    assert left != held


def test_messages_to_another_number_or_page_are_not_answered(client, tenant, provider):
    whatsapp_config(client, tenant, provider)  # phone_number_id: samples.WA_PHONE_ID
    other = samples.whatsapp({"id": "wamid.elsewhere", "type": "text", "text": {"body": "hi"}})
    other["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999"
    assert post_meta(client, "whatsapp", tenant, other).json() == {"received": 1, "answered": 0}
    configure(client, tenant, "messenger", {"app_secret": APP_SECRET, "page_id": "42"}, provider)
    page = samples.messenger({"message": {"mid": "m_elsewhere", "text": "hi"}})
    assert post_meta(client, "messenger", tenant, page).json()["answered"] == 0


def test_long_replies_are_clipped_to_each_channels_limit():
    from realtime.channels import messenger, twilio, whatsapp

    long = {"type": "text", "text": "x" * 5000}
    assert len(whatsapp.render(long).bodies[0]["text"]["body"]) == 4096
    assert len(messenger.render(long).bodies[0]["message"]["text"]) == 2000
    assert twilio.render(long).bodies[0]["Body"].endswith("…")
    assert len(twilio.render(long).bodies[0]["Body"]) == 1600


def test_a_number_answering_a_numbered_list_on_sms_is_that_choice(client, tenant, provider):
    assert client.put("/v1/flow", json=RICH_FLOW, headers=tenant.headers).status_code == 200
    configure(client, tenant, "twilio", {"account_sid": "AC1", "auth_token": AUTH_TOKEN}, provider)
    url = f"http://testserver/v1/channels/twilio/{tenant.tenant_id}"
    for i, text in enumerate(("menu", "2", "2")):
        form = samples.twilio_sms(text, sid=f"SM0000000000000000000000000000030{i}")
        assert client.post(url, data=form, headers=twilio_headers(AUTH_TOKEN, url, form)).is_success
    conversation = conversation_of(client, tenant, "twilio:+14155552671")
    inbound = [m for m in conversation["messages"] if m["direction"] == "in"]
    # the menu's last choices were the quick replies (Red, Blue), shown as a numbered list
    assert (inbound[1]["type"], inbound[1]["text"]) == ("postback", "Blue")
    assert inbound[1]["payload"]["payload"] == "BLUE"
    assert (inbound[2]["type"], inbound[2]["text"]) == ("text", "2")  # no list open any more
