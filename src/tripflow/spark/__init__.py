"""The Spark engine of the batch path: silver and the cold marts on Apache Spark, from the
same definitions as the DuckDB engine (the parser of `records/`, the SQL files of
`marts/sql`), reading and writing the same Delta tables with delta-spark.

`session.py` builds the one SparkSession; `silver.py` rebuilds silver dates, `marts.py`
runs the mart SQL files. Imported only when a command runs with engine spark.
"""
