"""tripflow_replay (manual): replay day files into Kafka in event-time order, one task per
simulated web server (as the original system's two web servers did).

`plan` fixes one shared schedule (the dataset's first event time and a wall-clock start a
few seconds ahead), so the servers, running as separate tasks, together send in event-time
order at the requested speed.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task


@dag(
    dag_id="tripflow_replay",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0},
    params={
        "path": Param("data", type="string", description="day file, folder or logs.tar.gz"),
        "speed": Param(60.0, type="number", exclusiveMinimum=0, description="× real time"),
        "servers": Param(2, type="integer", minimum=1, maximum=16, description="web servers"),
    },
    tags=["tripflow"],
    doc_md=__doc__,
)
def tripflow_replay() -> None:
    @task
    def plan(params: dict | None = None) -> list[dict]:
        from tripflow import orchestration

        assert params is not None
        return orchestration.plan_replay(params["path"], float(params["speed"]),
                                         int(params["servers"]))

    @task(max_active_tis_per_dagrun=16)
    def replay_server(server_plan: dict) -> dict:
        from tripflow import orchestration

        return orchestration.replay_server(server_plan)

    replay_server.expand(server_plan=plan())


tripflow_replay()
