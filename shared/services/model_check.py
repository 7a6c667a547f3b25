"""``flask models check``: one tiny chat completion per configured model, to tell an operator before
any user does that a key, a base URL or a model name is wrong.

It goes through the same openai SDK as the worker (``openai.OpenAI(base_url, api_key)``), without
retries (a check reports what happens now) and with a short timeout, and never raises: each model's
result says ok or the error the provider gave, without the key."""
from __future__ import annotations

import time
from dataclasses import dataclass

import openai

from shared.config import ModelEntry

PROMPT = "Reply with the single word OK."


@dataclass(frozen=True)
class CheckResult:
    model_id: str
    model: str
    base_url: str
    ok: bool
    seconds: float
    detail: str  # the start of the answer, or what went wrong


def check(entry: ModelEntry, *, timeout: float = 20.0) -> CheckResult:
    """Send PROMPT to ``entry``'s model once and say how it went."""
    started = time.monotonic()
    try:
        with openai.OpenAI(base_url=entry.base_url, api_key=entry.api_key(), max_retries=0, timeout=timeout) as client:
            completion = client.chat.completions.create(model=entry.model, messages=[{"role": "user", "content": PROMPT}])
        text = (completion.choices[0].message.content or "").strip() if completion.choices else ""
        ok, detail = bool(completion.choices), " ".join(text.split())[:80] or "(an empty answer)"
    except openai.APIStatusError as exc:
        ok, detail = False, f"HTTP {exc.status_code}: {_message(exc)}"
    except openai.APIConnectionError as exc:
        ok, detail = False, f"cannot connect: {exc.__class__.__name__}: {exc}"
    except openai.OpenAIError as exc:
        ok, detail = False, f"{exc.__class__.__name__}: {exc}"
    return CheckResult(entry.id, entry.model, entry.base_url, ok, time.monotonic() - started, detail[:300])


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return exc.message
