"""tripflow_daily: bronze to idle → silver --changed → marts --changed → the quality checks
of what changed, and the hot freshness check.

Each task is a thin call into tripflow.orchestration; settings come from TRIPFLOW_* in the
worker's environment, never from Airflow connections or variables, and nothing is read
when this file is imported.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

RETRIES = {"retries": 3, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True}


@dag(
    dag_id="tripflow_daily",
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=RETRIES,
    tags=["tripflow"],
    doc_md=__doc__,
)
def tripflow_daily() -> None:
    @task
    def bronze() -> dict:
        from tripflow import orchestration

        return orchestration.bronze_to_idle()

    @task
    def silver() -> dict:
        from tripflow import orchestration

        return orchestration.silver_changed()

    @task
    def marts() -> dict:
        from tripflow import orchestration

        return orchestration.marts_changed()

    @task(retries=0)
    def quality() -> dict:
        from tripflow import orchestration

        return orchestration.quality_changed()

    @task(retries=0)
    def hot_freshness() -> dict:
        from tripflow import orchestration

        return orchestration.check_hot_freshness()

    built = bronze() >> silver() >> marts()
    built >> [quality(), hot_freshness()]


tripflow_daily()
