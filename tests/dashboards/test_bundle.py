"""The Superset bundle as files (no Superset needed), the hourly mart behind the heatmap,
and the reader's access to it."""

from __future__ import annotations

import io
import zipfile
from datetime import date, datetime
from importlib import resources

import duckdb
import psycopg
import pytest
import yaml

from tripflow import dashboards, db
from tripflow.dashboards import bundle, catalog
from tripflow.settings import Settings

URI = "postgresql+psycopg2://tripflow_reader:XXXXXXXXXX@127.0.0.1:5432/tripflow"


def _files() -> dict[str, dict]:
    return {name: yaml.safe_load(text) for name, text in bundle.bundle_files(URI).items()}


def test_bundle_layout_follows_superset_import_rules(tmp_path) -> None:
    out = bundle.write_bundle(bundle.bundle_files(URI), tmp_path / "b.zip")
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
    assert {name.split("/")[0] for name in names} == {bundle.ROOT}  # one top-level folder
    files = _files()
    assert files["metadata.yaml"] == {"version": "1.0.0"}  # and no `type`
    database = files[bundle.DATABASE_FILE]
    assert database["extra"] == {}
    assert "password" not in database
    kinds = {name.split("/")[0] for name in files} - {"metadata.yaml"}
    assert kinds == {"databases", "datasets", "charts", "dashboards"}


def test_every_object_has_a_uuid_and_every_chart_is_placed() -> None:
    files = _files()
    uuids = [f["uuid"] for name, f in files.items() if name != "metadata.yaml"]
    assert len(uuids) == len(set(uuids))
    datasets = {f["uuid"]: f for n, f in files.items() if n.startswith("datasets/")}
    charts = {f["uuid"]: f for n, f in files.items() if n.startswith("charts/")}
    placed: set[str] = set()
    for name, dashboard in files.items():
        if not name.startswith("dashboards/"):
            continue
        for item in dashboard["position"].values():
            if isinstance(item, dict) and item.get("type") == "CHART":
                placed.add(item["meta"]["uuid"])
        for native in dashboard["metadata"]["native_filter_configuration"]:
            for target in native["targets"]:
                assert target.get("datasetUuid", next(iter(datasets))) in datasets
    assert placed == set(charts)
    for chart in charts.values():
        assert chart["dataset_uuid"] in datasets
        assert chart["query_context"]  # the chart-data API runs it
    for dataset in datasets.values():
        assert dataset["columns"], dataset["table_name"]
        assert dataset["database_uuid"] == files[bundle.DATABASE_FILE]["uuid"]


def test_charts_are_titled_and_axes_carry_units() -> None:
    for chart in catalog.charts():
        assert chart.title
        params = chart.params
        # A value axis says what it counts per what; a time axis says its zone.
        if "y_axis_title" in params:
            assert params["y_axis_title"], chart.key
        x = params.get("x_axis")
        if "x_axis_title" in params and isinstance(x, str) and chart.dataset.column(x).temporal:
            assert "UTC" in params["x_axis_title"], chart.key


def test_rebuilding_gives_identical_bytes(tmp_path) -> None:
    first = bundle.write_bundle(bundle.bundle_files(URI), tmp_path / "1.zip").read_bytes()
    second = bundle.write_bundle(bundle.bundle_files(URI), tmp_path / "2.zip").read_bytes()
    assert first == second


@pytest.mark.parametrize(("dsn", "uri"), [
    # The database `tripflow` keeps the reader it always had; any other has its own.
    ("postgresql://owner:secret@127.0.0.1:5432/tripflow", URI),
    ("postgresql://owner:secret@127.0.0.1:5433/tf",
     "postgresql+psycopg2://tripflow_reader_tf:XXXXXXXXXX@127.0.0.1:5433/tf"),
    ("host=db.example port=6432 dbname=marts user=u password=p sslmode=require",
     "postgresql+psycopg2://tripflow_reader_marts:XXXXXXXXXX@db.example:6432/marts"
     "?sslmode=require"),
])
def test_reader_uri_keeps_server_and_database_but_no_password(dsn: str, uri: str) -> None:
    assert bundle.reader_uri(dsn) == uri


def test_reader_uri_refuses_a_unix_socket() -> None:
    with pytest.raises(ValueError, match="TCP"):
        bundle.reader_uri("host=/var/run/postgresql dbname=tf")


def test_build_bundle_names_this_database(settings: Settings) -> None:
    path = dashboards.build_bundle(settings, settings.home_dir / "out" / "bundle.zip")
    with zipfile.ZipFile(path) as archive:
        text = archive.read(f"{bundle.ROOT}/{bundle.DATABASE_FILE}").decode()
    dbname = (settings.pg_dsn or "").rsplit("/", 1)[1]
    role = db.reader_role(settings)
    assert role == f"tripflow_reader_{dbname}"  # the test database's own reader
    assert f"{role}:XXXXXXXXXX@127.0.0.1:" in text and f"/{dbname}\"" in text
    assert db.reader_password(settings) not in text


def test_hourly_mart_sql_counts_clicks_per_date_and_hour() -> None:
    sql = (resources.files("tripflow.marts") / "sql" / "mart_hourly_traffic.sql").read_text()
    con = duckdb.connect()
    con.execute("create table silver_clicks (event_date date, event_ts timestamp, "
                "session_id varchar)")
    con.executemany("insert into silver_clicks values (?, ?, ?)", [
        (date(2016, 1, 1), datetime(2016, 1, 1, 13, 5), "a"),
        (date(2016, 1, 1), datetime(2016, 1, 1, 13, 55), "b"),
        (date(2016, 1, 1), datetime(2016, 1, 1, 13, 59), "a"),
        (date(2016, 1, 1), datetime(2016, 1, 1, 0, 0), "a"),
        (date(2016, 1, 2), datetime(2016, 1, 2, 23, 59, 59), "c"),
    ])
    rows = sorted(con.execute(sql).fetchall())
    assert rows == [(date(2016, 1, 1), 0, 1, 1), (date(2016, 1, 1), 13, 3, 2),
                    (date(2016, 1, 2), 23, 1, 1)]


def test_reader_can_read_the_hourly_mart_and_nothing_else(settings: Settings) -> None:
    dsn = db.prepare(settings)
    reader = psycopg.conninfo.make_conninfo(dsn, user=db.reader_role(settings),
                                            password=db.reader_password(settings))
    with psycopg.connect(dsn) as owner:
        owner.execute("insert into mart_hourly_traffic values ('2016-01-01', 13, 3, 2)")
    with psycopg.connect(reader) as conn:
        assert conn.execute("select clicks from mart_hourly_traffic").fetchall() == [(3,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("delete from mart_hourly_traffic")


def test_zip_contents_are_valid_yaml(tmp_path) -> None:
    data = bundle.write_bundle(bundle.bundle_files(URI), tmp_path / "b.zip").read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            assert isinstance(yaml.safe_load(archive.read(name)), dict), name
