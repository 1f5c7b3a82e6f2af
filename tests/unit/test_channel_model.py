"""Each channel's documented payloads parsed into the message model, and every reply type
rendered into each channel's format, natively or degraded (and the degradation named)."""

from __future__ import annotations

import pytest

from realtime.channels import messenger, slack, teams, twilio, web, whatsapp
from realtime.channels.base import PayloadError
from realtime.channels.model import text_only
from realtime.engine.replies import REPLY_TYPES, as_text, validate_reply
from realtime.outbound import url_problem
from tests.utils import channel_samples as samples


@pytest.mark.parametrize(
    ("sample", "kind", "text", "payload"),
    [
        ("text", "text", "Does it come in another color?", None),
        ("image", "image", "Here it is", {"id": "1003383421387256"}),
        ("file", "file", "", {"filename": "receipt.pdf"}),
        ("audio", "audio", "", {"id": "2002"}),
        ("video", "video", "unboxing", {"id": "2003"}),
        ("sticker", "sticker", "", {"id": "2004"}),
        ("location", "location", "Main Street Beach", {"latitude": 37.483307}),
        ("contact", "contact", "Barbara J. Johnson", None),
        ("postback", "postback", "Track order", {"payload": "track"}),
        ("list_reply", "postback", "Medium", {"payload": "size_m"}),
        ("quick_reply", "quick_reply", "Stop promotions", {"payload": "STOP_PROMOS"}),
        ("reaction", "reaction", "\U0001f44d", {"message_id": "wamid.out1"}),
    ],
)
def test_whatsapp_messages_are_normalized(sample, kind, text, payload):
    [inbound] = whatsapp.parse(samples.whatsapp(samples.WHATSAPP_MESSAGES[sample]))
    assert (inbound.type, inbound.text) == (kind, text)
    assert inbound.sender == samples.WA_USER
    assert inbound.message_id == samples.WHATSAPP_MESSAGES[sample]["id"]
    assert inbound.address["phone_number_id"] == samples.WA_PHONE_ID
    assert inbound.name == "Sheena Nelson"
    for key, value in (payload or {}).items():
        assert inbound.payload[key] == value


def test_whatsapp_statuses_and_foreign_payloads():
    [status] = whatsapp.parse(samples.whatsapp(statuses=samples.WHATSAPP_STATUS))
    assert status.type == "status" and status.payload["status"] == "read"
    with pytest.raises(PayloadError):
        whatsapp.parse({"object": "page", "entry": []})
    unsupported = {"id": "wamid.u", "type": "unsupported", "errors": [{"code": 131051}]}
    assert whatsapp.parse(samples.whatsapp(unsupported)) == []


@pytest.mark.parametrize(
    ("sample", "kind", "key", "value"),
    [
        ("text", "text", None, None),
        ("image", "image", "url", "https://scontent.xx.fbcdn.net/a.jpg"),
        ("audio", "audio", "url", "https://cdn.fbsbx.com/a.mp4"),
        ("video", "video", "url", "https://video.xx.fbcdn.net/v.mp4"),
        ("file", "file", "url", "https://cdn.fbsbx.com/f.pdf"),
        ("sticker", "sticker", "sticker_id", 369239263222822),
        ("location", "location", "latitude", 52.52),
        ("quick_reply", "quick_reply", "payload", "COLOR_RED"),
        ("postback", "postback", "payload", "TRACK"),
        ("reaction", "reaction", "emoji", "\u2764"),
        ("delivery", "status", "status", "delivered"),
        ("read", "status", "status", "read"),
    ],
)
def test_messenger_items_are_normalized(sample, kind, key, value):
    [inbound] = messenger.parse(samples.messenger(samples.MESSENGER_ITEMS[sample]))
    assert inbound.type == kind
    assert inbound.sender == samples.PSID
    assert inbound.address == {"psid": samples.PSID, "page_id": samples.PAGE_ID}
    if key:
        assert inbound.payload[key] == value


def test_messenger_echoes_are_not_messages():
    assert messenger.parse(samples.messenger(samples.MESSENGER_ITEMS["echo"])) == []


def test_slack_events_and_actions_are_normalized():
    [text] = slack.parse_event(samples.slack_event(samples.SLACK_EVENTS["text"]))
    assert (text.type, text.text, text.sender) == (
        "text",
        "Live long and prospect.",
        samples.SLACK_USER,
    )
    assert text.message_id == "msg:D0LAN2Q65:1355517523.000005"
    assert text.address["channel"] == samples.SLACK_CHANNEL
    [image] = slack.parse_event(samples.slack_event(samples.SLACK_EVENTS["image"]))
    assert image.type == "image" and image.payload["name"] == "shot.png"
    [mention] = slack.parse_event(samples.slack_event(samples.SLACK_EVENTS["mention"]))
    assert mention.type == "text"
    [reaction] = slack.parse_event(samples.slack_event(samples.SLACK_EVENTS["reaction"]))
    assert reaction.type == "reaction" and reaction.payload["emoji"] == "thumbsup"
    assert slack.parse_event(samples.slack_event(samples.SLACK_EVENTS["bot"])) == []
    [action] = slack.parse_interaction(samples.SLACK_ACTIONS)
    assert (action.type, action.text, action.payload["payload"]) == (
        "postback",
        "Track order",
        "track",
    )
    with pytest.raises(PayloadError):
        slack.parse_event({"type": "event_callback", "event": {}})


