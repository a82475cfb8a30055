"""tripflow_backfill (manual): rebuild silver and the cold marts for a date range."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task


@dag(
    dag_id="tripflow_backfill",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    params={
        "from": Param("2016-01-01", type="string", format="date", description="first date"),
        "to": Param("2016-01-07", type="string", format="date", description="last date"),
    },
    tags=["tripflow"],
    doc_md=__doc__,
)
def tripflow_backfill() -> None:
    @task
    def backfill(params: dict | None = None) -> dict:
        from tripflow import orchestration

        assert params is not None
        return orchestration.backfill(params["from"], params["to"])

    backfill()


tripflow_backfill()
