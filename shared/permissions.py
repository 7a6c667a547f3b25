"""Permission names, the roles that bundle them, and the authenticated caller every service call is
scoped to.

There are no role rows: a user holds a list of permission names. Two named bundles (``ROLES``) save
typing them: ``user`` (the default of ``flask users create``: one's own threads, messages and
memories) and ``moderator`` (``user`` plus the tenant's reports). ``validate`` expands a role name
given where a permission is expected, so ``--permissions moderator`` works on the command line."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from shared.errors import Forbidden

THREADS_CREATE = "ai_threads.create"
THREADS_READ = "ai_threads.read"
THREADS_DELETE = "ai_threads.delete"
MESSAGES_CREATE = "ai_thread_messages.create"
MESSAGES_READ = "ai_thread_messages.read"

MEMORIES_READ = "memories.read"  # list one's own memories
MEMORIES_DELETE = "memories.delete"  # delete one's own memories
REPORTS_READ = "reports.read"  # list the tenant's reports (moderators)
REPORTS_MANAGE = "reports.manage"  # resolve them

# What a user holds unless told otherwise: everything about their own conversations and memories.
USER = (THREADS_CREATE, THREADS_READ, THREADS_DELETE, MESSAGES_CREATE, MESSAGES_READ, MEMORIES_READ, MEMORIES_DELETE)
# Reports show other users' conversations (an excerpt each): never granted by default.
MODERATOR = (*USER, REPORTS_READ, REPORTS_MANAGE)
ROLES = {"user": USER, "moderator": MODERATOR}
ALL = MODERATOR


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
    """The permission names, with role names (``user``, ``moderator``) expanded; ValueError on others."""
    expanded = {perm for name in names for perm in ROLES.get(name, (name,))}
    unknown = sorted(expanded - set(ALL))
    if unknown:
        raise ValueError(f"unknown permission(s): {', '.join(unknown)}; known: {', '.join(ALL)} "
                         f"(or a role: {', '.join(ROLES)})")
    return sorted(expanded)
