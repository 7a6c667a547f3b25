"""Issue 15, the settings side: a deployment refuses the default or a short SECRET_KEY (and the compose
file no longer ships one), Flower is not published on the network, and X-Forwarded-For counts only
behind as many proxies as TRUSTED_PROXIES says."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import yaml
from flask import request

from api import DEFAULT_SECRET_KEY, check_secret_key
from shared.config import ROOT, settings

LONG_KEY = "k" * 48


@pytest.mark.parametrize("changes", [
    {"redis_url": "redis://redis:6379/0", "secret_key": DEFAULT_SECRET_KEY},
    {"redis_url": "redis://redis:6379/0", "secret_key": "short-key"},
    {"redis_url": "", "database_url": "postgresql+psycopg2://db/threadline", "secret_key": DEFAULT_SECRET_KEY},
    {"redis_url": "", "database_url": "postgresql+psycopg2://db/threadline", "secret_key": "x" * 31},
])
def test_a_deployment_refuses_a_default_or_short_secret_key(changes):
    with pytest.raises(RuntimeError, match="SECRET_KEY must be set to a random value of at least 32 characters"):
        check_secret_key(dataclasses.replace(settings, **changes))


def test_the_embedded_mode_keeps_its_development_key_and_long_keys_pass():
    check_secret_key(dataclasses.replace(settings, redis_url="", database_url="sqlite:///x.db",
                                         secret_key=DEFAULT_SECRET_KEY))
    check_secret_key(dataclasses.replace(settings, redis_url="redis://redis:6379/0", secret_key=LONG_KEY))


def test_the_api_does_not_start_with_the_default_key_next_to_redis():
    """The real start-up path (create_app, as gunicorn and the flask CLI run it) in a fresh process."""
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:6379/0", "PYTHONPATH": str(ROOT)}
    env.pop("SECRET_KEY", None)
    done = subprocess.run([sys.executable, "-c", "from api import create_app; create_app()"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "SECRET_KEY must be set" in done.stderr


def test_compose_requires_a_secret_key_and_keeps_flower_off_the_network():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    key = compose["x-threadline-env"]["SECRET_KEY"]
    assert key.startswith("${SECRET_KEY:?"), f"compose must not ship a default SECRET_KEY: {key}"
    flower = compose["services"]["flower"]
    assert all(str(port).startswith("127.0.0.1:") for port in flower.get("ports", [])), flower.get("ports")
    assert "FLOWER_BASIC_AUTH" in flower["environment"]


def _remote_addr(app) -> str:
    seen = []
    app.before_request(lambda: seen.append(request.remote_addr))
    app.test_client().get("/healthz", headers={"X-Forwarded-For": "203.0.113.7, 198.51.100.9"},
                          environ_base={"REMOTE_ADDR": "10.0.0.1"})
    return seen[0]


def test_forwarded_for_counts_only_behind_trusted_proxies():
    from api import create_app

    assert _remote_addr(create_app()) == "10.0.0.1"  # TRUSTED_PROXIES=0: a client cannot pick its address
    assert _remote_addr(create_app({"TRUSTED_PROXIES": 1})) == "198.51.100.9"  # the one our proxy appended
    assert _remote_addr(create_app({"TRUSTED_PROXIES": 2})) == "203.0.113.7"
