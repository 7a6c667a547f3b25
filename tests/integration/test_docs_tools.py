"""The docs tools through the real stack: HTTP → API → worker → scripted model → search_docs/read_doc →
an answer whose citations are verified against the chunk, scoped to the caller's tenant."""
from __future__ import annotations

import json
import uuid

import pytest

from shared.services import knowledge
from tests.integration.kb_helpers import ask, step_names

pytestmark = pytest.mark.core

FLUX = """# Flux capacitor

To recalibrate the flux capacitor in Threadline, open Settings and press Calibrate. The needle settles
within a minute; do not unplug the device while it moves.

## Troubleshooting

If the needle never settles, replace the {word} fuse.
"""


def assert_verified(citation: dict, view: knowledge.ChunkView) -> None:
    """The citation is ours: a verbatim quote at the offset we computed, with the chunk's document fields."""
    start = citation["offset"]
    assert view.content[start:start + citation["length"]] == citation["quote"] and citation["length"] > 0
    assert {k: citation[k] for k in ("chunk_id", "document_id", "document_version_id", "document_name",
                                     "document_version")} == {
        "chunk_id": view.chunk_id, "document_id": view.document_id, "document_version_id": view.document_version_id,
        "document_name": view.document_name, "document_version": view.document_version}
    # Enriched at read time (shared/services/citations.py): the chunk's place in its document version.
    assert citation["path"].startswith(f"/documents/{view.path}/versions/{view.document_version}/chunks/")


def ingest_flux(tenant_id, path: str = "flux.md", word: str = "amber") -> knowledge.ChunkView:
    knowledge.ingest_text(path, FLUX.format(word=word), tenant_id=tenant_id)
    [view] = [v for v in knowledge.search(tenant_id, "recalibrate flux capacitor") if v.path == path]
    return view


def test_a_docs_question_is_answered_with_a_verified_citation(user, client):
    view = ingest_flux(user.tenant_id)
    answer = ask(client, "How do I recalibrate the flux capacitor in Threadline?")
    assert step_names(answer) == ["search_docs"]
    [citation] = answer["citations"]
    assert_verified(citation, view)
    assert citation["quote"] == "To recalibrate the flux capacitor in Threadline, open Settings and press Calibrate."
    assert citation["quote"] in answer["content"] and "<cite" not in answer["content"]
    [search_step] = [s for s in answer["steps"] if s["name"] == "search_docs"]
    assert search_step["status"] == "completed"
    assert json.loads(search_step["output"])["results"][0]["chunk_id"] == view.chunk_id


def test_an_old_version_stays_citable_after_the_document_changes(user, client):
    old = ingest_flux(user.tenant_id, "versions.md")
    knowledge.ingest_text("versions.md", FLUX.format(word="amber").replace("press Calibrate", "hold Calibrate"),
                          tenant_id=user.tenant_id)
    [new] = [v for v in knowledge.search(user.tenant_id, "recalibrate flux capacitor") if v.path == "versions.md"]
    assert (old.document_version, new.document_version) == (1, 2)

    answer = ask(client, f'[[tool:read_doc {{"chunk_id": "{old.chunk_id}"}}]] show me that passage')
    assert step_names(answer) == ["read_doc"]
    [citation] = answer["citations"]
    assert_verified(citation, old)
    assert citation["document_version"] == 1 and "press Calibrate" in citation["quote"]

    answer = ask(client, "How do I recalibrate the flux capacitor in Threadline?")
    [citation] = answer["citations"]
    assert_verified(citation, new)
    assert "hold Calibrate" in citation["quote"]


def test_a_quote_cited_from_an_unfetched_chunk_is_checked_in_the_database(user, client, make_user, client_for):
    view = ingest_flux(user.tenant_id, "unfetched.md")
    quote = "do not unplug the device"
    answer = ask(client, f'Noted: <cite chunk="{view.chunk_id}">{quote}</cite>')
    assert step_names(answer) == []  # nothing fetched in this run: resolved by the tenant-scoped lookup
    [citation] = answer["citations"]
    assert_verified(citation, view)
    assert citation["offset"] == view.content.index(quote) > 0 and citation["length"] == len(quote)

    answer = ask(client, f'Noted: <cite chunk="{view.chunk_id}">press Calibrate twice</cite>')
    assert answer["citations"] == []  # not verbatim in the chunk: dropped

    answer = ask(client_for(make_user()), f'Noted: <cite chunk="{view.chunk_id}">{quote}</cite>')
    assert answer["citations"] == []  # another tenant's chunk does not resolve


def test_another_tenants_documents_are_out_of_reach(user, client, make_user, client_for):
    secret_word = f"zircon{uuid.uuid4().hex[:6]}"
    view = ingest_flux(user.tenant_id, "secret.md", word=secret_word)
    [fuse] = knowledge.search(user.tenant_id, f"{secret_word} fuse")
    intruder = client_for(make_user())

    answer = ask(intruder, f'[[tool:read_doc {{"chunk_id": "{fuse.chunk_id}"}}]] read it')
    assert step_names(answer) == ["read_doc"] and answer["steps"][1]["status"] == "failed"
    assert "not found" in answer["content"] and secret_word not in answer["content"]
    assert answer["citations"] == []

    answer = ask(intruder, f"How do I replace the {secret_word} fuse in Threadline?")
    assert step_names(answer) == ["search_docs"]
    assert secret_word not in answer["content"] and answer["citations"] == []
    assert "could not find" in answer["content"]

    answer = ask(intruder, '[[tool:read_doc {"document_name": "Flux capacitor"}]] read it')
    assert "not found" in answer["content"] and "Calibrate" not in answer["content"]

    answer = ask(client, f'[[tool:read_doc {{"chunk_id": "{view.chunk_id}"}}]] read it')  # the owner can
    assert_verified(answer["citations"][0], view)


def test_global_documents_are_read_by_every_tenant(make_user, client_for):
    word = f"zorblax{uuid.uuid4().hex[:6]}"
    knowledge.ingest_text(f"{word}.md", f"# Zorblaxing\n\nWibble the {word} quuxifier twice. Frobnicate after.\n")
    [view] = knowledge.search(uuid.uuid4(), f"{word} quuxifier")
    for person in (make_user(), make_user()):
        answer = ask(client_for(person), f"How do I wibble the {word} quuxifier?")
        [citation] = answer["citations"]
        assert_verified(citation, view)
        assert citation["quote"] == f"Wibble the {word} quuxifier twice."
