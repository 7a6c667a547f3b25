"""Model registry lookups, cached openai clients (one per provider, shared by worker threads) and the
chat completion call, streamed (the agent writes the text to the run's event log as it arrives)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
from openai import APIConnectionError, APIError, APITimeoutError, OpenAI

from shared.config import ModelEntry, settings


def model_entry(model_id: str | None) -> ModelEntry:
    return settings.models.get(model_id or settings.default_model_id) or next(iter(settings.models.values()))


_clients: dict[tuple[str, str, int | None], OpenAI] = {}


def _client(base_url: str, api_key: str, max_retries: int) -> OpenAI:
    """The provider's client with this retry budget: one client (one connection pool) per provider, its
    ``with_options`` copies (~0.5 ms of CPU each) kept per retry budget; they share that pool.

    Not ``lru_cache``: threads (or greenlets) that miss a cache at once each build a client and all but
    one are handed back uncached (measured: 8 threads at a cold start got 8 clients, 8 pools). Those
    extra pools are closed by the SDK's ``SyncHttpxClientWrapper.__del__`` as soon as their client is
    dropped. ``dict.setdefault`` keeps the first one stored and hands that one to every caller; a
    client built in vain is dropped before it made a request. A handful of entries: providers times
    retry budgets (0..MODEL_MAX_RETRIES).
    """
    client = _clients.get((base_url, api_key, max_retries))
    if client is None:
        base = _clients.get((base_url, api_key, None))
        if base is None:
            # The SDK's own retry (exponential backoff on connection errors, 408/409/429/5xx) is our retry policy.
            base = _clients.setdefault((base_url, api_key, None), OpenAI(
                base_url=base_url, api_key=api_key, max_retries=settings.model_max_retries,
                timeout=settings.model_timeout))
        client = _clients.setdefault((base_url, api_key, max_retries), base.with_options(max_retries=max_retries))
    return client


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

    ``cast_to=httpx2.Response`` makes the SDK hand back the response itself once it has started (the
    SDK's documented way to a raw response, README "Undocumented endpoints"), so the SDK's ``Stream``
    is not used: it runs every chunk through ``construct_type`` even for ``dict`` and through a general
    SSE decoder, and it closes the response at ``[DONE]`` before the end of the chunked body, which
    throws the keep-alive connection away (a new TCP connection per model call). bench/inprocess.py
    --gevent, callgrind, the run part: 16.64 M -> 14.78 M instructions per run (medians of 3; docs/performance.md).
    """
    client = _client(entry.base_url, entry.api_key(), max_retries)
    response = client.post(
        "/chat/completions", cast_to=httpx2.Response, body={**body, "stream": True}, stream=True,
        options={"timeout": timeout, "security": {"bearer_auth": True}},
    )
    return ChunkStream(response, client)


DRAIN_LIMIT = 64 * 1024  # bytes read after [DONE] to keep the connection; a longer tail closes it instead


class ChunkStream:
    """The chunks of a streamed chat completion (server-sent events, ``data:`` lines, ``[DONE]`` at the
    end) as JSON dicts; errors as the SDK raises them from its own ``Stream``: a read that times out is
    ``APITimeoutError``, a broken connection ``APIConnectionError``, an ``error`` object in the stream
    ``APIError``. After ``[DONE]`` the rest of the body is read, so the connection goes back to the
    client's pool. Lines end in LF or CRLF (a lone CR, which the SSE format also allows, does not
    occur in OpenAI-compatible streams and is not split on).

    The stream holds the client that made the request, as the SDK's ``Stream`` does. The response
    alone keeps the connection pool object alive but not the client: a client no one else held (the
    losers of a cold-start cache race, before ``_client`` used ``setdefault``) was collected while
    its response was being read, and the SDK's ``SyncHttpxClientWrapper.__del__`` closed its pool,
    closing this response's socket under the read: ``APIConnectionError`` from ``httpcore ReadError
    [Errno 9] Bad file descriptor`` (the fault suite's worker-crash tests, a fresh worker starting
    three runs at once; the commit that brought this class back has the reproduction). A cancel
    closes the response from the run's own thread (``with`` in worker/agent/loop.py): a connection
    not read to its end is closed by the pool, never reused.
    """

    __slots__ = ("response", "_client")

    def __init__(self, response: httpx2.Response, client: OpenAI) -> None:
        self.response = response
        self._client = client  # keeps the client's pool open while the response is read (see above)

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
