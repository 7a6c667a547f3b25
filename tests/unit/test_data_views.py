"""Data views: what the loader refuses, how params are checked, and the SQLite read-only guard."""
from __future__ import annotations

import dataclasses
import tomllib
import uuid

import pytest
from sqlalchemy import text

from shared import db
from shared.config import ROOT
from shared.errors import ValidationFailed
from shared.services import data_views
from shared.services.data_views import DataViewError, parse_views

GOOD_SQL = "SELECT id FROM threads WHERE tenant_id = :tenant_id AND user_id = :user_id LIMIT :limit"


def views(sql: str = GOOD_SQL, params: dict | None = None, **extra) -> dict:
    spec = {"description": "A view.", "sql": sql, **extra}
    spec["params"] = params if params is not None else {"limit": {"type": "int", "default": 5, "min": 1, "max": 10}}
    return {"views": {"v": spec}}


def test_the_built_in_views_load():
    loaded = data_views.load_views(ROOT / "shared" / "data_views.toml")
    assert set(loaded) == {"my_threads", "my_recent_messages"}
    assert loaded["my_recent_messages"].params["limit"].default == 5
    assert loaded["my_threads"].params == {}


@pytest.mark.parametrize("sql, message", [
    ("SELECT id FROM threads WHERE tenant_id = :tenant_id LIMIT :limit", ":user_id"),
    ("SELECT id FROM threads WHERE user_id = :user_id LIMIT :limit", ":tenant_id"),
    ("SELECT id FROM threads LIMIT :limit", ":user_id and :tenant_id"),
    ("DELETE FROM threads WHERE tenant_id = :tenant_id AND user_id = :user_id AND 1 = :limit", "single SELECT"),
    (GOOD_SQL + "; DROP TABLE threads", "one statement"),
    (GOOD_SQL + " AND title = :title", ":title are not declared"),
    ("SELECT id::text FROM threads WHERE tenant_id = :tenant_id AND user_id = :user_id", "limit are declared but not used"),
])
def test_views_that_could_leak_or_write_are_refused(sql, message):
    with pytest.raises(DataViewError, match=message):
        parse_views(views(sql))


@pytest.mark.parametrize("params, message", [
    ({"user_id": {"type": "str", "default": "x"}}, "reserved"),
    ({"limit": {"type": "float", "default": 1.0}}, "'type' must be"),
    ({"limit": {"type": "int"}}, "default is required"),
    ({"limit": {"type": "int", "default": "5"}}, "default must be of type int"),
    ({"limit": {"type": "int", "default": 50, "max": 10}}, "between"),
    ({"limit": {"type": "int", "default": 5, "sql": "x"}}, "unknown keys"),
])
def test_bad_params_are_refused(params, message):
    with pytest.raises(DataViewError, match=message):
        parse_views(views(params=params))


def test_a_views_file_needs_views_and_descriptions(tmp_path):
    with pytest.raises(DataViewError, match="at least one"):
        parse_views({})
    with pytest.raises(DataViewError, match="description"):
        parse_views({"views": {"v": {"sql": GOOD_SQL}}})
    bad = tmp_path / "views.toml"
    bad.write_text("[views.v\n")
    with pytest.raises(DataViewError, match="invalid TOML"):
        data_views.load_views(bad)


def test_params_are_typed_bounded_and_closed():
    view = parse_views(views(params={
        "limit": {"type": "int", "default": 5, "min": 1, "max": 10},
        "q": {"type": "str", "default": "", "max_length": 5},
        "all": {"type": "bool", "default": False},
    }, sql=GOOD_SQL + " AND title LIKE :q AND :all = :all"))["v"]
    assert view.bind(None) == {"limit": 5, "q": "", "all": False}
    assert view.bind({"limit": "3", "q": "ab", "all": "true"}) == {"limit": 3, "q": "ab", "all": True}
    for bad in ({"limit": 11}, {"limit": 0}, {"limit": "many"}, {"limit": True}, {"q": "toolong"}, {"all": "maybe"}):
        with pytest.raises(ValidationFailed):
            view.bind(bad)
    for smuggled in ({"user_id": "victim"}, {"tenant_id": str(uuid.uuid4())}, {"sql": "SELECT 1"}):
        with pytest.raises(ValidationFailed, match="does not take"):
            view.bind(smuggled)
    assert "limit (int, default 5, 1..10)" in view.describe()


