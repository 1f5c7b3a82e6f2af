"""A channel's `api_base_url` moved: the stored secrets stay behind (issue 17). Whoever can
PUT the configuration must not be able to point the sends at a host of their own and be
handed the bot token; the Teams OpenID documents are fetched under the outbound-URL rules,
failures answered with a generic text and remembered briefly."""

from __future__ import annotations

import orjson
import pytest

from tests.utils import channel_samples as samples
from tests.utils.channels import ChannelServer, slack_headers

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-BOT-SECRET"


@pytest.fixture
def servers():
    first, second = ChannelServer(), ChannelServer()
    yield first, second
    first.close()
    second.close()


def put(client, tenant, channel, body):
    response = client.put(f"/v1/channels/{channel}", json=body, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_new_api_base_url_drops_the_stored_secrets(client, tenant, servers):
    own, attacker = servers
    secrets = {"signing_secret": SIGNING_SECRET, "bot_token": BOT_TOKEN}
    put(client, tenant, "slack", {"secrets": secrets, "api_base_url": own.url})
    # the same endpoint (a trailing slash is no move) keeps them
    kept = put(client, tenant, "slack", {"api_base_url": own.url + "/", "enabled": True})
    assert kept["secrets_set"] == ["bot_token", "signing_secret"]

    moved = put(client, tenant, "slack", {"api_base_url": attacker.url})
    assert moved["secrets_set"] == []
    # a message Slack signs with the (old) signing secret is not answered at the new host
    url = f"/v1/channels/slack/{tenant.tenant_id}"
    raw = orjson.dumps(samples.slack_event(samples.SLACK_EVENTS["text"], "EvMOVED1"))
    answer = client.post(url, content=raw, headers=slack_headers(SIGNING_SECRET, raw))
    assert answer.status_code == 401
    assert not [r for r in attacker.sends() if BOT_TOKEN in str(r["headers"])]
    assert attacker.sends() == []

    # the owner moves it with the secrets in the same request: kept, and used there
    both = put(client, tenant, "slack", {"api_base_url": own.url, "secrets": secrets})
    assert both["secrets_set"] == ["bot_token", "signing_secret"]
    raw = orjson.dumps(samples.slack_event(samples.SLACK_EVENTS["text"], "EvMOVED2"))
    assert (
        client.post(url, content=raw, headers=slack_headers(SIGNING_SECRET, raw)).json()["answered"]
        == 1
    )
    [sent] = own.wait_for(1, "/api/")
    assert sent["headers"]["Authorization"] == f"Bearer {BOT_TOKEN}"


@pytest.mark.parametrize(
    ("channel", "secrets"),
    [
        ("whatsapp", {"access_token": "EAAG-SECRET", "app_secret": "s", "phone_number_id": "1"}),
        ("twilio", {"account_sid": "AC1", "auth_token": "twilio-SECRET"}),
        ("teams", {"app_id": "a", "app_password": "bf-SECRET"}),
    ],
)
def test_every_channel_drops_its_secrets_with_a_new_base(client, tenant, servers, channel, secrets):
    own, attacker = servers
    put(client, tenant, channel, {"secrets": secrets, "api_base_url": own.url})
    assert put(client, tenant, channel, {"api_base_url": attacker.url})["secrets_set"] == []
    # back to the vendor's own API (no base) is a move too
    put(client, tenant, channel, {"secrets": secrets, "api_base_url": own.url})
    assert put(client, tenant, channel, {"api_base_url": None})["secrets_set"] == []
