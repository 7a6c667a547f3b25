"""Prompt assembly: system prompt, memories, the client's context and a token-bounded history window."""
from __future__ import annotations

import json
from typing import Any

from shared.config import settings
from shared.services.runs import RunJob

DEFAULT_SYSTEM_PROMPT = """You are Threadline's assistant. Answer the user's message helpfully and briefly.
Use the tools you are given when they help: search and read the documentation, search the web and read
pages, save and search memories about this user, query the application's data, report abusive
conversations, and update the client's form state.
When you quote the documentation, wrap each verbatim quote as <cite chunk="CHUNK_ID">exact text</cite>,
using the chunk_id the documentation tools gave you; quote exactly, never paraphrase inside the tag."""

MEMORY_HEADER = "Relevant memories about the user:"


def estimate_tokens(text: str) -> int:
    """About four characters a token: good enough to bound a window, no tokenizer download needed."""
    return len(text) // 4 + 1


def history_window(history: list[dict[str, str]], budget: int) -> list[dict[str, str]]:
    """The newest messages that fit the budget, oldest first."""
    kept: list[dict[str, str]] = []
    for item in reversed(history):
        budget -= estimate_tokens(item["content"])
        if budget < 0:
            break
        kept.append(item)
    return list(reversed(kept))


def system_message(job: RunJob, memories: list[str]) -> str:
    parts = [job.system_prompt or DEFAULT_SYSTEM_PROMPT]
    if memories:
        parts.append(MEMORY_HEADER + "\n" + "\n".join(f"- {m}" for m in memories))
    if job.context is not None:
        key = job.context_key or "context"
        parts.append(f"The client's current {key} (change it with update_context):\n" + json.dumps(job.context)[:4000])
    return "\n\n".join(parts)


def build_messages(job: RunJob, memories: list[str] | None = None) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": system_message(job, memories or [])},
        *history_window(job.history, settings.history_tokens),
        {"role": "user", "content": job.content},
    ]
