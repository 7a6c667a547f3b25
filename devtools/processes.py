"""The one definition of how Threadline's processes are launched.

Every launcher is derived from this module or checked against it by tests/unit/test_deployment_files.py:
the Procfile (``python -m devtools.processes procfile`` writes it), docker-compose.yml and the
Dockerfile's CMD (checked), the test and bench stack (devtools/stack.py) and ``make run``'s supervisor
(devtools/run.py). A launcher that wants something else changes a profile here, with its reason.

Three profiles, and why they differ:

``production`` (docker compose, the Dockerfile, the production test stack)
    API: gunicorn with **gevent** workers, 2 per host. A POST may wait up to ``WAIT_MAX`` seconds for its
    answer; under gevent a waiting request is a greenlet parked on a Redis pub/sub notification
    (shared/notify.py), so one process holds thousands of them (measured: 1,000 waiting clients at under
    40 KB of API memory each, bench/results). api/gunicorn_conf.py makes psycopg2 green.
    Worker: Celery's **threads** pool, **32** per process. A run mostly waits on the model, so threads
    suffice, and the thread pool needs no monkey patching of the tools' HTTP clients and the openai SDK.
    A run holds a database connection only to claim, renew and finish, so 32 threads share the
    per-process pool (``DB_POOL_SIZE`` 10 + overflow). This is the pool the fault suite and the
    integration suite exercise. Beat runs as its own process: exactly one per deployment.
``embedded`` (``make run``, the embedded test stack)
    SQLite and the filesystem broker, no Redis. API: gunicorn **gthread**, 2 workers x **32** threads.
    Not gevent: without Redis a waiting request polls SQLite, and the sqlite3 driver (and the broker's
    file locks) block the whole gevent hub while they wait for a lock; a thread releases the GIL
    instead. The limit that follows: 64 requests in flight at once, further ones queue in gunicorn's
    backlog. Worker: threads, **8**. SQLite takes one writer at a time; more threads would mostly wait
    on its write lock, and the scripted model answers in milliseconds. Beat is a process of its own here
    too, so the sweeper runs in embedded mode exactly as in production.
``bench`` (``make bench``)
    Production, except the worker uses the **gevent** pool with **600** greenlets per process: the
    benchmark measures the ceiling of one worker process per core with hundreds of runs waiting on a
    slow model, which 32 threads would cap. Production stays on threads until the fault suite runs on
    the gevent pool as well.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace

API_APP = "api.wsgi:app"
CELERY_APP = "worker.celery_app"


@dataclass(frozen=True)
class Profile:
    """How one kind of deployment runs the API and the worker (see the module docstring for why)."""

    api_worker_class: str
    api_workers: int
    api_threads: int | None  # only for gthread
    worker_pool: str
    worker_concurrency: int


PRODUCTION = Profile(api_worker_class="gevent", api_workers=2, api_threads=None, worker_pool="threads",
                     worker_concurrency=32)
EMBEDDED = Profile(api_worker_class="gthread", api_workers=2, api_threads=32, worker_pool="threads",
                   worker_concurrency=8)
BENCH = replace(PRODUCTION, worker_pool="gevent", worker_concurrency=600)
PROFILES = {"production": PRODUCTION, "embedded": EMBEDDED, "bench": BENCH}


@dataclass(frozen=True)
class Command:
    """A process as a Python module and its arguments, rendered for each launcher."""

    module: str
    args: tuple[str, ...]

    def argv(self, python: str = sys.executable) -> list[str]:
        """For a subprocess on this machine: the current interpreter runs the module."""
        return [python, "-m", self.module, *self.args]

    def container(self) -> list[str]:
        """For the image: gunicorn and celery are console scripts there, the model a module."""
        if self.module in ("gunicorn", "celery"):
            return [self.module, *self.args]
        return ["python", "-m", self.module, *self.args]


def api(profile: Profile, bind: str, workers: int | None = None, app: str = API_APP) -> Command:
    """gunicorn with api/gunicorn_conf.py; ``app`` is another WSGI app only for bench's floor measurement."""
    args = ["-c", "api/gunicorn_conf.py", "-k", profile.api_worker_class]
    if profile.api_threads:
        args += ["--threads", str(profile.api_threads)]
    args += ["-w", str(workers or profile.api_workers), "-b", bind, app]
    return Command("gunicorn", tuple(args))


def worker(profile: Profile, queue: str, hostname: str | None = None, concurrency: int | None = None) -> Command:
    args = ["-A", CELERY_APP, "worker", "-Q", queue, "--pool", profile.worker_pool,
            "--concurrency", str(concurrency or profile.worker_concurrency)]
    if hostname:
        args += ["--hostname", hostname]
    args += ["--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    return Command("celery", tuple(args))


def beat(schedule: str) -> Command:
    return Command("celery", ("-A", CELERY_APP, "beat", "--loglevel", "INFO", "--schedule", schedule))


def model(host: str | None = None, port: int | None = None) -> Command:
    args: list[str] = []
    if host:
        args += ["--host", host]
    if port:
        args += ["--port", str(port)]
    return Command("scripted_model", tuple(args))


def local_processes(bind: str, queue: str, schedule: str, *, with_model: bool = True) -> dict[str, Command]:
    """What ``make run`` starts (embedded profile), in start order; the scripted model only when a model
    of the registry is served by it (not when OPENAI_API_KEY or OPENAI_BASE_URL points elsewhere)."""
    commands = {"model": model()} if with_model else {}
    return {
        **commands,
        "worker": worker(EMBEDDED, queue),
        "beat": beat(schedule),
        "api": api(EMBEDDED, bind),
    }


def compose_commands() -> dict[str, list[str]]:
    """The ``command`` of each Threadline service in docker-compose.yml (production profile)."""
    return {
        "api": api(PRODUCTION, "0.0.0.0:8000").container(),
        "worker": worker(PRODUCTION, "runs").container(),
        "beat": beat("/tmp/beat-schedule").container(),
        "model": model("0.0.0.0", 8090).container(),
    }


def procfile() -> str:
    """The Procfile (for honcho/foreman users): ``make run``'s processes with the venv's interpreter."""
    processes = local_processes("${API_BIND:-127.0.0.1:8000}", "${RUN_QUEUE:-runs}", "var/beat-schedule")
    return "".join(f"{name}: {' '.join(command.argv('.venv/bin/python'))}\n" for name, command in processes.items())


if __name__ == "__main__":
    if sys.argv[1:] != ["procfile"]:
        sys.exit("usage: python -m devtools.processes procfile > Procfile")
    sys.stdout.write(procfile())
