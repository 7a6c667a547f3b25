"""OpenTelemetry tracing, off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-only
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, and never with ``OTEL_SDK_DISABLED=true``.

When on, each process exports spans over OTLP/HTTP (the exporter reads the standard ``OTEL_*``
variables itself: headers, timeout, batch delays) with the maintained instrumentations: Flask (the
API), Celery (publish and run, with the trace context in the task headers), SQLAlchemy, httpx and
httpx2 (the web tools' calls and the openai SDK's model calls) and Redis. One message becomes one trace: the POST → the
publish → the task → its queries and each model call → the stored answer. The agent's tool threads
join the run's trace through ``context.carry``.

When off, nothing of OpenTelemetry is even imported.
"""
from __future__ import annotations

import logging

from shared.config import settings

log = logging.getLogger(__name__)
EXCLUDED_URLS = "healthz,readyz,metrics"  # probes and scrapes are not traces worth keeping

_service: str | None = None


def setup(service: str, flask_app=None) -> bool:
    """Install the tracer provider and the instrumentations in this process (once); True when tracing is on."""
    global _service
    if not settings.tracing:
        return False
    if _service is None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor, HTTPXClientInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        _service = settings.otel_service_name or service
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: _service}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        CeleryInstrumentor().instrument()
        # The instrumentation declares SQLAlchemy < 2.1 and would do nothing on our 2.1; the engine
        # events it uses are the same in 2.1 (tests/integration/test_observability.py sees the spans).
        SQLAlchemyInstrumentor().instrument(skip_dep_check=True)
        _trace_our_engine()
        HTTPXClientInstrumentor().instrument()  # the web tools' httpx
        HTTPX2ClientInstrumentor().instrument()  # the openai SDK's client is httpx2
        RedisInstrumentor().instrument()
        log.info("tracing on: service %s, OTLP/HTTP to %s", _service,
                 settings.otel_traces_endpoint or settings.otel_endpoint)
    if flask_app is not None and not flask_app.extensions.get("threadline.tracing"):
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().instrument_app(flask_app, excluded_urls=EXCLUDED_URLS)
        flask_app.extensions["threadline.tracing"] = True
    return True


def _trace_our_engine() -> None:
    """shared.db imported ``create_engine`` by name before the instrumentor wrapped it: point that name
    at the wrapped one and forget an engine made already, so the next one is traced."""
    import sqlalchemy

    from shared import db

    db.create_engine = sqlalchemy.create_engine
    db.dispose()


def shutdown() -> None:
    """Flush the spans still in the batch (a worker or beat exiting)."""
    if _service is None:
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()