def test_teams_activities_are_normalized():
    url = "https://smba.trafficmanager.net/amer/"
    [text] = teams.parse(samples.teams_activity(url))
    assert (text.type, text.text, text.name) == ("text", "hello", "Megan Bowen")
    assert text.address["conversation_id"] == samples.TEAMS_CONVERSATION
    image = samples.teams_activity(
        url,
        attachments=[
            {"contentType": "image/png", "contentUrl": "https://x/y.png", "name": "y.png"}
        ],
    )
    assert teams.parse(image)[0].type == "image"
    submit = samples.teams_activity(url, text="", value={"choice": "TRACK"})
    assert teams.parse(submit)[0].type == "postback"
    reaction = samples.teams_activity(
        url, type="messageReaction", reactionsAdded=[{"type": "like"}], replyToId="1:out"
    )
    assert teams.parse(reaction)[0].type == "reaction"
    assert teams.parse(samples.teams_activity(url, type="typing"))[0].type == "typing"
    assert teams.parse(samples.teams_activity(url, type="conversationUpdate")) == []
    with pytest.raises(PayloadError):
        teams.parse({"type": "message", "id": "1", "from": {"id": "x"}})


def test_twilio_sms_mms_and_status_callbacks_are_normalized():
    [sms] = twilio.parse_sms(samples.twilio_sms("hi"))
    assert (sms.type, sms.text, sms.sender) == ("text", "hi", "+14155552671")
    assert sms.address == {"to": "+14155552671", "from": "+15005550006"}
    mms = samples.twilio_sms(
        "",
        NumMedia="1",
        MediaContentType0="image/jpeg",
        MediaUrl0="https://api.twilio.com/media/ME1",
    )
    assert twilio.parse_sms(mms)[0].type == "image"
    where = samples.twilio_sms("", Latitude="52.5", Longitude="13.4")
    assert twilio.parse_sms(where)[0].type == "location"
    status = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+1", "From": "+2"}
    assert twilio.parse_sms(status)[0].type == "status"
    voice = twilio.parse_voice(samples.twilio_voice("where is my order"))
    assert voice.text == "where is my order"
    assert voice.message_id.startswith("CA5e9e2ab6a3f63d6f4b2d8cbd2b0d8b67:")
    assert twilio.parse_voice(samples.twilio_voice("something else")).message_id != voice.message_id
    with pytest.raises(PayloadError):
        twilio.parse_sms({"Body": "no sid"})


def test_every_reply_type_renders_on_every_channel():
    renderers = [
        whatsapp.render,
        messenger.render,
        slack.render,
        teams.render,
        twilio.render,
        web.render,
    ]
    assert set(samples.REPLIES) == set(REPLY_TYPES)
    for reply in samples.REPLIES.values():
        assert validate_reply(reply) is None
        for render in renderers:
            rendered = render(reply)
            assert isinstance(rendered.bodies, list)
            if reply["type"] == "text":
                assert rendered.degraded is None


@pytest.mark.parametrize(
    ("render", "native", "degraded"),
    [
        (
            whatsapp.render,
            {
                "text",
                "image",
                "file",
                "audio",
                "video",
                "sticker",
                "location",
                "contact",
                "list",
                "template",
                "reaction",
                "typing",
            },
            {
                "carousel": "carousel->text",
                "buttons": "buttons->text",
                "quick_replies": "quick_replies->buttons",
            },
        ),
        (
            messenger.render,
            {
                "text",
                "image",
                "file",
                "audio",
                "video",
                "quick_replies",
                "buttons",
                "carousel",
                "reaction",
                "typing",
            },
            {
                "list": "list->quick_replies",
                "location": "location->text",
                "contact": "contact->text",
                "template": "template->text",
                "sticker": "sticker->image",
            },
        ),
        (
            slack.render,
            {"text", "image", "buttons", "list", "carousel", "reaction"},
            {
                "file": "file->text",
                "audio": "audio->text",
                "video": "video->text",
                "location": "location->text",
                "typing": "typing->none",
                "quick_replies": "quick_replies->buttons",
            },
        ),
        (
            teams.render,
            {
                "text",
                "image",
                "file",
                "audio",
                "video",
                "quick_replies",
                "buttons",
                "carousel",
                "list",
                "typing",
            },
            {
                "location": "location->text",
                "template": "template->text",
                "reaction": "reaction->none",
            },
        ),
        (
            twilio.render,
            {"text", "image", "file", "audio", "video"},
            {
                "carousel": "carousel->text",
                "buttons": "buttons->text",
                "quick_replies": "quick_replies->text",
                "list": "list->text",
            },
        ),
        (
            web.render,
            {"text", "image", "carousel", "buttons", "list", "quick_replies"},
            {"template": "template->text", "sticker": "sticker->text"},
        ),
    ],
)
def test_degradations_are_named(render, native, degraded):
    for kind in native:
        assert render(samples.REPLIES[kind]).degraded is None, kind
    for kind, name in degraded.items():
        assert render(samples.REPLIES[kind]).degraded == name, kind


