-- The batch path's own state (bronze -> silver -> gold -> cold marts).

-- Where an incremental (`--changed`) step left off: the Delta table it read last ('silver'
-- reads bronze, 'marts' reads silver), by table id (a recreated lake table is new) and
-- version. Written only after the step finished, so a killed run redoes the same dates.
create table if not exists tripflow.batch_state (
    step          text        primary key,
    input_table   text        not null,
    input_version bigint      not null,
    updated_at    timestamptz not null default now()
);

-- Bronze rows without a parseable date (event_date null) are quarantined once: the highest
-- offset handled per partition, updated in the same transaction as the quarantine rows.
create table if not exists tripflow.bronze_undated_done (
    topic       text    not null,
    partition   integer not null,
    max_offset  bigint  not null,
    primary key (topic, partition)
);

-- allarticles.txt as loaded by `tripflow articles PATH` (also kept in the lake as
-- reference/articles, which the mart engine reads).
create table if not exists tripflow.articles (
    document_id bigint primary key,
    title       text,
    url         text
);

-- Reconciliation of mart_realtime_traffic_minute by the cold run, one row per date and run:
-- minutes in silver, minutes inserted or updated (values differed), minutes deleted (the hot
-- mart had a minute silver does not). changed + deleted = the hot/cold drift figure.
create table if not exists tripflow.reconciliation (
    event_date        date        not null,
    reconciled_at     timestamptz not null default now(),
    minutes_in_silver bigint      not null,
    minutes_changed   bigint      not null,
    minutes_deleted   bigint      not null,
    primary key (event_date, reconciled_at)
);
