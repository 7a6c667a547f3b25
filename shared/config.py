"""Every Threadline setting, read once from the environment.

This is the only module that reads ``os.environ``. Each setting is declared once, below, with its
environment variable and its default (``env(NAME, default)``); ``load()`` reads them all. Defaults
give the embedded mode (SQLite, Celery's filesystem broker, in-memory rate limits, waiting by
polling, the scripted model), so a bare machine runs the whole service; setting ``DATABASE_URL`` and
``REDIS_URL`` switches to production mode.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ModelEntry:
    """One ``modelId`` a client may ask for: where it is served and under which name."""

    id: str
    model: str
    base_url: str
    api_key_env: str = "OPENAI_API_KEY"
    context_tokens: int = 8000

    def api_key(self) -> str:
        return os.environ.get(self.api_key_env, "") or "not-needed"


DEFAULT_MODEL_IDS = ("threadline-dev", "gpt-4", "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini")
SCRIPTED_MODEL_ID = "threadline-dev"  # the scripted development model's own id
# OPENAI_API_KEY without OPENAI_BASE_URL: OpenAI itself, answering with a small, cheap, capable model
# (tool calls and streaming) unless DEFAULT_MODEL_ID says otherwise.
OPENAI_URL = "https://api.openai.com/v1"
OPENAI_DEFAULT_MODEL_ID = "gpt-4o-mini"


def _model_registry(base_url: str, ids: tuple[str, ...] = DEFAULT_MODEL_IDS) -> dict[str, ModelEntry]:
    """The registry from ``MODELS_FILE`` (JSON list of entries) or every default id on ``base_url``."""
    path = os.environ.get("MODELS_FILE")
    if path:
        entries = [ModelEntry(**{"base_url": base_url, **item}) for item in json.loads(Path(path).read_text())]
    else:
        entries = [ModelEntry(id=model_id, model=model_id, base_url=base_url) for model_id in ids]
    return {entry.id: entry for entry in entries}


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "bool": _bool, "Path": Path,
                                             "tuple[str, ...]": _list}


def env(name: str, default: Any, parse: Callable[[str], Any] | None = None) -> Any:
    """A setting read from the environment variable ``name``; ``default`` when it is unset (or empty,
    for settings that are not text). ``parse`` defaults to the field's annotated type."""
    return field(default=default, metadata={"env": name, "parse": parse})