@pytest.fixture
def sqlite_engine(monkeypatch, tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'views.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id CHAR(32), user_id TEXT, body TEXT)"))
    monkeypatch.setattr(data_views.db, "engine", lambda: engine)
    yield engine
    engine.dispose()


def test_sqlite_views_run_read_only_and_the_connection_is_restored(sqlite_engine, monkeypatch):
    tenant = uuid.uuid4()
    with sqlite_engine.begin() as conn:
        conn.execute(text("INSERT INTO notes (tenant_id, user_id, body) VALUES (:t, 'me', 'mine'), (:t, 'you', 'yours')"),
                     {"t": tenant.hex})
    binds = {"tenant_id": tenant, "user_id": "me"}
    rows, truncated = data_views._execute("SELECT body FROM notes WHERE tenant_id = :tenant_id AND user_id = :user_id", binds)
    assert rows == [{"body": "mine"}] and truncated is False
    with pytest.raises(Exception, match="readonly|read-only|attempt to write"):  # a WITH … DELETE slips past the loader
        data_views._execute("WITH x AS (SELECT 1) DELETE FROM notes WHERE tenant_id = :tenant_id AND user_id = :user_id",
                            binds)
    with sqlite_engine.begin() as conn:  # the pooled connection is writable again for everyone else
        conn.execute(text("INSERT INTO notes (tenant_id, user_id, body) VALUES ('x', 'me', 'later')"))
        assert conn.execute(text("SELECT count(*) FROM notes")).scalar() == 3


def test_sqlite_row_cap_and_statement_timeout(sqlite_engine, monkeypatch):
    monkeypatch.setattr(data_views, "settings", dataclasses.replace(data_views.settings, data_row_cap=3,
                                                                    data_statement_timeout=0.3))
    binds = {"tenant_id": uuid.uuid4(), "user_id": "me"}
    counting = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {}) "
                "SELECT i FROM n WHERE :user_id IS NOT NULL AND :tenant_id IS NOT NULL")
    rows, truncated = data_views._execute(counting.format(10), binds)
    assert [r["i"] for r in rows] == [1, 2, 3] and truncated is True
    with pytest.raises(Exception, match="interrupted"):
        data_views._execute(counting.format(10**10) + " ORDER BY i DESC", binds)


def test_the_shipped_views_file_is_valid_toml_with_comments():
    data = tomllib.loads((ROOT / "shared" / "data_views.toml").read_text())
    assert all("sql" in v for v in data["views"].values())


def test_a_view_declares_the_permissions_its_data_needs():
    """Issue 15: query_data offers a view only to a token holding its permissions (default: both reads)."""
    loaded = data_views.load_views(ROOT / "shared" / "data_views.toml")
    assert loaded["my_threads"].permissions == {"ai_threads.read"}
    assert loaded["my_recent_messages"].permissions == {"ai_threads.read", "ai_thread_messages.read"}
    assert parse_views(views())["v"].permissions == {"ai_threads.read", "ai_thread_messages.read"}
    assert parse_views(views(permissions=["ai_thread_messages.read"]))["v"].permissions == {"ai_thread_messages.read"}
    with pytest.raises(DataViewError, match="view 'v': unknown permission.*documents.read"):
        parse_views(views(permissions=["documents.read"]))
    with pytest.raises(DataViewError, match="permissions must be a list"):
        parse_views(views(permissions="ai_threads.read"))
