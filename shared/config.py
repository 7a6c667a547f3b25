"""Every Threadline setting, read once from the environment.

This is the only module that reads ``os.environ``. Defaults give the embedded mode (SQLite, Celery's
filesystem broker, in-memory rate limits, waiting by polling, the scripted model), so a bare machine
runs the whole service; setting ``DATABASE_URL`` and ``REDIS_URL`` switches to production mode.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


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


def _model_registry(base_url: str) -> dict[str, ModelEntry]:
    """The registry from ``MODELS_FILE`` (JSON list of entries) or every default id on ``OPENAI_BASE_URL``."""
    path = os.environ.get("MODELS_FILE")
    if path:
        entries = [ModelEntry(**{"base_url": base_url, **item}) for item in json.loads(Path(path).read_text())]
    else:
        entries = [ModelEntry(id=model_id, model=model_id, base_url=base_url) for model_id in DEFAULT_MODEL_IDS]
    return {entry.id: entry for entry in entries}


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    broker_url: str
    broker_dir: Path
    run_queue: str
    secret_key: str
    session_cookie_secure: bool
    openai_base_url: str
    default_model_id: str
    models: dict[str, ModelEntry]
    wait_default: float
    wait_max: float
    poll_interval: float
    run_max_steps: int
    run_deadline: float
    model_timeout: float
    model_max_retries: int
    lease_seconds: float
    run_max_attempts: int
    queued_stale_seconds: float
    sweep_interval: float
    history_tokens: int
    rate_limit_default: str
    rate_limit_messages: str
    max_request_bytes: int
    log_level: str
    scripted_model_host: str
    scripted_model_port: int
    scripted_model_latency: float
    tool_output_chars: int = 4000
    # Request guards and fairness (api/hardening.py, shared/services/messages.py; docs/reliability.md)
    max_active_runs_per_user: int = 20  # queued + in-progress answers one user may have; 0 = no cap
    max_json_depth: int = 32  # nesting of any JSON request body
    max_context_bytes: int = 64 * 1024  # serialized size of a message's context/state object
    db_pool_size: int = 10  # connections per process (PostgreSQL); mind max_connections across processes
    db_max_overflow: int = 20
    db_pool_timeout: float = 30.0  # seconds a request may queue for a connection under a burst
    memory_prompt_limit: int = 5  # memories recalled into the system prompt
    memory_max_chars: int = 1000  # longest memory a user may keep
    memory_max_per_user: int = 500  # memories one user may keep
    docs_read_max_chars: int = 12000  # read_doc by document name returns at most this much text
    # Web tools (worker/tools/web_search.py, read_web_page.py; SSRF policy in shared/netguard.py)
    web_search_provider: str = "searxng"
    web_search_url: str = ""
    fetch_allowlist: tuple[str, ...] = ()
    fetch_timeout: float = 10.0
    fetch_max_bytes: int = 2 * 1024 * 1024
    fetch_text_chars: int = 8000
    # query_data (shared/services/data_views.py)
    data_views_file: Path = ROOT / "shared" / "data_views.toml"
    data_row_cap: int = 100
    data_statement_timeout: float = 5.0
    session_lifetime: int = 12 * 3600  # seconds a chats-dialect login stays valid (shared/services/sessions.py)
    rate_limit_login: str = "10/minute"  # login attempts per email address
    extra: dict = field(default_factory=dict)
    # Streaming (shared/events.py, worker/agent/streaming.py, api/streaming.py; docs/api.md "Streaming")
    stream_coalesce_seconds: float = 0.05  # the worker writes at most one text delta per this interval...
    stream_coalesce_chars: int = 200  # ...unless this many characters are waiting
    stream_retention: float = 3600.0  # seconds a run's event log is kept after the run ends
    stream_active_ttl: float = 86400.0  # expiry of a log whose run has not ended (a lost run's log goes too)
    stream_max_events: int = 10000  # events kept per run (Redis MAXLEN ~); coalescing keeps real runs far below
    stream_heartbeat: float = 15.0  # seconds between SSE comment lines on an idle stream
    stream_max_seconds: float = 900.0  # one SSE connection's lifetime; the client resumes with Last-Event-ID
    stream_step_output_chars: int = 500  # a step's output in step.completed events (the stored step keeps more)
    scripted_model_token_rate: float = 0.0  # tokens/s the scripted model streams at (0 = as fast as it can)
    scripted_model_first_token_delay: float = 0.0  # seconds before its first streamed token

    @property
    def embedded(self) -> bool:
        """True without Redis: filesystem broker, in-memory limits, waiting by polling."""
        return not self.redis_url

    @property
    def notify_channel(self) -> str:
        return f"threadline:{self.run_queue}:run-finished"


def load() -> Settings:
    """Read the environment into a Settings object (tests call this again after changing it)."""
    redis_url = os.environ.get("REDIS_URL", "")
    broker_dir = Path(os.environ.get("BROKER_DIR", ROOT / "var" / "broker"))
    scripted_host = os.environ.get("SCRIPTED_MODEL_HOST", "127.0.0.1")
    scripted_port = _int("SCRIPTED_MODEL_PORT", 8090)
    base_url = os.environ.get("OPENAI_BASE_URL", f"http://{scripted_host}:{scripted_port}/v1")
    return Settings(
        database_url=os.environ.get("DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'threadline.db'}"),
        redis_url=redis_url,
        broker_url=os.environ.get("CELERY_BROKER_URL", redis_url or "filesystem://"),
        broker_dir=broker_dir,
        run_queue=os.environ.get("RUN_QUEUE", "runs"),
        secret_key=os.environ.get("SECRET_KEY", "dev-only-secret-change-me"),
        session_cookie_secure=_bool("SESSION_COOKIE_SECURE", bool(redis_url)),
        openai_base_url=base_url,
        default_model_id=os.environ.get("DEFAULT_MODEL_ID", "threadline-dev"),
        models=_model_registry(base_url),
        wait_default=_float("WAIT_DEFAULT", 30.0),
        wait_max=_float("WAIT_MAX", 60.0),
        poll_interval=_float("POLL_INTERVAL", 0.05),
        run_max_steps=_int("RUN_MAX_STEPS", 8),
        run_deadline=_float("RUN_DEADLINE", 120.0),
        model_timeout=_float("MODEL_TIMEOUT", 60.0),
        model_max_retries=_int("MODEL_MAX_RETRIES", 3),
        lease_seconds=_float("LEASE_SECONDS", 30.0),
        run_max_attempts=_int("RUN_MAX_ATTEMPTS", 3),
        queued_stale_seconds=_float("QUEUED_STALE_SECONDS", 30.0),
        sweep_interval=_float("SWEEP_INTERVAL", 10.0),
        history_tokens=_int("HISTORY_TOKENS", 3000),
        rate_limit_default=os.environ.get("RATE_LIMIT_DEFAULT", "600/minute"),
        rate_limit_messages=os.environ.get("RATE_LIMIT_MESSAGES", "60/minute"),
        max_request_bytes=_int("MAX_REQUEST_BYTES", 256 * 1024),
        log_level=os.environ.get("LOG_LEVEL", "INFO"),
        scripted_model_host=scripted_host,
        scripted_model_port=scripted_port,
        scripted_model_latency=_float("SCRIPTED_MODEL_LATENCY", 0.0),
        max_active_runs_per_user=_int("MAX_ACTIVE_RUNS_PER_USER", 20),
        max_json_depth=_int("MAX_JSON_DEPTH", 32),
        max_context_bytes=_int("MAX_CONTEXT_BYTES", 64 * 1024),
        db_pool_size=_int("DB_POOL_SIZE", 10),
        db_max_overflow=_int("DB_MAX_OVERFLOW", 20),
        db_pool_timeout=_float("DB_POOL_TIMEOUT", 30.0),
        memory_prompt_limit=_int("MEMORY_PROMPT_LIMIT", 5),
        memory_max_chars=_int("MEMORY_MAX_CHARS", 1000),
        memory_max_per_user=_int("MEMORY_MAX_PER_USER", 500),
        docs_read_max_chars=_int("DOCS_READ_MAX_CHARS", 12000),
        web_search_provider=os.environ.get("WEB_SEARCH_PROVIDER", "searxng"),
        web_search_url=os.environ.get("WEB_SEARCH_URL", "").rstrip("/"),
        fetch_allowlist=tuple(e.strip() for e in os.environ.get("FETCH_ALLOWLIST", "").split(",") if e.strip()),
        fetch_timeout=_float("FETCH_TIMEOUT", 10.0),
        fetch_max_bytes=_int("FETCH_MAX_BYTES", 2 * 1024 * 1024),
        fetch_text_chars=_int("FETCH_TEXT_CHARS", 8000),
        data_views_file=Path(os.environ.get("DATA_VIEWS_FILE") or ROOT / "shared" / "data_views.toml"),
        data_row_cap=_int("DATA_ROW_CAP", 100),
        data_statement_timeout=_float("DATA_STATEMENT_TIMEOUT", 5.0),
        session_lifetime=_int("SESSION_LIFETIME", 12 * 3600),
        rate_limit_login=os.environ.get("RATE_LIMIT_LOGIN", "10/minute"),
        stream_coalesce_seconds=_float("STREAM_COALESCE_SECONDS", 0.05),
        stream_coalesce_chars=_int("STREAM_COALESCE_CHARS", 200),
        stream_retention=_float("STREAM_RETENTION", 3600.0),
        stream_active_ttl=_float("STREAM_ACTIVE_TTL", 86400.0),
        stream_max_events=_int("STREAM_MAX_EVENTS", 10000),
        stream_heartbeat=_float("STREAM_HEARTBEAT", 15.0),
        stream_max_seconds=_float("STREAM_MAX_SECONDS", 900.0),
        stream_step_output_chars=_int("STREAM_STEP_OUTPUT_CHARS", 500),
        scripted_model_token_rate=_float("SCRIPTED_MODEL_TOKEN_RATE", 0.0),
        scripted_model_first_token_delay=_float("SCRIPTED_MODEL_FIRST_TOKEN_DELAY", 0.0),
    )


settings = load()
