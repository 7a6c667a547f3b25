"""Threads, always scoped to the caller: another tenant's thread does not exist for you, another
user's thread in your tenant is forbidden."""
from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from shared import permissions
from shared.config import settings
from shared.db import transaction
from shared.errors import Forbidden, NotFound, ValidationFailed
from shared.models import Thread, Workflow
from shared.permissions import Principal

MAX_THREAD_ID = 2**63 - 1


def check_model(model_id: str | None) -> str | None:
    """Field errors name fields in the core's words (``model_id``); each dialect renames them."""
    if model_id is not None and model_id not in settings.models:
        known = ", ".join(sorted(settings.models))
        raise ValidationFailed(f"Unknown model '{model_id}'.", fields={"model_id": [f"Unknown model. Known: {known}."]})
    return model_id


def check_workflow(session: Session, principal: Principal, workflow_id: uuid.UUID | None) -> Workflow | None:
    if workflow_id is None:
        return None
    workflow = session.get(Workflow, workflow_id)
    if workflow is None or workflow.tenant_id != principal.tenant_id:
        raise ValidationFailed("Unknown workflow.", fields={"workflow_id": ["No such workflow."]})
    return workflow


def create_thread(
    principal: Principal,
    *,
    title: str = "",
    model_id: str | None = None,
    workflow_id: uuid.UUID | None = None,
    context: dict[str, Any] | None = None,
) -> Thread:
    principal.require(permissions.THREADS_CREATE)
    check_model(model_id)
    with transaction() as session:
        check_workflow(session, principal, workflow_id)
        thread = Thread(
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            title=title,
            model_id=model_id,
            workflow_id=workflow_id,
            context=context,
        )
        session.add(thread)
    return thread


def owned_thread(session: Session, principal: Principal, thread_ref: int | uuid.UUID, *, lock: bool = False) -> Thread:
    """Load a thread by integer id or public UUID, checking tenant and owner."""
    if isinstance(thread_ref, int):
        if not 0 < thread_ref <= MAX_THREAD_ID:
            raise NotFound("Thread not found.")
        query = select(Thread).where(Thread.id == thread_ref)
    else:
        query = select(Thread).where(Thread.public_id == thread_ref)
    if lock:
        query = query.with_for_update()
    thread = session.scalar(query)
    if thread is None or thread.tenant_id != principal.tenant_id:
        raise NotFound("Thread not found.")
    if thread.user_id != principal.user_id:
        raise Forbidden("This thread belongs to another user.")
    return thread


def get_thread(principal: Principal, thread_ref: int | uuid.UUID) -> Thread:
    principal.require(permissions.THREADS_READ)
    with transaction() as session:
        return owned_thread(session, principal, thread_ref)


def list_threads(principal: Principal, *, limit: int = 20, offset: int = 0) -> tuple[list[Thread], int]:
    principal.require(permissions.THREADS_READ)
    owner = (Thread.tenant_id == principal.tenant_id) & (Thread.user_id == principal.user_id)
    with transaction() as session:
        total = session.scalar(select(func.count()).select_from(Thread).where(owner)) or 0
        rows = session.scalars(select(Thread).where(owner).order_by(Thread.id.desc()).limit(limit).offset(offset))
        return list(rows), total


def delete_thread(principal: Principal, thread_ref: int | uuid.UUID) -> None:
    principal.require(permissions.THREADS_DELETE)
    with transaction() as session:
        thread = owned_thread(session, principal, thread_ref)
        session.execute(delete(Thread).where(Thread.id == thread.id))
