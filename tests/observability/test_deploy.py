"""deploy/grafana and the compose services around Prometheus: the provisioned dashboard
queries only metrics tripflow (or prometheus_client, or Prometheus) exports, compose
mounts the folders that hold them, and Alertmanager routes every alert to the webhook,
which reaches it as a secret file, never in its config."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tripflow.observability import metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _exported() -> set[str]:
    """Metric names tripflow exports: the workers' (and their _total/_bucket/... series)
    and the pipeline collector's (named in its source)."""
    names = set()
    for collector in (metrics.RECORDS_CONSUMED, metrics.RECORDS_WRITTEN, metrics.BATCHES,
                      metrics.BATCH_SECONDS, metrics.LAG, metrics.LAST_WRITE, metrics.WRITE_AGE,
                      metrics.QUARANTINED):
        for family in collector.describe():
            names |= {family.name, f"{family.name}_total", f"{family.name}_bucket",
                      f"{family.name}_count", f"{family.name}_sum"}
    source = Path(metrics.__file__).read_text()
    names |= set(re.findall(r'"(tripflow_[a-z_]+)"', source))
    return names | {"up", "process_resident_memory_bytes"}


def test_grafana_dashboard_queries_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "tripflow-pipeline.json")
                           .read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(dashboard["panels"]) == 9 and len(exprs) == 13
    used = {name for e in exprs for name in re.findall(r"\b(tripflow_[a-z_]+|up|process_[a-z_]+)"
                                                        r"\b", e)}
    assert used - _exported() == set()
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" /
                                 "prometheus.yml").read_text())["datasources"][0]
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {datasource["uid"]}


def test_alert_rules_use_exported_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {name for e in exprs for name in re.findall(r"\b(tripflow_[a-z_]+|up)\b", e)}
    assert used - _exported() == set()


def test_compose_runs_prometheus_grafana_and_the_exporter() -> None:
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in \
        services["grafana"]["volumes"]
    assert services["tripflow-metrics"]["command"] == ["metrics"]
    for name in ("tripflow-stream", "tripflow-metrics"):
        assert services[name]["environment"]["TRIPFLOW_METRICS_PORT"] == "9108"
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"tripflow-stream", "tripflow-cdc", "tripflow-pipeline"}
    # Each job's target is a compose service serving its metrics on that port.
    assert jobs["tripflow-cdc"]["static_configs"] == [{"targets": ["tripflow-cdc-apply:9108"]}]
    assert services["tripflow-cdc-apply"]["command"][-2:] == ["--metrics-port", "9108"]
    assert services["tripflow-cdc-apply"]["environment"]["TRIPFLOW_METRICS_HOST"] == "0.0.0.0"


def test_alertmanager_routes_every_alert_to_the_webhook_secret() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert compose["secrets"]["alert_webhook"] == {"environment": "TRIPFLOW_ALERT_WEBHOOK"}
    manager = compose["services"]["alertmanager"]
    assert manager["secrets"] == ["alert_webhook"]
    assert "./prometheus/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro" in \
        manager["volumes"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "alertmanager.yml").read_text())
    assert "routes" not in config["route"]  # one receiver for every alert
    (receiver,) = config["receivers"]
    assert receiver["name"] == config["route"]["receiver"]
    assert receiver["slack_configs"][0]["api_url_file"] == "/run/secrets/alert_webhook"
    assert "api_url" not in receiver["slack_configs"][0]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    for rule in config["inhibit_rules"]:
        assert rule["source_matchers"] == ['alertname="TripflowWorkerDown"']
        assert set(rule["target_matchers"][0].split('"')[1].split("|")) <= names
