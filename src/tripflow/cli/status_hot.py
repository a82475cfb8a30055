"""The hot path's section of `tripflow status`: offsets, clock, freshness, hot store."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from tripflow.processing.stream import hot_status
from tripflow.settings import Settings


def hot_status_section(settings: Settings, out: Console) -> None:
    status = hot_status(settings)
    table = Table("partition", "stored offset", "known end (≈)", "lag (≈)", "committed (UTC)",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for part in status.partitions:
        table.add_row(
            str(part.partition),
            "-" if part.stored is None else f"{part.stored:,}",
            "-" if part.known_end is None else f"{part.known_end:,}",
            "-" if part.lag is None else f"{part.lag:,}",
            part.updated_at.strftime("%m-%d %H:%M:%S") if part.updated_at else "-")
    out.print(f"consumer group {status.group}, topic {status.topic}")
    if status.partitions:
        out.print(table)
    out.print("known end = the broker's high watermark; approximate: the embedded broker "
              "reports less than the true end", highlight=False)
    if status.broker_error:
        out.print(f"[yellow]broker: {status.broker_error}[/]")
    clock = status.clock.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC" if status.clock else "-"
    fresh = "-" if status.freshness_s is None else f"{status.freshness_s:,.1f} s ago"
    out.print(f"event-time clock: {clock}; last committed batch: {fresh}", highlight=False)
    kept = f", keeps clicks from {status.store_from:%Y-%m-%d}" if status.store_from else ""
    out.print(f"hot store: {status.store_rows:,} clicks in {status.store_days} day partition(s), "
              f"{status.store_bytes / 2**20:,.1f} MB{kept}", highlight=False)
    t = status.totals
    out.print(f"since the start: {t['records']:,} records, {t['clicks_new']:,} new clicks, "
              f"{t['duplicates']:,} duplicates, {t['late_for_hot']:,} late for hot (left to the "
              f"batch path), {t['quarantined']:,} quarantined, {t['batches']:,} batches"
              + (f"; U+0000 removed from {t['nul_removed']:,} clicks" if t["nul_removed"] else ""),
              highlight=False)
