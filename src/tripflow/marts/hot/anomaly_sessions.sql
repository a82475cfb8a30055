-- mart_realtime_anomaly_sessions (spec/marts.md), for the sessions that received new clicks.
-- n(t) = the session's clicks in (t - 5 min, t]; event times are whole milliseconds, so the
-- frame "299.999 s preceding .. current row" (peers included) is exactly that interval.
-- An episode is a maximal run of the session's clicks, in time order, with n >= 50:
-- detected_ts = its first click, window_end = its last, click_count = its largest n.
-- Each such session's episodes are recomputed from all its stored clicks: a late click can
-- start an episode earlier or merge two, so rows of the session that are no longer
-- episodes are deleted. Only episodes from %(exact_from)s on are written or deleted: before
-- it (5 min after the start of the store) n(t) may miss pruned clicks, so older rows are
-- left as they are (anomaly rows are kept forever).
with touched as (
    select distinct session_id from hot_new
), candidates as (
    -- a session needs 50 stored clicks to have any episode
    select h.session_id
    from tripflow.hot_clicks as h
    join touched using (session_id)
    group by h.session_id
    having count(*) >= 50
), counted as (
    select h.session_id, h.event_ts,
           count(*) over (partition by h.session_id order by h.event_ts
                          range between interval '299.999 seconds' preceding and current row) as n
    from tripflow.hot_clicks as h
    join candidates using (session_id)
), islands as (
    -- clicks sharing an event time have the same n, so their order among peers is moot
    select session_id, event_ts, n,
           count(*) filter (where n < 50) over (partition by session_id order by event_ts
                                                rows between unbounded preceding and current row)
               as island
    from counted
), episodes as (
    select session_id, min(event_ts) as detected_ts, max(event_ts) as window_end,
           max(n) as click_count
    from islands
    where n >= 50
    group by session_id, island
), removed as (
    delete from mart_realtime_anomaly_sessions as a
    using candidates as c
    where a.session_id = c.session_id
      and a.detected_ts >= %(exact_from)s
      and not exists (select 1 from episodes as e
                      where e.session_id = a.session_id and e.detected_ts = a.detected_ts)
)
insert into mart_realtime_anomaly_sessions as a
    (detected_ts, session_id, window_start, window_end, click_count, severity)
select detected_ts, session_id, detected_ts - interval '5 minutes', window_end, click_count,
       case when click_count >= 100 then 'CRITICAL' else 'WARNING' end
from episodes
where detected_ts >= %(exact_from)s
on conflict (detected_ts, session_id) do update
set window_start = excluded.window_start,
    window_end = excluded.window_end,
    click_count = excluded.click_count,
    severity = excluded.severity
where (a.window_end, a.click_count, a.severity)
      is distinct from (excluded.window_end, excluded.click_count, excluded.severity);
