-- PostgreSQL statements of tripflow.marts.reconcile, by name.

-- name: hot_clock
select max(event_minute) from mart_realtime_traffic_minute;

-- name: pending_dates
select event_date from tripflow.reconciliation_pending order by 1;

-- name: hot_positions
-- The hot path's committed positions in a topic, every consumer group.
select distinct partition, next_offset, fingerprint from tripflow.hot_offsets
where topic = %s and next_offset > 0 order by 1, 2, 3;

-- name: silver_state
select input_table, input_version, updated_at from tripflow.batch_state where step = %s;

-- name: store_from
select store_from from tripflow.hot_state;

-- name: keys_stage
create temp table if not exists reconcile_keys (dedup_key text primary key)
    on commit delete rows;

-- name: missing_clicks
-- Per date and partition: the hot store's clicks of the dates that are not among the
-- silver rows' keys (reconcile_keys), how many and the last offset.
select (h.event_ts at time zone 'UTC')::date, h.kafka_partition, count(*),
       max(h.kafka_offset)
from tripflow.hot_clicks h
where h.event_ts >= %(low)s and h.event_ts < %(high)s
  and (h.event_ts at time zone 'UTC')::date = any(%(dates)s)
  and not exists (select 1 from reconcile_keys k where k.dedup_key = h.dedup_key)
group by 1, 2;

-- name: pending_clear
delete from tripflow.reconciliation_pending where event_date = any(%s);

-- name: pending_store
insert into tripflow.reconciliation_pending as p (event_date, reason) values (%s, %s)
on conflict (event_date) do update set deferred_at = now(), reason = excluded.reason;

-- name: minutes_stage
create temp table if not exists reconcile_stage (event_minute timestamptz primary key,
    total_clicks bigint, unique_sessions bigint, unique_docs bigint)
    on commit delete rows;

-- name: minutes_in_hot
-- The hot minutes of the dates before the rewrite (the drift check skips dates without).
select (event_minute at time zone 'UTC')::date, count(*) from mart_realtime_traffic_minute
where event_minute >= %(low)s and event_minute < %(high)s
  and (event_minute at time zone 'UTC')::date = any(%(dates)s)
group by 1;

-- name: minutes_delete
-- The hot minutes of the dates that silver does not have.
delete from mart_realtime_traffic_minute m
where m.event_minute >= %(low)s and m.event_minute < %(high)s
  and (m.event_minute at time zone 'UTC')::date = any(%(dates)s)
  and not exists (select 1 from reconcile_stage s where s.event_minute = m.event_minute)
returning (m.event_minute at time zone 'UTC')::date;

-- name: minutes_upsert
-- Silver's minutes, written only where they differ (only those get a new updated_at).
insert into mart_realtime_traffic_minute as m (event_minute, total_clicks, unique_sessions,
                                               unique_docs, updated_at)
select event_minute, total_clicks, unique_sessions, unique_docs, now()
from reconcile_stage order by event_minute
on conflict (event_minute) do update set
    total_clicks = excluded.total_clicks,
    unique_sessions = excluded.unique_sessions,
    unique_docs = excluded.unique_docs,
    updated_at = now()
where (m.total_clicks, m.unique_sessions, m.unique_docs)
      is distinct from (excluded.total_clicks, excluded.unique_sessions, excluded.unique_docs)
returning (m.event_minute at time zone 'UTC')::date;

-- name: record
insert into tripflow.reconciliation (event_date, minutes_in_silver, minutes_changed,
                                     minutes_deleted, minutes_in_hot)
values (%s, %s, %s, %s, %s);
