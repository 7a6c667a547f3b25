"""Permission names and the authenticated caller every service call is scoped to."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from shared.errors import Forbidden

THREADS_CREATE = "ai_threads.create"
THREADS_READ = "ai_threads.read"
THREADS_DELETE = "ai_threads.delete"
MESSAGES_CREATE = "ai_thread_messages.create"
MESSAGES_READ = "ai_thread_messages.read"

ALL = (THREADS_CREATE, THREADS_READ, THREADS_DELETE, MESSAGES_CREATE, MESSAGES_READ)


@dataclass(frozen=True)
class Principal:
    """The caller: a user of one tenant, with the permissions of the credential used."""

    user_id: str
    tenant_id: uuid.UUID
    permissions: frozenset[str]
    token_id: uuid.UUID | None = None

    def require(self, permission: str) -> None:
        if permission not in self.permissions:
            raise Forbidden(f"Missing permission '{permission}'.")


def validate(names: list[str]) -> list[str]:
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        raise ValueError(f"unknown permission(s): {', '.join(unknown)}; known: {', '.join(ALL)}")
    return sorted(set(names))
