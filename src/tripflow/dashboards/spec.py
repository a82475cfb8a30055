"""Building blocks of the dashboards: datasets, charts and dashboards as plain Python values.

A chart is its Superset *form data* (what the dashboard's front end draws from) plus one
*query object* (what Superset's chart-data API runs for it, stored as the chart's
`query_context`). Both are written here from the same arguments, so they ask for the same
columns, metrics and filters.

Everything gets a UUID derived from its key (uuid5), so a rebuilt bundle names the same
objects and a re-import updates them instead of adding copies.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

Params = dict[str, Any]

_NAMESPACE = uuid.UUID("5a1f3c0e-7d8b-4c52-9e61-2b7f0d4a9c13")
NO_FILTER = "No filter"
DEFAULT_ROW_LIMIT = 10_000


def stable_uuid(kind: str, key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"tripflow/{kind}/{key}"))


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    label: str
    temporal: bool = False
    expression: str | None = None  # a calculated column (SQL over the dataset's columns)
    description: str | None = None


@dataclass(frozen=True)
class Metric:
    name: str
    expression: str
    label: str
    d3format: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A table (physical) or a SQL query (virtual, when `sql` is set) of the marts."""

    name: str
    columns: tuple[Column, ...]
    metrics: tuple[Metric, ...]
    description: str
    sql: str | None = None
    time_column: str | None = None
    cache_timeout: int | None = None

    @property
    def uuid(self) -> str:
        return stable_uuid("dataset", self.name)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"dataset {self.name} has no column {name}")

    def metric(self, name: str) -> Metric:
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(f"dataset {self.name} has no metric {name}")


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    viz_type: str
    dataset: Dataset
    params: Params
    query: Params
    width: int = 6
    height: int = 50
    description: str | None = None

    @property
    def uuid(self) -> str:
        return stable_uuid("chart", self.key)

    def form_data(self) -> Params:
        return {"viz_type": self.viz_type, **self.params}

    def query_context(self) -> Params:
        """The chart-data request Superset stores with the chart (the importer fills in the
        dataset's id)."""
        return {
            "datasource": {"id": 0, "type": "table"},
            "force": False,
            "queries": [self.query],
            "form_data": self.form_data(),
            "result_format": "json",
            "result_type": "full",
        }


@dataclass(frozen=True)
class Markdown:
    key: str
    text: str
    width: int = 12
    height: int = 12


@dataclass(frozen=True)
class NativeFilter:
    """A dashboard filter: a date range (`column` None) or a value list on `column` of
    `dataset`. It applies to the charts in `charts` (all the dashboard's when empty)."""

    key: str
    name: str
    dataset: Dataset | None = None
    column: str | None = None
    charts: tuple[str, ...] = ()
    description: str = ""
    search_all: bool = False  # look values up in the database as the user types


@dataclass(frozen=True)
class Dashboard:
    key: str
    title: str
    rows: tuple[tuple[Chart | Markdown, ...], ...]
    filters: tuple[NativeFilter, ...] = ()
    refresh_seconds: int = 0
    description: str = ""

    @property
    def uuid(self) -> str:
        return stable_uuid("dashboard", self.key)

    @property
    def slug(self) -> str:
        return self.key.replace("_", "-")

    def charts(self) -> list[Chart]:
        return [item for row in self.rows for item in row if isinstance(item, Chart)]


# --- form data and query pieces -------------------------------------------------------


def axis(column: str, grain: str | None) -> Params:
    """A time x-axis as the query object names it (column truncated to `grain`)."""
    return {"timeGrain": grain, "columnType": "BASE_AXIS", "sqlExpression": column,
            "label": column, "expressionType": "SQL"}


def time_filter(dataset: Dataset) -> list[Params]:
    """The adhoc filter a dashboard's date-range filter binds to ("No filter" until set)."""
    if not dataset.time_column:
        return []
    return [{"clause": "WHERE", "expressionType": "SIMPLE", "subject": dataset.time_column,
             "operator": "TEMPORAL_RANGE", "comparator": NO_FILTER}]


def sql_filter(where: str) -> Params:
    return {"clause": "WHERE", "expressionType": "SQL", "sqlExpression": where}


