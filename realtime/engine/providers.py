"""LLM provider clients, each speaking its provider's own HTTP API through httpx.

- `openai`, `openai_compatible` (vLLM, llama.cpp, Ollama): `POST {base}/chat/completions`,
  `Authorization: Bearer`;
- `azure_openai`: `POST {base}/openai/deployments/{model}/chat/completions?api-version=`,
  `api-key`;
- `anthropic`: `POST {base}/v1/messages`, `x-api-key`, `anthropic-version: 2023-06-01`;
- `gemini`: `POST {base}/v1beta/models/{model}:generateContent`, `x-goog-api-key`;
- `huggingface`: `POST {base}/models/{model}` (the Inference API) or, with a base_url,
  `{base}/generate` (a text-generation-inference server), `Authorization: Bearer`.

Every call retries 429 (honouring Retry-After), 5xx and refused connections with jittered
backoff; a timeout is not retried (the tier's time is up: the chain moves on). It reports
tokens. With `stream=True` the answer comes as server-sent events
(each provider's own event format); the timeout then bounds the wait for each event, not
the whole answer, and the text is assembled here.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import EventSource, SSEError

RETRIES = 2
MAX_RETRY_AFTER = 5.0  # seconds: a longer wait is a failure of this tier, not a pause
MAX_TOKENS = 512
AZURE_API_VERSION = "2024-10-21"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "huggingface": "https://api-inference.huggingface.co",
}


class ProviderError(Exception):
    """The provider did not give a usable answer (after retries)."""


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass(frozen=True)
class Endpoint:
    """One tier of a model chain, as the client needs it."""

    provider: str
    model: str
    base_url: str | None = None
    api_key: str | None = None
    api_version: str | None = None
    timeout_s: float = 10.0


@dataclass
class _Usage:
    """Text and token counts gathered from a stream's events."""

    parts: list[str] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def completion(self) -> Completion:
        return _checked("".join(self.parts), self.prompt_tokens, self.completion_tokens)


@dataclass(frozen=True)
class _Request:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


def _checked(text: Any, prompt: Any, completion: Any) -> Completion:
    if not isinstance(text, str) or not text.strip():
        raise ProviderError("empty answer")
    as_int = lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None  # noqa: E731
    return Completion(text.strip(), as_int(prompt), as_int(completion))


def _base(endpoint: Endpoint) -> str:
    base = endpoint.base_url or DEFAULT_BASE_URLS.get(endpoint.provider)
    if base is None:
        raise ProviderError(f"{endpoint.provider} needs a base_url")
    return base.rstrip("/")


# --- OpenAI Chat Completions (openai, openai_compatible, azure_openai) ----------------------


def _openai_request(endpoint: Endpoint, messages: list[dict[str, str]], stream: bool) -> _Request:
    body: dict[str, Any] = {"model": endpoint.model, "messages": messages}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    if endpoint.provider == "azure_openai":
        version = endpoint.api_version or AZURE_API_VERSION
        deployment = quote(endpoint.model, safe="")
        url = f"{_base(endpoint)}/openai/deployments/{deployment}/chat/completions"
        headers = {"api-key": endpoint.api_key} if endpoint.api_key else {}
        return _Request(f"{url}?api-version={version}", headers, body)
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    return _Request(f"{_base(endpoint)}/chat/completions", headers, body)


def _openai_answer(body: Any) -> Completion:
    try:
        text = body["choices"][0]["message"]["content"]
        usage = body.get("usage") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ProviderError("malformed answer: no choices[0].message.content") from None
    return _checked(text, usage.get("prompt_tokens"), usage.get("completion_tokens"))


def _openai_event(event: str, data: Any, into: _Usage) -> bool:
    if isinstance(data, dict) and data.get("usage"):
        into.prompt_tokens = data["usage"].get("prompt_tokens")
        into.completion_tokens = data["usage"].get("completion_tokens")
    for choice in (data or {}).get("choices") or []:
        piece = (choice.get("delta") or {}).get("content")
        if isinstance(piece, str):
            into.parts.append(piece)
    return False


# --- Anthropic Messages -----------------------------------------------------------------------


def _anthropic_request(
    endpoint: Endpoint, messages: list[dict[str, str]], stream: bool
) -> _Request:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = _alternating([m for m in messages if m["role"] != "system"])
    body: dict[str, Any] = {"model": endpoint.model, "max_tokens": MAX_TOKENS, "messages": turns}
    if system:
        body["system"] = system
    if stream:
        body["stream"] = True
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    if endpoint.api_key:
        headers["x-api-key"] = endpoint.api_key
    return _Request(f"{_base(endpoint)}/v1/messages", headers, body)


