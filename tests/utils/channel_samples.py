"""The channels' documented sample webhook payloads, one per supported message type.

Shapes follow each provider's reference: WhatsApp Cloud API webhook payload examples,
Messenger Platform webhook events, Slack Events API and block_actions payloads, Bot
Framework activities, and Twilio's SMS/MMS and voice (Gather) request parameters. The
WhatsApp envelope is bench/webhooks.py's (the benches send it too).
"""

from __future__ import annotations

from typing import Any

from bench.webhooks import WA_PHONE_ID as WA_PHONE_ID  # the tests take them from here
from bench.webhooks import WA_USER
from bench.webhooks import whatsapp as whatsapp

WHATSAPP_MESSAGES: dict[str, dict[str, Any]] = {
    "text": {
        "id": "wamid.text1",
        "type": "text",
        "text": {"body": "Does it come in another color?"},
    },
    "image": {
        "id": "wamid.image1",
        "type": "image",
        "image": {
            "caption": "Here it is",
            "mime_type": "image/jpeg",
            "sha256": "YkP5ddEYdv9OoUqzp5XX9Sye6BAIWe6qf3h0fsqbSO8=",
            "id": "1003383421387256",
        },
    },
    "file": {
        "id": "wamid.doc1",
        "type": "document",
        "document": {
            "filename": "receipt.pdf",
            "mime_type": "application/pdf",
            "sha256": "abc",
            "id": "2001",
        },
    },
    "audio": {
        "id": "wamid.audio1",
        "type": "audio",
        "audio": {
            "mime_type": "audio/ogg; codecs=opus",
            "sha256": "x",
            "id": "2002",
            "voice": True,
        },
    },
    "video": {
        "id": "wamid.video1",
        "type": "video",
        "video": {"caption": "unboxing", "mime_type": "video/mp4", "id": "2003"},
    },
    "sticker": {
        "id": "wamid.sticker1",
        "type": "sticker",
        "sticker": {"mime_type": "image/webp", "sha256": "y", "id": "2004", "animated": False},
    },
    "location": {
        "id": "wamid.loc1",
        "type": "location",
        "location": {
            "address": "1 Hacker Way, Menlo Park, CA 94025",
            "latitude": 37.483307,
            "longitude": -122.148981,
            "name": "Main Street Beach",
            "url": "https://foo.bar",
        },
    },
    "contact": {
        "id": "wamid.contact1",
        "type": "contacts",
        "contacts": [
            {
                "name": {"formatted_name": "Barbara J. Johnson", "first_name": "Barbara"},
                "phones": [{"phone": "+1 (415) 555-0123", "type": "CELL"}],
            }
        ],
    },
    "postback": {
        "id": "wamid.button1",
        "type": "interactive",
        "interactive": {
            "type": "button_reply",
            "button_reply": {"id": "track", "title": "Track order"},
        },
    },
    "list_reply": {
        "id": "wamid.list1",
        "type": "interactive",
        "interactive": {
            "type": "list_reply",
            "list_reply": {"id": "size_m", "title": "Medium", "description": "M"},
        },
    },
    "quick_reply": {
        "id": "wamid.tmplbtn1",
        "type": "button",
        "button": {"payload": "STOP_PROMOS", "text": "Stop promotions"},
    },
    "reaction": {
        "id": "wamid.react1",
        "type": "reaction",
        "reaction": {"message_id": "wamid.out1", "emoji": "\U0001f44d"},
    },
}

WHATSAPP_STATUS = [
    {"id": "wamid.out1", "status": "read", "timestamp": "1750263773", "recipient_id": WA_USER}
]

PAGE_ID = "1067280970047460"
PSID = "6990373667686932"


def messenger(item: dict[str, Any], user: str = PSID) -> dict[str, Any]:
    return {
        "object": "page",
        "entry": [
            {
                "id": PAGE_ID,
                "time": 1458692752478,
                "messaging": [
                    {
                        "sender": {"id": user},
                        "recipient": {"id": PAGE_ID},
                        "timestamp": 1458692752478,
                        **item,
                    }
                ],
            }
        ],
    }


