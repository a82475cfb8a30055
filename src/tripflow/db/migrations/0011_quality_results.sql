-- Results of `tripflow quality`: one row per check (and per date for per-date checks) of
-- one run. `status` is the check's outcome; `severity` says whether a failure fails the
-- run ('fail') or is only reported ('warn'), as Delta Live Tables expectations do.
create table if not exists tripflow.quality_results (
    run_id     uuid        not null,
    check_name text        not null,
    layer      text        not null check (layer in ('bronze', 'silver', 'gold', 'hot')),
    event_date date,        -- null: the check covers the run's whole scope
    severity   text        not null check (severity in ('warn', 'fail')),
    status     text        not null check (status in ('pass', 'fail')),
    observed   numeric,
    threshold  numeric,
    detail     text,
    checked_at timestamptz not null default now()
);
create index if not exists quality_results_run on tripflow.quality_results (run_id);
create index if not exists quality_results_check
    on tripflow.quality_results (check_name, checked_at desc);