def query(dataset: Dataset, *, columns: list[Any], metrics: list[str] | None,
          adhoc_filters: list[Params], orderby: list[Any] | None = None,
          row_limit: int = DEFAULT_ROW_LIMIT, series_columns: list[str] | None = None,
          series_limit: int = 0, series_limit_metric: str | None = None,
          grain: str | None = None) -> Params:
    """One query object, equivalent to what the front end sends for the same form data
    (a time axis is a BASE_AXIS column, so it is never an old-style "timeseries" query)."""
    filters, wheres = [], []
    for adhoc in adhoc_filters:
        if adhoc["expressionType"] == "SQL":
            wheres.append(f"({adhoc['sqlExpression']})")
        else:
            filters.append({"col": adhoc["subject"], "op": adhoc["operator"],
                            "val": adhoc.get("comparator")})
    obj: Params = {
        "filters": filters,
        "extras": {"having": "", "where": " AND ".join(wheres)},
        "applied_time_extras": {},
        "columns": columns,
        "orderby": orderby or [],
        "annotation_layers": [],
        "row_limit": row_limit,
        "series_limit": series_limit,
        "order_desc": True,
        "url_params": {},
        "custom_params": {},
        "custom_form_data": {},
        "time_offsets": [],
        "post_processing": [],
    }
    if metrics is not None:
        obj["metrics"] = metrics
    if grain:
        obj["extras"]["time_grain_sqla"] = grain
    if series_columns:
        obj["series_columns"] = series_columns
    if series_limit_metric:
        obj["series_limit_metric"] = series_limit_metric
    if dataset.time_column and not any(f["op"] == "TEMPORAL_RANGE" for f in filters):
        obj["time_range"] = NO_FILTER
    return obj


@dataclass
class Axes:
    """Axis titles; a title should carry the unit ("Clicks per day", "Hour of day (UTC)")."""

    x: str = ""
    y: str = ""
    x_margin: int = 30
    y_margin: int = 50


def _form(adhoc: list[Params], extra: Params) -> Params:
    return {"adhoc_filters": adhoc, "annotation_layers": [], "url_params": {},
            "extra_form_data": {}, **extra}


def _filters(dataset: Dataset, where: str | None) -> list[Params]:
    adhoc = time_filter(dataset)
    if where:
        adhoc.append(sql_filter(where))
    return adhoc


def timeseries(key: str, title: str, dataset: Dataset, *, kind: str, x: str,
               metrics: list[str], axes: Axes, grain: str | None = "P1D",
               groupby: list[str] | None = None, series_limit: int = 0,
               stack: bool = False, y_format: str = "SMART_NUMBER", show_value: bool = False,
               horizontal: bool = False, sort_by_metric: bool = False,
               where: str | None = None, time_format: str = "%Y-%m-%d",
               markers: bool = True, series_by_name: bool = False, rotate_labels: bool = False,
               width: int = 6,
               height: int = 50, description: str | None = None) -> Chart:
    """A line, bar or area chart over a time (or, with grain None, a category) x-axis."""
    viz = {"line": "echarts_timeseries_line", "bar": "echarts_timeseries_bar",
           "area": "echarts_area"}[kind]
    groupby = groupby or []
    adhoc = _filters(dataset, where)
    temporal = dataset.column(x).temporal
    params: Params = {
        "x_axis": x,
        "metrics": metrics,
        "groupby": groupby,
        "row_limit": DEFAULT_ROW_LIMIT,
        "truncate_metric": True,
        "show_legend": bool(groupby) or len(metrics) > 1,
        "legendType": "scroll",
        "legendOrientation": "top",
        "rich_tooltip": True,
        "tooltipTimeFormat": time_format,
        "x_axis_time_format": time_format,
        "x_axis_title": axes.x,
        "x_axis_title_margin": axes.x_margin,
        "y_axis_title": axes.y,
        "y_axis_title_margin": axes.y_margin,
        "y_axis_title_position": "Left",
        "y_axis_format": y_format,
        "show_value": show_value,
        "zoomable": False,
        "markerEnabled": kind == "line" and markers,
        "markerSize": 4,
        "order_desc": True,
        "comparison_type": "values",
        "annotation_layers": [],
    }
    if temporal:
        params["time_grain_sqla"] = grain
    if series_limit:
        params["series_limit"] = series_limit
        params["series_limit_metric"] = metrics[0]
    if stack:
        params["stack"] = "Stack"
    if kind == "area":
        params["opacity"] = 0.6
        params["stack"] = "Stack"
    if kind == "bar":
        params["orientation"] = "horizontal" if horizontal else "vertical"
    if rotate_labels:
        params["xAxisLabelRotation"] = 45
    if sort_by_metric:
        # Horizontal bars draw the first category at the bottom: ascending puts the
        # largest on top.
        params["x_axis_sort"] = metrics[0]
        params["x_axis_sort_asc"] = horizontal
    if series_by_name:
        params["sort_series_type"] = "name"
        params["sort_series_ascending"] = True
    columns: list[Any] = [axis(x, grain) if temporal else x, *groupby]
    return Chart(
        key, title, viz, dataset, _form(adhoc, params),
        query(dataset, columns=columns, metrics=metrics, adhoc_filters=adhoc,
              orderby=[[metrics[0], False]] if groupby or sort_by_metric else None,
              series_columns=groupby or None, series_limit=series_limit,
              series_limit_metric=metrics[0] if series_limit else None,
              grain=grain if temporal else None),
        width, height, description)


