"""What the fault suite did and what the database says came of it.

Tests record every message they got a 201 for, every fault they injected and every hostile request
they sent. At the end the ledger checks exactly-once in the database — for each recorded user
message: how many runs, how many assistant messages, in which state — and writes the figures to
``tests/faults/last_run.json``.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import Engine, text

SUMMARY_PATH = Path(__file__).with_name("last_run.json")
FINISHED = ("completed", "failed")


class Ledger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: list[str] = []
        self.posts = 0
        self.faults: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.hostile_requests = 0
        self.hostile_5xx = 0
        self.hostile_statuses: Counter[int] = Counter()
        self.pending_during_outage = 0
        self.summary: dict | None = None

    # -- recording -------------------------------------------------------------------------------
    def posted(self, response) -> None:
        """Record one message POST; a 201 means a user message the system now owes an answer."""
        with self._lock:
            self.posts += 1
            self.statuses[response.status_code] += 1
            if response.status_code == 201:
                self.sent.append(response.json()["createdMessage"]["id"])

    def fault(self, kind: str, count: int = 1) -> None:
        with self._lock:
            self.faults[kind] += count

    def hostile(self, status: int) -> None:
        with self._lock:
            self.hostile_requests += 1
            self.hostile_5xx += status >= 500
            self.hostile_statuses[status] += 1

    # -- the verdict -----------------------------------------------------------------------------
    def outcomes(self, engine: Engine, ids: list[str] | None = None) -> list[dict]:
        """Per user message: runs behind it, assistant messages answering it, their states."""
        ids = list(self.sent if ids is None else ids)
        if not ids:
            return []
        query = text("""
            SELECT m.id::text AS id, m.thread_id,
                   count(r.id) AS runs,
                   count(a.id) AS answers,
                   coalesce(array_agg(a.status) FILTER (WHERE a.id IS NOT NULL), '{}') AS statuses,
                   bool_or(a.is_error) AS is_error
            FROM messages m
            LEFT JOIN runs r ON r.request_message_id = m.id
            LEFT JOIN messages a ON a.id = r.response_message_id AND a.role = 'assistant'
            WHERE m.id::text = ANY(:ids)
            GROUP BY m.id, m.thread_id
        """)
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query, {"ids": ids})]

    def settle(self, engine: Engine, timeout: float = 120.0) -> None:
        """Give the system time to answer what it owes (the sweeper's retries included)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.outcomes(engine)
            if all(r["runs"] >= 1 and all(s in FINISHED for s in r["statuses"]) for r in rows):
                return
            time.sleep(0.5)

    def verdict(self, engine: Engine) -> dict:
        rows = self.outcomes(engine)
        threads = sorted({r["thread_id"] for r in rows})
        orphans = 0
        if threads:
            with engine.connect() as conn:  # an assistant message no run owns would be a second answer
                orphans = conn.execute(text("""
                    SELECT count(*) FROM messages a
                    WHERE a.thread_id = ANY(:threads) AND a.role = 'assistant'
                      AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.response_message_id = a.id)
                """), {"threads": threads}).scalar_one()
        lost = [r["id"] for r in rows if r["answers"] == 0 or not all(s in FINISHED for s in r["statuses"])]
        lost += [i for i in self.sent if i not in {r["id"] for r in rows}]  # 201 but not stored at all
        twice = [r["id"] for r in rows if r["answers"] > 1 or r["runs"] > 1]
        return {
            "messages_posted": self.posts,
            "messages_sent": len(self.sent),
            "post_statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "pending_during_outage": self.pending_during_outage,
            "faults_injected": dict(sorted(self.faults.items())),
            "answered_completed": sum(1 for r in rows if r["statuses"] == ["completed"]),
            "answered_failed": sum(1 for r in rows if r["statuses"] == ["failed"]),
            "messages_lost": len(lost),
            "answered_twice": len(twice) + orphans,
            "hostile_requests": self.hostile_requests,
            "hostile_statuses": {str(k): v for k, v in sorted(self.hostile_statuses.items())},
            "5xx_for_bad_input": self.hostile_5xx,
            "lost_ids": lost[:20],
            "twice_ids": twice[:20],
        }

    def finish(self, engine: Engine) -> dict:
        self.settle(engine)
        self.summary = self.verdict(engine)
        SUMMARY_PATH.write_text(json.dumps(self.summary, indent=2) + "\n")
        return self.summary


LEDGER = Ledger()
