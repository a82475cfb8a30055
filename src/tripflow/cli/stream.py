"""`tripflow stream`: run the hot-path worker."""

from __future__ import annotations

import logging
import sys
import threading
from datetime import timedelta

import typer

from tripflow.cli.console import command_settings, console, friendly_errors
from tripflow.messaging.consumer import parse_partitions, stop_on_signals
from tripflow.processing.stream import StreamOptions, run_stream


def stream(
    until_idle: float | None = typer.Option(
        None, "--until-idle", metavar="SECONDS",
        help="Stop when no record arrived for this long (default: run until stopped)."),
    horizon_hours: float = typer.Option(
        48.0, "--horizon-hours", help="Dedup horizon: clicks older than clock - horizon are "
        "left to the batch path (late for hot)."),
    batch_ms: int = typer.Option(StreamOptions.batch_max_ms, "--batch-ms",
                                 help="Micro-batch time bound."),
    batch_records: int = typer.Option(StreamOptions.batch_max_records, "--batch-records",
                                      help="Micro-batch size bound."),
    partitions: str | None = typer.Option(
        None, "--partitions", metavar="all|0,1,…",
        help="Assign these partitions directly instead of joining the consumer group "
        "tripflow-hot (no group join delay; one worker per partition set)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every batch."),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", metavar="PORT",
        help="Serve Prometheus metrics on this port (default: TRIPFLOW_METRICS_PORT; none: "
             "off) on TRIPFLOW_METRICS_HOST (127.0.0.1)."),
) -> None:
    """Run the hot path: Kafka → hot store → real-time marts, exactly once."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s")
    if not verbose:
        logging.getLogger("psycopg").setLevel(logging.WARNING)
    from tripflow.observability.metrics import start_worker_metrics

    stop = threading.Event()
    with friendly_errors(), stop_on_signals(stop):
        options = StreamOptions(
            horizon=timedelta(hours=horizon_hours), batch_max_ms=batch_ms,
            batch_max_records=batch_records, partitions=parse_partitions(partitions))
        settings = command_settings(kafka=True)
        metrics = start_worker_metrics(settings, "stream", metrics_port)
        try:
            summary = run_stream(settings, until_idle, options=options, stop=stop,
                                 metrics=metrics)
        finally:
            if metrics is not None:
                metrics.close()
    console.print(summary.line(), soft_wrap=True)
