-- Runs once, when the PostgreSQL volume is created: Airflow's metadata database beside
-- tripflow's (the tripflow database itself is POSTGRES_DB).
create database airflow;
