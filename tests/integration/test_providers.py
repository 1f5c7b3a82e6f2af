"""Each provider client against a loopback server speaking that provider's wire format:
request shape, answers, streams, error bodies, 429 with Retry-After, 5xx, timeouts and
malformed answers."""

from __future__ import annotations

import httpx
import pytest

from realtime.engine.providers import DEFAULT_BASE_URLS, Endpoint, ProviderError, complete
from tests.utils.loopback import (
    Events,
    ScriptedServer,
    anthropic_message,
    chat_completion,
    gemini_content,
    hf_generated,
    streamed,
)

PROVIDERS = ["openai", "openai_compatible", "azure_openai", "anthropic", "gemini", "huggingface"]
ANSWERS = {
    "openai": chat_completion,
    "openai_compatible": chat_completion,
    "azure_openai": chat_completion,
    "anthropic": anthropic_message,
    "gemini": gemini_content,
    "huggingface": hf_generated,
}
# Each provider's documented error body.
ERRORS = {
    "openai": {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                         "code": "invalid_api_key"}},
    "anthropic": {"type": "error", "error": {"type": "authentication_error",
                                             "message": "invalid x-api-key"}},
    "gemini": {"error": {"code": 400, "message": "API key not valid",
                         "status": "INVALID_ARGUMENT"}},
    "huggingface": {"error": "Authorization header is correct, but the token seems invalid"},
}  # fmt: skip
ERRORS["openai_compatible"] = ERRORS["azure_openai"] = ERRORS["openai"]
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "earlier turn"},
    {"role": "user", "content": "Where is my order?"},
]


@pytest.fixture
def server():
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


def endpoint(provider: str, server: ScriptedServer, model: str = "model-a", **extra) -> Endpoint:
    fields = {"base_url": server.url, "api_key": "key-1", "timeout_s": 2.0, **extra}
    return Endpoint(provider, model, **fields)


async def call(provider: str, server: ScriptedServer, *, stream: bool = False, **extra):
    async with httpx.AsyncClient() as client:
        return await complete(client, endpoint(provider, server, **extra), MESSAGES, stream=stream)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_answer_with_its_tokens(provider, server):
    server.script.append((200, ANSWERS[provider]("Tomorrow by noon."), {}))
    completion = await call(provider, server)
    assert completion.text == "Tomorrow by noon."
    assert completion.completion_tokens == 5
    assert completion.prompt_tokens == (None if provider == "huggingface" else 12)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_streamed_answer_is_assembled_from_the_events(provider, server):
    server.script.append((200, streamed(provider, ["Tomorrow ", "by ", "noon."]), {}))
    completion = await call(provider, server, stream=True)
    assert completion.text == "Tomorrow by noon."
    assert completion.completion_tokens == 5
    request = server.requests[-1]
    if provider == "gemini":
        assert request["path"].endswith(":streamGenerateContent?alt=sse")
    elif provider == "huggingface":
        assert request["path"] == "/generate_stream"  # a TGI server at base_url
    else:
        assert request["body"]["stream"] is True


async def test_openai_request_shape(server):
    server.script.append((200, chat_completion("ok"), {}))
    await call("openai", server)
    request = server.requests[-1]
    assert request["path"] == "/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer key-1"
    assert request["body"] == {"model": "model-a", "messages": MESSAGES}


async def test_azure_request_names_the_deployment_and_api_version(server):
    server.script.append((200, chat_completion("ok"), {}))
    await call("azure_openai", server, api_version="2024-06-01")
    request = server.requests[-1]
    assert request["path"] == "/openai/deployments/model-a/chat/completions?api-version=2024-06-01"
    assert request["headers"]["api-key"] == "key-1"
    assert "Authorization" not in request["headers"]


async def test_anthropic_request_has_system_apart_and_alternating_turns(server):
    server.script.append((200, anthropic_message("ok"), {}))
    await call("anthropic", server)
    request = server.requests[-1]
    assert request["path"] == "/v1/messages"
    assert request["headers"]["x-api-key"] == "key-1"
    assert request["headers"]["anthropic-version"] == "2023-06-01"
    body = request["body"]
    assert body["system"] == "Be brief." and body["max_tokens"] > 0
    assert body["messages"] == [{"role": "user", "content": "earlier turn\nWhere is my order?"}]


