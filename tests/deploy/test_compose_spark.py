"""The cluster setting's Spark: a master and a worker in deploy/docker-compose.yml, and
Airflow's batch steps set to run on it (engine spark, its master, settings that parse)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tripflow.settings import Settings
from tripflow.spark.session import parse_conf

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_spark_cluster_and_airflow_running_the_batch_steps_on_it() -> None:
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    master, worker = services["spark-master"], services["spark-worker"]
    assert "deploy.master.Master --host spark-master --port 7077" in master["command"][0]
    assert "deploy.worker.Worker spark://spark-master:7077" in worker["command"][0]
    assert master["image"] == worker["image"] == services["tripflow-stream"]["image"]
    # Executors write the lake at the path the driver names, as the driver's user.
    lake_mount = "lake:/var/lib/tripflow/lake"
    assert lake_mount in worker["volumes"]
    assert worker["user"].split(":")[0] == "50000"  # the Airflow image's user
    for name in ("airflow-scheduler", "airflow-apiserver", "airflow-dag-processor"):
        airflow = services[name]
        assert lake_mount in airflow["volumes"], name
        env = airflow["environment"]
        settings = Settings(engine=env["TRIPFLOW_ENGINE"],
                            spark_master=env["TRIPFLOW_SPARK_MASTER"],
                            spark_conf=env["TRIPFLOW_SPARK_CONF"])
        assert settings.engine == "spark"
        assert settings.spark_master == "spark://spark-master:7077"
        assert parse_conf(settings.spark_conf)["spark.driver.bindAddress"] == "0.0.0.0"
    assert "tripflow jars spark" in (DEPLOY / "Dockerfile").read_text()
    assert "tripflow jars spark" in (DEPLOY / "airflow.Dockerfile").read_text()
