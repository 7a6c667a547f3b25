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
        self.summary = {**verdict, "tests": self.measured}
        SUMMARY_PATH.write_text(json.dumps(self.summary, indent=2) + "\n")
        return self.summary


LEDGER = HostsLedger()
