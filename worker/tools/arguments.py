"""Check a tool's arguments against its JSON schema before the tool touches anything.

Models (and prompt injections) send extra keys such as ``user_id``; an unknown key is refused with a
message the model can act on, instead of being silently half-honoured.
"""
from __future__ import annotations

from typing import Any

from worker.tools.base import ToolError

IDENTITY_KEYS = {"user_id", "userid", "user", "tenant_id", "tenant", "owner", "owner_id", "account_id"}
_TYPES = {"string": str, "integer": int, "object": dict, "array": list, "boolean": bool}


def check(args: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``args`` if they fit ``schema["parameters"]`` (keys, required, types, bounds); else ToolError."""
    parameters = schema.get("parameters", {})
    properties: dict[str, dict] = parameters.get("properties", {})
    unknown = sorted(set(args) - set(properties))
    if unknown:
        if IDENTITY_KEYS & {key.lower() for key in unknown}:
            raise ToolError(f"unexpected argument(s) {', '.join(unknown)}: this tool always acts for the "
                            "current user and cannot be pointed at anyone else")
        raise ToolError(f"unexpected argument(s) {', '.join(unknown)}; expected: {', '.join(properties)}")
    for key in parameters.get("required", []):
        if args.get(key) is None:
            raise ToolError(f"'{key}' is required")
    for key, value in args.items():
        spec = properties[key]
        expected = _TYPES.get(spec.get("type", ""))
        if value is None:
            continue
        if expected and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
            raise ToolError(f"'{key}' must be a {spec['type']}")
        if isinstance(value, str) and len(value) > spec.get("maxLength", len(value)):
            raise ToolError(f"'{key}' is longer than {spec['maxLength']} characters")
        if isinstance(value, int) and not spec.get("minimum", value) <= value <= spec.get("maximum", value):
            raise ToolError(f"'{key}' must be between {spec.get('minimum')} and {spec.get('maximum')}")
    return args
