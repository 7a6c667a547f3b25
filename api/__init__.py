"""The Flask API: create_app() wires settings, extensions, error rendering and the dialects."""
from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from api import docs_ui, errors, rate_limit_storage
from api.dialects.common import STORABLE_JSON_SCHEMAS
from api.extensions import api, limiter
from shared.config import Settings, settings
from shared.observability import logs

MIN_SECRET_KEY_CHARS = 32
DEFAULT_SECRET_KEY = Settings.__dataclass_fields__["secret_key"].default


def check_secret_key(config: Settings) -> None:
    """Refuse to start a deployment (Redis or a database server configured) with the built-in or a
    short SECRET_KEY: anyone who knows it can sign session cookies. The embedded mode (SQLite, no
    Redis: ``make run`` on one machine) keeps its development default."""
    deployed = bool(config.redis_url) or not config.database_url.startswith("sqlite")
    if not deployed:
        return
    if config.secret_key == DEFAULT_SECRET_KEY or len(config.secret_key) < MIN_SECRET_KEY_CHARS:
        raise RuntimeError(
            f"SECRET_KEY must be set to a random value of at least {MIN_SECRET_KEY_CHARS} characters when "
            "REDIS_URL or a database server is configured (it signs the session cookies); e.g. "
            "SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(48))')")


def rate_limit_storage_uri(redis_url: str) -> str:
    """The limiter's storage: Redis through api/rate_limit_storage.py (one round trip per limited
    request), else in memory (embedded mode)."""
    if redis_url.startswith(("redis://", "rediss://")):
        return "threadline+" + redis_url
    return redis_url or "memory://"


class App(Flask):
    """Flask, with the answer of ``ensure_sync`` remembered per function.

    Flask and flask-smorest call every hook, view and decorator layer through ``ensure_sync``, which
    asks ``inspect.iscoroutinefunction`` each time (a score of times per request, ~1% of a post). No
    function of this app is a coroutine, and a function's kind does not change: the synchronous ones
    seen are kept in a set (bounded, in case something hands over a new callable per request)."""

    KNOWN_SYNC_MAX = 4096

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._known_sync: set = set()

    def ensure_sync(self, func):
        if func in self._known_sync:
            return func
        result = super().ensure_sync(func)
        if result is func and len(self._known_sync) < self.KNOWN_SYNC_MAX:
            self._known_sync.add(func)
        return result


def create_app(config: dict | None = None) -> Flask:
    logs.configure()  # LOG_FORMAT text|json, with the request id on every line
    check_secret_key(settings)
    app = App(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        SESSION_COOKIE_SAMESITE="Lax",
        API_TITLE="Threadline",
        API_VERSION="1.0",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL=docs_ui.ASSET_URL,  # served from the pinned package, no CDN (api/docs_ui.py)
        RATELIMIT_STORAGE_URI=rate_limit_storage_uri(settings.redis_url),
        # Without timeouts an API host whose packets to Redis vanish (a partition, not a refused
        # connection) hangs every request in the limiter's INCR until TCP gives up, minutes later
        # (tests/hosts/test_redis_partition.py). With them the limiter errs within 2 s and, swallowed,
        # the request goes on; waits fall back to re-reading the database.
        RATELIMIT_STORAGE_OPTIONS={"socket_timeout": 2, "socket_connect_timeout": 2} if settings.redis_url else {},
        RATELIMIT_DEFAULT=settings.rate_limit_default,
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_HEADER_RETRY_AFTER="X-RateLimit-Retry-After",  # our 429s set Retry-After; polls keep theirs
        RATELIMIT_SWALLOW_ERRORS=True,  # the API keeps serving without Redis; login fails closed instead
        TRUSTED_PROXIES=settings.trusted_proxies,
        RATELIMIT_KEY_PREFIX=f"threadline:{settings.run_queue}",
        PERMANENT_SESSION_LIFETIME=settings.session_lifetime,
        API_SPEC_OPTIONS={
            "components": {"schemas": STORABLE_JSON_SCHEMAS, "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API token (flask tokens create)."},
                "cookieAuth": {"type": "apiKey", "in": "cookie", "name": "session",
                               "description": "The session cookie from POST /api/auth/login (chats dialect)."},
            }},
            "security": [{"bearerAuth": []}, {"cookieAuth": []}],
        },
    )
    app.config.update(config or {})
    if proxies := int(app.config["TRUSTED_PROXIES"]):
        # Behind N reverse proxies, the client's address (rate limits per address) and the scheme/host
        # (the same-origin check on cookie writes) come from the X-Forwarded-* headers they set. With 0
        # (the default) those headers are ignored: a client cannot pick its own address.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies)
    api.DEFAULT_ERROR_RESPONSE_NAME = None  # each dialect documents its own error format (alt_response)
    api.init_app(app)
    limiter.init_app(app)
    # before the limiter's own hook: a request starts with nothing counted (api/rate_limit_storage.py)
    app.before_request_funcs.setdefault(None, []).insert(0, rate_limit_storage.forget)
    errors.install(app)  # after api.init_app, so our renderers replace flask-smorest's

    from api.dialects import ai_threads, chats, v1_threads

    # Each dialect's error format, status mapping and public routes are data on this app (app.extensions).
    api.register_blueprint(ai_threads.blp)
    api.register_blueprint(ai_threads.reports_blp)
    api.register_blueprint(ai_threads.memories_blp)
    errors.register(app, ai_threads.DIALECT)
    api.register_blueprint(chats.auth_blp)
    api.register_blueprint(chats.blp)
    api.register_blueprint(chats.catalog_blp)
    errors.register(app, chats.DIALECT)
    api.register_blueprint(v1_threads.blp)
    api.register_blueprint(v1_threads.memories_blp)
    errors.register(app, v1_threads.DIALECT)
    from api import streaming, web

    app.register_blueprint(web.bp)  # the chat page at / and /chat (not in the OpenAPI document)

    streaming.document(api.spec)  # the text/event-stream answers next to the JSON ones

    from api import hardening, health, observability

    docs_ui.install(app)  # /docs/assets/: the Swagger UI files from the installed package
    observability.install(app)  # request ids, HTTP metrics, /metrics, tracing (docs/operations.md)
    health.install(app)  # /healthz (the process) and /readyz (its dependencies)
    hardening.install(app)  # request guards for every dialect

    from api.cli import register_cli

    register_cli(app)
    return app
