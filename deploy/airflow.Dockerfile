# Airflow with tripflow installed: DAG tasks are thin calls into tripflow's functions.
FROM apache/airflow:3.3.2-python3.11
# The batch steps run with engine spark here (the Spark driver; executors on spark-worker):
# Java, and the pinned Delta Lake + PostgreSQL jars fetched at build time.
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven \
 && rm -rf /var/lib/apt/lists/*
USER airflow
ENV TRIPFLOW_JARS_DIR=/opt/tripflow/jars
COPY --chown=airflow pyproject.toml README.md /opt/tripflow/
COPY --chown=airflow src /opt/tripflow/src
RUN pip install --no-cache-dir /opt/tripflow && tripflow jars spark && rm -rf ~/.m2
