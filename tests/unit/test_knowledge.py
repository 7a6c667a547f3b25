"""The knowledge base service and docs tools against a real database (SQLite and PostgreSQL):
versioned ingest, unchanged files skipped, scoped search and reads, the tools' sources for citations."""
from __future__ import annotations

import uuid

import pytest

from shared.errors import NotFound
from shared.services import knowledge
from tests.unit.kb_database import database, make_person, tool_context  # noqa: F401 - fixtures
from worker.tools import ToolError, dispatch, read_doc, search_docs

ROTATION_V1 = "# Keys\n\nRotate the gizmo key every ninety days. Old keys stop working a day later.\n"
ROTATION_V2 = "# Keys\n\nRotate the gizmo key every thirty days. Old keys stop working at once.\n"


def chunk_ids(views):
    return [v.chunk_id for v in views]


def test_a_changed_file_gets_a_new_version_and_old_chunks_stay_resolvable(make_person):
    person = make_person()
    path = f"keys-{uuid.uuid4().hex[:6]}.md"
    assert knowledge.ingest_text(path, ROTATION_V1, tenant_id=person.tenant_id) == ("new", 1)
    [old] = knowledge.search(person.tenant_id, "gizmo ninety days")
    assert (old.document_version, old.document_name, old.path, old.heading) == (1, "Keys", path, "Keys")

    assert knowledge.ingest_text(path, ROTATION_V1, tenant_id=person.tenant_id) == ("unchanged", 0)
    assert knowledge.ingest_text(path, ROTATION_V2.replace("\n", "\r\n"), tenant_id=person.tenant_id) == ("changed", 1)
    assert knowledge.ingest_text(path, ROTATION_V2, tenant_id=person.tenant_id) == ("unchanged", 0)

    [new] = knowledge.search(person.tenant_id, "gizmo key")
    assert new.document_version == 2 and new.is_current and "thirty" in new.content
    assert new.document_id == old.document_id and new.document_version_id != old.document_version_id
    assert knowledge.search(person.tenant_id, "ninety") == []  # old text is no longer searched
    again = knowledge.get_chunk(person.tenant_id, old.chunk_id)  # … but old citations still resolve
    assert again is not None and not again.is_current and again.document_version == 1 and "ninety" in again.content
    assert knowledge.citation_source(person.tenant_id, old.chunk_id)["document_version"] == 1
    [info] = [d for d in knowledge.list_documents(person.tenant_id, only_tenant=True) if d.path == path]
    assert (info.version, info.chunks, info.tenant) == (2, 1, person.tenant)