@dataclass(frozen=True)
class Settings:
    database_url: str = env("DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'threadline.db'}")
    redis_url: str = env("REDIS_URL", "")
    broker_url: str = env("CELERY_BROKER_URL", "")  # empty: REDIS_URL, else Celery's filesystem broker
    broker_dir: Path = env("BROKER_DIR", ROOT / "var" / "broker")
    run_queue: str = env("RUN_QUEUE", "runs")
    secret_key: str = env("SECRET_KEY", "dev-only-secret-change-me")
    session_cookie_secure: bool | None = env("SESSION_COOKIE_SECURE", None, _bool)  # None: True with Redis
    session_lifetime: int = env("SESSION_LIFETIME", 12 * 3600)  # seconds a chats-dialect login stays valid
    # The model registry: MODELS_FILE (JSON list of entries), else every DEFAULT_MODEL_IDS on OPENAI_BASE_URL;
    # without it, OpenAI itself when OPENAI_API_KEY is set (default model gpt-4o-mini), else the scripted
    # development model on SCRIPTED_MODEL_HOST:SCRIPTED_MODEL_PORT.
    default_model_id: str = env("DEFAULT_MODEL_ID", "threadline-dev")
    models: dict[str, ModelEntry] = field(default_factory=dict)
    scripted_model_host: str = env("SCRIPTED_MODEL_HOST", "127.0.0.1")
    scripted_model_port: int = env("SCRIPTED_MODEL_PORT", 8090)
    scripted_model_latency: float = env("SCRIPTED_MODEL_LATENCY", 0.0)
    # Waiting for an answer (api/waiting.py, shared/notify.py)
    wait_default: float = env("WAIT_DEFAULT", 30.0)
    wait_max: float = env("WAIT_MAX", 60.0)
    poll_interval: float = env("POLL_INTERVAL", 0.05)
    # Runs and the agent (shared/services/runs.py, worker/agent)
    run_max_steps: int = env("RUN_MAX_STEPS", 8)
    run_deadline: float = env("RUN_DEADLINE", 120.0)
    model_timeout: float = env("MODEL_TIMEOUT", 60.0)
    model_max_retries: int = env("MODEL_MAX_RETRIES", 3)
    lease_seconds: float = env("LEASE_SECONDS", 30.0)
    run_max_attempts: int = env("RUN_MAX_ATTEMPTS", 3)
    queued_stale_seconds: float = env("QUEUED_STALE_SECONDS", 30.0)
    sweep_interval: float = env("SWEEP_INTERVAL", 10.0)
    history_tokens: int = env("HISTORY_TOKENS", 3000)
    # at most this many earlier messages are read for the prompt (then HISTORY_TOKENS trims them)
    history_messages: int = env("HISTORY_MESSAGES", 50)
    tool_output_chars: int = env("TOOL_OUTPUT_CHARS", 4000)  # a step's output as stored and shown
    # Request guards and fairness (api/hardening.py, shared/services/runs.py; docs/reliability.md)
    rate_limit_default: str = env("RATE_LIMIT_DEFAULT", "600/minute")
    rate_limit_messages: str = env("RATE_LIMIT_MESSAGES", "60/minute")
    rate_limit_login: str = env("RATE_LIMIT_LOGIN", "10/minute")  # login attempts per email address
    max_request_bytes: int = env("MAX_REQUEST_BYTES", 256 * 1024)
    max_active_runs_per_user: int = env("MAX_ACTIVE_RUNS_PER_USER", 20)  # queued + in progress; 0 = no cap
    max_json_depth: int = env("MAX_JSON_DEPTH", 32)  # nesting of any JSON request body
    max_context_bytes: int = env("MAX_CONTEXT_BYTES", 64 * 1024)  # serialized size of a context/state object
    # Database pool (PostgreSQL); mind max_connections across processes
    db_pool_size: int = env("DB_POOL_SIZE", 10)  # connections per process
    db_max_overflow: int = env("DB_MAX_OVERFLOW", 20)
    db_pool_timeout: float = env("DB_POOL_TIMEOUT", 30.0)  # seconds a request may queue for a connection
    # Memories and documentation (shared/services/memories.py, worker/tools/read_doc.py)
    memory_prompt_limit: int = env("MEMORY_PROMPT_LIMIT", 5)  # memories recalled into the system prompt
    memory_max_chars: int = env("MEMORY_MAX_CHARS", 1000)  # longest memory a user may keep
    memory_max_per_user: int = env("MEMORY_MAX_PER_USER", 500)  # memories one user may keep
    docs_read_max_chars: int = env("DOCS_READ_MAX_CHARS", 12000)  # read_doc by document name returns at most this
    # Web tools (worker/tools/web_search.py, read_web_page.py; SSRF policy in shared/netguard.py)
    web_search_provider: str = env("WEB_SEARCH_PROVIDER", "searxng")  # searxng | brave
    web_search_url: str = env("WEB_SEARCH_URL", "", lambda value: value.rstrip("/"))  # brave: its API by default
    web_search_api_key: str = env("WEB_SEARCH_API_KEY", "")  # brave: the subscription token
    fetch_allowlist: tuple[str, ...] = env("FETCH_ALLOWLIST", ())
    fetch_timeout: float = env("FETCH_TIMEOUT", 10.0)
    fetch_max_bytes: int = env("FETCH_MAX_BYTES", 2 * 1024 * 1024)
    fetch_text_chars: int = env("FETCH_TEXT_CHARS", 8000)
    # query_data (shared/services/data_views.py)
    data_views_file: Path = env("DATA_VIEWS_FILE", ROOT / "shared" / "data_views.toml")
    data_row_cap: int = env("DATA_ROW_CAP", 100)
    data_statement_timeout: float = env("DATA_STATEMENT_TIMEOUT", 5.0)
    log_level: str = env("LOG_LEVEL", "INFO")
    # Streaming (shared/events.py, worker/agent/streaming.py, api/streaming.py; docs/api.md "Streaming")
    stream_coalesce_seconds: float = env("STREAM_COALESCE_SECONDS", 0.15)  # at most one text delta per interval (the first at once)...
    stream_coalesce_chars: int = env("STREAM_COALESCE_CHARS", 200)  # ...unless this many characters are waiting
    # Embedded mode (the run_events table): the worker's events are written together at most this often
    # (one SQLite write transaction each time) and with the finish; with Redis every event goes out at once.
    stream_table_flush_seconds: float = env("STREAM_TABLE_FLUSH_SECONDS", 0.25)
    stream_retention: float = env("STREAM_RETENTION", 3600.0)  # seconds a run's event log is kept after it ends
    stream_active_ttl: float = env("STREAM_ACTIVE_TTL", 86400.0)  # expiry of a log whose run has not ended
    stream_max_events: int = env("STREAM_MAX_EVENTS", 10000)  # events kept per run (Redis MAXLEN ~)
    stream_heartbeat: float = env("STREAM_HEARTBEAT", 15.0)  # seconds between SSE comments on an idle stream
    stream_max_seconds: float = env("STREAM_MAX_SECONDS", 900.0)  # one SSE connection's lifetime; then resume
    stream_step_output_chars: int = env("STREAM_STEP_OUTPUT_CHARS", 500)  # a step's output in step.completed
    scripted_model_token_rate: float = env("SCRIPTED_MODEL_TOKEN_RATE", 0.0)  # tokens/s (0 = as fast as it can)
    scripted_model_first_token_delay: float = env("SCRIPTED_MODEL_FIRST_TOKEN_DELAY", 0.0)  # seconds
    # Security (api/extensions.py, api/dialects/chats/routes.py, api/__init__.py; docs/security.md)
    rate_limit_login_ip: str = env("RATE_LIMIT_LOGIN_IP", "30/minute")  # login attempts per client address
    rate_limit_login_global: str = env("RATE_LIMIT_LOGIN_GLOBAL", "600/minute")  # login attempts in total
    trusted_proxies: int = env("TRUSTED_PROXIES", 0)  # reverse proxies in front of the API (X-Forwarded-*)
    # query_data views connect with this URL (a role that may only read) when set; empty: DATABASE_URL
    data_views_database_url: str = env("DATA_VIEWS_DATABASE_URL", "")
    # Operations (shared/observability; docs/operations.md)
    log_format: str = env("LOG_FORMAT", "text")  # text | json (one JSON object per line)
    metrics_token: str = env("METRICS_TOKEN", "")  # set: the API's /metrics wants "Authorization: Bearer <it>"
    metrics_addr: str = env("METRICS_ADDR", "127.0.0.1")  # where workers and beat serve their /metrics
    worker_metrics_port: int = env("WORKER_METRICS_PORT", 9101)  # busy: the next free one of 16; 0: off
    beat_metrics_port: int = env("BEAT_METRICS_PORT", 9102)
    queue_metrics_interval: float = env("QUEUE_METRICS_INTERVAL", 15.0)  # beat's queue depth/age look-up
    metrics_multiproc_dir: str = env("PROMETHEUS_MULTIPROC_DIR", "")  # gunicorn's; empty: a temporary one
    otel_endpoint: str = env("OTEL_EXPORTER_OTLP_ENDPOINT", "")  # tracing is off unless this (or the
    otel_traces_endpoint: str = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")  # traces-only one) is set
    otel_sdk_disabled: bool = env("OTEL_SDK_DISABLED", False)
    otel_service_name: str = env("OTEL_SERVICE_NAME", "")  # empty: threadline-api / -worker / -beat
    # Webhooks on run completion (shared/services/webhooks.py): attempt n waits base * 2**(n-1), capped
    webhook_max_attempts: int = env("WEBHOOK_MAX_ATTEMPTS", 12)  # 10 s … 1 h apart: about 3.5 h in all
    webhook_backoff_base: float = env("WEBHOOK_BACKOFF_BASE", 10.0)
    webhook_backoff_max: float = env("WEBHOOK_BACKOFF_MAX", 3600.0)
    webhook_timeout: float = env("WEBHOOK_TIMEOUT", 10.0)

    @property
    def answering_model(self) -> ModelEntry | None:
        """The registry entry that answers when a client names no model (None: the id is unknown)."""
        return self.models.get(self.default_model_id)

    @property
    def scripted_model_url(self) -> str:
        return f"http://{self.scripted_model_host}:{self.scripted_model_port}/v1"

    @property
    def uses_scripted_model(self) -> bool:
        """True when some model of the registry is the scripted development model (make run starts it)."""
        return any(entry.base_url.rstrip("/") == self.scripted_model_url for entry in self.models.values())

    @property
    def tracing(self) -> bool:
        """OpenTelemetry tracing is on only when an OTLP endpoint is configured (standard OTel variables)."""
        return bool(self.otel_endpoint or self.otel_traces_endpoint) and not self.otel_sdk_disabled

    @property
    def embedded(self) -> bool:
        """True without Redis: filesystem broker, in-memory limits, waiting by polling."""
        return not self.redis_url

    @property
    def notify_channel(self) -> str:
        return f"threadline:{self.run_queue}:run-finished"


