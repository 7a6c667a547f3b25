"""Who is calling: a bearer token, or (for the chats dialect) a signed session cookie."""
from __future__ import annotations

from flask import g, request, session

from shared.errors import Unauthorized
from shared.permissions import Principal
from shared.services import identity, sessions

_UNSET = object()


def _authenticate() -> Principal:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Use 'Authorization: Bearer <token>'.")
        return identity.authenticate_token(token.strip())
    if user_id := session.get("user_id"):
        return sessions.resolve_session(session.get("sid", ""), session.get("nonce", ""), user_id)
    raise Unauthorized("Authentication required: send 'Authorization: Bearer <token>'.")


def current_principal() -> Principal:
    """The caller, authenticated once per request; raises Unauthorized."""
    cached = g.get("principal", _UNSET)
    if isinstance(cached, Exception):
        raise cached
    if cached is _UNSET:
        try:
            g.principal = _authenticate()
        except Unauthorized as exc:
            g.principal = exc
            raise
    return g.principal


def current_principal_or_none() -> Principal | None:
    try:
        return current_principal()
    except Unauthorized:
        return None


def require_credentials() -> None:
    """Authenticate before anything reads the request's body or query, so a request without (valid)
    credentials is a 401 in every dialect, never a 400/422 about its body. Routes the dialect lists
    as public (login, logout) and paths outside the dialects (health, the OpenAPI document) are open."""
    from api.errors import dialect_for

    dialect = dialect_for(request.path)
    if dialect is None or request.endpoint in dialect.public_endpoints:
        return
    try:
        current_principal()
    except Unauthorized:
        if request.headers.get("Authorization") or session.get("user_id"):
            raise  # a credential was sent: say what is wrong with it
        raise Unauthorized(dialect.missing_credentials) from None


def log_in(email: str, password: str) -> Principal:
    """Check the password and start a server-side session carried by the signed cookie."""
    principal = identity.authenticate_password(email, password)
    session_id, nonce = sessions.open_session(principal.user_id)
    session.clear()  # a fresh cookie for every login (no session fixation)
    session.permanent = True  # expires with the server-side session (PERMANENT_SESSION_LIFETIME)
    session.update(user_id=principal.user_id, sid=str(session_id), nonce=nonce)
    g.principal = principal
    return principal


def log_out() -> None:
    """End the cookie's session on the server and clear the cookie. Idempotent."""
    if sid := session.get("sid"):
        sessions.close_session(sid)
    session.clear()
