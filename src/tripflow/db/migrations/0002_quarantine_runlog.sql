-- Shared by the hot and batch paths: quarantined records and the run log.

-- One row per bad Kafka record, whichever path saw it first (idempotent by position).
create table if not exists tripflow.quarantine (
    topic      text        not null,
    partition  integer     not null,
    "offset"   bigint      not null,
    reason     text        not null,
    detail     text,
    raw        bytea       not null,
    first_seen timestamptz not null default now(),
    primary key (topic, partition, "offset")
);
create index if not exists quarantine_reason on tripflow.quarantine (reason);

-- One row per step run: what `tripflow status` prints.
create table if not exists tripflow.run_log (
    run_id       bigint generated always as identity primary key,
    step         text        not null,
    dates        text,
    rows_in      bigint      not null default 0,
    rows_out     bigint      not null default 0,
    duplicates   bigint      not null default 0,
    quarantined  bigint      not null default 0,
    seconds      double precision,
    status       text        not null check (status in ('running', 'ok', 'failed')),
    detail       text,
    started_at   timestamptz not null default now(),
    finished_at  timestamptz
);
create index if not exists run_log_step on tripflow.run_log (step, started_at desc);
