"""deploy/prometheus/ against real processes: promtool accepts the rules and the config;
Debian's Prometheus scrapes a real `tripflow stream` worker and `tripflow metrics`, and
the rules (with short `for:`) fire once the stream worker is stopped while records come."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.conftest import tripflow_command
from tests.kits import batchkit
from tripflow.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DAY = dt.date(2016, 3, 1)


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: `apt-get install -y prometheus` (.ci/run does)")
    return found


def test_promtool_accepts_the_rules_the_config_and_the_rule_tests() -> None:
    promtool = _binary("promtool")
    rules = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                           text=True, check=False)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 6 rules found" in rules.stdout
    config = subprocess.run([promtool, "check", "config", str(CONFIG)], capture_output=True,
                            text=True, check=False)
    assert config.returncode == 0, config.stdout + config.stderr
    # deploy/prometheus/alerts_test.yml: each rule fires when it should, and not before.
    unit = subprocess.run([promtool, "test", "rules", str(RULES.with_name("alerts_test.yml"))],
                          capture_output=True, text=True, check=False)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


def _query(prom: str, expr: str) -> list[dict]:
    body = json.loads(_get(f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}"))
    return body["data"]["result"]


def _value(prom: str, expr: str) -> float | None:
    found = _query(prom, expr)
    return float(found[0]["value"][1]) if found else None


def _firing(prom: str) -> dict[str, list[dict]]:
    alerts = json.loads(_get(f"{prom}/api/v1/alerts"))["data"]["alerts"]
    firing: dict[str, list[dict]] = {}
    for alert in alerts:
        if alert["state"] == "firing":
            firing.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
    return firing


def _wait(what: str, predicate, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            found = predicate()
        except (OSError, ValueError, KeyError) as err:  # not up yet
            last = err
        else:
            if found:
                return found
            last = found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _test_copy(tmp_path: Path, stream_port: int, pipeline_port: int) -> Path:
    """The deploy rules with `for:` of 1 s, scraped every second from this test's ports."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    config = yaml.safe_load(CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config.pop("alerting")  # no Alertmanager here: the test reads the alerts' state
    targets = {"tripflow-stream": stream_port, "tripflow-bronze": None,
               "tripflow-pipeline": pipeline_port}
    config["scrape_configs"] = [
        {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
        for job, port in targets.items() if port is not None]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_rules_fire_when_the_stream_worker_stops(settings: Settings,
                                                 tripflow_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    prometheus = _binary("prometheus")
    clicks = [batchkit.record(batchkit.at(DAY, 10, i % 60, i % 60), f"{i:032x}", 1000 + i)
              for i in range(120)]
    bad = [b'{"not": "a click"', b"\xff\xfe", b"[1, 2"]
    batchkit.produce(settings, clicks + bad, partitions=3)
    stream_port, pipeline_port, prom_port = _free_port(), _free_port(), _free_port()
    env = {**tripflow_env, "TRIPFLOW_FRESHNESS_SLA_SECONDS": "3"}
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        with (logs / f"{name}.log").open("wb") as out:
            proc = subprocess.Popen(list(args), env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    prom = f"http://127.0.0.1:{prom_port}"
    try:
        stream = start("stream", *tripflow_command(), "stream", "--partitions", "all",
                       "--metrics-port", str(stream_port))
        start("metrics", *tripflow_command(), "metrics", "--metrics-port", str(pipeline_port))
        config = _test_copy(tmp_path, stream_port, pipeline_port)
        start("prometheus", prometheus, f"--config.file={config}",
              f"--storage.tsdb.path={tmp_path / 'tsdb'}",
              f"--web.listen-address=127.0.0.1:{prom_port}")
        # Prometheus scrapes the worker: every record consumed and written, the bad ones
        # quarantined, nothing waiting, the process's memory.
        written = 'tripflow_records_written_total{job="tripflow-stream"}'
        _wait("the worker's records in Prometheus",
              lambda: _value(prom, written) == len(clicks) + len(bad), timeout=90)
        assert _value(prom, 'tripflow_records_consumed_total{job="tripflow-stream"}') == 123
        assert _value(prom, 'tripflow_quarantined_records_total{job="tripflow-stream"}') == 3
        _wait("lag 0", lambda: _value(
            prom, 'sum(tripflow_consumer_lag{job="tripflow-stream"})') == 0)
        assert _value(prom, 'process_resident_memory_bytes{job="tripflow-stream"}') > 10e6
        assert _value(prom, 'tripflow_batches_total{job="tripflow-stream"}') >= 1
        assert _value(prom, 'tripflow_batch_seconds_count{job="tripflow-stream"}') >= 1
        _wait("the exporter", lambda: _value(prom, "tripflow_hot_records_waiting") == 0)
        assert _value(prom, "tripflow_freshness_sla_seconds") == 3
        assert _firing(prom) == {}

        # The stream worker stops; records keep coming.
        stream.send_signal(signal.SIGTERM)
        assert stream.wait(timeout=60) == 0
        later = [batchkit.record(batchkit.at(DAY, 11, i % 60), f"{i + 500:032x}", 2000 + i)
                 for i in range(40)]
        batchkit.produce(settings, later, partitions=3, create=False)
        expected = {"TripflowWorkerDown", "TripflowHotFreshnessSLABreached",
                    "TripflowConsumerLagGrowing"}
        firing = _wait("the alerts", lambda: (f := _firing(prom)) and expected <= set(f) and f)
        assert firing["TripflowWorkerDown"][0]["job"] == "tripflow-stream"
        assert firing["TripflowConsumerLagGrowing"][0]["consumer_group"] == "tripflow-hot"
        assert _value(prom, "sum(tripflow_pipeline_consumer_lag)") == len(later)
        assert "TripflowQualityCheckFailed" not in firing

        # A failed quality check (as `tripflow quality` stores it) fires its rule.
        with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute("insert into tripflow.quality_results (run_id, check_name, layer, "
                         "severity, status, observed, threshold) values (gen_random_uuid(), "
                         "'gold.daily_totals_match_silver', 'gold', 'fail', 'fail', 1, 0)")
        firing = _wait("the quality alert",
                       lambda: (f := _firing(prom)).get("TripflowQualityCheckFailed") and f)
        assert firing["TripflowQualityCheckFailed"][0]["check"] == \
            "gold.daily_totals_match_silver"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
