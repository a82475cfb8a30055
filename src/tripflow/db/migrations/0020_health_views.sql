-- The pipeline-health dashboard's data (issue 19): views in public over tripflow's own
-- tables, so the read-only role reads these figures and nothing else of the tripflow
-- schema (no quarantined raw bytes, no offsets, no run details).

-- Every stored quality result.
create or replace view health_quality_results as
select run_id::text as run_id, check_name, layer, event_date, severity, status,
       observed::float8 as observed, threshold::float8 as threshold, detail, checked_at,
       case when status = 'fail' then 1 else 0 end as failed
from tripflow.quality_results;

-- Hot/cold drift of every reconciliation of a date the hot mart had (see
-- gold.hot_cold_drift): the share of the date's minutes reconciliation rewrote.
create or replace view health_drift as
select event_date, reconciled_at, minutes_in_silver, minutes_in_hot,
       minutes_changed + minutes_deleted as minutes_rewritten,
       (minutes_changed + minutes_deleted)::float8
           / nullif(minutes_in_silver + minutes_deleted, 0) as drift_rate
from tripflow.reconciliation
where minutes_in_hot > 0;

-- The hot path's freshness now: seconds since its last committed batch.
create or replace view health_freshness as
select last_commit_at, clock,
       extract(epoch from now() - last_commit_at)::float8 as freshness_seconds
from tripflow.hot_state;

-- Distinct bad records and their sightings, per reason and day first seen.
create or replace view health_quarantine as
select reason, (first_seen at time zone 'UTC')::date as first_seen_date,
       count(*) as records, sum(seen_count) as sightings
from tripflow.quarantine
group by 1, 2;

-- Consumer lag samples (`tripflow metrics`).
create or replace view health_consumer_lag as
select sampled_at, consumer_group, topic, partition, lag
from tripflow.consumer_lag;

grant select on health_quality_results, health_drift, health_freshness, health_quarantine,
    health_consumer_lag to tripflow_reader;
