"""Prometheus metrics: the long-running workers' own (`WorkerMetrics`) and the pipeline's as
read from PostgreSQL and the broker (`PipelineCollector`, served by `tripflow metrics`).

A worker (`tripflow stream`, `tripflow bronze`, a change-data-capture worker) serves its
metrics with `start_worker_metrics(settings, "stream")` when `--metrics-port` or
`TRIPFLOW_METRICS_PORT` is set (on `TRIPFLOW_METRICS_HOST`, 127.0.0.1 by default) and hands
the result to the consumer loop (`ExactlyOnceConsumer(..., metrics=m)`), which calls
`tick(loop)` once per loop turn and `written(batch)` after each committed batch. A worker
that is not built on that loop calls `consumed(n)`, `written_records(n, seconds)` and
`set_lag(partition, lag)` itself. Metrics of a worker (label `worker`):

- `tripflow_records_consumed_total`, `tripflow_records_written_total`, `tripflow_batches_total`
- `tripflow_batch_seconds` (histogram): a batch's records collected → stored
- `tripflow_consumer_lag{topic, partition}`: the broker's high watermark − the stored position
- `tripflow_last_write_timestamp_seconds`, `tripflow_write_age_seconds` (for the stream
  worker: the hot marts' freshness as this worker sees it)
- `tripflow_quarantined_records_total`: bad records the worker quarantined
- `process_resident_memory_bytes` and the other `process_*` metrics of prometheus_client.

`tripflow metrics` serves what holds whether or not a worker runs: the hot marts' freshness
(`tripflow_hot_freshness_seconds`, against `tripflow_freshness_sla_seconds`), the hot
path's records waiting per partition (`tripflow_pipeline_consumer_lag`), the latest result
of every quality check (`tripflow_quality_check_failed`) and the quarantine per reason. It
also keeps a lag sample per partition a minute in `tripflow.consumer_lag` (the
pipeline-health dashboard's lag over time).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tripflow.settings import Settings

log = logging.getLogger("tripflow.metrics")

LAG_EVERY_S = 1.0  # lag gauges refreshed at most this often (tick runs every loop turn)
LAG_SAMPLE_EVERY_S = 60.0  # tripflow.consumer_lag rows per partition

RECORDS_CONSUMED = Counter("tripflow_records_consumed", "Kafka records taken in by the worker",
                           ["worker"])
RECORDS_WRITTEN = Counter("tripflow_records_written", "Kafka records whose batch was stored",
                          ["worker"])
BATCHES = Counter("tripflow_batches", "Batches stored", ["worker"])
BATCH_SECONDS = Histogram("tripflow_batch_seconds", "A batch's records collected → stored",
                          ["worker"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
LAG = Gauge("tripflow_consumer_lag", "Broker high watermark - the worker's stored position",
            ["worker", "topic", "partition"])
LAST_WRITE = Gauge("tripflow_last_write_timestamp_seconds",
                   "Wall-clock time of the worker's last stored batch", ["worker"])
WRITE_AGE = Gauge("tripflow_write_age_seconds", "Seconds since the worker's last stored batch "
                  "(or since it started, before its first)", ["worker"])
QUARANTINED = Counter("tripflow_quarantined_records", "Bad records the worker quarantined",
                      ["worker"])


class WorkerMetrics:
    """One worker's metrics (label `worker`); see the module docstring for the hooks."""

    def __init__(self, worker: str, topic: str,
                 quarantined: Callable[[], int] | None = None) -> None:
        self.worker, self.topic = worker, topic
        self.quarantined_total = quarantined  # running total kept by the worker
        self.server: Any = None
        self.port: int | None = None
        self._consumed_seen = 0
        self._quarantined_seen = 0
        self._positions: dict[int, int] = {}  # partition -> stored next offset
        self._reported: set[int] = set()  # partitions with a lag gauge
        self._lag_at = 0.0
        started = time.time()
        self._last_write: float | None = None
        WRITE_AGE.labels(worker).set_function(
            lambda: time.time() - (self._last_write or started))

    # -- serving ------------------------------------------------------------------------
    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve /metrics (port 0: a free port); returns the port."""
        self.server, _thread = start_http_server(port, addr=host)
        self.port = int(self.server.server_port)
        log.info("%s metrics on http://%s:%d/metrics", self.worker, host, self.port)
        return self.port

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- hooks (the consumer loop's main thread) -----------------------------------------
    def consumed(self, records: int) -> None:
        RECORDS_CONSUMED.labels(self.worker).inc(records)

    def written_records(self, records: int, seconds: float) -> None:
        RECORDS_WRITTEN.labels(self.worker).inc(records)
        BATCHES.labels(self.worker).inc()
        BATCH_SECONDS.labels(self.worker).observe(seconds)
        self._last_write = time.time()
        LAST_WRITE.labels(self.worker).set(self._last_write)
        self._count_quarantined()

    def set_lag(self, partition: int, lag: int) -> None:
        LAG.labels(self.worker, self.topic, str(partition)).set(max(lag, 0))
        self._reported.add(partition)

    def written(self, batch: Any) -> None:
        """After a committed batch of the exactly-once loop (`messaging.sink.Batch`)."""
        self.written_records(batch.records, time.monotonic() - batch.created)
        self._positions.update({p: e.next_offset for p, e in batch.ends.items()})

    def tick(self, loop: Any) -> None:
        """Once per turn of the exactly-once loop (`ExactlyOnceConsumer`)."""
        records = loop.stats.records
        if records > self._consumed_seen:
            self.consumed(records - self._consumed_seen)
        self._consumed_seen = records
        self._count_quarantined()
        now = time.monotonic()
        if now - self._lag_at >= LAG_EVERY_S:
            self._lag_at = now
            self._update_lag(loop)

    def _count_quarantined(self) -> None:
        if self.quarantined_total is not None:
            total = self.quarantined_total()
            if total > self._quarantined_seen:
                QUARANTINED.labels(self.worker).inc(total - self._quarantined_seen)
            self._quarantined_seen = total

    def _update_lag(self, loop: Any) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        assigned = set(loop.expected)
        for p in (set(self._positions) | self._reported) - assigned:  # revoked: another
            self._positions.pop(p, None)  # worker reports it now
            self._reported.discard(p)
            with contextlib.suppress(KeyError):
                LAG.remove(self.worker, self.topic, str(p))
        for p in assigned:
            try:  # librdkafka's cached watermarks: no broker round trip
                low, high = loop.consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), cached=True)
            except KafkaException:
                continue
            if high is None or high < 0:
                high = loop.high_hint.get(p, -1)
            if high < 0:
                continue
            stored = self._positions.get(p, loop.expected.get(p))
            position = stored if stored is not None else max(low or 0, 0)
            self.set_lag(p, high - position)


def start_worker_metrics(settings: Settings, worker: str, port: int | None = None,
                         quarantined: Callable[[], int] | None = None) -> WorkerMetrics | None:
    """A worker's metrics served on `port` (else TRIPFLOW_METRICS_PORT); None when neither
    is set."""
    port = settings.metrics_port if port is None else port
    if port is None:
        return None
    metrics = WorkerMetrics(worker, settings.topic, quarantined)
    try:
        metrics.serve(port, settings.metrics_host)
    except OSError as err:
        raise RuntimeError(f"cannot serve metrics on {settings.metrics_host}:{port} ({err}): "
                           "choose another --metrics-port / TRIPFLOW_METRICS_PORT") from None
    return metrics


# -- the pipeline as PostgreSQL and the broker see it (`tripflow metrics`) ----------------------
class PipelineCollector(Collector):
    """Gauges read at every scrape (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sampled_at = 0.0
        self._lock = threading.Lock()  # concurrent scrapes: one reading at a time

    def describe(self) -> list[GaugeMetricFamily]:
        # Registering would otherwise collect once (reading PostgreSQL and the broker).
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            yield from self._collect()

    def _collect(self) -> Iterator[GaugeMetricFamily]:
        from tripflow import db
        from tripflow.db import sqlfiles
        from tripflow.processing.stream_status import hot_status

        sql = sqlfiles.queries("observability", "metrics.sql")
        status = hot_status(self.settings, timeout=3.0)
        yield _gauge("tripflow_freshness_sla_seconds", "TRIPFLOW_FRESHNESS_SLA_SECONDS",
                     self.settings.freshness_sla_seconds)
        if status.freshness_s is not None:
            yield _gauge("tripflow_hot_freshness_seconds",
                         "Seconds since the hot path's last committed batch", status.freshness_s)
        lag = GaugeMetricFamily("tripflow_pipeline_consumer_lag",
                                "Records the hot path has not stored yet, per partition",
                                labels=["consumer_group", "topic", "partition"])
        waiting = 0
        for p in status.partitions:
            if p.lag is not None:
                lag.add_metric([status.group, status.topic, str(p.partition)], p.lag)
                waiting += p.lag
        yield lag
        yield _gauge("tripflow_broker_up", "1 when the broker answered the last scrape",
                     0 if status.broker_error else 1)
        if not status.broker_error:
            yield _gauge("tripflow_hot_records_waiting", "Records the hot path has not "
                         "stored yet, all partitions", waiting)
        with db.connect(self.settings, autocommit=True) as conn:
            yield from _quality(conn.execute(sql["latest_checks"]).fetchall())
            quarantine = GaugeMetricFamily("tripflow_quarantine_records",
                                           "Distinct bad records in tripflow.quarantine",
                                           labels=["reason"])
            for reason, records in conn.execute(sql["quarantine"]).fetchall():
                quarantine.add_metric([reason], records)
            yield quarantine
            if time.monotonic() - self._sampled_at >= LAG_SAMPLE_EVERY_S and \
                    not status.broker_error:
                self._sampled_at = time.monotonic()
                with conn.cursor() as cur:
                    cur.executemany(sql["lag_sample"], [
                        (status.group, status.topic, p.partition, p.stored, p.known_end, p.lag)
                        for p in status.partitions if p.known_end is not None])


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _quality(rows: list[tuple]) -> Iterator[GaugeMetricFamily]:
    failed = GaugeMetricFamily(
        "tripflow_quality_check_failed", "1 when the check's latest run failed",
        labels=["check", "layer", "severity"])
    observed = GaugeMetricFamily("tripflow_quality_check_observed",
                                 "The check's figure in its latest run",
                                 labels=["check", "layer", "severity"])
    last = GaugeMetricFamily("tripflow_quality_check_timestamp_seconds",
                             "When the check last ran", labels=["check", "layer", "severity"])
    for check, layer, severity, status, value, at in rows:
        labels = [check, layer, severity]
        failed.add_metric(labels, 1 if status == "fail" else 0)
        if value is not None:
            observed.add_metric(labels, float(value))
        last.add_metric(labels, at)
    yield failed
    yield observed
    yield last


def pipeline_text(settings: Settings) -> str:
    """The pipeline's metrics read once, in Prometheus' text format (keeps a lag sample)."""
    registry = CollectorRegistry()
    registry.register(PipelineCollector(settings))
    return generate_latest(registry).decode()


def serve_pipeline(settings: Settings, port: int, host: str) -> Any:
    """Register the pipeline collector and serve /metrics; returns the HTTP server."""
    REGISTRY.register(PipelineCollector(settings))
    server, _thread = start_http_server(port, addr=host)
    log.info("pipeline metrics on http://%s:%d/metrics", host, server.server_port)
    return server
