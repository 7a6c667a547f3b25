"""Operations: what an operator sees of Threadline (docs/operations.md).

- ``context``: the request id, run id, thread id and tenant of the work in hand (contextvars), carried
  from the HTTP request into the task headers and onto every log line of the run.
- ``logs``: text or JSON log lines (``LOG_FORMAT``) that carry that context and never message content.
- ``metrics``: every Prometheus series, defined once for the API, the worker and beat.
- ``tracing``: OpenTelemetry, off unless an OTLP endpoint is configured.

The API hooks in through api/observability.py (Flask hooks), the worker and beat through
worker/observability.py (Celery signals), so the request and run code paths stay free of it.
"""
