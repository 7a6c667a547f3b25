"""Liveness and readiness probes.

``/healthz`` answers as long as the process serves HTTP (restart me if this fails). ``/readyz``
checks each dependency with a short timeout and answers 503 when one is down (send me no traffic
for now), naming which one: ``database``, ``broker`` and, when it is a separate server, ``redis``
(rate limits and run-finished notifications). Error details stay in the log; the probe only names
the exception class, never a URL or a password.

``/readyz`` is unauthenticated and exempt from rate limits (orchestrators probe it), so a flood of
probes must stay cheap: its result is cached for ``READY_CACHE_SECONDS`` and computed by one request
at a time per process (single flight: concurrent probes wait for that one result instead of each
checking). The checks use pooled connections kept for the probe: one PostgreSQL connection per API
process (a pool of one, apart from the request pool so a probe neither waits on nor disturbs it)
and one Redis client per URL. So however many probes arrive, each API process holds at most one
probe connection to PostgreSQL (tests/integration/test_security_api.py floods it with 2,000).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable

from flask import Blueprint, Flask, jsonify
from sqlalchemy import Engine, create_engine, text

from shared import db
from shared.config import settings

log = logging.getLogger(__name__)
PROBE_TIMEOUT = 2  # seconds, per dependency
READY_CACHE_SECONDS = 1.0  # a probe result serves every probe of the next second

blp = Blueprint("health", __name__)
_probe_engine: Engine | None = None
_redis_clients: dict[str, object] = {}
_lock = threading.Lock()  # green under gevent (the API's gunicorn workers are monkey-patched)
_cached: tuple[float, dict] | None = None  # (monotonic expiry, results)


def _database_engine() -> Engine:
    """A pool of one connection with a connect and statement timeout, apart from the request pool;
    SQLite (embedded mode) simply uses the application's engine."""
    global _probe_engine
    if settings.database_url.startswith("sqlite"):
        return db.engine()
    if _probe_engine is None:
        _probe_engine = create_engine(
            settings.database_url, pool_size=1, max_overflow=0, pool_timeout=PROBE_TIMEOUT, pool_pre_ping=False,
            pool_recycle=300,
            connect_args={"connect_timeout": PROBE_TIMEOUT, "options": f"-c statement_timeout={PROBE_TIMEOUT * 1000}"},
        )
    return _probe_engine


def check_database() -> None:
    with _database_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


def _ping_redis(url: str) -> None:
    """PING through a client kept per URL (its own small connection pool), not a new client per probe."""
    import redis

    client = _redis_clients.get(url)
    if client is None:
        client = _redis_clients[url] = redis.Redis.from_url(
            url, socket_connect_timeout=PROBE_TIMEOUT, socket_timeout=PROBE_TIMEOUT, max_connections=2)
    client.ping()


def check_broker() -> None:
    if settings.broker_url.startswith("filesystem"):
        folder = settings.broker_dir / "queue"
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".readyz-{uuid.uuid4().hex}"  # never matches a queue's "*.<queue>.msg" files
        probe.write_text("ok")
        probe.unlink()
    else:
        _ping_redis(settings.broker_url)


def checks() -> dict[str, Callable[[], None]]:
    found = {"database": check_database, "broker": check_broker}
    if settings.redis_url and settings.redis_url != settings.broker_url:
        found["redis"] = lambda: _ping_redis(settings.redis_url)
    return found


def _run(check: Callable[[], None]) -> dict:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - a probe reports, it never raises
        log.warning("readiness check failed: %s: %s", type(exc).__name__, exc)
        return {"status": "down", "error": type(exc).__name__}
    return {"status": "up", "ms": round((time.perf_counter() - started) * 1000, 1)}


@blp.get("/healthz")
def healthz():
    """The process is alive; says nothing about its dependencies."""
    return jsonify(status="ok")


def readiness() -> dict:
    """Every check's result, at most READY_CACHE_SECONDS old; one request per process computes it."""
    global _cached
    cached = _cached
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    with _lock:
        cached = _cached
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]  # computed by the request we waited for
        results = {name: _run(check) for name, check in checks().items()}
        _cached = (time.monotonic() + READY_CACHE_SECONDS, results)
        return results


@blp.get("/readyz")
def readyz():
    """Each dependency up or down; 503 when any is down (cached for a second, see the module docstring)."""
    results = readiness()
    ready = all(r["status"] == "up" for r in results.values())
    response = jsonify(status="ready" if ready else "unavailable", checks=results)
    response.status_code = 200 if ready else 503
    if not ready:
        response.headers["Retry-After"] = "5"
    response.headers["Cache-Control"] = "no-store"
    return response


def install(app: Flask) -> None:
    from api.extensions import limiter

    limiter.exempt(blp)
    app.register_blueprint(blp)
