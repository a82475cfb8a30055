-- mart_realtime_traffic_minute (spec/marts.md): every minute that received new clicks in
-- this batch is recomputed from all stored clicks of that minute, so its figures are exact
-- whatever share of the minute each batch (or each worker) brought. Other minutes are not
-- touched. A click is only stored when it is at most the horizon older than the clock, and
-- the store keeps whole days beyond the horizon, so a touched minute is always complete.
insert into mart_realtime_traffic_minute as t
    (event_minute, total_clicks, unique_sessions, unique_docs, updated_at)
select m.event_minute,
       count(*),
       count(distinct h.session_id),
       count(distinct h.document_id),
       now()
from (select distinct date_trunc('minute', event_ts, 'UTC') as event_minute from hot_new) as m
join tripflow.hot_clicks as h
  on h.event_ts >= m.event_minute and h.event_ts < m.event_minute + interval '1 minute'
group by m.event_minute
on conflict (event_minute) do update
set total_clicks = excluded.total_clicks,
    unique_sessions = excluded.unique_sessions,
    unique_docs = excluded.unique_docs,
    updated_at = excluded.updated_at
where (t.total_clicks, t.unique_sessions, t.unique_docs)
      is distinct from (excluded.total_clicks, excluded.unique_sessions, excluded.unique_docs);

-- Retention by the event-time clock.
delete from mart_realtime_traffic_minute where event_minute < %(clock)s - %(retention)s;