def big_number(key: str, title: str, dataset: Dataset, *, metric: str, subtitle: str,
               x: str | None = None, grain: str = "P1D", y_format: str = "SMART_NUMBER",
               compare: bool = True,
               where: str | None = None, width: int = 3, height: int = 34,
               description: str | None = None) -> Chart:
    """The latest period's value with its trend line (`x` set), or one total (`x` None)."""
    adhoc = _filters(dataset, where)
    common = {"metric": metric, "subtitle": subtitle, "y_axis_format": y_format,
              "header_font_size": 0.4, "subtitle_font_size": 0.15}
    if x is None:
        return Chart(key, title, "big_number_total", dataset,
                     _form(adhoc, common),
                     query(dataset, columns=[], metrics=[metric], adhoc_filters=adhoc,
                           row_limit=1),
                     width, height, description)
    params = {**common, "x_axis": x, "time_grain_sqla": grain, "show_trend_line": True,
              "start_y_axis_at_zero": True, "compare_lag": 1 if compare else 0,
              "compare_suffix": "vs previous day", "show_timestamp": True,
              "time_format": "%Y-%m-%d", "rolling_type": "None"}
    return Chart(key, title, "big_number", dataset, _form(adhoc, params),
                 query(dataset, columns=[axis(x, grain)], metrics=[metric],
                       adhoc_filters=adhoc, grain=grain),
                 width, height, description)


def pie(key: str, title: str, dataset: Dataset, *, groupby: str, metric: str,
        width: int = 6, height: int = 60, description: str | None = None) -> Chart:
    adhoc = _filters(dataset, None)
    params = {"groupby": [groupby], "metric": metric, "row_limit": 100,
              "sort_by_metric": True, "show_labels": True, "label_type": "percent",
              "labels_outside": False, "label_line": False, "show_labels_threshold": 4,
              "number_format": "SMART_NUMBER", "show_legend": True, "legendType": "scroll",
              "legendOrientation": "right", "donut": True, "innerRadius": 35,
              "outerRadius": 70, "show_total": True, "date_format": "smart_date"}
    return Chart(key, title, "pie", dataset, _form(adhoc, params),
                 query(dataset, columns=[groupby], metrics=[metric], adhoc_filters=adhoc,
                       orderby=[[metric, False]], row_limit=100),
                 width, height, description)


