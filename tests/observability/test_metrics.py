"""The bronze worker's metrics, served over HTTP by `start_worker_metrics` (port 0: a free
one on 127.0.0.1): exact records consumed and written, batches, lag per partition."""

from __future__ import annotations

import datetime as dt
import urllib.request

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests.kits import batchkit
from tripflow.observability.metrics import start_worker_metrics
from tripflow.processing.bronze import run_bronze
from tripflow.settings import Settings


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_bronze_serves_its_metrics(settings: Settings) -> None:
    day = batchkit.at(dt.date(2016, 3, 1), 8)
    lines = [batchkit.record(day + i * 1000, f"{i % 7:032x}", i) for i in range(90)]
    batchkit.produce(settings, lines, partitions=3)
    before = REGISTRY.get_sample_value("tripflow_records_written_total",
                                       {"worker": "bronze"}) or 0.0
    metrics = start_worker_metrics(settings.model_copy(update={"metrics_port": 0}), "bronze")
    assert metrics is not None and metrics.port
    try:
        summary = run_bronze(settings, until_idle=2.0, partitions=(), metrics=metrics)
        assert summary.written == 90
        got = _scrape(metrics.port)
    finally:
        metrics.close()
    worker = (("worker", "bronze"),)
    assert got[("tripflow_records_written_total", worker)] - before == 90
    assert got[("tripflow_records_consumed_total", worker)] >= 90
    assert got[("tripflow_batches_total", worker)] >= 1
    assert got[("tripflow_batch_seconds_count", worker)] == got[("tripflow_batches_total",
                                                                 worker)]
    lags = {dict(labels)["partition"]: value for (name, labels), value in got.items()
            if name == "tripflow_consumer_lag" and dict(labels)["worker"] == "bronze"
            and dict(labels)["topic"] == settings.topic}
    assert lags == {"0": 0.0, "1": 0.0, "2": 0.0}
    assert got[("process_resident_memory_bytes", ())] > 0
    assert start_worker_metrics(settings, "bronze") is None  # no port set: no server
