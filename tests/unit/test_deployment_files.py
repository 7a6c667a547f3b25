"""docker-compose.yml, the Dockerfile and the Procfile launch what devtools/processes.py defines, and the
modules they name exist (a renamed module or a changed pool size breaks this test, not a user's
`docker compose up`)."""
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