def _read(spec) -> Any:
    raw = os.environ.get(spec.metadata["env"])
    if raw is None or (raw == "" and spec.type != "str"):
        return spec.default
    parse = spec.metadata["parse"] or _PARSERS.get(spec.type, str)
    return parse(raw)


def load() -> Settings:
    """Read the environment into a Settings object (tests call this again after changing it)."""
    values = {spec.name: _read(spec) for spec in fields(Settings) if "env" in spec.metadata}
    # Defaults that follow from other settings.
    values["broker_url"] = values["broker_url"] or values["redis_url"] or "filesystem://"
    if values["session_cookie_secure"] is None:
        values["session_cookie_secure"] = bool(values["redis_url"])  # production serves HTTPS
    scripted = f"http://{values['scripted_model_host']}:{values['scripted_model_port']}/v1"
    if os.environ.get("OPENAI_BASE_URL"):
        values["models"] = _model_registry(os.environ["OPENAI_BASE_URL"])
    elif os.environ.get("OPENAI_API_KEY"):
        # A key and no server: OpenAI's own endpoint. The scripted model's id is not offered there (OpenAI
        # has no such model), and the default answering model is a real one unless DEFAULT_MODEL_ID is set.
        values["models"] = _model_registry(OPENAI_URL, tuple(i for i in DEFAULT_MODEL_IDS if i != SCRIPTED_MODEL_ID))
        if not os.environ.get("DEFAULT_MODEL_ID"):
            values["default_model_id"] = OPENAI_DEFAULT_MODEL_ID
    else:
        values["models"] = _model_registry(scripted)
    return Settings(**values)


settings = load()
