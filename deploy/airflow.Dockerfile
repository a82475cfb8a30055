# Airflow with tripflow installed: DAG tasks are thin calls into tripflow's functions.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow pyproject.toml README.md /opt/tripflow/
COPY --chown=airflow src /opt/tripflow/src
RUN pip install --no-cache-dir /opt/tripflow