def test_folder_ingest_is_recursive_idempotent_and_summarised(make_person, tmp_path):
    person = make_person()
    (tmp_path / "guide").mkdir()
    (tmp_path / "guide" / "install.md").write_text("# Install\n\nUnpack the wombat archive.\n")
    (tmp_path / "notes.txt").write_text("# kept as text\n\nwombat notes\n")
    (tmp_path / "more.markdown").write_text("Wombat extras.\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "secret.md").write_text("wombat secret")
    (tmp_path / "broken.md").write_bytes(b"\xff\xfe\xfa not utf-8")

    summary = knowledge.ingest(tmp_path, tenant_id=person.tenant_id)
    assert (summary.new, summary.changed, summary.unchanged, summary.chunks) == (3, 0, 0, 3)
    assert list(summary.failed) == ["broken.md"]
    assert "4 file(s): 3 new, 0 changed, 0 unchanged, 1 failed; 3 chunk(s) written" == summary.line()
    found = {v.path: v for v in knowledge.search(person.tenant_id, "wombat")}
    assert set(found) == {"guide/install.md", "notes.txt", "more.markdown"}
    assert found["notes.txt"].heading == "" and found["notes.txt"].content.startswith("# kept as text")
    assert found["guide/install.md"].document_name == "Install" and found["more.markdown"].document_name == "more"

    summary = knowledge.ingest(tmp_path, tenant_id=person.tenant_id)
    assert (summary.new, summary.changed, summary.unchanged, summary.chunks) == (0, 0, 3, 0)
    (tmp_path / "notes.txt").write_text("wombat notes, revised\n")
    summary = knowledge.ingest(tmp_path / "notes.txt", tenant_id=person.tenant_id)  # one file: same path key
    assert (summary.new, summary.changed, summary.chunks) == (0, 1, 1)


def test_ingest_refuses_unknown_paths_and_tenants(database, tmp_path):
    with pytest.raises(NotFound):
        knowledge.ingest(tmp_path / "missing")
    with pytest.raises(NotFound):
        knowledge.tenant_id_for("no-such-tenant-anywhere")
    assert knowledge.tenant_id_for(None) is None


def test_search_reads_the_callers_tenant_and_global_docs_only(make_person):
    alice, bob = make_person(), make_person()
    word = f"quokka{uuid.uuid4().hex[:6]}"
    knowledge.ingest_text("private.md", f"# Private\n\nThe {word} launch code is 1234.\n", tenant_id=alice.tenant_id)
    knowledge.ingest_text(f"public-{word}.md", f"# Public\n\nEveryone may read about the {word} parade.\n")

    assert {v.document_name for v in knowledge.search(alice.tenant_id, word)} == {"Private", "Public"}
    assert [v.document_name for v in knowledge.search(bob.tenant_id, word)] == ["Public"]
    [secret] = [v for v in knowledge.search(alice.tenant_id, f"{word} launch code")]
    assert knowledge.get_chunk(bob.tenant_id, secret.chunk_id) is None
    assert knowledge.citation_source(bob.tenant_id, secret.chunk_id) is None
    assert knowledge.document_chunks(bob.tenant_id, "Private") == []
    assert knowledge.get_chunk(alice.tenant_id, "not-a-uuid") is None


def test_and_first_then_any_term(make_person):
    person = make_person()
    knowledge.ingest_text("a.md", "# A\n\nThe narwhal sings at dawn.\n", tenant_id=person.tenant_id)
    knowledge.ingest_text("b.md", "# B\n\nThe narwhal sleeps; the walrus sings.\n", tenant_id=person.tenant_id)
    assert [v.document_name for v in knowledge.search(person.tenant_id, "walrus narwhal")] == ["B"]
    assert {v.document_name for v in knowledge.search(person.tenant_id, "narwhal dawn unicorn")} == {"A", "B"}
    assert knowledge.search(person.tenant_id, "what is the") == []  # stop words only
    assert knowledge.search(person.tenant_id, 'narwhal" OR * NEAR(') != []  # search syntax is not injected


def test_a_tenants_own_document_wins_a_name_clash(make_person):
    person = make_person()
    knowledge.ingest_text("clash.md", "# Clash Guide\n\nGlobal text.\n")
    knowledge.ingest_text("clash.md", "# Clash Guide\n\nTenant text.\n", tenant_id=person.tenant_id)
    assert [v.content for v in knowledge.document_chunks(person.tenant_id, "clash guide")] == ["Tenant text."]
    assert [v.content for v in knowledge.document_chunks(make_person().tenant_id, "CLASH.MD")] == ["Global text."]


def test_search_docs_tool_records_sources_for_citations(make_person):
    person = make_person()
    knowledge.ingest_text("cit.md", "# Cit\n\nThe ocelot rests at noon.\n", tenant_id=person.tenant_id)
    ctx = tool_context(person)
    result = dispatch(search_docs, {"query": "ocelot noon"}, ctx)
    [hit] = result["results"]
    assert set(hit) == {"chunk_id", "document_name", "path", "heading", "content"}
    source = ctx.sources[hit["chunk_id"]]
    view = knowledge.get_chunk(person.tenant_id, hit["chunk_id"])
    assert source == {"content": "The ocelot rests at noon.", "document_id": view.document_id,
                      "document_version_id": view.document_version_id, "document_name": "Cit",
                      "document_version": 1, "path": "cit.md"}
    assert all(isinstance(source[k], str) for k in ("document_id", "document_version_id"))
    assert dispatch(search_docs, {"query": "nothing matches zyzzyva"}, ctx) == {"results": []}


@pytest.mark.parametrize("args, message", [
    ({}, "'query' is required"),
    ({"query": "  "}, "must not be empty"),
    ({"query": "x", "tenant_id": "t"}, "current user"),
    ({"query": "x", "limit": 0}, "between"),
    ({"query": 5}, "must be a string"),
])
def test_search_docs_rejects_bad_arguments(make_person, args, message):
    with pytest.raises(ToolError, match=message):
        dispatch(search_docs, args, tool_context(make_person()))


def test_read_doc_by_id_or_name_scoped_to_the_tenant(make_person):
    alice, bob = make_person(), make_person()
    paragraphs = "\n\n".join(f"Part {i}: " + "lorem ipsum " * 100 for i in range(4))
    knowledge.ingest_text("long.md", f"# Long Read\n\n{paragraphs}\n", tenant_id=alice.tenant_id)
    ctx = tool_context(alice)
    whole = dispatch(read_doc, {"document_name": "Long Read"}, ctx)
    assert whole["content"].startswith("Part 0") and whole["truncated"] is False
    assert [c["content"][:6] for c in whole["more_chunks"]] == ["Part 1", "Part 2", "Part 3"]
    assert set(ctx.sources) == {whole["chunk_id"], *(c["chunk_id"] for c in whole["more_chunks"])}

    one = dispatch(read_doc, {"chunk_id": whole["more_chunks"][0]["chunk_id"]}, tool_context(alice))
    assert one["content"].startswith("Part 1") and one["document_name"] == "Long Read"

    stranger = tool_context(bob)
    with pytest.raises(ToolError, match="not found"):
        dispatch(read_doc, {"chunk_id": whole["chunk_id"]}, stranger)
    with pytest.raises(ToolError, match="not found"):
        dispatch(read_doc, {"document_name": "Long Read"}, stranger)
    assert stranger.sources == {}
    with pytest.raises(ToolError, match="exactly one"):
        dispatch(read_doc, {"chunk_id": whole["chunk_id"], "document_name": "Long Read"}, ctx)


def test_read_doc_by_name_stops_at_the_size_budget(make_person, monkeypatch):
    from worker.tools import read_doc as module

    person = make_person()
    paragraphs = "\n\n".join(f"Part {i}: " + "lorem ipsum " * 100 for i in range(4))
    knowledge.ingest_text("budget.md", f"# Budget\n\n{paragraphs}\n", tenant_id=person.tenant_id)
    monkeypatch.setattr(module, "settings", type("S", (), {"docs_read_max_chars": 2500})())
    body = dispatch(read_doc, {"document_name": "budget.md"}, tool_context(person))
    assert len(body["more_chunks"]) == 1 and body["truncated"] is True


def test_cli_ingest_and_list(make_person, tmp_path):
    from api import create_app

    person = make_person()
    (tmp_path / "cli.md").write_text("# CLI Doc\n\nThe pangolin command.\n")
    runner = create_app().test_cli_runner()
    result = runner.invoke(args=["docs", "ingest", str(tmp_path), "--tenant", person.tenant])
    assert result.exit_code == 0, result.output
    assert "1 file(s): 1 new, 0 changed, 0 unchanged; 1 chunk(s) written" in result.output
    result = runner.invoke(args=["docs", "ingest", str(tmp_path / "cli.md"), "--tenant", person.tenant])
    assert "1 file(s): 0 new, 0 changed, 1 unchanged; 0 chunk(s) written" in result.output
    result = runner.invoke(args=["docs", "list", "--tenant", person.tenant])
    assert result.exit_code == 0 and "cli.md  CLI Doc" in result.output and "1 document(s)" in result.output
    result = runner.invoke(args=["docs", "ingest", str(tmp_path), "--tenant", "nobody-has-this-tenant"])
    assert result.exit_code != 0 and "No tenant named" in result.output
