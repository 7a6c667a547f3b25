"""api/extensions.py's RouteLimiter (no before-request pass over a route with limits of its own, exemption
scopes worked out once per app) decides, counts and answers as flask-limiter's own Limiter: the same
statuses and X-RateLimit-* headers for a route with its own limit, one that adds to the defaults, one
under the defaults only, and an exempt blueprint."""
from __future__ import annotations

from flask import Blueprint, Flask
from flask_limiter import Limiter

from api.extensions import RouteLimiter


def limited_app(limiter_class: type[Limiter]) -> Flask:
    app = Flask(__name__)
    limiter = limiter_class(key_func=lambda: "one-client", headers_enabled=True, storage_uri="memory://",
                            default_limits=["4/minute"])
    limiter.init_app(app)

    @app.get("/own")
    @limiter.limit("2/minute")
    def own():
        return "ok"

    @app.get("/added")
    @limiter.limit("3/minute", override_defaults=False)
    def added():
        return "ok"

    @app.get("/defaults")
    def defaults():
        return "ok"

    free = Blueprint("free", __name__)

    @free.get("/free")
    def unlimited():
        return "ok"

    limiter.exempt(free)
    app.register_blueprint(free)
    return app


def answers(app: Flask) -> list[tuple[str, int, dict]]:
    client = app.test_client()
    out = []
    for path in ["/own"] * 3 + ["/added"] * 4 + ["/defaults"] * 2 + ["/free"] * 6 + ["/own", "/added"]:
        response = client.get(path)
        headers = {k: v for k, v in response.headers.items() if k.startswith("X-RateLimit") and k != "X-RateLimit-Reset"}
        out.append((path, response.status_code, headers))
    return out


def test_route_limiter_answers_as_flask_limiter():
    ours, theirs = answers(limited_app(RouteLimiter)), answers(limited_app(Limiter))
    assert ours == theirs
    statuses = [status for _, status, _ in ours]
    assert statuses[:3] == [200, 200, 429]  # the route's own 2/minute
    assert 429 in statuses[3:7]  # /added: its 3/minute and the shared 4/minute default
    assert statuses[9:15] == [200] * 6 and not any(h for p, _, h in ours if p == "/free")  # exempt
