"""The fault suite's own stack: the same processes as devtools/stack.py, but wired to a private Redis
(which tests may restart) and to PostgreSQL through a TCP proxy (which tests may cut). The database
itself lives on the test PostgreSQL (devtools/services.py); the shared Redis and PostgreSQL are never touched.

At the end of the session the ledger checks exactly-once in the database and prints the figures.
"""
from __future__ import annotations

import json
import shutil
import uuid
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import create_engine, make_url

from tests.faults.ledger import LEDGER, SUMMARY_PATH
from tests.faults.helpers import bound_database
from tests.faults.plumbing import PrivateRedis
from devtools.stack import Stack
from devtools.tcpproxy import TcpProxy

FAULT_SETTINGS = {
    # Short enough that retries, timeouts, leases and the sweeper all happen within a test.
    "MODEL_TIMEOUT": "4",
    "MODEL_MAX_RETRIES": "1",
    "LEASE_SECONDS": "6",
    "QUEUED_STALE_SECONDS": "4",
    "SWEEP_INTERVAL": "1",
    "RUN_MAX_ATTEMPTS": "3",
}

_current: dict = {}


@pytest.fixture(scope="session")
def fault_stack():
    """The stack with a restartable broker and a cuttable database connection."""
    stack = Stack(**FAULT_SETTINGS)
    if stack.mode != "production":
        shutil.rmtree(stack.tmp, ignore_errors=True)
        pytest.skip("fault injection needs the production stack (PostgreSQL + Redis)")
    redis = PrivateRedis(stack.tmp).start()
    direct = make_url(stack.database_url)
    proxy = TcpProxy((direct.host or "127.0.0.1", direct.port or 5432)).start()
    stack.env.update(
        REDIS_URL=redis.url,
        CELERY_BROKER_URL=redis.url,
        DATABASE_URL=direct.set(port=proxy.port).render_as_string(hide_password=False),
    )
    stack.redis, stack.proxy = redis, proxy
    stack.db = None
    _current["stack"] = stack
    try:
        stack.start()
        stack.db = create_engine(stack.database_url, pool_pre_ping=True)
        yield stack
        LEDGER.finish(stack.db)
    finally:
        if stack.db is not None:
            stack.db.dispose()
        if not proxy.is_up:
            proxy.restore()
        stack.stop()
        redis.process.stop()
        proxy.cut()
        _current.clear()


@pytest.fixture
def make_fault_user(fault_stack):
    """A user in a new tenant (unless given) of the fault stack's database, with a bearer token."""
    from shared.services import identity

    def make(tenant: str | None = None, permissions: list[str] | None = None):
        tenant = tenant or f"tenant-{uuid.uuid4().hex[:8]}"
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        with bound_database(fault_stack.database_url):
            created = identity.create_user(email, tenant, perms=permissions)
            token, row = identity.create_token(email)
        return SimpleNamespace(id=created.id, email=email, tenant=tenant, token=token, token_id=row.id)

    return make


@pytest.fixture
def fault_client_for(fault_stack):
    clients: list[httpx.Client] = []

    def make(user=None, base_url: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {user.token}"} if user is not None else {}
        client = httpx.Client(base_url=base_url or fault_stack.api_url, headers=headers, timeout=40)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def fault_client(fault_client_for, make_fault_user):
    return fault_client_for(make_fault_user())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    stack = _current.get("stack")
    if report.failed and stack is not None and stack.processes:
        report.sections.append(("fault stack logs", stack.logs()))
    return report


def pytest_terminal_summary(terminalreporter):
    if LEDGER.summary is None:
        return
    terminalreporter.section("fault suite figures")
    figures = {k: v for k, v in LEDGER.summary.items() if not k.endswith("_ids")}
    for line in json.dumps(figures, indent=2).splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(written to {SUMMARY_PATH})")
