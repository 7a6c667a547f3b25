"""docker-compose.yml, the Dockerfile and the Procfile launch what devtools/processes.py defines, and the
modules they name exist (a renamed module or a changed pool size breaks this test, not a user's
`docker compose up`). docker-compose.multihost.yml, merged onto docker-compose.yml as Compose merges it
(``!reset`` included), keeps the servers off the API and worker hosts and uses the connection settings
the hosts suite runs with."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import yaml

from devtools import processes

ROOT = Path(__file__).resolve().parents[2]


def test_compose_has_every_service_and_their_entry_points_import():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "beat", "flower", "model"} <= set(services)
    assert "deploy" not in services["worker"] or "replicas" not in services["worker"]["deploy"]  # scaled with --scale
    assert services["worker"].get("ports") is None  # a port would stop --scale worker=N
    for module in (processes.API_APP.split(":")[0], processes.CELERY_APP, processes.model().module):
        importlib.import_module(module)


def test_compose_commands_are_the_production_profile():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, command in processes.compose_commands().items():
        assert services[name]["command"] == command, name


def test_dockerfile_cmd_is_the_production_api():
    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    assert json.loads(cmd[len("CMD "):]) == processes.compose_commands()["api"]


def test_procfile_is_generated_from_the_embedded_profile():
    assert (ROOT / "Procfile").read_text() == processes.procfile(), "run: python -m devtools.processes procfile > Procfile"


def test_profiles_differ_only_where_the_definition_says_why():
    assert processes.PRODUCTION.api_worker_class == "gevent" and processes.EMBEDDED.api_worker_class == "gthread"
    assert (processes.BENCH.api_worker_class, processes.BENCH.api_workers) == (
        processes.PRODUCTION.api_worker_class, processes.PRODUCTION.api_workers)
    for profile in processes.PROFILES.values():
        for value in (profile.api_worker_class, profile.worker_pool, str(profile.worker_concurrency)):
            assert value in processes.__doc__, f"{value} has no written reason in devtools/processes.py"


# -- docker-compose.multihost.yml, the override for several hosts --------------------------------------

class _Reset:
    """Compose's ``!reset`` tag: the merged file has no such key at all."""


class _ComposeLoader(yaml.SafeLoader):
    pass


_ComposeLoader.add_constructor("!reset", lambda loader, node: _Reset())


def _merge(base, override):
    """Compose's merge of an override file, for the shapes these files use: mappings merge key by key,
    ``!reset`` removes the key, sequences (``ports``) add the override's entries, anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if isinstance(value, _Reset):
                merged.pop(key, None)
            else:
                merged[key] = _merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list):
        return base + [item for item in override if item not in base]
    return override


def _multihost() -> tuple[dict, dict]:
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    override = yaml.load((ROOT / "docker-compose.multihost.yml").read_text(), Loader=_ComposeLoader)
    return override, _merge(base, override)


SERVERS = "${THREADLINE_SERVERS:?set THREADLINE_SERVERS}"
THREADLINE_SERVICES = ("migrate", "api", "worker", "beat", "flower")  # the ones that run Threadline's code


def test_multihost_override_names_only_services_of_the_compose_file():
    override, merged = _multihost()
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert set(override["services"]) <= set(base["services"]), "an override of a service that does not exist"
    assert merged["services"]["worker"]["command"] == base["services"]["worker"]["command"]


def test_multihost_hosts_without_the_servers_do_not_depend_on_them():
    """API and worker hosts (and Flower) run without PostgreSQL, Redis and the migration next to them;
    the servers host keeps the base file's order (servers healthy, then migrate, beat)."""
    _, merged = _multihost()
    services = merged["services"]
    for name in ("api", "worker", "flower"):
        assert "depends_on" not in services[name], name
    for name in ("migrate", "beat"):
        assert set(services[name]["depends_on"]) == {"postgres", "redis"}, name


def test_multihost_connection_settings_are_the_ones_the_hosts_suite_proved():
    """Every Threadline service reaches the servers host with the libpq network timeouts the hosts suite
    runs with (tests/hosts/helpers.py), and all of them share one REDIS_URL."""
    from urllib.parse import parse_qsl, urlsplit

    from tests.hosts.helpers import LIBPQ_NETWORK

    _, merged = _multihost()
    redis_urls = set()
    for name in THREADLINE_SERVICES:
        environment = merged["services"][name]["environment"]
        database = environment["DATABASE_URL"].replace(SERVERS, "servers")
        assert urlsplit(database).hostname == "servers", (name, database)
        assert dict(parse_qsl(urlsplit(database).query)) == LIBPQ_NETWORK, name
        assert SERVERS in environment["REDIS_URL"], name
        redis_urls.add(environment["REDIS_URL"])
        assert environment["SECRET_KEY"].startswith("${SECRET_KEY:?"), name  # the base file's, unchanged
    assert redis_urls == {f"redis://{SERVERS}:6379/0"}, "one REDIS_URL, without socket timeouts (they cost wake-ups)"


def test_multihost_publishes_the_servers_on_the_private_address_only():
    _, merged = _multihost()
    services = merged["services"]
    assert services["postgres"]["ports"] == [f"{SERVERS}:5432:5432"]
    assert services["redis"]["ports"] == [f"{SERVERS}:6379:6379"]
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"], "Flower stays on loopback on every host"
