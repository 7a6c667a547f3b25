"""The hosts suite's figures: the fault suite's exactly-once ledger (tests/faults/ledger.py), plus
what each test measured (recovery times, latencies, link statistics), written to
``tests/hosts/last_run.json`` at the end of the session."""
from __future__ import annotations

import json
import math
from pathlib import Path

from sqlalchemy import Engine

from tests.faults.ledger import Ledger

SUMMARY_PATH = Path(__file__).with_name("last_run.json")


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (``share`` 0.99 for p99), in the values' unit; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


class HostsLedger(Ledger):
    def __init__(self) -> None:
        super().__init__()
        self.measured: dict[str, dict] = {}
        self.replays = 0
        self._seen: set[str] = set()

    def posted(self, response) -> None:
        """As the fault suite's, but a replay (the same Idempotency-Key, e.g. waited for on the other
        API host) is counted as a replay, not as another message sent."""
        if response.status_code == 201:
            message_id = response.json()["createdMessage"]["id"]
            with self._lock:
                if message_id in self._seen:
                    self.posts += 1
                    self.replays += 1
                    self.statuses[201] += 1
                    return
                self._seen.add(message_id)
        super().posted(response)

    def measure(self, test: str, **figures) -> None:
        """Record what ``test`` measured; numbers are rounded for reading."""
        with self._lock:
            self.measured.setdefault(test, {}).update(
                {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()})

    def finish(self, engine: Engine) -> dict:
        self.settle(engine)
        verdict = self.verdict(engine)
        for unused in ("hostile_requests", "hostile_statuses", "5xx_for_bad_input", "pending_during_outage"):
            verdict.pop(unused, None)
        self.summary = {**verdict, "replays": self.replays, "tests": self.measured}
        SUMMARY_PATH.write_text(json.dumps(self.summary, indent=2) + "\n")
        return self.summary


LEDGER = HostsLedger()
