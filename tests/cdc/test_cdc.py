"""Change data capture end to end on the real embedded PostgreSQL and broker: the
catalogue edited by the simulator while `tripflow cdc capture` and `tripflow cdc apply`
run as real processes and are killed (SIGKILL) at random moments, then a new nullable
column; the dimension must equal the catalogue's history, recorded independently by a
trigger (tests/cdc/audit.sql)."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import psycopg
import pyarrow as pa
from deltalake import DeltaTable
from prometheus_client.parser import text_string_to_metric_families

from tripflow.cdc import apply as cdc_apply
from tripflow.cdc.catalog import simulate
from tripflow.marts.articles import LoadedArticles
from tripflow.observability.metrics import start_worker_metrics
from tripflow.records.articles import write_articles
from tripflow.settings import Settings

AUDIT = (Path(__file__).parent / "audit.sql").read_text()
TRACKED = ("title", "url", "doi")


class Worker:
    """`tripflow cdc <command>` as a real process, killed with SIGKILL and restarted."""

    def __init__(self, command: str, env: dict[str, str], logs: Path) -> None:
        self.command, self.env, self.logs = command, env, logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        log = (self.logs / f"{self.command}-{self.runs}.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "tripflow", "cdc", self.command],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.output()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(90)

    def alive(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.output()
        return True

    def output(self) -> str:
        return (self.logs / f"{self.command}-{self.runs}.log").read_text(errors="replace")


def _wait(what: str, check: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _history(conn: psycopg.Connection) -> dict[int, list[tuple[str, tuple]]]:
    """Per document, its audited changes that touched a tracked column, in order."""
    history: dict[int, list[tuple[str, tuple]]] = defaultdict(list)
    for op, doc, *values in conn.execute(
            "select op, document_id, title, url, doi from public.catalog_audit order by seq"):
        versions = history[doc]
        if op == "u" and versions and versions[-1][1] == tuple(values):
            continue  # only an untracked column changed: no new version
        versions.append((op, tuple(values)))
    return history


def _dimension(conn: psycopg.Connection) -> dict[int, list[tuple]]:
    dim: dict[int, list[tuple]] = defaultdict(list)
    for doc, *rest in conn.execute(
            "select document_id, version, title, url, doi, valid_from, valid_to, is_current, "
            "is_deleted from dim_documents order by document_id, version"):
        dim[doc].append(tuple(rest))
    return dim


def _converged(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        history = _history(conn)
        dim = _dimension(conn)
    expected = {doc: len([v for v in h if v[0] != "d"]) for doc, h in history.items()}
    return {doc: len(v) for doc, v in dim.items()} == expected and all(
        (dim[doc][-1][6] == (h[-1][0] != "d")) for doc, h in history.items())


def test_dimension_is_the_catalogue_history_through_kills_and_a_new_column(
        cdc_settings: Settings, cdc_env: dict[str, str], pg_dsn: str, tmp_path: Path) -> None:
    rng = random.Random(18)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(AUDIT)
    articles = tmp_path / "allarticles.txt"
    write_articles([(i, f"Article {i} on asthma", f"http://example.org/{i}")
                    for i in range(1, 41)], articles)
    loaded = subprocess.run([sys.executable, "-m", "tripflow", "articles", str(articles)],
                            env=cdc_env, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr

    capture, applier = Worker("capture", cdc_env, tmp_path), Worker("apply", cdc_env, tmp_path)
    capture.start()
    applier.start()

    def captured() -> int:
        with psycopg.connect(pg_dsn) as conn:
            row = conn.execute("select coalesce(sum(changes), 0) from tripflow.cdc_capture"
                               ).fetchone()
        return int(row[0]) if row else 0

    _wait("the snapshot to be published", lambda: capture.alive() and captured() >= 40)
    edits: list[object] = []
    editing = threading.Thread(target=lambda: edits.append(
        simulate(cdc_settings, rate=40, edits=160, seed=7)))
    editing.start()
    # SIGKILL both, each at random moments while edits flow, and restart them.
    for worker in (capture, applier, applier, capture):
        time.sleep(rng.uniform(0.3, 1.5))
        worker.kill()
        worker.start()
    editing.join(120)
    assert edits and edits[0].total == 160  # type: ignore[attr-defined]

    # A new nullable column: the pipeline goes on (the dimension keeps its columns).
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("alter table catalog.documents add column language text")
        conn.execute("update catalog.documents set language = 'en', "
                     "title = title || ' [en]' where document_id in (select document_id "
                     "from catalog.documents order by document_id limit 5)")
        conn.execute("update catalog.documents set language = 'fr' where document_id = "
                     "(select max(document_id) from catalog.documents)")
        conn.execute("insert into catalog.documents (document_id, title, url, language) "
                     "values (100000, 'Nouveau document', 'https://example.org/n', 'fr')")
    time.sleep(rng.uniform(0.2, 1.0))
    applier.kill()
    applier.start()
    _wait("the dimension to catch up",
          lambda: capture.alive() and applier.alive() and _converged(pg_dsn), timeout=150)

    # A title fixed in the catalogue shows in the latest real-time top-20 snapshot.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        doc = conn.execute("select min(document_id) from catalog.documents").fetchone()[0]
        conn.execute("insert into mart_realtime_top_docs_1h values (now(), 1, %s, 'old', 9, 3)",
                     (doc,))
        conn.execute("update catalog.documents set title = 'Fixed title' where document_id = %s",
                     (doc,))

    def retitled() -> bool:
        with psycopg.connect(pg_dsn) as conn:
            row = conn.execute("select title from mart_realtime_top_docs_1h").fetchone()
        return row is not None and row[0] == "Fixed title"

    _wait("the real-time mart's title", retitled, timeout=60)
    _wait("the dimension to catch up", lambda: _converged(pg_dsn), timeout=60)
    # mart_popular_documents' titles come from the current dimension too.
    titles = LoadedArticles(cdc_settings).for_documents(pa.array([doc, 100000], pa.int64()))
    assert titles is not None and dict(zip(titles["document_id"].to_pylist(),
                                           titles["title"].to_pylist(), strict=True)) == {
        doc: "Fixed title", 100000: "Nouveau document"}
    assert capture.stop() == 0, capture.output()
    assert applier.stop() == 0, applier.output()

    with psycopg.connect(pg_dsn) as conn:
        history = _history(conn)
        dim = _dimension(conn)
        table = conn.execute("select document_id, title, url, doi from catalog.documents "
                             "order by document_id").fetchall()
        current = conn.execute("select document_id, title, url, doi from dim_documents "
                               "where is_current order by document_id").fetchall()
        changes = conn.execute("select count(*) from tripflow.cdc_changes").fetchone()
        audited = conn.execute("select count(*) from public.catalog_audit").fetchone()
        mart = dict(conn.execute("select op, sum(changes)::int from mart_catalog_changes "
                                 "group by op").fetchall())
        by_op = dict(conn.execute("select op, count(*)::int from tripflow.cdc_changes "
                                  "group by op").fetchall())
        pg_dim = conn.execute("select count(*) from dim_documents").fetchone()

    # Current rows are the table's rows.
    assert current == table
    # One version per change, in order, with the values of the change; a delete closes
    # the last version and marks it.
    for doc, changes_of_doc in history.items():
        versions = dim[doc]
        opened = [values for op, values in changes_of_doc if op != "d"]
        assert [v[1:4] for v in versions] == opened, doc
        assert [v[0] for v in versions] == list(range(1, len(opened) + 1))
        for before, after in pairwise(versions):
            assert before[4] is not None and before[5] == after[4] and not before[6]
        deleted = changes_of_doc[-1][0] == "d"
        assert versions[-1][6] is (not deleted) and versions[-1][7] is deleted
        assert versions[-1][5] is None if not deleted else versions[-1][5] is not None
        assert not any(v[7] for v in versions[:-1])
    edits_made = edits[0].edits  # type: ignore[attr-defined]
    assert sum(1 for h in history.values() for op, _ in h if op == "d") == edits_made["delete"]
    # Every change once (the kills made Debezium publish some twice: not applied twice).
    assert changes is not None and changes == audited
    assert mart == {{"c": "create", "u": "update", "d": "delete", "r": "snapshot"}[op]: n
                    for op, n in by_op.items()}
    assert by_op.get("r") == 40  # the first capture's snapshot of the loaded catalogue

    # `tripflow status` shows both ends.
    shown = subprocess.run([sys.executable, "-m", "tripflow", "status"], env=cdc_env,
                           capture_output=True, text=True, timeout=120).stdout
    slot = f"tripflow_cdc_{pg_dsn.rsplit('/', 1)[1]}"
    assert f"capture  slot {slot} (idle) → {cdc_settings.cdc_topic_prefix}.catalog.documents: " \
        in shown, shown
    assert f"apply    {changes[0]:,} changes applied" in shown, shown

    # The lake: bronze holds each Kafka record once, silver/dim_documents = PostgreSQL's.
    bronze = DeltaTable(f"{cdc_settings.lake}/{cdc_apply.BRONZE}").to_pyarrow_table()
    offsets = bronze["offset"].to_pylist()
    assert sorted(offsets) == list(range(len(offsets)))
    assert set(bronze["op"].to_pylist()) <= {"c", "u", "d", "r"}
    silver = DeltaTable(f"{cdc_settings.lake}/{cdc_apply.SILVER}").to_pyarrow_table()
    assert pg_dim is not None and silver.num_rows == pg_dim[0]
    assert sorted(zip(silver["document_id"].to_pylist(), silver["version"].to_pylist(),
                      silver["title"].to_pylist(), strict=True)) == sorted(
        (doc, v[0], v[1]) for doc, vs in dim.items() for v in vs)


def test_until_idle_runs_end_by_themselves_with_the_snapshot_applied(
        cdc_settings: Settings, cdc_env: dict[str, str], tmp_path: Path, pg_dsn: str) -> None:
    """What the dashboards' pipeline fill runs: articles, then capture and apply to idle."""
    articles = tmp_path / "allarticles.txt"
    write_articles([(i, f"Article {i}", None) for i in range(1, 31)], articles)
    for args in (["articles", str(articles)], ["cdc", "capture", "--until-idle", "3"],
                 ["cdc", "apply", "--until-idle", "3"]):
        done = subprocess.run([sys.executable, "-m", "tripflow", *args], env=cdc_env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "cdc apply: 30 envelopes, 30 changes applied, 0 repeats skipped" in done.stdout
    with psycopg.connect(pg_dsn) as conn:
        mart = conn.execute("select op, changes from mart_catalog_changes").fetchall()
        current = conn.execute("select count(*) from dim_documents where is_current and "
                               "version = 1 and url is null").fetchone()
    assert mart == [("snapshot", 30)] and current == (30,)


def test_apply_serves_its_metrics(cdc_settings: Settings, cdc_env: dict[str, str],
                                  tmp_path: Path) -> None:
    """`cdc apply --metrics-port`: the change consumer feeds the workers' metrics."""
    articles = tmp_path / "allarticles.txt"
    write_articles([(i, f"Article {i}", None) for i in range(1, 13)], articles)
    for args in (["articles", str(articles)], ["cdc", "capture", "--until-idle", "3"]):
        done = subprocess.run([sys.executable, "-m", "tripflow", *args], env=cdc_env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
    metrics = start_worker_metrics(cdc_settings, "cdc", 0)
    assert metrics is not None
    try:
        summary = cdc_apply.apply(cdc_settings, until_idle=2.0, metrics=metrics)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics",
                                    timeout=5) as reply:
            text = reply.read().decode()
    finally:
        metrics.close()
    assert summary.line().startswith("cdc apply: 12 envelopes, 12 changes applied")
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for family in text_string_to_metric_families(text) for s in family.samples}
    assert got[("tripflow_records_written_total", (("worker", "cdc"),))] == 12
    lags = [value for (name, labels), value in got.items()
            if name == "tripflow_consumer_lag" and dict(labels)["worker"] == "cdc"]
    assert lags == [0.0]  # the change topic has one partition, fully applied


