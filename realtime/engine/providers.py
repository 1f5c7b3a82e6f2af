"""LLM provider clients, speaking each provider's own HTTP API through httpx.

Built so far: the OpenAI Chat Completions wire format, used by `openai` and by any
`openai_compatible` server (vLLM, llama.cpp, Ollama). A call retries 429 (honouring
Retry-After) and 5xx with jittered backoff, gives up at its timeout, and reports tokens.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import httpx

OPENAI_BASE_URL = "https://api.openai.com/v1"
RETRIES = 2
MAX_RETRY_AFTER = 5.0  # seconds: a longer wait is a failure of this tier, not a pause


class ProviderError(Exception):
    """The provider did not give a usable answer (after retries)."""


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None


def _retry_after(response: httpx.Response, attempt: int) -> float:
    header = response.headers.get("retry-after")
    try:
        wait = float(header) if header is not None else 0.2 * 2**attempt
    except ValueError:
        wait = 0.2 * 2**attempt
    return min(MAX_RETRY_AFTER, wait) + random.uniform(0, 0.05)


async def openai_chat(
    client: httpx.AsyncClient,
    *,
    base_url: str | None,
    api_key: str | None,
    model: str,
    messages: list[dict[str, str]],
    timeout_s: float = 10.0,
) -> Completion:
    """One Chat Completions call: POST {base_url}/chat/completions."""
    url = f"{(base_url or OPENAI_BASE_URL).rstrip('/')}/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    payload = {"model": model, "messages": messages}
    for attempt in range(RETRIES + 1):
        try:
            response = await client.post(url, json=payload, headers=headers, timeout=timeout_s)
        except httpx.HTTPError as exc:
            if attempt == RETRIES:
                raise ProviderError(f"{type(exc).__name__}: {exc}") from None
            await asyncio.sleep(0.1 * 2**attempt + random.uniform(0, 0.05))
            continue
        if response.status_code == 429 or response.status_code >= 500:
            if attempt == RETRIES:
                raise ProviderError(f"HTTP {response.status_code} after {RETRIES + 1} attempts")
            await asyncio.sleep(_retry_after(response, attempt))
            continue
        if response.status_code >= 400:
            raise ProviderError(f"HTTP {response.status_code}: {_error_message(response)}")
        return _completion(response)
    raise ProviderError("no attempt made")  # for the type checker: the loop always returns


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def _completion(response: httpx.Response) -> Completion:
    try:
        body: Any = response.json()
        text = body["choices"][0]["message"]["content"]
        usage = body.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError):
        raise ProviderError("malformed answer: no choices[0].message.content") from None
    if not isinstance(text, str) or not text.strip():
        raise ProviderError("empty answer")
    return Completion(text.strip(), usage.get("prompt_tokens"), usage.get("completion_tokens"))
