"""Who is calling: a bearer token, or (for the chats dialect) a signed session cookie."""
from __future__ import annotations

from flask import g, request, session

from shared.errors import Unauthorized
from shared.permissions import Principal
from shared.services import identity

_UNSET = object()


def _authenticate() -> Principal:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Use 'Authorization: Bearer <token>'.")
        return identity.authenticate_token(token.strip())
    if user_id := session.get("user_id"):
        return identity.load_principal(user_id)
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
