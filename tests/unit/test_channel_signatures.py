"""Webhook signatures against the providers' own documented examples, and every way a
request can fail verification."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from realtime.channels.signatures import (
    SignatureError,
    verify_meta,
    verify_slack,
    verify_twilio,
)

# Twilio's documented example ("Validating signatures from Twilio")
TWILIO_TOKEN = "12345"
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
                 "From": "+12349013030", "To": "+18005551212"}  # fmt: skip
TWILIO_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
# Slack's documented example ("Verifying requests from Slack")
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TIMESTAMP = "1531420618"
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
    b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
    b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    b"%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_twilio_documented_example():
    verify_twilio(TWILIO_TOKEN, TWILIO_URL, TWILIO_PARAMS.items(), TWILIO_SIGNATURE)
    changed = {**TWILIO_PARAMS, "Digits": "1235"}
    for url, params, token in (
        (TWILIO_URL, changed.items(), TWILIO_TOKEN),  # a parameter altered
        (TWILIO_URL.replace("https", "http"), TWILIO_PARAMS.items(), TWILIO_TOKEN),  # the URL
        (TWILIO_URL, TWILIO_PARAMS.items(), "54321"),  # another account's token
    ):
        with pytest.raises(SignatureError):
            verify_twilio(token, url, params, TWILIO_SIGNATURE)


def test_slack_documented_example_and_its_five_minutes():
    sent = int(SLACK_TIMESTAMP)
    verify_slack(SLACK_SECRET, SLACK_BODY, SLACK_TIMESTAMP, SLACK_SIGNATURE, now=sent + 299)
    with pytest.raises(SignatureError, match="five minutes"):  # a replay, later
        verify_slack(SLACK_SECRET, SLACK_BODY, SLACK_TIMESTAMP, SLACK_SIGNATURE, now=sent + 301)
    with pytest.raises(SignatureError, match="does not match"):
        verify_slack(SLACK_SECRET, SLACK_BODY + b"&x=1", SLACK_TIMESTAMP, SLACK_SIGNATURE,
                     now=sent)  # fmt: skip
    with pytest.raises(SignatureError, match="not a number"):
        verify_slack(SLACK_SECRET, SLACK_BODY, "yesterday", SLACK_SIGNATURE, now=sent)


def test_meta_signature_is_the_hmac_of_the_raw_body():
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    header = "sha256=" + hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()
    verify_meta("app-secret", body, header)
    for bad in (header.replace("sha256=", "sha1="), header[:-1] + "0", "", None):
        with pytest.raises(SignatureError):
            verify_meta("app-secret", body, bad)
    with pytest.raises(SignatureError):  # the same JSON re-serialized is not the raw body
        verify_meta("app-secret", body.replace(b":", b": "), header)


@pytest.mark.parametrize("secret", [None, ""])
def test_a_channel_without_its_secret_refuses_everything(secret):
    with pytest.raises(SignatureError, match="no secret"):
        verify_meta(secret, b"{}", "sha256=00")
    with pytest.raises(SignatureError, match="no secret"):
        verify_slack(secret, SLACK_BODY, SLACK_TIMESTAMP, SLACK_SIGNATURE)
    with pytest.raises(SignatureError, match="no secret"):
        verify_twilio(secret, TWILIO_URL, TWILIO_PARAMS.items(), TWILIO_SIGNATURE)