MESSENGER_ITEMS: dict[str, dict[str, Any]] = {
    "text": {"message": {"mid": "m_text1", "text": "hello, world!"}},
    "image": {
        "message": {
            "mid": "m_image1",
            "attachments": [
                {"type": "image", "payload": {"url": "https://scontent.xx.fbcdn.net/a.jpg"}}
            ],
        }
    },
    "audio": {
        "message": {
            "mid": "m_audio1",
            "attachments": [{"type": "audio", "payload": {"url": "https://cdn.fbsbx.com/a.mp4"}}],
        }
    },
    "video": {
        "message": {
            "mid": "m_video1",
            "attachments": [
                {"type": "video", "payload": {"url": "https://video.xx.fbcdn.net/v.mp4"}}
            ],
        }
    },
    "file": {
        "message": {
            "mid": "m_file1",
            "attachments": [{"type": "file", "payload": {"url": "https://cdn.fbsbx.com/f.pdf"}}],
        }
    },
    "sticker": {
        "message": {
            "mid": "m_sticker1",
            "sticker_id": 369239263222822,
            "attachments": [
                {
                    "type": "image",
                    "payload": {
                        "url": "https://scontent.xx.fbcdn.net/s.png",
                        "sticker_id": 369239263222822,
                    },
                }
            ],
        }
    },
    "location": {
        "message": {
            "mid": "m_loc1",
            "attachments": [
                {"type": "location", "payload": {"coordinates": {"lat": 52.52, "long": 13.405}}}
            ],
        }
    },
    "quick_reply": {
        "message": {"mid": "m_qr1", "text": "Red", "quick_reply": {"payload": "COLOR_RED"}}
    },
    "postback": {"postback": {"mid": "m_pb1", "title": "Track order", "payload": "TRACK"}},
    "reaction": {
        "reaction": {"mid": "m_out1", "action": "react", "emoji": "\u2764", "reaction": "love"}
    },
    "delivery": {"delivery": {"mids": ["m_out1"], "watermark": 1458668856253}},
    "read": {"read": {"watermark": 1458668856253}},
    "echo": {
        "message": {
            "mid": "m_echo1",
            "is_echo": True,
            "app_id": 1517776481860111,
            "text": "our own reply",
        }
    },
}

SLACK_USER = "U2147483697"
SLACK_CHANNEL = "D0LAN2Q65"


def slack_event(event: dict[str, Any], event_id: str = "Ev0PV52K21") -> dict[str, Any]:
    return {
        "token": "XXYYZZ",
        "team_id": "T123ABC456",
        "api_app_id": "A123ABC456",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1355517523,
        "authorizations": [{"team_id": "T123ABC456", "user_id": "U0BOT", "is_bot": True}],
    }


SLACK_EVENTS: dict[str, dict[str, Any]] = {
    "text": {
        "type": "message",
        "channel": SLACK_CHANNEL,
        "user": SLACK_USER,
        "text": "Live long and prospect.",
        "ts": "1355517523.000005",
        "channel_type": "im",
    },
    "image": {
        "type": "message",
        "subtype": "file_share",
        "channel": SLACK_CHANNEL,
        "user": SLACK_USER,
        "text": "look",
        "ts": "1355517524.000001",
        "files": [
            {
                "id": "F1",
                "name": "shot.png",
                "mimetype": "image/png",
                "url_private": "https://files.slack.com/files-pri/T1-F1/shot.png",
            }
        ],
    },
    "mention": {
        "type": "app_mention",
        "channel": "C0LAN2Q65",
        "user": SLACK_USER,
        "text": "<@U0BOT> hello",
        "ts": "1515449522.000016",
    },
    "reaction": {
        "type": "reaction_added",
        "user": SLACK_USER,
        "reaction": "thumbsup",
        "item": {"type": "message", "channel": SLACK_CHANNEL, "ts": "1360782400.498405"},
    },
    "bot": {
        "type": "message",
        "channel": SLACK_CHANNEL,
        "bot_id": "B123",
        "text": "our own reply",
        "ts": "1355517525.000001",
    },
}

SLACK_ACTIONS = {
    "type": "block_actions",
    "user": {"id": SLACK_USER, "username": "spengler"},
    "api_app_id": "A123ABC456",
    "trigger_id": "12321423423.333649436676",
    "container": {"type": "message", "channel_id": SLACK_CHANNEL},
    "channel": {"id": SLACK_CHANNEL, "name": "directmessage"},
    "actions": [
        {
            "action_id": "choice_0",
            "block_id": "b1",
            "type": "button",
            "text": {"type": "plain_text", "text": "Track order"},
            "value": "track",
            "action_ts": "1548426417.840180",
        }
    ],
}