def test_native_shapes_follow_the_send_apis():
    [wa_buttons] = whatsapp.render(samples.REPLIES["quick_replies"]).bodies
    assert wa_buttons["interactive"]["type"] == "button"
    assert [b["reply"]["id"] for b in wa_buttons["interactive"]["action"]["buttons"]] == [
        "RED",
        "BLUE",
    ]
    [wa_list] = whatsapp.render(samples.REPLIES["list"]).bodies
    assert wa_list["interactive"]["action"]["button"] == "Sizes"
    [wa_template] = whatsapp.render(samples.REPLIES["template"]).bodies
    assert wa_template["template"]["components"][0]["parameters"][0] == {
        "type": "text",
        "text": "12345",
    }
    [fb_carousel] = messenger.render(samples.REPLIES["carousel"]).bodies
    payload = fb_carousel["message"]["attachment"]["payload"]
    assert payload["template_type"] == "generic" and len(payload["elements"]) == 2
    [fb_buttons] = messenger.render(samples.REPLIES["buttons"]).bodies
    kinds = [b["type"] for b in fb_buttons["message"]["attachment"]["payload"]["buttons"]]
    assert kinds == ["postback", "web_url"]
    [slack_buttons] = slack.render(samples.REPLIES["buttons"]).bodies
    actions = slack_buttons["blocks"][1]["elements"]
    assert actions[0]["value"] == "TRACK" and actions[1]["url"] == "https://example.com"
    assert slack_buttons["text"] == "What next?\n1. Track order\n2. Open site: https://example.com"
    [teams_carousel] = teams.render(samples.REPLIES["carousel"]).bodies
    assert teams_carousel["attachmentLayout"] == "carousel"
    [sms] = twilio.render(samples.REPLIES["carousel"]).bodies
    assert sms["Body"].startswith("Our picks\n1. Boots - $80")


def test_text_forms():
    assert as_text(samples.REPLIES["list"]) == "Pick a size\n1. Small\n2. Medium (most popular)"
    assert "maps.google.com/?q=52.52,13.405" in as_text(samples.REPLIES["location"])
    assert text_only(samples.REPLIES["typing"]).bodies == []
    assert validate_reply({"type": "buttons", "text": "x"}) == "a buttons reply needs buttons"
    assert validate_reply({"type": "hologram"}).startswith("unknown reply type")


def test_voice_twiml_gathers_speech_and_escapes():
    xml = twilio.twiml("Tom & Jerry <3", "https://h/v1/channels/twilio-voice/t?a=1&b=2")
    assert '<Gather input="speech"' in xml
    assert "Tom &amp; Jerry &lt;3" in xml
    assert 'action="https://h/v1/channels/twilio-voice/t?a=1&amp;b=2"' in xml


async def test_urls_a_tenant_gives_are_public_outside_development():
    assert await url_problem("http://127.0.0.1:9/x", allow_private=True) is None
    assert "https only" in await url_problem("http://example.com", allow_private=False)
    for private in (
        "https://127.0.0.1/",
        "https://10.1.2.3/",
        "https://169.254.169.254/latest",
        "https://[::1]/",
        "https://localhost/",
    ):
        assert "non-public" in await url_problem(private, allow_private=False), private
    assert "not an http(s) URL" in await url_problem("file:///etc/passwd", allow_private=True)


def test_a_reply_a_renderer_cannot_take_goes_as_text():
    from realtime.channels.dispatch import _safe

    broken = {"type": "reaction", "emoji": 7, "message_id": "1"}  # not what Slack takes
    rendered = _safe(slack.render)(broken)
    assert rendered.degraded == "reaction->text" and rendered.bodies == [{"text": "7"}]


def test_slack_message_and_mention_of_one_message_are_one_delivery():
    mention = dict(samples.SLACK_EVENTS["text"], type="app_mention")
    [a] = slack.parse_event(samples.slack_event(samples.SLACK_EVENTS["text"], "Ev1"))
    [b] = slack.parse_event(samples.slack_event(mention, "Ev2"))
    assert a.message_id == b.message_id


def test_teams_buttons_come_back_as_postbacks():
    [card] = teams.render(samples.REPLIES["buttons"]).bodies
    action = card["attachments"][0]["content"]["buttons"][0]
    assert action["type"] == "messageBack" and action["value"] == {"payload": "TRACK"}
    pressed = samples.teams_activity(
        "https://smba.trafficmanager.net/amer/", text="Track order", value=action["value"]
    )
    [inbound] = teams.parse(pressed)
    assert (inbound.type, inbound.payload["payload"]) == ("postback", "TRACK")
