"""The recipe's Celery task: last 20 messages, the model through the openai SDK, insert the answer."""
from __future__ import annotations

import os

import psycopg2
from celery import Celery
from openai import OpenAI

celery = Celery("recipe", broker=os.environ.get("RECIPE_BROKER_URL", "redis://127.0.0.1:6379/0"),
                backend=os.environ.get("RECIPE_BACKEND_URL", "redis://127.0.0.1:6379/1"))
celery.conf.task_default_queue = os.environ.get("RECIPE_QUEUE", "recipe")

_conn = None
_client = None


def connection():
    """One connection per worker process, opened after the fork (prefork children must not share one)."""
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg2.connect(os.environ["RECIPE_DATABASE_URL"])
        _conn.autocommit = True
    return _conn


def model_client() -> OpenAI:
    global _client
    if _client is None:
        _client = OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY from the environment
    return _client


@celery.task
def answer(thread_id: int) -> dict:
    with connection().cursor() as cur:
        cur.execute("SELECT role, content FROM messages WHERE thread_id = %s ORDER BY id DESC LIMIT 20", (thread_id,))
        history = [{"role": role, "content": content} for role, content in reversed(cur.fetchall())]
    completion = model_client().chat.completions.create(model="threadline-dev", messages=history)
    content = completion.choices[0].message.content or ""
    with connection().cursor() as cur:
        cur.execute("INSERT INTO messages (thread_id, role, content) VALUES (%s, 'assistant', %s) "
                    "RETURNING id, created_at", (thread_id, content))
        message_id, created_at = cur.fetchone()
    return {"id": message_id, "thread_id": thread_id, "role": "assistant", "content": content,
            "status": "completed", "created_at": created_at.isoformat()}
