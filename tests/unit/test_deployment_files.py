"""docker-compose.yml and the Procfile start processes that exist (a renamed module breaks this test,
not a user's `docker compose up`)."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_has_every_service_and_their_entry_points_import():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "beat", "flower", "model"} <= set(services)
    assert "deploy" not in services["worker"] or "replicas" not in services["worker"]["deploy"]  # scaled with --scale
    assert services["worker"].get("ports") is None  # a port would stop --scale worker=N
    commands = " ".join(" ".join(s.get("command", [])) for s in services.values() if isinstance(s.get("command"), list))
    for module in set(re.findall(r"\b((?:api|worker|shared)(?:\.\w+)+)", commands)):
        importlib.import_module(module.split(":")[0])
    assert "api.wsgi:app" in commands and "worker.celery_app" in commands


def test_procfile_runs_model_worker_and_api():
    procfile = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    assert set(procfile) == {"model", "worker", "api"}
    assert "scripted_model" in procfile["model"] and "-B" in procfile["worker"]
    assert "api.wsgi:app" in procfile["api"]
