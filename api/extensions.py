"""Flask extensions, created once and bound in create_app: the OpenAPI layer and the rate limiter."""
from __future__ import annotations

from flask import request
from flask_limiter import Limiter
from flask_smorest import Api


def rate_limit_key() -> str:
    """Limit by credential: the token (or session user) when authenticated, else the client address."""
    from api.auth import current_principal_or_none

    principal = current_principal_or_none()
    if principal is None:
        return f"ip:{request.remote_addr}"
    return f"token:{principal.token_id}" if principal.token_id else f"user:{principal.user_id}"


def user_key() -> str:
    from api.auth import current_principal

    return f"user:{current_principal().user_id}"


api = Api()
limiter = Limiter(key_func=rate_limit_key, headers_enabled=True)
