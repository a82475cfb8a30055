-- The queries of `tripflow status` (tripflow.cli.status), by name.

-- name: last_runs
-- The last run of every step.
select distinct on (step) step, status, dates, rows_in, rows_out, duplicates,
       quarantined, seconds, started_at, detail
from tripflow.run_log order by step, started_at desc, run_id desc;

-- name: run_count
select count(*) from tripflow.run_log;

-- name: quarantine_reasons
-- Distinct bad records per reason, and how often they were seen.
select reason, count(*), sum(seen_count) from tripflow.quarantine
group by reason order by reason;

-- name: last_reconciliation
-- Dates, minutes changed and time of the latest reconciliation run.
select count(*), coalesce(sum(minutes_changed + minutes_deleted), 0), max(reconciled_at)
from tripflow.reconciliation
where reconciled_at = (select max(reconciled_at) from tripflow.reconciliation);

-- name: batch_state
select step, input_version, updated_at from tripflow.batch_state order by step;

-- name: pending_dates
select event_date from tripflow.reconciliation_pending order by 1;

-- name: pending_since
-- Since when the dates wait, and the latest reason.
select min(first_deferred_at), (array_agg(reason order by deferred_at desc))[1]
from tripflow.reconciliation_pending;

-- name: unmapped_cold
-- Area names in mart_clinical_areas that are not canonical (parameter: the canonical
-- names): how many, their clicks, the first five.
select count(distinct clinical_area), coalesce(sum(search_count), 0),
       (array_agg(distinct clinical_area order by clinical_area))[1:5]
from mart_clinical_areas where clinical_area <> all(%(canonical)s);

-- name: unmapped_hot
-- The same in the hot clinical trend's latest snapshot, most clicked first.
select count(*), coalesce(sum(click_count), 0),
       (array_agg(clinical_area order by click_count desc, clinical_area))[1:5]
from mart_realtime_clinical_trend_24h
where snapshot_ts = (select max(snapshot_ts) from mart_realtime_clinical_trend_24h)
  and clinical_area <> all(%(canonical)s);
