"""Citations: a quote is kept only when it is verbatim in the cited chunk; offset and length are ours."""
from __future__ import annotations

from worker.agent.citations import extract

CHUNK = {"content": "Threadline keeps every version. Old chunks stay readable.", "document_id": "d1",
         "document_version_id": "v1", "document_name": "Guide", "document_version": 2, "path": "guide.md"}


def resolve(chunk_id):
    return CHUNK if chunk_id == "c1" else None


def test_a_verbatim_quote_is_kept_with_offsets_computed_from_the_chunk():
    text, cited = extract('See <cite chunk="c1">Old chunks stay readable.</cite> Done.', resolve)
    assert text == "See Old chunks stay readable. Done."
    offset = CHUNK["content"].index("Old chunks")
    assert cited == [{"chunk_id": "c1", "quote": "Old chunks stay readable.", "offset": offset, "length": 25,
                      "document_id": "d1", "document_version_id": "v1", "document_name": "Guide",
                      "document_version": 2, "path": "guide.md"}]
    assert CHUNK["content"][cited[0]["offset"]:cited[0]["offset"] + cited[0]["length"]] == cited[0]["quote"]


def test_a_paraphrase_or_an_unknown_chunk_is_dropped_but_the_text_stays():
    text, cited = extract('<cite chunk="c1">Old chunks remain readable.</cite> and <cite chunk="nope">Threadline</cite>',
                          resolve)
    assert cited == []
    assert text == "Old chunks remain readable. and Threadline"


def test_an_empty_quote_is_not_a_citation():
    assert extract('<cite chunk="c1"> </cite>', resolve)[1] == []
