"""Log lines as text (``make run``) or one JSON object per line (``LOG_FORMAT=json``, production).

Every record gets the context's ids (request id, run id, thread id, tenant) from ``ContextFilter``;
the JSON line is ``{"time", "level", "logger", "message", "request_id", "run_id", "thread_id",
"tenant_id", "process", "exc"}`` (ids only when set). What the code logs is ids, counts, error
classes — never message content, tokens or passwords (tests/integration/test_observability.py
checks a run's log lines for the message text and the bearer token).

The sweeper runs every SWEEP_INTERVAL seconds; Celery's INFO lines about sending, receiving and
finishing it would be most of an idle deployment's log, so ``QuietSweeps`` moves them to DEBUG (the
sweeper itself logs at INFO when it re-enqueued or failed a run).
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from shared.config import settings
from shared.observability import context

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"
SWEEP_TASK = "threadline.sweep_stale_runs"
QUIET_LOGGERS = ("celery.beat", "celery.app.trace", "celery.worker.strategy")


class ContextFilter(logging.Filter):
    """Puts the context's ids on the record (``record.request_id`` …) and a text suffix in ``record.context``."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = context.current()
        for name in context.FIELDS:
            setattr(record, name, fields.get(name))
        record.context = (" [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]") if fields else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ids from ``ContextFilter``; the traceback as one string field."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in context.FIELDS:
            if (value := getattr(record, name, None)) is not None:
                line[name] = value
        line["process"] = record.process
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class QuietSweeps(logging.Filter):
    """Celery's routine lines about the sweep task go to DEBUG: shown only when DEBUG is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or SWEEP_TASK not in str(record.msg) + str(record.args):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def configure() -> None:
    """The root handler for this process (API, worker or beat), once; replaces ``logging.basicConfig``."""
    root = logging.getLogger()
    if getattr(root, "_threadline_logging", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    if settings.log_format.strip().lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).addFilter(QuietSweeps())
    root._threadline_logging = True  # type: ignore[attr-defined]
