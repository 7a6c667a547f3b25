"""Field-by-field shape checks for the contract tests: names, JSON types, nesting."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Callable

Check = Callable[[Any], bool]


def uuid_string(value: Any) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def iso8601(value: Any) -> bool:
    try:
        return isinstance(value, str) and datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


def string(value: Any) -> bool:
    return isinstance(value, str)


def integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def boolean(value: Any) -> bool:
    return isinstance(value, bool)


def nullable(check: Check) -> Check:
    return lambda value: value is None or check(value)


def one_of(*values: Any) -> Check:
    return lambda value: value in values


def list_of(check: Check) -> Check:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def obj(value: Any) -> bool:
    return isinstance(value, dict)


def assert_shape(value: dict, spec: dict[str, Check], *, extra: set[str] = frozenset(), where: str = "body") -> None:
    """Every field of ``spec`` present with the right type; no fields beyond ``spec`` and ``extra``."""
    assert isinstance(value, dict), f"{where}: not an object: {value!r}"
    missing = set(spec) - set(value)
    unexpected = set(value) - set(spec) - set(extra)
    assert not missing, f"{where}: missing {sorted(missing)}"
    assert not unexpected, f"{where}: unexpected {sorted(unexpected)}"
    for name, check in spec.items():
        assert check(value[name]), f"{where}.{name}: wrong type or value {value[name]!r}"
