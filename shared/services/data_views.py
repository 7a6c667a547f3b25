"""Operator-defined read-only data views: the only way the assistant reads the application's tables.

A view is a named SELECT from a TOML file (``DATA_VIEWS_FILE``) with typed optional params. Every view
must bind ``:user_id`` and ``:tenant_id``; their values come from the run's identity, never from the
model, so a prompt cannot widen a view to someone else's rows. Queries run in a read-only transaction
with a statement timeout and a row cap.
"""
from __future__ import annotations

import datetime as dt
import decimal
import logging
import re
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, String, Uuid, bindparam, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from shared import db, permissions
from shared.config import settings
from shared.errors import Forbidden, NotFound, Unavailable, ValidationFailed
from shared.tools import DEFAULT_VIEW_PERMISSIONS

log = logging.getLogger(__name__)

IDENTITY_BINDS = ("user_id", "tenant_id")
PARAM_TYPES = {"int": int, "str": str, "bool": bool}
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
BIND_RE = re.compile(r"(?<![:\w\\]):([A-Za-z_]\w*)")  # :name, not ::cast or an escaped \:
MAX_STR_PARAM = 1000


class DataViewError(ValueError):
    """The views file is wrong; the message names the file and the view."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any
    min: int | None = None
    max: int | None = None
    max_length: int = MAX_STR_PARAM
    description: str = ""

    def coerce(self, value: Any) -> Any:
        """The model's value as this param's type, within bounds; ValueError with a readable reason."""
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.strip().lower() in ("true", "yes", "1")
            raise ValueError("must be true or false")
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ValueError("must be an integer")
            try:
                number = int(value.strip()) if isinstance(value, str) else value
            except ValueError:
                raise ValueError("must be an integer") from None
            if self.min is not None and number < self.min or self.max is not None and number > self.max:
                raise ValueError(f"must be between {self.min} and {self.max}")
            return number
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError("must be a string")
        value = str(value)
        if len(value) > self.max_length:
            raise ValueError(f"must be at most {self.max_length} characters")
        return value

    def describe(self) -> str:
        bounds = f", {self.min}..{self.max}" if self.type == "int" and (self.min, self.max) != (None, None) else ""
        about = f": {self.description.rstrip('.')}" if self.description else ""
        return f"{self.name} ({self.type}, default {self.default!r}{bounds}){about}"


@dataclass(frozen=True)
class View:
    name: str
    description: str
    sql: str
    params: dict[str, Param] = field(default_factory=dict)
    # What a credential needs to use this view through the assistant (issue 15): the API read
    # permissions matching the data it shows. Undeclared: shared.tools.DEFAULT_VIEW_PERMISSIONS.
    permissions: frozenset[str] = DEFAULT_VIEW_PERMISSIONS

    def allowed(self, granted: frozenset[str]) -> bool:
        return self.permissions <= granted

    def bind(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """Declared params with defaults filled in; unknown or invalid params are refused."""
        given = given or {}
        if not isinstance(given, dict):
            raise ValidationFailed("'params' must be an object")
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            allowed = ", ".join(sorted(self.params)) or "none"
            raise ValidationFailed(f"view '{self.name}' does not take {', '.join(map(repr, unknown))}; "
                                   f"its params: {allowed}")
        values = {}
        for name, param in self.params.items():
            try:
                values[name] = param.coerce(given[name]) if name in given else param.default
            except ValueError as exc:
                raise ValidationFailed(f"param '{name}' {exc}") from None
        return values

    def describe(self) -> str:
        params = "; ".join(p.describe() for p in self.params.values()) or "none"
        return f"{self.name}: {self.description} Params: {params}."


# --- loading --------------------------------------------------------------------------------------

def _parse_param(view: str, name: str, spec: Any, where: str) -> Param:
    here = f"{where}: view '{view}', param '{name}'"
    if not NAME_RE.match(name) or name in IDENTITY_BINDS:
        raise DataViewError(f"{here}: invalid or reserved name")
    if not isinstance(spec, dict) or spec.get("type") not in PARAM_TYPES:
        raise DataViewError(f"{here}: 'type' must be one of {', '.join(PARAM_TYPES)}")
    unknown = set(spec) - {"type", "default", "min", "max", "max_length", "description"}
    if unknown:
        raise DataViewError(f"{here}: unknown keys {sorted(unknown)}")
    if "default" not in spec:
        raise DataViewError(f"{here}: a default is required (params are optional)")
    for bound in ("min", "max", "max_length"):
        if bound in spec and (not isinstance(spec[bound], int) or isinstance(spec[bound], bool)):
            raise DataViewError(f"{here}: '{bound}' must be an integer")
    param = Param(name=name, type=spec["type"], default=spec["default"], min=spec.get("min"), max=spec.get("max"),
                  max_length=spec.get("max_length", MAX_STR_PARAM), description=str(spec.get("description", "")))
    if type(param.default) is not PARAM_TYPES[param.type]:
        raise DataViewError(f"{here}: the default must be of type {param.type}")
    try:
        param.coerce(param.default)
    except ValueError as exc:
        raise DataViewError(f"{here}: the default {exc}") from None
    return param


def _check_sql(view: str, sql: str, params: dict[str, Param], where: str) -> None:
    here = f"{where}: view '{view}'"
    body = re.sub(r"--[^\n]*", " ", sql).strip()
    if not re.match(r"(?is)^(select|with)\b", body):
        raise DataViewError(f"{here}: the SQL must be a single SELECT (or WITH … SELECT)")
    if ";" in body.rstrip(";"):
        raise DataViewError(f"{here}: the SQL must be one statement (no ';')")
    binds = set(BIND_RE.findall(body))
    missing = [b for b in IDENTITY_BINDS if b not in binds]
    if missing:
        raise DataViewError(f"{here}: the SQL must use {' and '.join(':' + b for b in missing)} "
                            "so it only ever reads the caller's rows")
    undeclared = sorted(binds - set(IDENTITY_BINDS) - set(params))
    if undeclared:
        raise DataViewError(f"{here}: binds {', '.join(':' + b for b in undeclared)} are not declared params")
    unused = sorted(set(params) - binds)
    if unused:
        raise DataViewError(f"{here}: params {', '.join(unused)} are declared but not used in the SQL")


def parse_views(data: dict[str, Any], where: str = "data views") -> dict[str, View]:
    views = data.get("views")
    if not isinstance(views, dict) or not views:
        raise DataViewError(f"{where}: expected at least one [views.NAME] table")
    parsed: dict[str, View] = {}
    for name, spec in views.items():
        if not NAME_RE.match(name):
            raise DataViewError(f"{where}: invalid view name {name!r} (lowercase letters, digits, _)")
        if not isinstance(spec, dict):
            raise DataViewError(f"{where}: view '{name}' must be a table")
        unknown = set(spec) - {"description", "sql", "params", "permissions"}
        if unknown:
            raise DataViewError(f"{where}: view '{name}': unknown keys {sorted(unknown)}")
        description, sql = spec.get("description"), spec.get("sql")
        if not isinstance(description, str) or not description.strip():
            raise DataViewError(f"{where}: view '{name}' needs a description (the model reads it)")
        if not isinstance(sql, str) or not sql.strip():
            raise DataViewError(f"{where}: view '{name}' needs sql")
        raw_params = spec.get("params", {})
        if not isinstance(raw_params, dict):
            raise DataViewError(f"{where}: view '{name}': params must be a table")
        params = {p: _parse_param(name, p, s, where) for p, s in raw_params.items()}
        _check_sql(name, sql, params, where)
        needs = spec.get("permissions", sorted(DEFAULT_VIEW_PERMISSIONS))
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            raise DataViewError(f"{where}: view '{name}': permissions must be a list of permission names")
        try:
            needs = permissions.validate(needs)
        except ValueError as exc:
            raise DataViewError(f"{where}: view '{name}': {exc}") from None
        parsed[name] = View(name=name, description=description.strip(), sql=sql.strip().rstrip(";"), params=params,
                            permissions=frozenset(needs))
    return parsed


@lru_cache(maxsize=4)
def load_views(path: Path) -> dict[str, View]:
    """Parse and check a views file once per process (restart the worker to pick up changes)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataViewError(f"cannot read the data views file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DataViewError(f"{path}: invalid TOML: {exc}") from None
    return parse_views(data, str(path))


def catalog() -> dict[str, View]:
    return load_views(Path(settings.data_views_file))


# --- running --------------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (bytes, memoryview)):
        return f"<{len(value)} bytes>"
    return value


def _fetch(conn, statement, binds: dict[str, Any], cap: int) -> tuple[list[dict[str, Any]], bool]:
    result = conn.execute(statement, binds)
    rows = result.mappings().fetchmany(cap + 1)
    return [{k: _jsonable(v) for k, v in row.items()} for row in rows[:cap]], len(rows) > cap


_views_engine: Engine | None = None


def views_engine() -> Engine:
    """Where views run: DATA_VIEWS_DATABASE_URL (production: a role granted SELECT only, see
    docs/security.md), else the application's engine. Either way in a READ ONLY transaction."""
    global _views_engine
    if not settings.data_views_database_url:
        return db.engine()
    if _views_engine is None:
        _views_engine = create_engine(settings.data_views_database_url, pool_size=2, max_overflow=4,
                                      pool_pre_ping=True, pool_timeout=settings.db_pool_timeout)
    return _views_engine


def _execute(sql: str, binds: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """Run one view's SQL read-only, bounded in time and rows."""
    statement = text(sql).bindparams(bindparam("tenant_id", type_=Uuid()), bindparam("user_id", type_=String()))
    cap, seconds = settings.data_row_cap, settings.data_statement_timeout
    with views_engine().connect() as conn:
        if conn.dialect.name == "postgresql":
            with conn.begin():
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                conn.execute(text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(int(seconds * 1000))})
                return _fetch(conn, statement, binds, cap)
        raw = conn.connection.driver_connection  # SQLite: guard this one connection, then put it back as it was
        deadline = time.monotonic() + seconds
        raw.execute("PRAGMA query_only=ON")
        raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            with conn.begin():
                return _fetch(conn, statement, binds, cap)
        finally:
            try:
                raw.set_progress_handler(None, 0)
                raw.execute("PRAGMA query_only=OFF")
            except Exception:  # noqa: BLE001 - never return a read-only connection to the pool
                conn.invalidate()
                raise


def allowed_views(granted: frozenset[str]) -> dict[str, View]:
    """The views a credential with ``granted`` permissions may use (View.permissions)."""
    return {name: view for name, view in catalog().items() if view.allowed(granted)}


def run_view(name: str, params: dict[str, Any] | None, *, tenant_id: uuid.UUID, user_id: str,
             granted: frozenset[str] | None = None) -> dict[str, Any]:
    """Rows of one view for this caller: ``{"view", "rows", "truncated"}``. With ``granted`` (the
    run's permissions) a view that needs more is refused (Forbidden), as reading its data would be."""
    views = catalog()
    view = views.get(name) if isinstance(name, str) else None
    if view is None:
        shown = sorted(allowed_views(granted)) if granted is not None else sorted(views)
        raise NotFound(f"no data view named {name!r}; available: {', '.join(shown) or 'none'}")
    if granted is not None and not view.allowed(granted):
        missing = ", ".join(sorted(view.permissions - granted))
        raise Forbidden(f"the view '{name}' needs permission {missing}, which the credential this message "
                        "was posted with does not have")
    binds = {**view.bind(params), "tenant_id": tenant_id, "user_id": user_id}
    try:
        rows, truncated = _execute(view.sql, binds)
    except OperationalError as exc:
        if "interrupted" in str(exc.orig).lower() or "statement timeout" in str(exc.orig).lower():
            raise Unavailable(f"the view '{name}' took too long") from None
        log.exception("data view %s failed", name)
        raise Unavailable(f"the view '{name}' failed") from None
    except DBAPIError:
        log.exception("data view %s failed", name)
        raise Unavailable(f"the view '{name}' failed") from None
    return {"view": name, "rows": rows, "truncated": truncated}
