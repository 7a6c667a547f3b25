"""The Flask API: create_app() wires settings, extensions, error rendering and the dialects."""
from __future__ import annotations

from flask import Flask

from api import errors
from api.dialects.common import STORABLE_JSON_SCHEMAS
from api.extensions import api, limiter
from shared.config import settings
from shared.observability import logs


def create_app(config: dict | None = None) -> Flask:
    logs.configure()  # LOG_FORMAT text|json, with the request id on every line
    app = Flask(__name__)
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
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        RATELIMIT_STORAGE_URI=settings.redis_url or "memory://",
        RATELIMIT_DEFAULT=settings.rate_limit_default,
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_HEADER_RETRY_AFTER="X-RateLimit-Retry-After",  # our 429s set Retry-After; polls keep theirs
        RATELIMIT_SWALLOW_ERRORS=True,
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
    api.DEFAULT_ERROR_RESPONSE_NAME = None  # each dialect documents its own error format (alt_response)
    api.init_app(app)
    limiter.init_app(app)
    errors.install(app)  # after api.init_app, so our renderers replace flask-smorest's

    from api.dialects import ai_threads, chats, v1_threads

    # Each dialect's error format, status mapping and public routes are data on this app (app.extensions).
    api.register_blueprint(ai_threads.blp)
    errors.register(app, ai_threads.DIALECT)
    api.register_blueprint(chats.auth_blp)
    api.register_blueprint(chats.blp)
    errors.register(app, chats.DIALECT)
    api.register_blueprint(v1_threads.blp)
    errors.register(app, v1_threads.DIALECT)

    from api import hardening, health, observability

    observability.install(app)  # request ids, HTTP metrics, /metrics, tracing (docs/operations.md)
    health.install(app)  # /healthz (the process) and /readyz (its dependencies)
    hardening.install(app)  # request guards for every dialect

    from api.cli import register_cli

    register_cli(app)
    return app
