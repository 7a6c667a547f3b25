"""Flask extensions, created once and bound in create_app: the OpenAPI layer and the rate limiter."""
from __future__ import annotations

from flask import request
from flask_limiter import Limiter
from flask_smorest import Api

from shared.errors import Unavailable


def rate_limit_key() -> str:
    """Limit by credential: the token (or session user) when authenticated, else the client address."""
    from api.auth import current_principal_or_none

    principal = current_principal_or_none()
    if principal is None:
        return f"ip:{request.remote_addr}"
    return f"token:{principal.token_id}" if principal.token_id else f"user:{principal.user_id}"


def ip_key() -> str:
    """The client's address (behind TRUSTED_PROXIES proxies: the one they forwarded, see api/__init__.py)."""
    return f"ip:{request.remote_addr}"


def require_enforced_limits() -> None:
    """Fail closed where a limit is the protection (login): the limiter swallows storage errors so the
    rest of the API keeps serving when Redis is down, and then records no limit for the request. A
    route that calls this answers 503 instead of running unlimited."""
    if limiter.enabled and not limiter.current_limits:
        raise Unavailable("Logging in is temporarily unavailable; please retry shortly.", retry_after=5)


def user_key() -> str:
    from api.auth import current_principal

    return f"user:{current_principal().user_id}"


api = Api()
limiter = Limiter(key_func=rate_limit_key, headers_enabled=True)
