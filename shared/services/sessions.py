"""Login sessions for the cookie-authenticated chats dialect.

A login stores a row in ``api_tokens`` (name ``web session``) holding the SHA-256 of a random
per-login nonce; the signed cookie carries the row id and the nonce. So a session can be ended on
the server: logout revokes the row, and a copied cookie stops working with it. Rows expire after
``SESSION_LIFETIME`` seconds.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import select

from shared.config import settings
from shared.db import transaction
from shared.errors import Unauthorized
from shared.models import ApiToken, User, utcnow
from shared.permissions import Principal

SESSION_NAME = "web session"
SESSION_PREFIX = "session"
ENDED = "Your session has ended; log in again."


def _digest(nonce: str) -> str:
    # Namespaced so the stored hash never equals sha256(some bearer token).
    return hashlib.sha256(f"session:{nonce}".encode()).hexdigest()


def open_session(user_id: str) -> tuple[uuid.UUID, str]:
    """Start a session for the user; returns (session id, nonce) for the cookie."""
    nonce = secrets.token_urlsafe(32)
    with transaction() as session:
        row = ApiToken(
            user_id=user_id, token_hash=_digest(nonce), prefix=SESSION_PREFIX, name=SESSION_NAME, permissions=None,
            expires_at=utcnow() + timedelta(seconds=settings.session_lifetime),
        )
        session.add(row)
    return row.id, nonce


def resolve_session(session_id: str, nonce: str, user_id: str) -> Principal:
    """The caller behind a cookie, or Unauthorized when it was ended, expired or tampered with."""
    try:
        key = uuid.UUID(str(session_id))
    except ValueError:
        raise Unauthorized(ENDED) from None
    with transaction() as session:
        row = session.execute(
            select(ApiToken, User).join(User, User.id == ApiToken.user_id)
            .where(ApiToken.id == key, ApiToken.name == SESSION_NAME, ApiToken.prefix == SESSION_PREFIX)
        ).first()
        now = utcnow()
        if (
            row is None
            or row.User.id != user_id
            or not hmac.compare_digest(row.ApiToken.token_hash, _digest(str(nonce)))
            or row.ApiToken.revoked_at is not None
            or (row.ApiToken.expires_at is not None and row.ApiToken.expires_at <= now)
        ):
            raise Unauthorized(ENDED)
        user = row.User
        return Principal(user_id=user.id, tenant_id=user.tenant_id, permissions=frozenset(user.permissions or []),
                         token_id=row.ApiToken.id)


def close_session(session_id: str, nonce: str) -> bool:
    """Revoke the session (logout) when ``nonce`` is the session's own; True when one was revoked.

    The nonce is checked like on every request (constant time), so a cookie that names someone
    else's session id without its nonce ends nothing. Unknown or malformed ids, a wrong nonce and an
    ended session are ignored: logging out is idempotent."""
    try:
        key = uuid.UUID(str(session_id))
    except ValueError:
        return False
    with transaction() as session:
        row = session.scalar(select(ApiToken).where(
            ApiToken.id == key, ApiToken.name == SESSION_NAME, ApiToken.prefix == SESSION_PREFIX,
            ApiToken.revoked_at.is_(None)).with_for_update())
        if row is None or not hmac.compare_digest(row.token_hash, _digest(str(nonce))):
            return False
        row.revoked_at = utcnow()
        return True
