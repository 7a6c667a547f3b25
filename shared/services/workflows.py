"""Workflows: a tenant's named setup for runs — system prompt, the tools allowed, the model.

A message or thread posted with a workflow runs with exactly that: ``runs.claim`` loads the prompt and
the tool list, and the message service picks the workflow's model unless the client names one.
"""
from __future__ import annotations

import uuid

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from shared.config import settings
from shared.db import transaction
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import Tenant, Workflow
from shared.tools import TOOL_NAMES
MAX_NAME = 200
MAX_PROMPT = 20_000


def tenant_id_for(name_or_id: str) -> uuid.UUID:
    """A tenant by name (or id), for the command line; NotFound when there is none."""
    with transaction() as session:
        tenant = session.scalar(select(Tenant).where(Tenant.name == name_or_id))
        if tenant is None:
            try:
                tenant = session.get(Tenant, uuid.UUID(name_or_id))
            except ValueError:
                tenant = None
        if tenant is None:
            raise NotFound(f"No tenant named {name_or_id!r}.")
        return tenant.id


def _check(name: str, system_prompt: str, tools: list[str] | None, model_id: str | None) -> None:
    errors: dict[str, list[str]] = {}
    if not name or not name.strip() or len(name) > MAX_NAME:
        errors["name"] = [f"Must be 1 to {MAX_NAME} characters."]
    if len(system_prompt) > MAX_PROMPT:
        errors["system_prompt"] = [f"At most {MAX_PROMPT} characters."]
    if tools is not None:
        unknown = sorted(set(tools) - set(TOOL_NAMES))
        if unknown:
            errors["tools"] = [f"Unknown tool(s): {', '.join(unknown)}. Known: {', '.join(TOOL_NAMES)}."]
    if model_id is not None and model_id not in settings.models:
        errors["model_id"] = [f"Unknown model. Known: {', '.join(sorted(settings.models))}."]
    if errors:
        raise ValidationFailed("Invalid workflow.", fields=errors)


def create_workflow(tenant_id: uuid.UUID, name: str, *, system_prompt: str = "", tools: list[str] | None = None,
                    model_id: str | None = None) -> Workflow:
    """``tools=None`` allows every tool, ``[]`` none; ``model_id=None`` keeps the thread's or default model."""
    name = (name or "").strip()
    _check(name, system_prompt, tools, model_id)
    workflow = Workflow(tenant_id=tenant_id, name=name, system_prompt=system_prompt,
                        tools=list(dict.fromkeys(tools)) if tools is not None else None, model_id=model_id)
    try:
        with transaction() as session:
            if session.get(Tenant, tenant_id) is None:
                raise NotFound("No such tenant.")
            session.add(workflow)
    except IntegrityError:
        raise Conflict(f"This tenant already has a workflow named {name!r}.") from None
    return workflow


def list_workflows(tenant_id: uuid.UUID) -> list[Workflow]:
    with transaction() as session:
        return list(session.scalars(select(Workflow).where(Workflow.tenant_id == tenant_id).order_by(Workflow.name)))


def get_workflow(tenant_id: uuid.UUID, workflow_id: uuid.UUID) -> Workflow:
    with transaction() as session:
        workflow = session.get(Workflow, workflow_id)
        if workflow is None or workflow.tenant_id != tenant_id:
            raise NotFound("Workflow not found.")
        return workflow


def delete_workflow(workflow_id: uuid.UUID, *, tenant_id: uuid.UUID | None) -> None:
    """Delete within a tenant; ``tenant_id=None`` is the operator's command line, which may delete any.

    Threads that used it keep working with the default prompt and tools (their workflow_id is cleared).
    """
    query = delete(Workflow).where(Workflow.id == workflow_id)
    if tenant_id is not None:
        query = query.where(Workflow.tenant_id == tenant_id)
    with transaction() as session:
        if session.execute(query).rowcount != 1:
            raise NotFound("Workflow not found.")
