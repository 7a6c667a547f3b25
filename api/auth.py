"""Who is calling: a bearer token, or (for the chats dialect only) a signed session cookie.

Cookies are accepted only under the chats dialect's paths (``/api/chats``, ``/api/auth/``): the
other dialects are for programs that send a bearer token, and a browser that happens to hold a
session cookie must not be able to drive them. A write that authenticates with the cookie (and the
login itself) must come from the API's own origin when the browser says where it comes from
(``Sec-Fetch-Site``, else ``Origin``): a cross-site form or script gets 403, on top of ``SameSite=Lax``.
Clients that send neither header (curl, programs) are not browsers and are not refused.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import g, request, session

from shared.errors import Forbidden, Unauthorized
from shared.permissions import Principal
from shared.services import identity, sessions

_UNSET = object()
COOKIE_DIALECT = "chats"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_ORIGIN_FETCH_SITES = frozenset({"same-origin", "none"})  # "none": typed in the address bar, a bookmark


def cookies_accepted() -> bool:
    """True under the chats dialect's paths, the only ones a session cookie authenticates."""
    from api.errors import dialect_for

    dialect = dialect_for(request.path)
    return dialect is not None and dialect.name == COOKIE_DIALECT


def _same_origin(origin: str) -> bool:
    sent, served = urlsplit(origin), urlsplit(request.host_url)
    return (sent.scheme, sent.netloc.lower()) == (served.scheme, served.netloc.lower())


def check_same_origin() -> None:
    """Refuse a browser's cross-site write (CSRF): ``Sec-Fetch-Site`` when the browser sends it, else
    ``Origin``; a request with neither comes from no browser and passes."""
    if request.method in SAFE_METHODS:
        return
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        if fetch_site.strip().lower() not in SAME_ORIGIN_FETCH_SITES:
            raise Forbidden("Cross-site request refused: cookie-authenticated writes must come from this site.")
        return
    origin = request.headers.get("Origin")
    if origin is not None and not _same_origin(origin):
        raise Forbidden("Cross-site request refused: cookie-authenticated writes must come from this site.")


def _authenticate() -> Principal:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Use 'Authorization: Bearer <token>'.")
        return identity.authenticate_token(token.strip())
    if cookies_accepted() and (user_id := session.get("user_id")):
        check_same_origin()
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
        except (Unauthorized, Forbidden) as exc:
            g.principal = exc
            raise
    return g.principal


def current_principal_or_none() -> Principal | None:
    """The caller, or None when the request carries no acceptable credential (the rate limiter's key)."""
    try:
        return current_principal()
    except (Unauthorized, Forbidden):
        return None


def require_credentials() -> None:
    """Authenticate before anything reads the request's body or query, so a request without (valid)
    credentials is a 401 in every dialect, never a 400/422 about its body. Routes the dialect lists
    as public (login, logout) and paths outside the dialects (health, the OpenAPI document) are open."""
    from api.errors import dialect_for

    dialect = dialect_for(request.path)
    if dialect is None:
        return
    if request.endpoint in dialect.public_endpoints:
        if dialect.name == COOKIE_DIALECT:
            check_same_origin()  # no login (or logout) posted by another site into this browser
        return
    try:
        current_principal()
    except Unauthorized:
        if request.headers.get("Authorization") or (cookies_accepted() and session.get("user_id")):
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
    """End the cookie's session on the server (only with its own nonce) and clear the cookie. Idempotent."""
    if sid := session.get("sid"):
        sessions.close_session(sid, session.get("nonce", ""))
    session.clear()
