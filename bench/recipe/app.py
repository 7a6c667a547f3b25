"""The recipe's Flask app: insert the message, then ``answer.delay(thread_id).get(timeout=wait)``.

``Prefer: wait=0`` returns at once with the answer queued (the recipe's fire-and-forget variant, for
the bench's scenario 1: the answer is stored, nobody collects the task's result); any other wait blocks on the Redis result backend up to that many seconds.
"""
from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager

from celery.exceptions import TimeoutError as CeleryTimeout
from flask import Flask, jsonify, request
from psycopg2.pool import ThreadedConnectionPool

from bench.recipe.tasks import answer

app = Flask(__name__)
_pool: ThreadedConnectionPool | None = None
_pool_lock = threading.Lock()


@contextmanager
def connection():
    global _pool
    with _pool_lock:  # created after gunicorn's fork, once per process
        if _pool is None:
            _pool = ThreadedConnectionPool(1, int(os.environ.get("RECIPE_POOL", "8")),
                                           os.environ["RECIPE_DATABASE_URL"])
    conn = _pool.getconn()
    try:
        with conn:
            yield conn
    finally:
        _pool.putconn(conn)


@app.post("/api/v1/ai/threads/<int:thread_id>/messages")
def post_message(thread_id: int):
    content = (request.get_json(silent=True) or {}).get("content")
    if not isinstance(content, str) or not content:
        return jsonify(message="content is required"), 422
    wait = re.search(r"wait=(\d+(?:\.\d+)?)", request.headers.get("Prefer", ""))
    wait = float(wait.group(1)) if wait else 30.0
    with connection() as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO messages (thread_id, role, content) VALUES (%s, 'user', %s) "
                    "RETURNING id, created_at", (thread_id, content))
        message_id, created_at = cur.fetchone()
    created = {"id": message_id, "thread_id": thread_id, "role": "user", "content": content,
               "status": "completed", "created_at": created_at.isoformat()}
    if wait <= 0:
        # Fire and forget: delay() would subscribe this process to the result's pub/sub channel for
        # good (Celery's Redis backend unsubscribes in get()), and the first get() after a thousand of
        # them stalled for seconds draining their results.
        queued = answer.apply_async((thread_id,), ignore_result=True)
        return jsonify(createdMessage=created, responseMessage={"id": queued.id, "status": "queued"}), 201
    result = answer.delay(thread_id)
    try:
        response = result.get(timeout=wait)
    except CeleryTimeout:
        return jsonify(message="the answer took too long"), 504
    return jsonify(createdMessage=created, responseMessage=response), 201


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")
