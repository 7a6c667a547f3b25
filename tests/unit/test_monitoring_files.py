"""deploy/ (Prometheus scrape config, Grafana dashboard and provisioning) and the compose monitoring
profile agree with the code: the ports are the settings' defaults, and every series the dashboard
queries is one shared/observability/metrics.py exports (and every exported series is on the dashboard),
so a renamed metric breaks this test rather than an operator's panel."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

from shared.config import Settings
from shared.observability import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "threadline.json"


def exported() -> dict[str, set[str]]:
    """Each metric family of ours → the sample names Prometheus will see (``_count``, ``_bucket`` …)."""
    names: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if hasattr(value, "_name") and hasattr(value, "_type"):
            family = next(iter(value.describe()))
            names[family.name] = {family.name, *(family.name + s for s in ("_total", "_count", "_sum", "_bucket"))}
    return names


def test_dashboard_queries_only_exported_series_and_shows_them_all():
    exprs = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bthreadline_[a-z_]+", expr)}
    families = exported()
    known = set().union(*families.values())
    assert used <= known, f"the dashboard queries unknown series: {sorted(used - known)}"
    shown = {family for family, samples in families.items() if samples & used}
    assert shown == set(families), f"series without a panel: {sorted(set(families) - shown)}"


def test_prometheus_scrapes_the_documented_ports():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    defaults = Settings()
    assert jobs["threadline-api"]["static_configs"][0]["targets"] == ["api:8000"]
    assert jobs["threadline-api"]["authorization"]["credentials_file"]
    assert jobs["threadline-worker"]["dns_sd_configs"][0]["port"] == defaults.worker_metrics_port
    assert jobs["threadline-beat"]["static_configs"][0]["targets"] == [f"beat:{defaults.beat_metrics_port}"]


def test_compose_monitoring_profile_mounts_files_that_exist():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    env = compose["x-threadline-env"]
    assert env["METRICS_ADDR"] == "0.0.0.0" and env["LOG_FORMAT"].endswith("json}")
    assert "worker" in services and services["worker"].get("ports") is None  # scraped on the network
