"""The textbook recipe issue 14 measures Threadline against: what a Python developer writes first.

Flask inserts the user's message and blocks in ``task.delay().get(timeout=…)`` on Celery's Redis
result backend; the task reads the thread's last 20 messages, calls the model through the ``openai``
SDK and inserts the answer. No auth, caps, leases, steps or exactly-once: only the round trip, so the
bench can say what Threadline's guarantees cost. It speaks the ai-threads post route's path and
response shape so bench/load.py drives both unchanged.

Configured by environment: RECIPE_DATABASE_URL (its own database on the same PostgreSQL server),
RECIPE_BROKER_URL / RECIPE_BACKEND_URL (Redis), RECIPE_QUEUE, OPENAI_BASE_URL / OPENAI_API_KEY.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id bigserial PRIMARY KEY,
    thread_id integer NOT NULL,
    role text NOT NULL,
    content text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS messages_thread_id ON messages (thread_id, id);
"""
