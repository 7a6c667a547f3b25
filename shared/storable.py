"""What a model may produce but a database cannot store, made storable before a run's answer is written.

A model's output is not input we validated: its text may hold a NUL character, and the JSON of its tool
arguments may hold ``NaN`` or ``Infinity`` (Python's ``json`` reads them; they are not JSON). PostgreSQL
refuses both — a ``text`` value cannot contain NUL, ``jsonb`` has no NaN — so before this module the
final write of a run raised, the task ended without an answer, and the sweeper ran the run again,
tools included, until every attempt was used (issue 15). SQLite stores both, and the API then answered
with ``NaN`` in its JSON, which strict clients refuse.

The rules, the same on both databases (docs/reliability.md):

- NUL (U+0000) in any text, or in a string inside JSON, becomes U+FFFD (the replacement character),
  so a reader sees that something was there;
- a float that is not finite (NaN, Infinity, -Infinity) inside JSON becomes ``null``.

Everything else is kept as it is.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

REPLACEMENT = "\ufffd"


def text(value: str | None) -> str | None:
    """The text with every NUL replaced by U+FFFD."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", REPLACEMENT)


def json_value(value: Any) -> Any:
    """A JSON value (dicts, lists, strings, numbers) that PostgreSQL's jsonb accepts and strict JSON
    parsers read: NUL in strings and keys replaced, non-finite floats as None."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {text(k) if isinstance(k, str) else k: json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return value


def outcome(result):
    """A copy of a run's Outcome (shared/services/runs.py) with its texts and JSON values made storable."""
    steps = [dataclasses.replace(s, name=text(s.name), arguments=json_value(s.arguments), output=text(s.output),
                                 usage=json_value(s.usage)) for s in result.steps]
    return dataclasses.replace(
        result, content=text(result.content), citations=json_value(result.citations),
        updated_context=json_value(result.updated_context), usage=json_value(result.usage),
        error=text(result.error), steps=steps)
