"""Model registry lookups, cached openai clients (one per provider, shared by worker threads) and the
chat completion call, streamed (the agent writes the text to the run's event log as it arrives)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import httpx2
from openai import APIConnectionError, APIError, APITimeoutError, OpenAI

from shared.config import ModelEntry, settings


def model_entry(model_id: str | None) -> ModelEntry:
    return settings.models.get(model_id or settings.default_model_id) or next(iter(settings.models.values()))


@lru_cache(maxsize=32)
def _client(base_url: str, api_key: str) -> OpenAI:
    # The SDK's own retry (exponential backoff on connection errors, 408/409/429/5xx) is our retry policy.
    return OpenAI(base_url=base_url, api_key=api_key, max_retries=settings.model_max_retries,
                  timeout=settings.model_timeout)


@lru_cache(maxsize=128)
def _client_with_retries(base_url: str, api_key: str, max_retries: int) -> OpenAI:
    # with_options() copies the client (~0.5 ms of CPU) but shares its connection pool: keep one copy
    # per retry budget instead of making one per call.
    return _client(base_url, api_key).with_options(max_retries=max_retries)


def stream(entry: ModelEntry, body: dict[str, Any], *, timeout: float, max_retries: int) -> "ChunkStream":
    """A streamed chat completion through the SDK's own request path (auth, retries with backoff until
    the response starts, status errors as the SDK's error types), posting the body as it is; the
    chunks come as JSON dicts (``ChunkStream``). ``timeout`` bounds each read, so a model that stalls
    mid-answer times out too. The caller closes the stream (``with``).

    ``chat.completions.create(stream=True)`` first walks every message through the SDK's TypedDict
    transform; our messages are plain JSON already. With a 51-message history against the scripted
    model that costs 10.4-11.8 ms of CPU per streamed call, against 1.6-2.2 ms this way (200 calls
    each, ``time.process_time``). And the chunks are used as the JSON they are: building a typed
    ``ChatCompletionChunk`` for each costs another ~0.1 ms per chunk (64-chunk answer, 100 calls:
    16.5-20.2 ms of CPU typed against 10.2-13.7 ms as dicts).

    ``cast_to=httpx2.Response`` makes the SDK hand back the response itself once it has started
    (its documented escape for raw responses), so the SDK's ``Stream`` is not used: it runs every
    chunk through ``construct_type`` even for ``dict`` and through a general SSE decoder, and it closes
    the response at ``[DONE]`` before the end of the chunked body, which throws the keep-alive
    connection away (a new TCP connection per model call).
    """
    response = _client_with_retries(entry.base_url, entry.api_key(), max_retries).post(
        "/chat/completions", cast_to=httpx2.Response, body={**body, "stream": True}, stream=True,
        options={"timeout": timeout, "security": {"bearer_auth": True}},
    )
    return ChunkStream(response)


DRAIN_LIMIT = 64 * 1024  # bytes read after [DONE] to keep the connection; a longer tail closes it instead


class ChunkStream:
    """The chunks of a streamed chat completion (server-sent events, ``data:`` lines, ``[DONE]`` at the
    end) as JSON dicts; errors as the SDK raises them from its own ``Stream``: a read that times out is
    ``APITimeoutError``, a broken connection ``APIConnectionError``, an ``error`` object in the stream
    ``APIError``. After ``[DONE]`` the rest of the body is read, so the connection goes back to the
    client's pool. Lines end in LF or CRLF (a lone CR, which the SSE format also allows, does not
    occur in OpenAI-compatible streams and is not split on)."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response

    def __enter__(self) -> "ChunkStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.response.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        response = self.response
        data: list[bytes] = []
        rest = b""
        try:
            blocks = response.iter_bytes()
            for block in blocks:
                lines = (rest + block).split(b"\n") if rest else block.split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    if line:
                        if line.startswith(b"data:"):
                            data.append(line[6:] if line.startswith(b"data: ") else line[5:])
                        continue  # comments, event:, id:, retry: carry nothing a chat completion uses
                    if not data:
                        continue
                    payload = data[0] if len(data) == 1 else b"\n".join(data)
                    data = []
                    if payload.startswith(b"[DONE]"):
                        self._drain(blocks)
                        return
                    chunk = json.loads(payload)
                    if isinstance(chunk, dict) and chunk.get("error"):
                        error = chunk["error"]
                        message = error.get("message") if isinstance(error, dict) else None
                        raise APIError(message=message if isinstance(message, str) and message
                                       else "An error occurred during streaming", request=response.request, body=error)
                    yield chunk
        except httpx2.TimeoutException as err:
            raise APITimeoutError(request=response.request) from err
        except httpx2.RequestError as err:
            raise APIConnectionError(request=response.request) from err
        finally:
            response.close()

    @staticmethod
    def _drain(blocks: Iterator[bytes]) -> None:
        read = 0
        for block in blocks:
            read += len(block)
            if read > DRAIN_LIMIT:
                return
