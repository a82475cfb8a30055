"""The Superset import bundle: a zip of YAML files generated from `catalog`.

Layout of the zip (Superset's "v1" import format; one top-level folder):

    tripflow_dashboards/metadata.yaml
    tripflow_dashboards/databases/tripflow.yaml
    tripflow_dashboards/datasets/tripflow/<dataset>.yaml
    tripflow_dashboards/charts/<chart>.yaml
    tripflow_dashboards/dashboards/<dashboard>.yaml

The files are written as JSON, which is YAML too: tripflow needs no YAML library and the
text is still stable and diffable. The database entry connects as the database's read-only
role (`tripflow_reader` for the database `tripflow`, see `tripflow.db.reader_role_for`) and
carries no password; the importer supplies it (see `superset.py`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

from tripflow import db
from tripflow.dashboards import catalog
from tripflow.dashboards.spec import Chart, Dashboard, Dataset, Markdown, stable_uuid

ROOT = "tripflow_dashboards"
VERSION = "1.0.0"
DATABASE_NAME = "tripflow"
DATABASE_FILE = f"databases/{DATABASE_NAME}.yaml"
DATABASE_UUID = stable_uuid("database", DATABASE_NAME)
READER_ROLE = db.READER_ROLE  # the reader of the database named `tripflow`
# What Superset writes in place of a password in its own exports: on import it keeps the
# password given to the importer. A URI without it would make Superset drop the password.
PASSWORD_MASK = "XXXXXXXXXX"
# Superset's dashboard grid: 12 columns; heights in units of 8 px.
GRID_COLUMNS = 12


def reader_uri(dsn: str, role: str | None = None) -> str:
    """The SQLAlchemy URI Superset connects with: the DSN's server and database, the
    reader role (default: that database's, `db.reader_role_for`), and Superset's password
    mask instead of a password (the real one is given at import time)."""
    info = conninfo_to_dict(dsn)
    host = info.get("host") or "127.0.0.1"
    if host.startswith("/"):
        raise ValueError("Superset needs PostgreSQL over TCP; TRIPFLOW_PG_DSN names a socket")
    port = info.get("port") or 5432
    dbname = db.database_of(dsn)
    role = role or db.reader_role_for(dbname)
    options = {k: v for k, v in info.items() if k in {"sslmode", "sslrootcert"}}
    query = "&".join(f"{k}={quote(str(v))}" for k, v in sorted(options.items()))
    host_part = f"[{host}]" if ":" in host else host
    uri = (f"postgresql+psycopg2://{quote(role, safe='')}:{PASSWORD_MASK}@{host_part}:{port}/"
           f"{quote(str(dbname))}")
    return f"{uri}?{query}" if query else uri


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _database(sqlalchemy_uri: str) -> dict[str, Any]:
    return {
        "database_name": DATABASE_NAME,
        "sqlalchemy_uri": sqlalchemy_uri,
        "cache_timeout": None,
        "expose_in_sqllab": True,
        "allow_run_async": False,
        "allow_ctas": False,
        "allow_cvas": False,
        "allow_dml": False,
        "allow_csv_upload": False,
        "extra": {},
        "uuid": DATABASE_UUID,
        "version": VERSION,
    }


def _dataset(dataset: Dataset) -> dict[str, Any]:
    return {
        "table_name": dataset.name,
        "main_dttm_col": dataset.time_column,
        "description": dataset.description,
        "default_endpoint": None,
        "offset": 0,
        "cache_timeout": dataset.cache_timeout,
        "schema": "public",
        "sql": dataset.sql,
        "params": None,
        "template_params": None,
        "filter_select_enabled": True,
        "fetch_values_predicate": None,
        "extra": None,
        "normalize_columns": False,
        "always_filter_main_dttm": False,
        "uuid": dataset.uuid,
        "metrics": [
            {"metric_name": m.name, "verbose_name": m.label, "metric_type": None,
             "expression": m.expression, "description": m.description,
             "d3format": m.d3format, "extra": {}, "warning_text": None}
            for m in dataset.metrics
        ],
        "columns": [
            {"column_name": c.name, "verbose_name": c.label, "is_dttm": c.temporal,
             "is_active": True, "type": c.type, "advanced_data_type": None,
             "groupby": True, "filterable": True, "expression": c.expression,
             "description": c.description, "python_date_format": None, "extra": {}}
            for c in dataset.columns
        ],
        "version": VERSION,
        "database_uuid": DATABASE_UUID,
    }


def _chart(chart: Chart) -> dict[str, Any]:
    return {
        "slice_name": chart.title,
        "description": chart.description,
        "certified_by": None,
        "certification_details": None,
        "viz_type": chart.viz_type,
        "params": chart.form_data(),
        "query_context": json.dumps(chart.query_context()),
        "cache_timeout": None,
        "uuid": chart.uuid,
        "version": VERSION,
        "dataset_uuid": chart.dataset.uuid,
    }


def _position(dashboard: Dashboard, chart_ids: dict[str, int]) -> dict[str, Any]:
    """The dashboard grid: a header, then one row per tuple of `dashboard.rows`."""
    position: dict[str, Any] = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
        "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": dashboard.title}},
    }
    for index, row in enumerate(dashboard.rows, start=1):
        if sum(item.width for item in row) > GRID_COLUMNS:
            raise ValueError(f"{dashboard.key}: row {index} is wider than {GRID_COLUMNS}")
        row_id = f"ROW-{index}"
        position["GRID_ID"]["children"].append(row_id)
        position[row_id] = {"type": "ROW", "id": row_id, "children": [],
                            "parents": ["ROOT_ID", "GRID_ID"],
                            "meta": {"background": "BACKGROUND_TRANSPARENT"}}
        for item in row:
            parents = ["ROOT_ID", "GRID_ID", row_id]
            if isinstance(item, Markdown):
                item_id = f"MARKDOWN-{item.key}"
                entry = {"type": "MARKDOWN", "id": item_id, "children": [], "parents": parents,
                         "meta": {"code": item.text, "width": item.width,
                                  "height": item.height}}
            else:
                item_id = f"CHART-{item.key}"
                entry = {"type": "CHART", "id": item_id, "children": [], "parents": parents,
                         "meta": {"chartId": chart_ids[item.key], "uuid": item.uuid,
                                  "sliceName": item.title, "width": item.width,
                                  "height": item.height}}
            position[row_id]["children"].append(item_id)
            position[item_id] = entry
    return position


def _native_filters(dashboard: Dashboard, chart_ids: dict[str, int]) -> list[dict[str, Any]]:
    filters = []
    for spec in dashboard.filters:
        in_scope = set(spec.charts) or {c.key for c in dashboard.charts()}
        if spec.column is not None:
            # A value filter only makes sense for charts whose dataset has the column.
            assert spec.dataset is not None
            in_scope = {c.key for c in dashboard.charts()
                        if c.key in in_scope and c.dataset.uuid == spec.dataset.uuid}
        excluded = sorted(chart_ids[c.key] for c in dashboard.charts() if c.key not in in_scope)
        entry: dict[str, Any] = {
            "id": f"NATIVE_FILTER-{dashboard.key}-{spec.key}",
            "name": spec.name,
            "type": "NATIVE_FILTER",
            "description": spec.description,
            "cascadeParentIds": [],
            "scope": {"rootPath": ["ROOT_ID"], "excluded": excluded},
            "defaultDataMask": {"extraFormData": {}, "filterState": {}, "ownState": {}},
        }
        if spec.column is None:
            entry.update({"filterType": "filter_time", "targets": [{}],
                          "controlValues": {"enableEmptyFilter": False}})
        else:
            assert spec.dataset is not None
            entry.update({
                "filterType": "filter_select",
                "targets": [{"column": {"name": spec.column}, "datasetUuid": spec.dataset.uuid}],
                "controlValues": {"enableEmptyFilter": False, "defaultToFirstItem": False,
                                  "multiSelect": True, "searchAllOptions": spec.search_all,
                                  "inverseSelection": False, "sortAscending": True},
            })
        filters.append(entry)
    return filters


def _dashboard(dashboard: Dashboard, chart_ids: dict[str, int]) -> dict[str, Any]:
    return {
        "dashboard_title": dashboard.title,
        "description": dashboard.description,
        "css": "",
        "slug": dashboard.slug,
        "certified_by": "",
        "certification_details": "",
        "published": True,
        "uuid": dashboard.uuid,
        "position": _position(dashboard, chart_ids),
        "metadata": {
            "color_scheme": "supersetColors",
            "refresh_frequency": dashboard.refresh_seconds,
            "expanded_slices": {},
            "label_colors": {},
            "shared_label_colors": [],
            "color_scheme_domain": [],
            "timed_refresh_immune_slices": [],
            "cross_filters_enabled": False,
            "default_filters": "{}",
            "chart_configuration": {},
            "global_chart_configuration": {},
            "native_filter_configuration": _native_filters(dashboard, chart_ids),
        },
        "version": VERSION,
    }


def bundle_files(sqlalchemy_uri: str) -> dict[str, str]:
    """Every file of the bundle (path inside the top-level folder → text)."""
    dashboards = catalog.dashboards()
    charts = [chart for d in dashboards for chart in d.charts()]
    keys = [chart.key for chart in charts]
    if len(set(keys)) != len(keys):
        raise ValueError("two charts share a key")
    # Placeholder ids: the importer maps them to the ids it gives the charts.
    chart_ids = {key: index for index, key in enumerate(keys, start=1)}
    files = {
        "metadata.yaml": _dump({"version": VERSION}),
        DATABASE_FILE: _dump(_database(sqlalchemy_uri)),
    }
    for dataset in catalog.DATASETS:
        files[f"datasets/{DATABASE_NAME}/{dataset.name}.yaml"] = _dump(_dataset(dataset))
    for chart in charts:
        files[f"charts/{chart.key}.yaml"] = _dump(_chart(chart))
    for dashboard in dashboards:
        files[f"dashboards/{dashboard.key}.yaml"] = _dump(_dashboard(dashboard, chart_ids))
    return files


def write_bundle(files: dict[str, str], out: Path) -> Path:
    """Write the zip atomically (a reader never sees half a bundle); fixed timestamps keep
    the bytes identical for identical content."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"{ROOT}/{name}", date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name])
    tmp.replace(out)
    return out