def table(key: str, title: str, dataset: Dataset, *, groupby: list[str] | None = None,
          metrics: list[str] | None = None, columns: list[str] | None = None,
          order_by: str | None = None, ascending: bool = False, row_limit: int = 10,
          where: str | None = None, no_bars: tuple[str, ...] = (),
          width: int = 6, height: int = 60, description: str | None = None) -> Chart:
    """An aggregated table (`groupby` + `metrics`) or a raw one (`columns`). Numbers get
    in-cell bars, except in the `no_bars` columns (ids, ranks)."""
    adhoc = _filters(dataset, where)
    params: Params = {"row_limit": row_limit, "server_pagination": False,
                      "include_search": False, "show_cell_bars": True,
                      "table_timestamp_format": "%Y-%m-%d %H:%M", "order_desc": not ascending,
                      "column_config": {c: {"showCellBars": False} for c in no_bars},
                      "allow_rearrange_columns": False,
                      "color_pn": True}
    if columns is not None:
        order = [[order_by, ascending]] if order_by else []
        params.update({"query_mode": "raw", "all_columns": columns,
                       "order_by_cols": [f'["{c}", {str(a).lower()}]' for c, a in order]})
        q = query(dataset, columns=columns, metrics=None, adhoc_filters=adhoc,
                  orderby=order, row_limit=row_limit)
    else:
        metrics = metrics or []
        sort = order_by or metrics[0]
        params.update({"query_mode": "aggregate", "groupby": groupby or [],
                       "metrics": metrics, "percent_metrics": [],
                       "timeseries_limit_metric": sort})
        q = query(dataset, columns=groupby or [], metrics=metrics, adhoc_filters=adhoc,
                  orderby=[[sort, ascending]], row_limit=row_limit)
    return Chart(key, title, "table", dataset, _form(adhoc, params), q,
                 width, height, description)


def heatmap(key: str, title: str, dataset: Dataset, *, x: str, y: str, metric: str,
            grain: str = "P1D", width: int = 12, height: int = 60,
            description: str | None = None) -> Chart:
    adhoc = _filters(dataset, None)
    params = {"x_axis": x, "time_grain_sqla": grain, "groupby": y, "metric": metric,
              "row_limit": DEFAULT_ROW_LIMIT, "sort_x_axis": "alpha_asc",
              "sort_y_axis": "alpha_asc", "normalize_across": "heatmap",
              "legend_type": "continuous", "linear_color_scheme": "schemeYlOrRd",
              "xscale_interval": -1, "yscale_interval": 1, "left_margin": "auto",
              "bottom_margin": "auto", "value_bounds": [None, None],
              "y_axis_format": "SMART_NUMBER", "x_axis_time_format": "%Y-%m-%d",
              "show_legend": True, "show_percentage": True, "show_values": False,
              "normalized": False}
    return Chart(key, title, "heatmap_v2", dataset, _form(adhoc, params),
                 query(dataset, columns=[axis(x, grain), y], metrics=[metric],
                       adhoc_filters=adhoc, orderby=[[x, True], [y, True]], grain=grain),
                 width, height, description)


def histogram(key: str, title: str, dataset: Dataset, *, column: str, axes: Axes,
              bins: int = 25, where: str | None = None, row_limit: int = 100_000,
              width: int = 6, height: int = 50, description: str | None = None) -> Chart:
    adhoc = _filters(dataset, where)
    params = {"column": column, "groupby": [], "bins": bins, "normalize": False,
              "cumulative": False, "row_limit": row_limit, "x_axis_title": axes.x,
              "y_axis_title": axes.y, "x_axis_format": ",.1f",
              "y_axis_format": "SMART_NUMBER", "show_value": False, "show_legend": False}
    return Chart(key, title, "histogram_v2", dataset, _form(adhoc, params),
                 query(dataset, columns=[column], metrics=None, adhoc_filters=adhoc,
                       row_limit=row_limit),
                 width, height, description)


def box_plot(key: str, title: str, dataset: Dataset, *, distribute: list[str],
             groupby: list[str], metric: str, axes: Axes, where: str | None = None,
             row_limit: int = 100_000, width: int = 6, height: int = 50,
             description: str | None = None) -> Chart:
    adhoc = _filters(dataset, where)
    params = {"columns": distribute, "groupby": groupby, "metrics": [metric],
              "whiskerOptions": "Tukey", "row_limit": row_limit,
              "x_axis_title": axes.x, "x_axis_title_margin": axes.x_margin,
              "y_axis_title": axes.y, "y_axis_title_margin": axes.y_margin,
              "y_axis_title_position": "Left", "number_format": "SMART_NUMBER",
              "x_ticks_layout": "auto", "date_format": "smart_date"}
    return Chart(key, title, "box_plot", dataset, _form(adhoc, params),
                 query(dataset, columns=[*distribute, *groupby], metrics=[metric],
                       adhoc_filters=adhoc, series_columns=groupby, row_limit=row_limit),
                 width, height, description)
