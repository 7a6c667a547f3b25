"""Hostile JSON at every POST endpoint the OpenAPI document lists: never a 5xx.

A hypothesis-driven generator (the schemathesis contract test lives elsewhere): bodies shaped like
each endpoint's request schema but with hostile values — NUL characters, unpaired surrogates, huge and
negative numbers, wrong types, deep nesting, oversized strings — plus arbitrary JSON and broken byte
streams (truncated, invalid UTF-8, NaN tokens). Every answer must be a JSON 4xx or a success.
"""
from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.helpers import new_thread
from tests.faults.ledger import LEDGER

pytestmark = pytest.mark.faults

EXAMPLES_PER_ENDPOINT = 60

HOSTILE_STRINGS = st.sampled_from([
    "", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\u202e\u0000", "x" * 6000, "💥" * 3000, "null", "NaN",
    "-1", "9" * 40, "' OR 1=1 --", "<script>alert(1)</script>", "../../etc/passwd", "%00", "\\u0000",
    "[[latency:0.1]]", "00000000-0000-0000-0000-000000000000", "USER", "gpt-4", "threadline-dev",
])
ANY_CHAR_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)  # surrogates included
NUMBERS = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, -1, 2**63, -(2**63) - 1]),
                    st.floats(allow_nan=False, allow_infinity=False))
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, HOSTILE_STRINGS, ANY_CHAR_TEXT)
ANY_JSON = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(HOSTILE_STRINGS, ANY_CHAR_TEXT), inner, max_size=4)),
    max_leaves=25)


def resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return resolve(spec, schema["allOf"][0])
    return schema


def plausible(spec: dict, schema: dict, user_id: str, depth: int = 0) -> st.SearchStrategy:
    """A value that fits the schema, or a hostile one in its place."""
    schema = resolve(spec, schema)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if "enum" in schema:
        fitting = st.sampled_from(schema["enum"])
    elif kind == "object" and "properties" in schema and depth < 4:
        fitting = shaped(spec, schema, user_id, depth + 1)
    elif kind == "object":
        fitting = st.dictionaries(ANY_CHAR_TEXT, ANY_JSON, max_size=4)
    elif kind == "array":
        fitting = st.lists(plausible(spec, schema.get("items", {}), user_id, depth + 1), max_size=3)
    elif kind == "integer":
        fitting = NUMBERS.filter(lambda n: isinstance(n, int))
    elif kind == "number":
        fitting = NUMBERS
    elif kind == "boolean":
        fitting = st.booleans()
    elif schema.get("format") == "uuid":
        fitting = st.one_of(st.uuids().map(str), HOSTILE_STRINGS)
    else:
        fitting = st.one_of(st.just(user_id), HOSTILE_STRINGS, ANY_CHAR_TEXT, st.text(max_size=30))
    return st.one_of(fitting, fitting, LEAVES, ANY_JSON)


def shaped(spec: dict, schema: dict, user_id: str, depth: int = 0) -> st.SearchStrategy:
    """An object with the schema's fields (some left out, some extra), each plausible or hostile."""
    schema = resolve(spec, schema)
    fields = {name: plausible(spec, sub, user_id, depth) for name, sub in schema.get("properties", {}).items()}
    return st.fixed_dictionaries({}, optional=fields).flatmap(
        lambda body: st.dictionaries(ANY_CHAR_TEXT, LEAVES, max_size=2).map(lambda extra: {**extra, **body}))


def encoded(body) -> st.SearchStrategy:
    """The body as bytes, sometimes broken on the way."""
    text = json.dumps(body)  # ensure_ascii: lone surrogates and NULs travel as \\u escapes

    def broken(how: str) -> bytes:
        raw = text.encode()
        return {
            "as is": raw,
            "truncated": raw[: max(1, len(raw) // 2)],
            "invalid utf-8": raw[:1] + b"\xff\xfe" + raw[1:],
            "NaN": re.sub(rb"(?<![\w.])-?\d+(\.\d+)?(?![\w.])", b"NaN", raw, count=1),
            "deep": b'{"content": "hi", "context": ' + b"[" * 5000 + raw + b"]" * 5000 + b"}",
            "raw nul": raw.replace(b"\\u0000", b"\x00"),
        }[how]

    return st.sampled_from(["as is", "as is", "as is", "truncated", "invalid utf-8", "NaN", "deep", "raw nul"]).map(broken)


def post_endpoints(spec: dict) -> list[tuple[str, dict, dict | None]]:
    found = []
    for path, item in spec["paths"].items():
        operation = item.get("post")
        if operation is None:
            continue
        params = {p["name"]: p.get("schema", {}) for p in item.get("parameters", []) + operation.get("parameters", [])
                  if p.get("in") == "path"}
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        found.append((path, params, body))
    return found


def test_hostile_bodies_never_cause_a_5xx(fault_stack, make_fault_user, fault_client_for):
    user = make_fault_user()
    client = fault_client_for(user)
    spec = client.get("/openapi.json").json()
    ai_thread = new_thread(client)
    chat = client.post("/api/chats", json={"title": "fuzz"}).json()["data"]["id"]
    endpoints = post_endpoints(spec)
    assert len(endpoints) >= 3, [e[0] for e in endpoints]
    fuzzed: dict[str, int] = {}

    for path, params, body_schema in endpoints:
        url = path
        for name, schema in params.items():
            ref = ai_thread if resolve(spec, schema).get("type") == "integer" else chat
            url = url.replace("{" + name + "}", str(ref))
        url += "?wait=0"
        bodies = st.one_of(shaped(spec, body_schema, user.id), ANY_JSON) if body_schema else ANY_JSON

        @settings(max_examples=EXAMPLES_PER_ENDPOINT, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(raw=bodies.flatmap(encoded))
        def attack(raw: bytes) -> None:
            response = client.post(url, content=raw, headers={"Content-Type": "application/json"})
            LEDGER.hostile(response.status_code)
            fuzzed[path] = fuzzed.get(path, 0) + 1
            assert response.status_code < 500, f"POST {url} {raw[:300]!r} -> {response.status_code} {response.text[:300]}"
            assert response.status_code in (200, 201, 204) or response.headers["content-type"].startswith(
                "application/json"), response.text[:200]
            assert "Traceback" not in response.text

        attack()
    LEDGER.fault("hostile_bodies", sum(fuzzed.values()))
    assert set(fuzzed) == {path for path, _, _ in endpoints}
