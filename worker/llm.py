"""Model registry lookups and cached openai clients (one per provider, shared by worker threads)."""
from __future__ import annotations

from functools import lru_cache

from openai import OpenAI

from shared.config import ModelEntry, settings


def model_entry(model_id: str | None) -> ModelEntry:
    return settings.models.get(model_id or settings.default_model_id) or next(iter(settings.models.values()))


@lru_cache(maxsize=32)
def _client(base_url: str, api_key: str) -> OpenAI:
    # The SDK's own retry (exponential backoff on connection errors, 408/409/429/5xx) is our retry policy.
    return OpenAI(base_url=base_url, api_key=api_key, max_retries=settings.model_max_retries,
                  timeout=settings.model_timeout)


def client_for(entry: ModelEntry) -> OpenAI:
    return _client(entry.base_url, entry.api_key())
