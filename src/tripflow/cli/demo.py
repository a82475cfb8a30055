"""`tripflow demo`: the whole pipeline on the embedded defaults, then where to look.

1. services up, schema migrated;
2. a generated week (bots, duplicates, late and bad lines) unless one exists;
3. every day but the newest produced in bulk, once;
4. the stream worker started in the background (hot marts), and change data capture of
   the document catalogue (capture, apply, an editor simulating changes);
5. bronze → silver → cold marts (quick when nothing changed);
6. the newest day replayed live in the background (`--rebase now`), so the real-time
   marts fill while you watch;
7. Superset served with the dashboards imported.
A second run reuses everything that exists.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from tripflow import db, services
from tripflow.cli.console import console, friendly_errors
from tripflow.services import workers
from tripflow.settings import Settings, get_settings

DEMO_START = date(2016, 3, 1)
DEMO_DAYS = 7
DEMO_SESSIONS_PER_DAY = 1500  # ≈ 5 k clicks a day, ≈ 35 k for the week
REPLAY_SPEED = 60.0  # the newest day replays in 24 minutes
REPLAY_REORDER_MINUTES = 10


def _data(settings: Settings) -> tuple[Path, list[Path]]:
    """The demo's day files, generated on first use."""
    from tripflow.records.generate import generate

    folder = settings.home_dir / "demo-data"
    if not (folder / "manifest.json").exists():
        manifest = generate(folder, start=DEMO_START, days=DEMO_DAYS, seed=2016,
                            sessions_per_day=DEMO_SESSIONS_PER_DAY, dup_rate=0.01,
                            late_rate=0.005, bad_rate=0.002, bots=4)
        console.print(f"[green]✓[/] generated {len(manifest.days)} days "
                      f"({manifest.totals.lines:,} lines) in {folder}")
    else:
        console.print(f"[green]✓[/] demo data in {folder}")
    days = sorted(folder.glob("????-??-??.json"))
    return folder, days


def _start_cdc(settings: Settings, folder: Path) -> None:
    """The catalogue into catalog.documents (once), then change data capture and apply in
    the background, and an editor changing the catalogue (tripflow.cdc)."""
    from tripflow.cdc.catalog import catalogue_size
    from tripflow.marts.articles import load_articles

    articles = folder / "allarticles.txt"
    if articles.exists() and not catalogue_size(settings):
        console.print(f"[green]✓[/] {load_articles(settings, articles).line()}")
    home = settings.home_dir
    for name, started in workers.start_cdc(home, editor=True).items():
        state = "started in the background" if started else "already running"
        console.print(f"[green]✓[/] {name} {state} (log: {home / 'logs' / f'{name}.log'})")


def _produce_history(settings: Settings, days: list[Path]) -> None:
    """Every day but the newest, once per topic. The marker remembers the topic's id: the
    embedded broker forgets its log on restart and the topic then comes back with a new
    id (and no records), so the history is produced again. (The hot store and bronze
    already hold it: the stream worker counts the records as duplicates, bronze as
    already in bronze.)"""
    from tripflow.ingestion import produce
    from tripflow.ingestion.admin import topic_id

    marker = settings.home_dir / "demo-state.json"
    state = json.loads(marker.read_text()) if marker.exists() else {}
    current = topic_id(settings)
    if state.get("produced") and current is not None and state.get("topic_id") in (current, None):
        if state.get("topic_id") is None:  # a marker written before topic ids were kept
            marker.write_text(json.dumps({"produced": True, "topic_id": current}))
        console.print("[green]✓[/] history already produced")
        return
    if state.get("produced"):
        console.print(f"[yellow]![/] topic {settings.topic} is new or empty (the embedded "
                      "broker forgets its log on restart): producing the history again")
    # One server: each partition then holds the history in file order. Two servers in
    # bulk each send at their own pace, so a partition interleaves days, the stream
    # worker's clock runs days ahead and it leaves ~10 % of the clicks to the batch path
    # as late for hot (reconciliation then rewrites ~40 % of those days' minutes).
    summary = produce(days[:-1], settings, servers=1)
    if not summary.ok:
        raise SystemExit(f"producing the demo data failed: {summary.line()}")
    marker.write_text(json.dumps({"produced": True, "topic_id": topic_id(settings)}))
    console.print(f"[green]✓[/] {summary.line()}")


def demo() -> None:
    """Run the whole pipeline on the embedded services and print where to look."""
    with friendly_errors():
        _run(get_settings())


def _run(settings: Settings) -> None:
    from tripflow import dashboards
    from tripflow.marts.run import mart_row_counts, run_marts
    from tripflow.processing.bronze import run_bronze
    from tripflow.processing.silver import run_silver

    home = settings.home_dir
    started = services.up(settings)
    settings = services.resolve(settings)  # resolved once: the steps below start nothing
    dsn = db.prepare(settings)
    endpoints = services.endpoints(settings)
    console.print(f"[green]✓[/] services up ({', '.join(started) or 'already running'}); "
                  f"schema migrated")

    _folder, days = _data(settings)
    _produce_history(settings, days)

    if workers.start(home, "stream", ["stream"]):
        console.print("[green]✓[/] stream worker started in the background "
                      f"(log: {home / 'logs' / 'stream.log'})")
    else:
        console.print("[green]✓[/] stream worker already running")

    _start_cdc(settings, _folder)

    bronze = run_bronze(settings, until_idle=5)
    console.print(f"[green]✓[/] {bronze.line()}")
    silver = run_silver(settings, changed=True)
    console.print(f"[green]✓[/] {silver.line()}")
    marts = run_marts(settings, changed=True)
    console.print(f"[green]✓[/] {marts.line()}")
    if marts.dates:  # the checks of what was just built (`tripflow quality` for all)
        from tripflow.quality.run import run_quality

        checked = run_quality(settings, marts.dates, layers=["silver", "gold"])
        failed = ", ".join(sorted({r.check for r in checked.failed}))
        console.print(f"[red]✗[/] {checked.line()}: {failed}" if failed
                      else f"[green]✓[/] {checked.line()}", soft_wrap=True)

    # Late clicks of the day before, written into this day's file, go where they were
    # read (late, as the live site saw them), not back hours before the day's first click,
    # which would keep the replay nearly silent for its first quarter of an hour.
    replay_args = ["produce", str(days[-1]), "--mode", "replay", "--speed", str(REPLAY_SPEED),
                   "--rebase", "now", "--reorder-minutes", str(REPLAY_REORDER_MINUTES)]
    if workers.start(home, "replay", replay_args):
        console.print(f"[green]✓[/] replaying {days[-1].name} live at {REPLAY_SPEED:g}× "
                      f"(log: {home / 'logs' / 'replay.log'})")
    else:
        console.print("[green]✓[/] live replay already running")

    result = dashboards.serve_info(settings)

    console.rule("cold marts (rows)")
    for mart, rows in mart_row_counts(settings).items():
        console.print(f"{mart:<28} {rows:>9,}")
    dashboards.print_where_to_look(result)
    console.rule("where else to look")
    console.print(f"PostgreSQL : {dsn.split('@')[-1]}  (user tripflow, password in "
                  f"{home / 'pg_password'})", soft_wrap=True)
    console.print(f"Kafka      : {endpoints.kafka_bootstrap}  (topic {settings.topic})")
    console.print(f"Lake       : {settings.lake}")
    console.print("`tripflow status` shows the hot marts filling; "
                  "`tripflow services down` stops everything.")
