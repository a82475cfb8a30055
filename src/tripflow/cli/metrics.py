"""`tripflow metrics`: serve the pipeline's Prometheus metrics (freshness, lag, quality)."""

from __future__ import annotations

import threading

import typer

from tripflow.cli.console import command_settings, console, friendly_errors


def metrics(
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", metavar="PORT",
        help="Port (default: TRIPFLOW_METRICS_PORT, else 9108) on TRIPFLOW_METRICS_HOST "
             "(127.0.0.1)."),
    once: bool = typer.Option(False, "--once", help="Read the metrics once (keeping a lag "
                              "sample), print them in Prometheus' text format and exit."),
) -> None:
    """Serve the pipeline's metrics read from PostgreSQL and the broker at every scrape: hot
    marts' freshness and SLA, records waiting per partition, the latest result of every
    quality check, the quarantine per reason (see deploy/prometheus/). Runs until stopped."""
    from tripflow.messaging.consumer import stop_on_signals
    from tripflow.observability.metrics import pipeline_text, serve_pipeline

    if once:
        with friendly_errors():
            print(pipeline_text(command_settings(kafka=True)), end="")
        return
    stop = threading.Event()
    with friendly_errors(), stop_on_signals(stop):
        settings = command_settings(kafka=True)
        port = metrics_port if metrics_port is not None else settings.metrics_port or 9108
        try:
            server = serve_pipeline(settings, port, settings.metrics_host)
        except OSError as err:
            raise typer.BadParameter(f"cannot serve on {settings.metrics_host}:{port} ({err}): "
                                     "choose another --metrics-port") from None
        console.print(f"pipeline metrics on http://{settings.metrics_host}:"
                      f"{server.server_port}/metrics", soft_wrap=True)
        stop.wait()
        server.shutdown()
