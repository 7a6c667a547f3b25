"""query_data: run one of the operator's read-only data views for the current user.

The model picks a view and its declared params; the user and tenant come from ToolContext. The
description lists the views this run's credential may use (each view declares the read permissions
its data needs, shared/data_views.toml), so the model knows what it can ask for; ``run`` checks the
view against the run's permissions again.
"""
from __future__ import annotations

from typing import Any

from shared.services import data_views
from shared.tools import ToolName
from worker.tools.base import ToolContext, ToolError

NAME = ToolName.QUERY_DATA


def schema_for(views: dict[str, data_views.View]) -> dict[str, Any]:
    listing = "\n".join(f"- {view.describe()}" for view in views.values())
    return {
        "description": "Read the application's data through a named read-only view; results are always "
        "limited to the current user's own data. Available views:\n" + listing,
        "parameters": {
            "type": "object",
            "properties": {
                "view": {"type": "string", "enum": sorted(views), "description": "The view's name."},
                "params": {"type": "object", "description": "The view's params (only those listed; all optional)."},
            },
            "required": ["view"],
        },
    }


def offered_schema(granted: frozenset[str]) -> dict[str, Any] | None:
    """The schema listing only the views ``granted`` allows; None when it allows none (not offered)."""
    views = data_views.allowed_views(granted)
    return schema_for(views) if views else None


SCHEMA = schema_for(data_views.catalog())  # a broken views file stops the worker at start, with the file and view named


def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    view = args.get("view")
    if not isinstance(view, str) or not view:
        raise ToolError("'view' must be the name of a data view")
    return data_views.run_view(view, args.get("params"), tenant_id=ctx.tenant_id, user_id=ctx.user_id,
                               granted=ctx.permissions)