async def test_gemini_request_uses_contents_and_system_instruction(server):
    server.script.append((200, gemini_content("ok"), {}))
    await call("gemini", server)
    request = server.requests[-1]
    assert request["path"] == "/v1beta/models/model-a:generateContent"
    assert request["headers"]["x-goog-api-key"] == "key-1"
    body = request["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "earlier turn\nWhere is my order?"}]}
    ]


async def test_huggingface_inference_api_and_tgi_paths(server, monkeypatch):
    monkeypatch.setitem(DEFAULT_BASE_URLS, "huggingface", server.url)  # the hosted API's place
    server.script += [(200, hf_generated("hosted"), {}), (200, {"generated_text": "own"}, {})]
    assert (await call("huggingface", server, base_url=None)).text == "hosted"
    hosted = server.requests[-1]
    assert hosted["path"] == "/models/model-a"
    assert hosted["headers"]["Authorization"] == "Bearer key-1"
    assert hosted["body"]["inputs"].endswith("user: Where is my order?\n\nassistant:")
    assert hosted["body"]["parameters"]["return_full_text"] is False
    assert (await call("huggingface", server)).text == "own"  # a TGI server at base_url
    assert server.requests[-1]["path"] == "/generate"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_error_body_gives_the_providers_message_without_retrying(provider, server):
    server.script.append((401, ERRORS[provider], {}))
    with pytest.raises(ProviderError, match=r"HTTP 401: .*(key|token)"):
        await call(provider, server)
    assert len(server.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_429_is_retried_after_retry_after(provider, server):
    server.script += [(429, ERRORS[provider], {"Retry-After": "0.1"}),
                      (200, ANSWERS[provider]("Patience pays."), {})]  # fmt: skip
    assert (await call(provider, server)).text == "Patience pays."
    assert len(server.requests) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_5xx_is_retried_then_given_up(provider, server):
    server.default = (503, ERRORS[provider], {})
    with pytest.raises(ProviderError, match="HTTP 503 after 3 attempts"):
        await call(provider, server)
    assert len(server.requests) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_slow_provider_times_out_without_retrying(provider, server):
    server.delay_s = 0.5
    server.default = (200, ANSWERS[provider]("too late"), {})
    with pytest.raises(ProviderError, match="Timeout"):
        await call(provider, server, timeout_s=0.1)
    assert len(server.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "body", [b"{not json", {"unexpected": True}, [], b""], ids=["bytes", "shape", "list", "empty"]
)
async def test_a_malformed_answer_is_a_provider_error(provider, server, body):
    server.script.append((200, body, {}))
    with pytest.raises(ProviderError, match=r"malformed|empty"):
        await call(provider, server)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_malformed_stream_is_a_provider_error(provider, server):
    server.script.append((200, Events([(None, "{not json")]), {}))
    with pytest.raises(ProviderError, match="malformed"):
        await call(provider, server, stream=True)


async def test_a_stream_that_is_not_an_event_stream_is_a_provider_error(server):
    server.script.append((200, chat_completion("plain JSON"), {}))
    with pytest.raises(ProviderError, match="not an event stream"):
        await call("openai", server, stream=True)


async def test_an_anthropic_error_event_mid_stream_is_a_provider_error(server):
    events = Events([("message_start", {"type": "message_start", "message": {"usage": {}}}),
                     ("error", {"type": "error", "error": {"type": "overloaded_error",
                                                           "message": "Overloaded"}})])  # fmt: skip
    server.script.append((200, events, {}))
    with pytest.raises(ProviderError, match="Overloaded"):
        await call("anthropic", server, stream=True)


async def test_a_gemini_blocked_prompt_is_a_provider_error(server):
    server.script.append((200, {"promptFeedback": {"blockReason": "SAFETY"}}, {}))
    with pytest.raises(ProviderError, match="SAFETY"):
        await call("gemini", server)


@pytest.mark.parametrize("provider", ["gemini", "azure_openai", "huggingface", "anthropic"])
@pytest.mark.parametrize("model", ["\x7f", "\t", "\ud83d", "a b#?"])
async def test_a_model_name_no_url_can_carry_is_a_provider_error(provider, server, model):
    server.default = (200, ANSWERS[provider]("fine"), {})
    async with httpx.AsyncClient() as client:
        try:
            await complete(client, endpoint(provider, server, model=model), MESSAGES)
        except ProviderError:
            pass  # refused cleanly; or, for a name that quotes into a URL, answered