def _alternating(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Anthropic and Gemini want user and assistant turns to alternate: merge neighbours."""
    merged: list[dict[str, str]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {
                **merged[-1],
                "content": merged[-1]["content"] + "\n" + message["content"],
            }
        else:
            merged.append(dict(message))
    return merged


def _anthropic_answer(body: Any) -> Completion:
    try:
        blocks = body["content"]
        text = "".join(b["text"] for b in blocks if b.get("type") == "text")
        usage = body.get("usage") or {}
    except (KeyError, TypeError, AttributeError):
        raise ProviderError("malformed answer: no content blocks") from None
    return _checked(text, usage.get("input_tokens"), usage.get("output_tokens"))


def _anthropic_event(event: str, data: Any, into: _Usage) -> bool:
    if event == "error" or (isinstance(data, dict) and data.get("type") == "error"):
        raise ProviderError(f"stream error: {_error_message_of(data)}")
    if event == "message_start":
        usage = ((data or {}).get("message") or {}).get("usage") or {}
        into.prompt_tokens = usage.get("input_tokens")
    elif event == "content_block_delta":
        delta = (data or {}).get("delta") or {}
        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
            into.parts.append(delta["text"])
    elif event == "message_delta":
        into.completion_tokens = ((data or {}).get("usage") or {}).get("output_tokens")
    return event == "message_stop"


# --- Google Gemini generateContent ------------------------------------------------------------


def _gemini_request(endpoint: Endpoint, messages: list[dict[str, str]], stream: bool) -> _Request:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = _alternating([m for m in messages if m["role"] != "system"])
    body: dict[str, Any] = {
        "contents": [
            {"role": "model" if m["role"] == "assistant" else "user",
             "parts": [{"text": m["content"]}]}
            for m in turns
        ],
        "generationConfig": {"maxOutputTokens": MAX_TOKENS},
    }  # fmt: skip
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    headers = {"x-goog-api-key": endpoint.api_key} if endpoint.api_key else {}
    model = quote(endpoint.model, safe="")
    return _Request(f"{_base(endpoint)}/v1beta/models/{model}:{method}", headers, body)


def _gemini_parts(body: Any) -> tuple[str, dict[str, Any]]:
    candidates = body.get("candidates") or []
    if not candidates:
        reason = (body.get("promptFeedback") or {}).get("blockReason")
        raise ProviderError(
            f"no candidates (blocked: {reason})" if reason else "malformed answer: no candidates"
        )
    parts = (candidates[0].get("content") or {}).get("parts") or []
    text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str))
    return text, body.get("usageMetadata") or {}


def _gemini_answer(body: Any) -> Completion:
    try:
        text, usage = _gemini_parts(body)
    except (KeyError, TypeError, AttributeError):
        raise ProviderError("malformed answer: no candidates[0].content.parts") from None
    return _checked(text, usage.get("promptTokenCount"), usage.get("candidatesTokenCount"))


def _gemini_event(event: str, data: Any, into: _Usage) -> bool:
    try:
        text, usage = _gemini_parts(data)
    except (KeyError, TypeError, AttributeError):
        raise ProviderError("malformed stream event") from None
    into.parts.append(text)
    if usage:
        into.prompt_tokens = usage.get("promptTokenCount")
        into.completion_tokens = usage.get("candidatesTokenCount")
    return False


# --- Hugging Face (Inference API, or a TGI server at base_url) --------------------------------


def _hf_prompt(messages: list[dict[str, str]]) -> str:
    lines = []
    for m in messages:
        lines.append(m["content"] if m["role"] == "system" else f"{m['role']}: {m['content']}")
    return "\n\n".join(lines) + "\n\nassistant:"


def _hf_request(endpoint: Endpoint, messages: list[dict[str, str]], stream: bool) -> _Request:
    body: dict[str, Any] = {
        "inputs": _hf_prompt(messages),
        "parameters": {"max_new_tokens": MAX_TOKENS, "return_full_text": False, "details": True},
    }
    if endpoint.base_url:  # a text-generation-inference server of the tenant's own
        url = f"{_base(endpoint)}/{'generate_stream' if stream else 'generate'}"
    else:
        url = f"{_base(endpoint)}/models/{quote(endpoint.model, safe='/')}"  # org/name
        if stream:
            body["stream"] = True
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    return _Request(url, headers, body)


def _hf_answer(body: Any) -> Completion:
    try:
        first = body[0] if isinstance(body, list) else body
        text = first["generated_text"]
        details = first.get("details") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ProviderError("malformed answer: no generated_text") from None
    return _checked(text, None, details.get("generated_tokens"))


def _hf_event(event: str, data: Any, into: _Usage) -> bool:
    if isinstance(data, dict) and data.get("error"):
        raise ProviderError(f"stream error: {str(data['error'])[:200]}")
    try:
        token = data["token"]
    except (KeyError, TypeError):
        raise ProviderError("malformed stream event: no token") from None
    if not token.get("special") and isinstance(token.get("text"), str):
        into.parts.append(token["text"])
    details = data.get("details") or {}
    if details.get("generated_tokens") is not None:
        into.completion_tokens = details["generated_tokens"]
    return data.get("generated_text") is not None


@dataclass(frozen=True)
class _Wire:
    request: Callable[[Endpoint, list[dict[str, str]], bool], _Request]
    answer: Callable[[Any], Completion]
    event: Callable[[str, Any, _Usage], bool]  # True: the last event of the stream


WIRES = {
    "openai": _Wire(_openai_request, _openai_answer, _openai_event),
    "openai_compatible": _Wire(_openai_request, _openai_answer, _openai_event),
    "azure_openai": _Wire(_openai_request, _openai_answer, _openai_event),
    "anthropic": _Wire(_anthropic_request, _anthropic_answer, _anthropic_event),
    "gemini": _Wire(_gemini_request, _gemini_answer, _gemini_event),
    "huggingface": _Wire(_hf_request, _hf_answer, _hf_event),
}


# --- the call: retries, errors, streams --------------------------------------------------------


def _retry_after(response: httpx.Response, attempt: int) -> float:
    header = response.headers.get("retry-after")
    try:
        wait = float(header) if header is not None else 0.2 * 2**attempt
    except ValueError:
        wait = 0.2 * 2**attempt
    return min(MAX_RETRY_AFTER, max(0.0, wait)) + random.uniform(0, 0.05)


def _error_message_of(body: Any) -> str:
    """The message in any of the providers' error bodies."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)[:200]
    return str(error if error is not None else body)[:200]


def _error_message(response: httpx.Response) -> str:
    try:
        return _error_message_of(response.json())
    except ValueError:
        return response.text[:200]


async def _events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    try:
        async for sse in EventSource(response).aiter_sse():
            if sse.data == "[DONE]":
                return
            if not sse.data:
                continue
            try:
                yield sse.event, json.loads(sse.data)
            except ValueError:
                raise ProviderError("malformed stream event: not JSON") from None
    except SSEError as exc:
        raise ProviderError(f"not an event stream: {exc}") from None


async def complete(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    messages: list[dict[str, str]],
    *,
    stream: bool = False,
) -> Completion:
    """One answer from `endpoint`'s provider for `messages` (OpenAI-style role/content)."""
    wire = WIRES.get(endpoint.provider)
    if wire is None:
        raise ProviderError(f"unknown provider {endpoint.provider!r}")
    try:
        request = wire.request(endpoint, messages, stream)
    except (ValueError, UnicodeError) as exc:  # e.g. a model name no URL can carry
        raise ProviderError(f"cannot build the request: {exc}") from None
    for attempt in range(RETRIES + 1):
        try:
            async with client.stream(
                "POST", request.url, json=request.body, headers=request.headers,
                timeout=endpoint.timeout_s,
            ) as response:  # fmt: skip
                if response.status_code == 429 or response.status_code >= 500:
                    if attempt == RETRIES:
                        await response.aread()
                        raise ProviderError(
                            f"HTTP {response.status_code} after {RETRIES + 1} attempts: "
                            f"{_error_message(response)}"
                        )
                    wait = _retry_after(response, attempt)
                elif response.status_code >= 400:
                    await response.aread()
                    raise ProviderError(f"HTTP {response.status_code}: {_error_message(response)}")
                elif stream:
                    return await _streamed(wire, response)
                else:
                    async with asyncio.timeout(endpoint.timeout_s):  # the whole body, too
                        await response.aread()
                    try:
                        body = response.json()
                    except ValueError:
                        raise ProviderError("malformed answer: not JSON") from None
                    return wire.answer(body)
        except TimeoutError:
            raise ProviderError(f"Timeout: no answer within {endpoint.timeout_s} s") from None
        except httpx.HTTPError as exc:
            if attempt == RETRIES or isinstance(exc, httpx.TimeoutException | httpx.StreamError):
                raise ProviderError(f"{type(exc).__name__}: {exc}") from None
            wait = 0.1 * 2**attempt + random.uniform(0, 0.05)
        except ProviderError:
            raise
        except Exception as exc:  # a URL or body the transport refuses: this tier failed
            raise ProviderError(f"{type(exc).__name__}: {exc}") from None
        await asyncio.sleep(wait)
    raise ProviderError("no attempt made")  # for the type checker: the loop always returns


async def _streamed(wire: _Wire, response: httpx.Response) -> Completion:
    usage = _Usage()
    async for event, data in _events(response):
        if wire.event(event, data, usage):
            break
    return usage.completion()
