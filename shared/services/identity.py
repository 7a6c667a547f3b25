"""Users, tokens and authentication. Plain tokens exist only in the creator's hands."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import sys
import uuid
from datetime import timedelta
from functools import cache
from typing import Any, Callable

from sqlalchemy import bindparam, select, update
from werkzeug.security import check_password_hash, generate_password_hash

from shared import permissions
from shared.db import prepared, read, read_rows, transaction
from shared.errors import Conflict, NotFound, Unauthorized
from shared.models import ApiToken, Tenant, User, utcnow
from shared.permissions import Principal
from shared.services.sessions import SESSION_PREFIX

TOKEN_PREFIX = "tl_"
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_token(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def create_user(
    email: str,
    tenant_name: str,
    *,
    user_id: str | None = None,
    password: str | None = None,
    perms: list[str] | None = None,
) -> User:
    """Create a user (and its tenant on first use). Permissions default to the ``user`` role (all but
    the moderators' ``reports.*``)."""
    granted = permissions.validate(perms) if perms is not None else list(permissions.USER)
    with transaction() as session:
        if session.scalar(select(User).where(User.email == email.lower())):
            raise Conflict(f"A user with email {email} already exists.")
        if user_id and session.get(User, user_id):
            raise Conflict(f"A user with id {user_id} already exists.")
        tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
        if tenant is None:
            tenant = Tenant(name=tenant_name)
            session.add(tenant)
            session.flush()
        user = User(
            id=user_id or str(uuid.uuid4()),
            tenant_id=tenant.id,
            email=email.lower(),
            password_hash=generate_password_hash(password) if password else None,
            permissions=granted,
        )
        session.add(user)
    return user


def create_token(
    email: str, *, name: str = "", perms: list[str] | None = None, expires_in: timedelta | None = None
) -> tuple[str, ApiToken]:
    """Return (plain token, row). The plain token is not stored and cannot be shown again."""
    scoped = permissions.validate(perms) if perms is not None else None
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction() as session:
        user = session.scalar(select(User).where(User.email == email.lower()))
        if user is None:
            raise NotFound(f"No user with email {email}.")
        token = ApiToken(
            user_id=user.id,
            token_hash=hash_token(plain),
            prefix=plain[:10],
            name=name,
            permissions=scoped,
            expires_at=utcnow() + expires_in if expires_in else None,
        )
        session.add(token)
    return plain, token


def revoke_token(token_id: uuid.UUID) -> ApiToken:
    """Revoke an API token by id; NotFound for an id that names no API token (a login session's row is
    not a token: logging out ends those). Revoking twice keeps the first revocation time."""
    with transaction() as session:
        token = session.get(ApiToken, token_id)
        if token is None or token.prefix == SESSION_PREFIX:
            raise NotFound(f"No API token with id {token_id}.")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
        return token


def list_tokens(email: str | None = None) -> list[tuple[ApiToken, str]]:
    """API tokens (never login sessions) with their owner's email, oldest first; one user's with ``email``."""
    query = (select(ApiToken, User.email).join(User, User.id == ApiToken.user_id)
             .where(ApiToken.prefix != SESSION_PREFIX).order_by(ApiToken.created_at, ApiToken.id))
    with transaction() as session:
        if email is not None:
            if session.scalar(select(User.id).where(User.email == email.lower())) is None:
                raise NotFound(f"No user with email {email}.")
            query = query.where(User.email == email.lower())
        return [(row.ApiToken, row.email) for row in session.execute(query)]


TOKENS, USERS = ApiToken.__table__, User.__table__
_TOKEN_AND_USER = prepared(  # every request runs it: a Core statement, built once, prepared on PostgreSQL
    select(TOKENS.c.id, TOKENS.c.token_hash, TOKENS.c.permissions, TOKENS.c.expires_at, TOKENS.c.revoked_at,
           TOKENS.c.last_used_at, USERS.c.id.label("user_id"), USERS.c.tenant_id,
           USERS.c.permissions.label("user_permissions"))
    .join(USERS, USERS.c.id == TOKENS.c.user_id)
    # A login session's row (shared/services/sessions.py) lives in the same table: never a bearer token.
    .where(TOKENS.c.token_hash == bindparam("digest"), TOKENS.c.prefix != SESSION_PREFIX)
)


def authenticate_token(plain: str) -> Principal:
    """Resolve a bearer token to its caller, or raise Unauthorized (one message for every failure).

    Every request does this: one autocommit read; the rare last-used touch is a separate write. Only
    ``tl_`` tokens are looked up, and only among API tokens, so a session nonce is never a bearer token."""
    if not plain.startswith(TOKEN_PREFIX):
        raise Unauthorized("Invalid or expired token.")
    digest = hash_token(plain)
    with read_rows() as connection:
        row = connection.execute(_TOKEN_AND_USER, {"digest": digest}).first()
    now = utcnow()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise Unauthorized("Invalid or expired token.")
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        raise Unauthorized("Invalid or expired token.")
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        with transaction() as session:
            session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
    granted = set(row.user_permissions or [])
    if row.permissions is not None:
        granted &= set(row.permissions)
    return Principal(user_id=row.user_id, tenant_id=row.tenant_id, permissions=frozenset(granted), token_id=row.id)


@cache
def dummy_password_hash() -> str:
    """A hash of a random password, made with the same method and cost as real ones: an unknown email
    (or a user without a password) is checked against it, so it costs the same scrypt as a wrong
    password and the answer time does not tell which emails have accounts. Made once per process."""
    return off_the_event_loop(generate_password_hash, secrets.token_urlsafe(32))


def off_the_event_loop(func: Callable[..., Any], *args: Any) -> Any:
    """Run a CPU-bound call (a password hash: tens of milliseconds of scrypt) in gevent's thread pool
    when this process runs under gevent, so the hub keeps serving other requests meanwhile (hashlib
    releases the GIL while it hashes). Elsewhere (threads, the CLI, tests) a plain call."""
    if "gevent" in sys.modules:
        from gevent import get_hub, monkey

        if monkey.is_module_patched("socket"):
            return get_hub().threadpool.apply(func, args)
    return func(*args)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Check ``password`` against ``stored_hash`` (or against the dummy hash when there is none, and
    then fail): always exactly one hash, always off the event loop."""
    ok = off_the_event_loop(check_password_hash, stored_hash or dummy_password_hash(), password)
    return bool(ok and stored_hash)


def authenticate_password(email: str, password: str) -> Principal:
    """The user with this email and password, or Unauthorized (one message for every failure).

    The row is read first and the hash checked after, outside any transaction, so no database
    connection is held while scrypt runs."""
    with read() as session:
        user = session.scalar(select(User).where(User.email == email.lower()))
        if user is not None:
            session.expunge(user)
    if not verify_password(user.password_hash if user is not None else None, password) or user is None:
        raise Unauthorized("Invalid email or password.")
    return principal_for(user)


def principal_for(user: User) -> Principal:
    return Principal(user_id=user.id, tenant_id=user.tenant_id, permissions=frozenset(user.permissions or []))


def load_principal(user_id: str) -> Principal:
    """The caller behind a session cookie; Unauthorized when the user no longer exists."""
    with transaction() as session:
        user = session.get(User, user_id)
        if user is None:
            raise Unauthorized("Your session has ended; log in again.")
        return principal_for(user)


def user_by_email(email: str) -> User:
    with transaction() as session:
        user = session.scalar(select(User).where(User.email == email.lower()))
        if user is None:
            raise NotFound(f"No user with email {email}.")
        return user
