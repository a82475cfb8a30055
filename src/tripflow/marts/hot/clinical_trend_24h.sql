-- mart_realtime_clinical_trend_24h (spec/marts.md): the snapshot at %(snapshot_ts)s replaces
-- any earlier snapshot of that minute. Per clinical area (canonical, or an unknown name
-- kept title-cased) with clicks in (clock - 24 h, clock]: clicks and distinct sessions there, and
-- trend_pct = round(100 * (cur - prev) / prev, 2) with prev = clicks in
-- (clock - 48 h, clock - 24 h], null when prev is 0. A click counts once per area (its
-- areas are a set). The store always holds the whole 48 h (the horizon is at least 48 h).
delete from mart_realtime_clinical_trend_24h
where snapshot_ts = %(snapshot_ts)s or snapshot_ts < %(clock)s - %(retention)s;

insert into mart_realtime_clinical_trend_24h
    (snapshot_ts, clinical_area, click_count, unique_sessions, trend_pct)
select %(snapshot_ts)s, area, cur, cur_sessions,
       case when prev > 0 then round(100.0 * (cur - prev) / prev, 2) end
from (
    -- Per area from per (area, session) counts: two hash aggregates, where
    -- count(distinct session_id) would sort every click of the 48 h by area and session.
    select area,
           sum(cur)::bigint as cur,
           count(*) filter (where cur > 0) as cur_sessions,
           sum(prev)::bigint as prev
    from (
        select a.area,
               count(*) filter (where h.event_ts > %(clock)s - interval '24 hours') as cur,
               count(*) filter (where h.event_ts <= %(clock)s - interval '24 hours') as prev
        from tripflow.hot_clicks as h
        cross join lateral unnest(h.clinical_areas) as a(area)
        where h.event_ts > %(clock)s - interval '48 hours' and h.event_ts <= %(clock)s
        group by a.area, h.session_id
    ) as per_session
    group by area
) as per_area
where cur > 0;
