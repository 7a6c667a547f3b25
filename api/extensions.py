"""Flask extensions, created once and bound in create_app: the OpenAPI layer and the rate limiter."""
from __future__ import annotations

from typing import Callable

import flask_smorest
import marshmallow as ma
from flask import current_app, request
from flask_limiter import Limiter
from flask_limiter._manager import LimitManager
from flask_limiter.util import get_qualified_name
from flask_smorest import Api
from webargs.flaskparser import FlaskParser

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


class SchemaReusingParser(FlaskParser):
    """webargs makes a new instance of an argument schema given as a class on every request (three per
    post: body, query, headers; marshmallow copies every declared field each time, about 3% of the
    post's CPU). A marshmallow 4 schema keeps no state between loads, so one instance per class serves
    every request (the classes here take no constructor arguments)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._instances: dict[type, ma.Schema] = {}

    def _get_schema(self, argmap, req) -> ma.Schema:
        if isinstance(argmap, type) and issubclass(argmap, ma.Schema):
            if (schema := self._instances.get(argmap)) is None:
                schema = self._instances.setdefault(argmap, argmap())
            return schema
        return super()._get_schema(argmap, req)


def _documenting_only(decorator: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """flask-smorest's ``alt_response`` and ``doc`` only add to the OpenAPI document, yet each wraps the
    view in a function that calls it through ``current_app.ensure_sync``: a route documenting seven
    error statuses ran seven such frames per request. This keeps what the decorator documented (its
    ``_apidoc``, which the route and the other decorators read from the function) and drops the frame."""

    def apply(func: Callable) -> Callable:
        func._apidoc = decorator(func)._apidoc  # type: ignore[attr-defined]
        return func

    return apply


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint with the schema-reusing arguments parser (every dialect uses this one),
    and documentation decorators that add nothing to a request's path (``_documenting_only``)."""

    ARGUMENTS_PARSER = SchemaReusingParser()

    def alt_response(self, *args, **kwargs) -> Callable[[Callable], Callable]:
        return _documenting_only(super().alt_response(*args, **kwargs))

    @staticmethod
    def doc(**kwargs) -> Callable[[Callable], Callable]:
        return _documenting_only(flask_smorest.Blueprint.doc(**kwargs))


class _ScopeCachingLimitManager(LimitManager):
    """flask-limiter's limit manager, with each endpoint's exemption scope worked out once per app.

    The scope (the route's exemptions, its blueprint's and the blueprint's ancestors') was worked out
    twice per limited request from the same data: the app's view functions and blueprints (fixed once
    the app serves) and the exemptions added through this manager (each one starts a new generation
    of the cache)."""

    generation = 0

    def exemption_scope(self, app, endpoint, blueprint):
        scopes = app.extensions.setdefault("threadline.exemption_scopes", {})
        key = (id(self), self.generation, endpoint, blueprint)
        if (scope := scopes.get(key)) is None:
            scope = scopes[key] = super().exemption_scope(app, endpoint, blueprint)
        return scope

    def add_route_exemption(self, route, scope) -> None:
        self.generation += 1
        super().add_route_exemption(route, scope)

    def add_blueprint_exemption(self, blueprint, scope) -> None:
        self.generation += 1
        super().add_blueprint_exemption(blueprint, scope)


class RouteLimiter(Limiter):
    """flask-limiter, without its before-request pass over a route that has limits of its own.

    flask-limiter checks every request twice: in a ``before_request`` hook (the application and default
    limits) and again in the wrapper of a route decorated with ``limiter.limit`` (that route's limits).
    For a decorated route the first pass finds nothing to count: a route's own limits replace the
    defaults, application and meta limits are not configured here, and no limit was hinted for the
    endpoint. Resolving that nothing (the route's exemptions, twice, its blueprint's, the meta limits)
    was ~3% of a post. The pass is skipped exactly then; everything else (the route's own check, its
    429, its headers, the defaults of every undecorated route) is flask-limiter's as before."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limit_manager.__class__ = _ScopeCachingLimitManager  # (flask-limiter builds its own in __init__)

    def _check_request_limit(self, callable_name: str | None = None, in_middleware: bool = True) -> None:
        if in_middleware and callable_name is None and not self._meta_limits \
                and not self.limit_manager._application_limits:
            endpoint = request.endpoint or ""
            view = current_app.view_functions.get(endpoint)
            if view is not None and get_qualified_name(view) in self._marked_for_limiting \
                    and not self.limit_manager.has_hints(endpoint):
                return
        super()._check_request_limit(callable_name, in_middleware)


api = Api()
limiter = RouteLimiter(key_func=rate_limit_key, headers_enabled=True)
