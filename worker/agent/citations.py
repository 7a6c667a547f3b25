"""Citations the model marks as <cite chunk="ID">quote</cite>: kept only when the quote is verbatim in
that chunk; the offset and length are ours, never the model's."""
from __future__ import annotations

import re
from typing import Any, Callable

CITE = re.compile(r'<cite\s+chunk="([^"]+)">(.*?)</cite>', re.DOTALL)


def extract(text: str, resolve: Callable[[str], dict[str, Any] | None]) -> tuple[str, list[dict[str, Any]]]:
    """Return the text with markers replaced by their quotes, and the verified citations.

    ``resolve(chunk_id)`` gives the chunk (``content`` plus document fields) or None.
    """
    citations: list[dict[str, Any]] = []

    def keep(match: re.Match) -> str:
        chunk_id, quote = match.group(1), match.group(2)
        chunk = resolve(chunk_id) if quote.strip() else None
        if chunk is not None:
            offset = chunk["content"].find(quote)
            if offset >= 0:
                meta = {k: v for k, v in chunk.items() if k != "content"}
                citations.append({"chunk_id": chunk_id, "quote": quote, "offset": offset, "length": len(quote), **meta})
        return quote

    return CITE.sub(keep, text), citations
