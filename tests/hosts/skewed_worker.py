"""``python -m tests.hosts.skewed_worker <celery arguments>``: the Celery worker, in a process whose
clock runs ``CLOCK_SKEW_SECONDS`` off, as on a host whose time is badly synchronised.

Network namespaces do not have clocks of their own (time namespaces shift only the monotonic and
boot clocks), so the skew is applied where Threadline reads the wall clock: ``utcnow()`` in
shared/models/base.py, which every service called for timestamps, leases included, before leases
moved to the database's clock."""
from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta

from shared.models import base

OFFSET = timedelta(seconds=float(os.environ["CLOCK_SKEW_SECONDS"]))


class SkewedDatetime(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) + OFFSET


base.datetime = SkewedDatetime

if __name__ == "__main__":
    from celery.__main__ import main

    sys.argv[0] = "celery"
    print(f"worker clock skewed by {OFFSET}: utcnow() = {base.utcnow().isoformat()}", flush=True)
    main()
