"""The two probe suites of `chatlake bench chaos`, run against a live API over HTTP.

* Cross-tenant: every tenant-scoped operation of the API, enumerated from its own
  `/openapi.json` (so an endpoint added later is probed without a change here), is called
  with tenant B's key and tenant A's ids in its path, query and body. A leak is an answer
  that holds a marker of A's data that the request did not carry (A's canary text, ids,
  tenant id), an answer for A's id that differs from the one for a look-alike id that never
  existed (an existence oracle: the contract says another tenant's resource is a 404, never
  a 403), or any of A's resources changed afterwards.
* Forged webhooks: for every webhook channel, a genuine signed delivery and its forged
  (wrong secret or key), unsigned, tampered (body changed after signing) and replayed
  copies, plus a stale one where the channel signs a time (Slack's timestamp, Teams'
  token expiry). All but the genuine one must be refused: 401 for the first three and the
  stale one; a replay is answered but never handled twice, which the lake proves (one
  inbound row per sender, read by the caller after the ingest drained).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.webhooks import (
    WA_PHONE_ID,
    ChannelServer,
    meta_headers,
    slack_headers,
    twilio_headers,
    whatsapp,
)
from chatlake.errors import ChatlakeError

JsonDict = dict[str, Any]
WEBHOOK_CHANNELS = ("whatsapp", "messenger", "slack", "teams", "twilio", "twilio-voice")
APP_SECRET = "chaos-meta-app-secret"
SIGNING_SECRET = "chaos-slack-signing-secret"
AUTH_TOKEN = "chaos-twilio-auth-token"
APP_ID = "5f0c3f6e-8d7a-4f57-9b8e-2f7d5c3b1a90"
PAGE_ID = "1067280970047460"


def configure_channels(api: str, headers: dict[str, str], provider: ChannelServer) -> None:
    """Every webhook channel of the tenant of `headers`, its sends pointed at `provider`
    (a loopback server that answers as each provider does, and signs Teams' tokens)."""
    secrets: dict[str, JsonDict] = {
        "whatsapp": {
            "app_secret": APP_SECRET,
            "verify_token": "chaos-verify",
            "access_token": "chaos-access",
            "phone_number_id": WA_PHONE_ID,
        },
        "messenger": {
            "app_secret": APP_SECRET,
            "verify_token": "chaos-verify",
            "access_token": "chaos-access",
            "page_id": PAGE_ID,
        },
        "slack": {"signing_secret": SIGNING_SECRET, "bot_token": "xoxb-chaos"},
        "teams": {
            "app_id": APP_ID,
            "app_password": "chaos-password",
            "openid_metadata_url": f"{provider.url}/openid",
        },
        "twilio": {"account_sid": "AC" + "0" * 32, "auth_token": AUTH_TOKEN},
    }
    for channel, values in secrets.items():
        answer = httpx.put(
            f"{api}/v1/channels/{channel}",
            headers=headers,
            json={"secrets": values, "api_base_url": provider.url, "rate_limit_per_s": 1000},
            timeout=30,
        )
        if answer.status_code != 200:
            raise ChatlakeError(f"configuring {channel} failed: {answer.text}")


# Forged webhooks


def _sender(channel: str, run: str) -> str:
    digits = str(int(hashlib.sha256(f"{channel}{run}".encode()).hexdigest(), 16))[:10]
    return {
        "slack": "UCHAOS" + digits[:6],
        "teams": "29:chaos-" + digits,
        "messenger": "7" + digits,
    }.get(channel, "1" + digits)


def _delivery(channel: str, sender: str, n: int, text: str, service_url: str) -> JsonDict:
    """The `n`-th delivery of a text message from `sender`, as the provider sends it (for
    Twilio the form's fields)."""
    if channel == "whatsapp":
        message = {
            "id": f"wamid.chaos.{sender}.{n}",
            "timestamp": str(int(time.time())),
            "type": "text",
            "text": {"body": text},
        }
        return whatsapp(message, user=sender)
    if channel == "messenger":
        return {
            "object": "page",
            "entry": [
                {
                    "id": PAGE_ID,
                    "time": int(time.time() * 1000),
                    "messaging": [
                        {
                            "sender": {"id": sender},
                            "recipient": {"id": PAGE_ID},
                            "timestamp": int(time.time() * 1000),
                            "message": {"mid": f"m_chaos.{sender}.{n}", "text": text},
                        }
                    ],
                }
            ],
        }
    if channel == "slack":
        return {
            "token": "x",
            "team_id": "T0CHAOS",
            "api_app_id": "A0CHAOS",
            "type": "event_callback",
            "event_id": f"EvCHAOS{sender}{n}",
            "event_time": int(time.time()),
            "event": {
                "type": "message",
                "channel": "D0CHAOS",
                "user": sender,
                "text": text,
                "ts": f"{int(time.time())}.{n:06d}",
                "channel_type": "im",
            },
        }
    if channel == "teams":
        return {
            "type": "message",
            "id": f"chaos-{sender}-{n}",
            "serviceUrl": service_url,
            "channelId": "msteams",
            "from": {"id": sender, "name": "Chaos"},
            "conversation": {"conversationType": "personal", "id": f"a:chaos-{sender}"},
            "recipient": {"id": f"28:{APP_ID}", "name": "Bot"},
            "text": text,
        }
    form = {"AccountSid": "AC" + "0" * 32, "From": "+" + sender, "To": "+15005550006"}
    if channel == "twilio":
        sid = f"SM{hashlib.md5(f'{sender}{n}'.encode()).hexdigest()}"  # an id, not a digest
        form.update({"MessageSid": sid, "SmsSid": sid, "Body": text, "NumMedia": "0"})
    else:
        form.update(
            {
                "CallSid": f"CA{sender}",
                "SpeechResult": f"{text} {n}",
                "Confidence": "0.91",
                "CallStatus": "in-progress",
            }
        )
    return form


def _signed(
    channel: str, url: str, body: JsonDict, provider: ChannelServer, **how: Any
) -> tuple[bytes, dict[str, str]]:
    """The raw body and the headers the provider signs it with. `secret`: sign with
    another secret (forged); `at`: Slack's timestamp; `token`: Teams' bearer token."""
    if channel.startswith("twilio"):
        raw = urlencode(body).encode()
        return raw, twilio_headers(how.get("secret", AUTH_TOKEN), url, body)
    raw = json.dumps(body).encode()
    if channel in ("whatsapp", "messenger"):
        return raw, meta_headers(how.get("secret", APP_SECRET), raw)
    if channel == "slack":
        return raw, slack_headers(how.get("secret", SIGNING_SECRET), raw, at=how.get("at"))
    token = how.get("token") or provider.bot_token(APP_ID, body["serviceUrl"])
    return raw, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def _unsigned(headers: dict[str, str]) -> dict[str, str]:
    drop = ("x-hub-signature-256", "x-slack-signature", "authorization", "x-twilio-signature")
    return {k: v for k, v in headers.items() if k.lower() not in drop}


def _tamper(channel: str, raw: bytes, service_url: str) -> bytes:
    """The same delivery changed after it was signed: its text; for Teams its serviceUrl,
    the part of an activity the Bot Framework's token binds (the token does not sign the
    body: TLS protects it in transit)."""
    if channel == "teams":
        return raw.replace(service_url.encode(), b"https://attacker.example/", 1)
    return raw.replace(b"genuine", b"tampered", 1)


def _answered(response: httpx.Response) -> int | None:
    """How many messages the webhook says it answered (None: TwiML says nothing)."""
    try:
        return int(response.json()["answered"])
    except (ValueError, KeyError, TypeError):
        return None


def _one_channel(
    client: httpx.Client,
    url: str,
    channel: str,
    sender: str,
    provider: ChannelServer,
    other_key: rsa.RSAPrivateKey,
) -> JsonDict:
    """One channel's genuine delivery, its forged variants and its replay; what each was
    answered."""
    service_url = provider.url + "/"
    text = f"genuine hello {sender}"

    def signed(n: int, **how: Any) -> tuple[bytes, dict[str, str]]:
        return _signed(
            channel, url, _delivery(channel, sender, n, text, service_url), provider, **how
        )

    def post(raw: bytes, headers: dict[str, str]) -> httpx.Response:
        return client.post(url, content=raw, headers=headers)

    raw, headers = signed(1)
    variants = {"unsigned": (raw, _unsigned(headers))}
    if channel == "teams":
        forger = provider.bot_token(APP_ID, service_url, signing_key=other_key)
        variants["forged"] = signed(2, token=forger)
    else:
        variants["forged"] = signed(2, secret="not-the-secret")
    variants["tampered"] = (_tamper(channel, raw, service_url), headers)
    if channel == "slack":  # a captured request replayed ten minutes later
        variants["stale"] = signed(3, at=time.time() - 600)
    if channel == "teams":  # a token that expired an hour ago
        now = int(time.time())
        expired = provider.bot_token(APP_ID, service_url, exp=now - 3600, nbf=now - 7200)
        variants["stale"] = signed(3, token=expired)
    first = post(raw, headers)
    result: JsonDict = {
        "genuine": {
            "status": first.status_code,
            "answered": _answered(first),
            "accepted": first.status_code == 200,
        }
    }
    for name, (body, hdrs) in variants.items():
        answer = post(body, hdrs)
        result[name] = {"status": answer.status_code, "refused": answer.status_code == 401}
    replay = post(raw, headers)
    # refused as a replay: answered, never handled again (the lake says so too)
    result["replayed"] = {
        "status": replay.status_code,
        "answered": _answered(replay),
        "refused": replay.status_code < 500 and _answered(replay) in (0, None),
    }
    return result


def forged_webhooks(api: str, tenant_id: str, provider: ChannelServer) -> JsonDict:
    """Every webhook channel with each forged variant; which were refused. The genuine
    delivery's sender per channel is returned for the lake check (`senders`)."""
    run = uuid.uuid4().hex[:8]
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    senders = {channel: _sender(channel, run) for channel in WEBHOOK_CHANNELS}
    with httpx.Client(timeout=30) as client:
        channels = {
            channel: _one_channel(
                client,
                f"{api}/v1/channels/{channel}/{tenant_id}",
                channel,
                sender,
                provider,
                other_key,
            )
            for channel, sender in senders.items()
        }
    attempts = sum(len(r) - 1 for r in channels.values())
    refused = sum(
        1 for r in channels.values() for k, v in r.items() if k != "genuine" and v["refused"]
    )
    return {"channels": channels, "senders": senders, "attempts": attempts, "refused": refused}


def lake_verdict(suite: JsonDict, inbound_rows: dict[str, int]) -> JsonDict:
    """Fold the lake's count of inbound rows per channel sender into the suite: exactly
    one (the genuine delivery) is right; more means a forged or replayed one got through.
    A replay whose extra row is found is counted as not refused."""
    for channel in suite["senders"]:
        found = inbound_rows.get(channel, 0)
        result = suite["channels"][channel]
        result["inbound_rows_in_lake"] = found
        if found > 1 and result["replayed"]["refused"]:
            result["replayed"]["refused"] = False
            suite["refused"] -= 1
        result["genuine"]["in_lake"] = found >= 1
    suite["refused_ratio"] = round(suite["refused"] / suite["attempts"], 4)
    suite["not_refused"] = [
        f"{c}/{k}"
        for c, r in suite["channels"].items()
        for k, v in r.items()
        if k != "genuine" and isinstance(v, dict) and v.get("refused") is False
    ]
    return suite


# Cross-tenant probes

ID_KEYS = {  # a path or query parameter's name -> the kind of A's id it takes
    "conversation_id": "conversation_id",
    "message_id": "message_id",
    "document_id": "document_id",
    "tenant_id": "tenant_id",
    "key_id": "key_id",
    "request_id": "request_id",
    "invoice_id": "invoice_id",
    "external_id": "external_id",
    "user_id": "user_id",
    "name": "intent",
    "version": "version",
    "channel": "channel",
    "event_id": "message_id",
    "q": "canary",
    "id": "key_id",
    "month": "month",
}


SHARED = ("channel", "version", "month", "canary", "intent")


def _look_alike(value: str) -> str:
    """A value of the same shape that names nothing: each hex digit or digit replaced."""
    rng = random.Random(value)
    out = []
    for char in value:
        if char in "0123456789":
            out.append(rng.choice("0123456789"))
        elif char in "abcdef":
            out.append(rng.choice("abcdef"))
        elif char.isalpha():
            out.append(rng.choice("ghijklmnopqrstuvwxyz"))
        else:
            out.append(char)
    return "".join(out)


def _resolve(spec: JsonDict, schema: JsonDict) -> JsonDict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = spec["components"]["schemas"][name]
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return _resolve(spec, options[0]) if options else {}
    return schema


def _example(
    spec: JsonDict, schema: JsonDict, name: str, ids: dict[str, str], depth: int = 0
) -> Any:
    """A body filled with A's ids where a field's name asks for one: required fields only."""
    schema = _resolve(spec, schema)
    kind = schema.get("type")
    if kind in (None, "string") and ID_KEYS.get(name) in ids:
        return ids[ID_KEYS[name]]
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        if depth > 3:
            return {}
        return {
            key: _example(spec, sub, key, ids, depth + 1)
            for key, sub in schema.get("properties", {}).items()
            if key in schema.get("required", []) or key in ID_KEYS
        }
    if kind == "array":
        return [_example(spec, schema.get("items", {}), name, ids, depth + 1)]
    if kind == "integer":  # 30: a probe that sets B's retention must not expire B's data
        return min(max(30, int(schema.get("minimum", 1))), int(schema.get("maximum", 30)))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    return "probe"


def _operations(spec: JsonDict) -> list[tuple[str, str, JsonDict]]:
    """Every operation that takes the tenant's bearer key."""
    found = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete") and op.get("security"):
                found.append((method.upper(), path, op))
    return found


def _request(
    spec: JsonDict, path: str, op: JsonDict, ids: dict[str, str]
) -> tuple[str, dict[str, str], Any]:
    params: dict[str, str] = {}
    for parameter in op.get("parameters", []):
        name, where = parameter["name"], parameter["in"]
        value = ids.get(ID_KEYS.get(name, ""), None)
        if where == "path":
            path = path.replace("{" + name + "}", value or "probe")
        elif where == "query" and (value is not None or parameter.get("required")):
            params[name] = value or "probe"
    body = None
    content = (op.get("requestBody") or {}).get("content", {}).get("application/json")
    if content:
        body = _example(spec, content.get("schema", {}), "", ids)
    return path, params, body


def cross_tenant(
    api: str,
    a_headers: dict[str, str],
    b_headers: dict[str, str],
    a_ids: dict[str, str],
    markers: set[str],
) -> JsonDict:
    """Every tenant-scoped operation, called with B's key and A's ids (and again with
    look-alike ids that name nothing); the leaks found."""
    spec = httpx.get(f"{api}/openapi.json", timeout=30).json()
    operations = _operations(spec)
    # names that are not A's (a channel, a version, a month, the searched word) are the
    # same in both calls: only A's own ids get a look-alike
    fake_ids = {k: v if k in SHARED else _look_alike(v) for k, v in a_ids.items()}
    leaks: list[JsonDict] = []
    routes: list[JsonDict] = []
    unanswered: list[JsonDict] = []
    with httpx.Client(base_url=api, timeout=30) as client:

        def call(method: str, path: str, params: dict[str, str], body: Any) -> httpx.Response:
            kwargs: JsonDict = {"params": params, "headers": b_headers}
            if body is not None:
                kwargs["json"] = body
            try:
                return client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:  # no answer: nothing leaked, but say so
                return httpx.Response(599, text=f"no answer: {type(exc).__name__}")

        for method, template, op in operations:
            path, params, body = _request(spec, template, op, a_ids)
            real = call(method, path, params, body)
            fake_path, fake_params, fake_body = _request(spec, template, op, fake_ids)
            fake = call(method, fake_path, fake_params, fake_body)
            sent = json.dumps([path, params, body])
            found = sorted(m for m in markers if m in real.text and m not in sent)
            route = {
                "method": method,
                "path": template,
                "status": real.status_code,
                "look_alike_status": fake.status_code,
                "with_a_ids": sent != json.dumps([fake_path, fake_params, fake_body]),
            }
            routes.append(route)
            if found:
                leaks.append({**route, "kind": "data", "markers": found[:3]})
            elif 599 in (real.status_code, fake.status_code):
                unanswered.append(route)  # a timeout under load says nothing either way
            elif route["with_a_ids"] and real.status_code != fake.status_code:
                leaks.append({**route, "kind": "existence"})
        intact = _a_intact(client, a_headers, a_ids)
    for what, ok in intact.items():
        if not ok:
            leaks.append({"kind": "changed", "what": what})
    return {
        "operations": len(operations),
        "probed": len(routes),
        "requests": 2 * len(routes),
        "leaks": len(leaks),
        "leak_details": leaks,
        "unanswered": unanswered,
        "a_intact": intact,
        "routes": routes,
    }


def _a_intact(
    client: httpx.Client, headers: dict[str, str], ids: dict[str, str]
) -> dict[str, bool]:
    """A's own view of its resources after B's calls: all still there."""
    conversation = client.get(f"/v1/conversations/{ids['conversation_id']}", headers=headers)
    documents = client.get("/v1/knowledge/documents", headers=headers).text
    intents = client.get("/v1/intents", headers=headers).text
    keys = client.get("/v1/api-keys", headers=headers).text
    identities = client.get("/v1/identities", params={"user_id": ids["user_id"]}, headers=headers)
    return {
        "conversation": conversation.status_code == 200 and ids["canary"] in conversation.text,
        "knowledge_document": ids["document_id"] in documents,
        "intent": ids["intent"] in intents,
        "api_key": ids["key_id"] in keys,
        "identity": ids["external_id"] in identities.text,
    }


def seed_tenant_a(api: str, headers: dict[str, str], canary: str) -> dict[str, str]:
    """Resources of every kind for tenant A, each carrying the canary; their ids."""
    tag = uuid.uuid4().hex[:8]  # in the names B's probes write to B's own tenant too
    user = f"user-{tag}"

    def ok(response: httpx.Response) -> JsonDict:
        if response.status_code >= 300:
            raise ChatlakeError(f"{response.request.url}: {response.status_code} {response.text}")
        return dict(response.json()) if response.content else {}

    with httpx.Client(base_url=api, headers=headers, timeout=60) as c:
        message = ok(c.post("/v1/messages", json={"user_id": user, "text": f"hello {canary}"}))
        document = ok(
            c.post(
                "/v1/knowledge/documents",
                json={"title": f"doc {canary}", "text": f"The {canary} policy."},
            )
        )
        intent = f"ask_{tag}"
        ok(c.put(f"/v1/intents/{intent}", json={"examples": [f"{canary} one", f"{canary} two"]}))
        key = ok(c.post("/v1/api-keys", json={"name": f"key-{tag}"}))
        external = f"ext{tag}"
        ok(
            c.post(
                "/v1/identities",
                json={"user_id": user, "channel": "whatsapp", "external_id": external},
            )
        )
        tenant = ok(c.get("/v1/tenant"))
    return {
        "tenant_id": str(tenant.get("tenant_id", "")),
        "conversation_id": message["conversation_id"],
        "message_id": message["message_id"],
        "document_id": document["document_id"],
        "intent": intent,
        "key_id": str(key["key_id"]),
        "external_id": external,
        "user_id": user,
        "request_id": uuid.uuid4().hex,  # the caller puts A's erasure request here
        "invoice_id": str(uuid.uuid4()),
        "version": "1",
        "channel": "whatsapp",
        "canary": canary,
        "month": time.strftime("%Y-%m"),
        "reply_ids": ",".join(r["message_id"] for r in message.get("replies", [])),
    }


def markers_of(ids: dict[str, str]) -> set[str]:
    """What in an answer to B would be A's: the canary and A's ids (UUIDs and hex ids).
    A's names (its user, intent, identity) are not: B may use the same names in its own
    tenant, and B's probes do."""
    keep = (
        "tenant_id",
        "conversation_id",
        "message_id",
        "document_id",
        "key_id",
        "request_id",
        "canary",
    )
    found = {ids[k] for k in keep if ids.get(k)}
    return {m for m in found if len(m) >= 8 and not re.fullmatch(r"\d+", m)}
