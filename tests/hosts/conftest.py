"""The host topology: two API hosts, two worker hosts and the servers, as Linux network namespaces.

``api1``, ``api2``, ``wrk1`` and ``wrk2`` are namespaces with one veth link each (devtools/netns.py).
PostgreSQL and Redis stay in the root namespace on 127.0.0.1; each host reaches them through the
link proxies on its link's root-side addresses, which are also where loss and delay are injected.
Each worker host runs a Celery worker and its own scripted model (the model is another service a
worker calls; keeping it on the worker's host means a partition cuts the worker from the database
and the broker, not from the model). Beat, of which a deployment runs exactly one, runs next to the
servers, in the root namespace: the sweeper is what hands a partitioned host's runs to the other.

Every host uses the DATABASE_URL a multi-host deployment must use (docs/reliability.md): libpq's
``connect_timeout``, TCP keepalives and ``tcp_user_timeout``, without which a query on a silently
partitioned link waits for the kernel's retransmission timeout (about 15 minutes).

The suite runs only when asked for (``make test-hosts``, i.e. ``pytest -m hosts tests/hosts``): the
normal ``make test`` run deselects it, so CI runs it once, as its own step.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from types import SimpleNamespace
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from sqlalchemy import create_engine, make_url

from devtools import netns, processes
from devtools.stack import Process, Stack, wait_until
from devtools.tcpproxy import TcpProxy
from tests.faults.helpers import bound_database
from tests.hosts.helpers import LIBPQ_NETWORK
from tests.hosts.ledger import LEDGER, SUMMARY_PATH

API_HOSTS, WORKER_HOSTS = ("api1", "api2"), ("wrk1", "wrk2")
API_PORT, MODEL_PORT = 8000, 8090
HOSTS_SETTINGS = {
    # Short, so that lease expiry, sweeps and takeovers happen within a test.
    "LEASE_SECONDS": "6",
    "QUEUED_STALE_SECONDS": "4",
    "SWEEP_INTERVAL": "1",
    "RUN_MAX_ATTEMPTS": "3",
    "MODEL_TIMEOUT": "30",
    "MODEL_MAX_RETRIES": "1",
    "WAIT_DEFAULT": "20",
    "WAIT_MAX": "30",
    "MAX_ACTIVE_RUNS_PER_USER": "0",  # the load tests post more than the per-user cap from one user
}

_current: dict = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "hosts: the multi-host topology in network namespaces (make test-hosts)")


def pytest_collection_modifyitems(config, items):
    """Run the hosts suite only when it is selected by its marker, so ``make test`` does not run it
    a second time after (or instead of) ``make test-hosts``."""
    if "hosts" in (config.getoption("markexpr") or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("hosts")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("hosts")]


def _redis_via(url: str, host: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port or 6379}"))


class Hosts:
    """The running topology: hosts, their processes and link proxies, the stack's database."""

    def __init__(self, stack: Stack, topology: netns.Topology):
        self.stack, self.topology = stack, topology
        self.proxies: dict[str, dict[str, TcpProxy]] = {}
        self.api_urls = {name: f"http://{topology[name].address}:{API_PORT}" for name in API_HOSTS}
        self.db = None
        self.redis_query: dict[str, str] = {}  # per host: options appended to its REDIS_URL

    def env_for(self, name: str) -> dict[str, str]:
        host = self.topology[name]
        direct = make_url(self.stack.database_url)
        database = direct.set(host=host.database_gateway, port=5432, query=LIBPQ_NETWORK)
        redis_url = _redis_via(self.stack.env["REDIS_URL"], host.redis_gateway)
        if name in self.redis_query:
            redis_url += "?" + self.redis_query[name]
        return {**self.stack.env, "DATABASE_URL": database.render_as_string(hide_password=False),
                "REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url,
                "OPENAI_BASE_URL": f"http://127.0.0.1:{MODEL_PORT}/v1"}

    def spawn(self, name: str, host: str, command: processes.Command, env: dict[str, str] | None = None) -> Process:
        process = Process(name, self.topology[host].argv(command.argv()), {**self.env_for(host), **(env or {})},
                          self.stack.tmp).start()
        self.stack.processes[name] = process
        return process

    def start_links(self) -> None:
        pg = make_url(self.stack.database_url)
        redis_port = urlsplit(self.stack.env["REDIS_URL"]).port or 6379
        for name, host in self.topology.hosts.items():
            self.proxies[name] = {
                "postgres": TcpProxy((pg.host or "127.0.0.1", pg.port or 5432), host.database_gateway, 5432,
                                     seed=host.index).start(),
                "redis": TcpProxy(("127.0.0.1", redis_port), host.redis_gateway, 6379, seed=100 + host.index).start(),
            }

    def start_worker(self, host: str, name: str | None = None, module: str | None = None,
                     env: dict[str, str] | None = None) -> Process:
        name = name or f"worker-{host}"
        command = processes.worker(processes.PRODUCTION, self.stack.queue, hostname=f"{name}-{self.stack.tag}@%h")
        if module is not None:  # the same worker through a wrapper module (the skewed clock)
            command = processes.Command(module, command.args)
        log = self.stack.tmp / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0  # a restarted worker appends to its log
        process = self.spawn(name, host, command, env)

        def ready():
            with open(log, "rb") as handle:
                handle.seek(offset)
                return b" ready." in handle.read()
        wait_until(ready, timeout=60, what=f"{name} ready")
        return process

    def start_api(self, host: str, wait: bool = True) -> Process:
        """gunicorn on ``host``'s address (one worker process: two API hosts on two shared cores)."""
        process = self.spawn(f"api-{host}", host,
                             processes.api(processes.PRODUCTION, f"{self.topology[host].address}:{API_PORT}", workers=1))
        if wait:
            self.wait_api(host)
        return process

    def wait_api(self, host: str) -> None:
        url = self.api_urls[host]
        wait_until(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, timeout=60, what=host)

    def restart_api(self, host: str, redis_query: str | None = None) -> None:
        """Start ``host``'s API again, with ``redis_query`` appended to its REDIS_URL (or without)."""
        self.stack.processes.pop(f"api-{host}").stop()
        if redis_query:
            self.redis_query[host] = redis_query
        else:
            self.redis_query.pop(host, None)
        self.start_api(host)

    def start(self) -> None:
        self.stack.create_database()
        self.start_links()
        for host in WORKER_HOSTS:
            self.spawn(f"model-{host}", host, processes.model("127.0.0.1", MODEL_PORT))
        for host in WORKER_HOSTS:
            model = self.stack.processes[f"model-{host}"]
            wait_until(lambda: "listening" in model.log_path.read_text(errors="replace"), timeout=30,
                       what=f"scripted model on {host}")
            self.start_worker(host)
        self.stack._spawn("beat", processes.beat(str(self.stack.tmp / "beat-schedule")).argv())  # root namespace
        for host in API_HOSTS:
            self.start_api(host, wait=False)
        for host in API_HOSTS:
            self.wait_api(host)
        self.db = create_engine(self.stack.database_url, pool_pre_ping=True)

    def control_model(self, host: str, **values: float) -> dict:
        """Set the scripted model on worker host ``host`` (its ``/_control``: token_rate,
        first_token_delay, latency). The model listens on the host's own loopback, so the request is
        made from inside the host's namespace."""
        script = ("import json, sys, urllib.request; request = urllib.request.Request("
                  f"'http://127.0.0.1:{MODEL_PORT}/_control', data=sys.argv[1].encode(), "
                  "headers={'Content-Type': 'application/json'}); "
                  "print(urllib.request.urlopen(request, timeout=10).read().decode())")
        done = subprocess.run(self.topology[host].argv([sys.executable, "-c", script, json.dumps(values)]),
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"could not set the model on {host}: {done.stderr.strip()}"
        return json.loads(done.stdout)

    def worker_pids(self) -> dict[int, str]:
        """Celery's pid on each worker host: a run's ``lease_owner`` starts with ``hostname:pid``.
        (``ip netns exec`` execs the command, so the launcher's pid is the worker's.)"""
        return {p.proc.pid: name.removeprefix("worker-").split("-")[0]
                for name, p in self.stack.processes.items() if name.startswith("worker-") and p.proc}

    def host_of(self, owner: str | None) -> str | None:
        if not owner:
            return None
        return self.worker_pids().get(int(owner.split(":")[1]))

    def stop(self) -> None:
        try:
            self.stack.stop()
        finally:
            for proxies in self.proxies.values():
                for proxy in proxies.values():
                    proxy.stop()
            if self.db is not None:
                self.db.dispose()


@pytest.fixture(scope="session")
def hosts():
    reason = netns.unavailable()
    if reason:
        print(f"\n[hosts] skipped: {reason}")
        pytest.skip(f"host topology unavailable: {reason}")
    stack = Stack(**HOSTS_SETTINGS)
    if stack.mode != "production":
        shutil.rmtree(stack.tmp, ignore_errors=True)
        pytest.skip("the host topology needs the production stack (PostgreSQL + Redis)")
    topology = netns.Topology([*API_HOSTS, *WORKER_HOSTS])
    running = Hosts(stack, topology)
    _current["hosts"] = running
    try:
        topology.up()
        running.start()
        yield running
        LEDGER.finish(running.db)
    finally:
        try:
            running.stop()
        finally:
            topology.down()
            _current.clear()


@pytest.fixture
def make_user(hosts):
    from shared.services import identity

    def make():
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        with bound_database(hosts.stack.database_url):
            created = identity.create_user(email, f"tenant-{uuid.uuid4().hex[:8]}")
            token, _ = identity.create_token(email)
        return SimpleNamespace(id=created.id, email=email, token=token)

    return make


@pytest.fixture
def clients(hosts, make_user):
    """One user's client on each API host: ``clients["api1"]``, ``clients["api2"]``."""
    user = make_user()
    made = {name: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {user.token}"}, timeout=60)
            for name, url in hosts.api_urls.items()}
    yield made
    for client in made.values():
        client.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    running = _current.get("hosts")
    if report.failed and running is not None and running.stack.processes:
        report.sections.append(("host topology logs", running.stack.logs()))
    return report


def pytest_terminal_summary(terminalreporter):
    if LEDGER.summary is None:
        return
    terminalreporter.section("host topology figures")
    figures = {k: v for k, v in LEDGER.summary.items() if not k.endswith("_ids")}
    for line in json.dumps(figures, indent=2).splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(written to {SUMMARY_PATH})")