TEAMS_USER = (
    "29:1XJKJMvc5GBtc2JwZq0oj8tHZmzrQgFmB39ATiQWA85gQtHieVkKilBZ9XHoq9j7Zaqt7CZ-NJWi7me2kHTL3Bw"
)
TEAMS_CONVERSATION = "a:1YvKhwiRzDr1e6nkCFR2Y8oBZIL3RdxiVLzXvmI8XJ7T-SV8cCbPnCiO-lo2JBBGGMcZa"


def teams_activity(service_url: str, **fields: Any) -> dict[str, Any]:
    activity = {
        "type": "message",
        "id": "1481567603816",
        "timestamp": "2016-12-12T18:33:23.78Z",
        "serviceUrl": service_url,
        "channelId": "msteams",
        "from": {"id": TEAMS_USER, "name": "Megan Bowen", "aadObjectId": "d7a4bc0c"},
        "conversation": {"conversationType": "personal", "id": TEAMS_CONVERSATION},
        "recipient": {"id": "28:c9e8c047-2a74-40a2-b28a-b162d5f5327c", "name": "Bot"},
        "text": "hello",
        "textFormat": "plain",
        "locale": "en-US",
        "channelData": {"tenant": {"id": "72f988bf"}},
    }
    activity.update(fields)
    return activity


def twilio_sms(
    body: str = "Hello there", sid: str = "SM4a2d56f2e6e7c0f52b3e6f4c2f5e1a11", **extra: str
) -> dict[str, str]:
    form = {
        "ToCountry": "US",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "SmsSid": sid,
        "SmsStatus": "received",
        "Body": body,
        "To": "+15005550006",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": "AC0123456789",
        "From": "+14155552671",
        "ApiVersion": "2010-04-01",
    }
    form.update(extra)
    return form


def twilio_voice(speech: str | None = None, **extra: str) -> dict[str, str]:
    form = {
        "CallSid": "CA5e9e2ab6a3f63d6f4b2d8cbd2b0d8b67",
        "AccountSid": "AC0123456789",
        "From": "+14155552671",
        "To": "+15005550006",
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }
    if speech is not None:
        form.update({"SpeechResult": speech, "Confidence": "0.9122"})
    form.update(extra)
    return form


# Rich replies, one per reply type, as a flow's `say` gives them.
REPLIES: dict[str, dict[str, Any]] = {
    "text": {"type": "text", "text": "Plain words"},
    "image": {"type": "image", "url": "https://cdn.example.com/p.png", "text": "Our shop"},
    "file": {"type": "file", "url": "https://cdn.example.com/i.pdf", "filename": "invoice.pdf"},
    "audio": {"type": "audio", "url": "https://cdn.example.com/a.mp3"},
    "video": {"type": "video", "url": "https://cdn.example.com/v.mp4", "text": "How-to"},
    "sticker": {"type": "sticker", "url": "https://cdn.example.com/s.webp"},
    "location": {
        "type": "location",
        "latitude": 52.52,
        "longitude": 13.405,
        "name": "Shop",
        "address": "Unter den Linden 1",
    },
    "contact": {
        "type": "contact",
        "name": "Support",
        "phone": "+4930123456",
        "email": "help@example.com",
    },
    "quick_replies": {
        "type": "quick_replies",
        "text": "Which color?",
        "options": [{"title": "Red", "payload": "RED"}, {"title": "Blue", "payload": "BLUE"}],
    },
    "buttons": {
        "type": "buttons",
        "text": "What next?",
        "buttons": [
            {"title": "Track order", "payload": "TRACK"},
            {"title": "Open site", "url": "https://example.com"},
        ],
    },
    "carousel": {
        "type": "carousel",
        "text": "Our picks",
        "cards": [
            {
                "title": "Boots",
                "subtitle": "$80",
                "image_url": "https://cdn.example.com/b.png",
                "buttons": [{"title": "Buy boots", "payload": "BUY_BOOTS"}],
            },
            {
                "title": "Hat",
                "subtitle": "$20",
                "buttons": [{"title": "Buy hat", "payload": "BUY_HAT"}],
            },
        ],
    },
    "list": {
        "type": "list",
        "text": "Pick a size",
        "button": "Sizes",
        "items": [
            {"title": "Small", "payload": "S"},
            {"title": "Medium", "payload": "M", "description": "most popular"},
        ],
    },
    "template": {
        "type": "template",
        "name": "order_update",
        "language": "en_US",
        "parameters": ["12345", "Friday"],
        "text": "Order 12345 arrives Friday",
    },
    "reaction": {"type": "reaction", "emoji": "\U0001f44d", "message_id": "wamid.in1"},
    "typing": {"type": "typing"},
}