def _change(offset: int, lsn: int, doc: int, op: str, title: str | None,
            second: int) -> cdc_apply.Change:
    at = dt.datetime(2026, 1, 1, 12, 0, second, tzinfo=dt.UTC)
    after = None if op == "d" else {"document_id": doc, "title": title, "url": "u", "doi": None}
    return cdc_apply.Change(0, offset, doc, op, lsn, at, after)


def test_type_2_versions_and_repeats_within_and_across_batches(
        cdc_settings: Settings, pg_dsn: str) -> None:
    """Known changes straight into the sink: versions, closes, a delete, a re-creation;
    the same envelopes again (in the batch and in a later one) change nothing."""
    t = lambda s: dt.datetime(2026, 1, 1, 12, 0, s, tzinfo=dt.UTC)  # noqa: E731
    batch = [_change(0, 100, 1, "r", "a", 0), _change(1, 100, 2, "r", "x", 0),
             _change(2, 200, 1, "u", "b", 1), _change(3, 200, 1, "u", "b", 1),  # a repeat
             _change(4, 300, 1, "u", "b", 2),  # only an untracked column changed
             _change(5, 400, 2, "d", None, 3), _change(6, 500, 2, "c", "y", 4),
             _change(7, 600, 1, "u", "c", 5)]
    sink = cdc_apply.CdcSink(cdc_settings, pg_dsn, "t")
    try:
        with sink.conn.transaction():
            assert sink._apply(batch) == 7
        with sink.conn.transaction():
            assert sink._apply([*batch[2:], _change(8, 700, 2, "u", "z", 6)]) == 1
        rows = sink.conn.execute(
            "select document_id, version, title, valid_from, valid_to, is_current, "
            "is_deleted from dim_documents order by 1, 2").fetchall()
        mart = sink.conn.execute("select op, changes from mart_catalog_changes order by op"
                                 ).fetchall()
    finally:
        sink.close()
    assert rows == [
        (1, 1, "a", t(0), t(1), False, False), (1, 2, "b", t(1), t(5), False, False),
        (1, 3, "c", t(5), None, True, False),
        (2, 1, "x", t(0), t(3), False, True), (2, 2, "y", t(4), t(6), False, False),
        (2, 3, "z", t(6), None, True, False)]
    assert mart == [("create", 1), ("delete", 1), ("snapshot", 2), ("update", 4)]


def test_parse_reads_debeziums_envelope() -> None:
    """parse() reads Debezium's envelope (schemas disabled) as the spike printed it."""
    import pyarrow as pa

    from tripflow.messaging.sink import RECORD_SCHEMA

    value = (b'{"before":{"document_id":1,"title":"a","url":"u","doi":null,"updated_at":"x"},'
             b'"after":{"document_id":1,"title":"b","url":"u","doi":null,"updated_at":"x"},'
             b'"source":{"lsn":28300736,"ts_ms":1796470399469,"table":"documents"},'
             b'"op":"u","ts_ms":1796470399714}')
    rows = pa.Table.from_pylist([{"value": value, "partition": 0, "offset": 5,
                                  "timestamp": 0, "key": b"1"}], RECORD_SCHEMA)
    (change,) = cdc_apply.parse(rows)
    assert (change.document_id, change.op, change.lsn, change.after["title"]) == (
        1, "u", 28300736, "b")
    assert change.changed_at.isoformat() == "2026-12-05T11:33:19.469000+00:00"
