"""Memories service and tools against a real database (SQLite and PostgreSQL): always scoped to one
tenant and one user, capped, searchable, deletable; the tools refuse identity arguments."""
from __future__ import annotations

import dataclasses
import uuid

import pytest

from shared.errors import Conflict, ValidationFailed
from shared.services import memories
from tests.unit.kb_database import database, make_person, tool_context  # noqa: F401 - fixtures
from worker.tools import ToolError, delete_memory, dispatch, save_memory, search_memories


def contents(views):
    return [v.content for v in views]


def test_memories_belong_to_one_user_of_one_tenant(make_person):
    alice = make_person()
    neighbour, stranger = make_person(tenant=alice.tenant), make_person()
    saved = memories.save(alice.tenant_id, alice.id, "My favourite colour is teal")
    assert contents(memories.search(alice.tenant_id, alice.id, "favourite colour")) == ["My favourite colour is teal"]
    for other in (neighbour, stranger):
        assert memories.search(other.tenant_id, other.id, "favourite colour") == []
        assert memories.recall(other.tenant_id, other.id, "what is my favourite colour", 5) == []
        assert memories.delete(other.tenant_id, other.id, memory_id=saved.id) == 0
    # the right user id under the wrong tenant is no key either
    assert memories.search(stranger.tenant_id, alice.id, "colour") == []
    assert memories.delete(stranger.tenant_id, alice.id, query="colour") == 0
    assert contents(memories.recent(alice.tenant_id, alice.id)) == ["My favourite colour is teal"]


def test_saving_normalises_dedupes_and_caps(make_person, monkeypatch):
    person = make_person()
    first = memories.save(person.tenant_id, person.id, "  I   live in\nOslo ")
    assert first.content == "I live in Oslo"
    assert memories.save(person.tenant_id, person.id, "I live in Oslo").id == first.id
    with pytest.raises(ValidationFailed):
        memories.save(person.tenant_id, person.id, "   ")
    with pytest.raises(ValidationFailed, match="at most 1000"):
        memories.save(person.tenant_id, person.id, "x" * 1001)
    memories.save(person.tenant_id, person.id, "x" * 1000)
    limited = dataclasses.replace(memories.settings, memory_max_per_user=3)
    monkeypatch.setattr(memories, "settings", limited)
    memories.save(person.tenant_id, person.id, "third one")
    with pytest.raises(Conflict, match="already has 3 memories"):
        memories.save(person.tenant_id, person.id, "fourth one")
    assert memories.save(person.tenant_id, person.id, "third one").content == "third one"  # a duplicate is fine
    assert len(memories.recent(person.tenant_id, person.id, 10)) == 3


def test_recall_puts_relevant_memories_first_then_the_newest(make_person):
    person = make_person()
    for text in ("I have a dog named Rex", "My favourite colour is teal", "I work as a baker", "I like jazz"):
        memories.save(person.tenant_id, person.id, text)
    assert memories.recall(person.tenant_id, person.id, "what is my favourite colour?", 2)[0] == "My favourite colour is teal"
    assert len(memories.recall(person.tenant_id, person.id, "what is my favourite colour?", 2)) == 2
    assert set(memories.recall(person.tenant_id, person.id, "hello there", 10)) == {
        "I have a dog named Rex", "My favourite colour is teal", "I work as a baker", "I like jazz"}
    assert memories.recall(person.tenant_id, person.id, "", 1) != []
    assert memories.recall(person.tenant_id, person.id, "colour", 0) == []


def test_delete_by_query_needs_every_word_and_by_id_only_ones_own(make_person):
    person = make_person()
    teal = memories.save(person.tenant_id, person.id, "My favourite colour is teal")
    memories.save(person.tenant_id, person.id, "My car colour is red")
    assert memories.delete(person.tenant_id, person.id, query="favourite colour blue") == 0
    assert memories.delete(person.tenant_id, person.id, query="favourite colour teal") == 1
    assert contents(memories.recent(person.tenant_id, person.id)) == ["My car colour is red"]
    assert memories.delete(person.tenant_id, person.id, memory_id=teal.id) == 0
    assert memories.delete(person.tenant_id, person.id, memory_id=str(uuid.uuid4())) == 0
    with pytest.raises(ValidationFailed):
        memories.delete(person.tenant_id, person.id, memory_id="not-an-id")
    with pytest.raises(ValidationFailed):
        memories.delete(person.tenant_id, person.id)


def test_memory_tools_act_for_the_context_user_only(make_person):
    victim = make_person()
    attacker = make_person(tenant=victim.tenant)
    memories.save(victim.tenant_id, victim.id, "My bank PIN hint is seagull")
    ctx = tool_context(attacker)
    for tool, args in ((search_memories, {"query": "seagull", "user_id": victim.id}),
                       (save_memory, {"content": "x", "user_id": victim.id}),
                       (delete_memory, {"query": "seagull", "tenant_id": str(victim.tenant_id)}),
                       (search_memories, {"query": "seagull", "owner": victim.id})):
        with pytest.raises(ToolError, match="current user"):
            dispatch(tool, args, ctx)
    assert dispatch(search_memories, {"query": "seagull"}, ctx) == {"memories": []}
    assert dispatch(delete_memory, {"query": "bank PIN hint seagull"}, ctx) == {"deleted": 0}
    assert contents(memories.search(victim.tenant_id, victim.id, "seagull")) == ["My bank PIN hint is seagull"]


def test_memory_tools_round_trip(make_person):
    person = make_person()
    ctx = tool_context(person)
    saved = dispatch(save_memory, {"content": "My favourite colour is teal"}, ctx)["saved"]
    assert set(saved) == {"id", "content"} and saved["content"] == "My favourite colour is teal"
    assert dispatch(search_memories, {"query": "favourite colour"}, ctx) == {"memories": [saved]}
    assert dispatch(delete_memory, {"id": saved["id"]}, ctx) == {"deleted": 1}
    assert dispatch(search_memories, {"query": "favourite colour"}, ctx) == {"memories": []}
    with pytest.raises(ToolError, match="exactly one"):
        dispatch(delete_memory, {}, ctx)
    with pytest.raises(ToolError, match="at most"):
        dispatch(save_memory, {"content": "y" * 1001}, ctx)
    with pytest.raises(ToolError, match="required"):
        dispatch(save_memory, {}, ctx)
