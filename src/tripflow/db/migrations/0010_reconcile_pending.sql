-- Reconciliation deferred (spec/marts.md, "Reconciliation"): dates of
-- mart_realtime_traffic_minute a cold run could not yet vouch for, because the silver it
-- read was built from a bronze that did not hold every record the hot path had counted
-- (bronze behind the hot path's committed offsets in some partition). Their hot minutes
-- keep their values; the next run that can vouch for them reconciles them and removes
-- their rows (a date that left the hot marts' retention is removed unreconciled).
create table if not exists tripflow.reconciliation_pending (
    event_date        date        primary key,
    first_deferred_at timestamptz not null default now(),
    deferred_at       timestamptz not null default now(),  -- by the latest run
    reason            text        not null                 -- that run's reason
);
