"""Gunicorn settings for the API. The gevent worker holds thousands of waiting requests cheaply;
psycogreen makes psycopg2 yield to other greenlets instead of blocking the whole worker."""
from __future__ import annotations


def post_fork(server, worker) -> None:
    if worker.__class__.__name__.startswith("Gevent"):
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
    from shared import db

    db.dispose()


def when_ready(server) -> None:
    server.log.info("threadline api ready")


graceful_timeout = 10
timeout = 120  # above WAIT_MAX, so a waiting request is never killed as a hung worker
keepalive = 5
worker_connections = 2000
