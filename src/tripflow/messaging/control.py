"""What every consuming command shares around the loop: its --partitions option and its
signals (SIGTERM/SIGINT end the run after the current batch)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("tripflow.consumer")


def parse_partitions(text: str | None) -> tuple[int, ...] | None:
    """--partitions: None → group mode; "all" → every partition; "0,2" → those."""
    if text is None:
        return None
    if text.strip().lower() == "all":
        return ()
    try:
        return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise ValueError(f"--partitions {text!r}: expected 'all' or numbers like 0,2") from None


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set `stop`: the loop ends after the current batch is written (main
    thread only; the previous handlers come back afterwards)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, _frame: object) -> None:
        log.info("%s received: finishing the current batch, then stopping",
                 signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, request_stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
