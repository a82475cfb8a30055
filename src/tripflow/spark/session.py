"""The SparkSession of a tripflow process: master from TRIPFLOW_SPARK_MASTER, Delta Lake
and the PostgreSQL driver from the pinned jar cache (`tripflow jars`), UTC, Arrow on.

One session per process, built on first use and reused after (a second `session()` with
the same settings returns it); Spark is started only by commands that run with engine
spark, never on import.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tripflow import lake
from tripflow.services import jars
from tripflow.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Settings tripflow relies on (the SQL files read UTC wall-clock hours; Delta's SQL
# extension and catalog for `delta` reads and writes). TRIPFLOW_SPARK_CONF cannot change
# these.
_REQUIRED = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Timestamps in Parquet as delta-rs writes them (Spark's default is the legacy INT96).
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}
# Defaults for a laptop or CI; TRIPFLOW_SPARK_CONF overrides any of them.
_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "20000",
    "spark.driver.memory": "1g",
    # No Hive, no Derby: a session leaves nothing in the working folder.
    "spark.sql.catalogImplementation": "in-memory",
    # Tables Spark creates carry the properties of those delta-rs creates, so either
    # engine keeps checkpointing them as often.
    **{f"spark.databricks.delta.properties.defaults.{name.removeprefix('delta.')}": value
       for name, value in lake.TABLE_CONFIGURATION.items() if value is not None},
}
# On a local master, fewer tasks per step: Delta's 50 partitions for replaying a table's log
# and 8 shuffle partitions cost more in task overhead than two cores win.
_LOCAL_DEFAULTS = {
    "spark.sql.shuffle.partitions": "2",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.adaptive.coalescePartitions.initialPartitionNum": "2",
}


class SparkConfError(ValueError):
    """TRIPFLOW_SPARK_CONF cannot be read; the message says what is expected."""


def parse_conf(text: str | None) -> dict[str, str]:
    """TRIPFLOW_SPARK_CONF: `key=value,key2=value2`, or the path of a file with one
    `key value` or `key=value` per line (`#` comments), like spark-defaults.conf."""
    if not text or not text.strip():
        return {}
    path = Path(text.strip()).expanduser()
    if "=" not in text and path.is_file():
        entries = [line.strip() for line in path.read_text().splitlines()]
        source = str(path)
    elif "=" not in text:
        raise SparkConfError(f"TRIPFLOW_SPARK_CONF={text!r}: no such file, and not "
                             "key=value pairs (expected `k=v,k2=v2` or a spark-defaults file)")
    else:
        entries = [part.strip() for part in text.split(",")]
        source = "TRIPFLOW_SPARK_CONF"
    conf: dict[str, str] = {}
    for entry in entries:
        if not entry or entry.startswith("#"):
            continue
        key, sep, value = entry.partition("=")
        if not sep:
            key, _, value = entry.partition(" ")
        key, value = key.strip(), value.strip()
        if not key.startswith("spark.") or not value:
            raise SparkConfError(f"{source}: {entry!r} is not `spark.<setting>=<value>`")
        conf[key] = value
    return conf


def spark_conf(settings: Settings) -> dict[str, str]:
    """Every setting the session gets: defaults, then TRIPFLOW_SPARK_CONF, then the ones
    tripflow relies on; `spark.jars` adds the cached Delta and PostgreSQL jars."""
    extra = parse_conf(settings.spark_conf)
    local = _LOCAL_DEFAULTS if settings.spark_master.startswith("local") else {}
    conf = {**_DEFAULTS, **local, **extra, **_REQUIRED}
    cached = [str(jar) for jar in jars.ensure("spark")]
    conf["spark.jars"] = ",".join([*cached, *filter(None, extra.get("spark.jars", "").split(","))])
    return conf


_session: SparkSession | None = None


def session(settings: Settings) -> SparkSession:
    """The process's SparkSession (started on first call: about 7 s and 700 MB locally)."""
    global _session
    from pyspark.sql import SparkSession

    from tripflow.arrow_dataset import enable_pandas

    enable_pandas()  # pyspark hands pandas objects to pyarrow (see tripflow.arrow_dataset)
    if _session is not None and _session.sparkContext._jsc is not None:
        return _session
    if settings.spark_master.startswith("local"):
        # Local: loopback only, and the Python workers run this interpreter.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(settings.spark_master).appName("tripflow")
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    _session = builder.getOrCreate()
    _session.sparkContext.setLogLevel("ERROR")
    return _session


def stop() -> None:
    """Stop the process's session and its JVM (tests: the JVM would otherwise outlive the
    session, idle, until the process ends; a command's ends with the process). A later
    `session()` starts a new one."""
    global _session
    if _session is None:
        return
    from pyspark import SparkContext

    _session.stop()
    _session = None
    gateway = SparkContext._gateway
    if gateway is not None:
        gateway.shutdown()
        proc = getattr(gateway, "proc", None)
        if proc is not None and proc.stdin is not None:  # pyspark's JVM exits on stdin EOF
            proc.stdin.close()
            proc.wait(timeout=60)
        SparkContext._gateway = None
        SparkContext._jvm = None


def spark_path(uri: str) -> str:
    """A lake URI as Spark's Hadoop file systems name it: absolute local paths, and
    `s3a://` for `s3://` (which needs hadoop-aws on the cluster's class path)."""
    if uri.startswith("s3://"):
        return "s3a://" + uri.removeprefix("s3://")
    if "://" in uri:
        return uri
    return Path(uri).resolve().as_uri()
