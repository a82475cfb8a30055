-- mart_realtime_top_docs_1h (spec/marts.md): the snapshot at %(snapshot_ts)s (the clock
-- truncated to the minute) replaces any earlier snapshot of that minute. Window
-- (clock - 1 h, clock]; ranked by clicks, then distinct sessions, then smaller document_id.
-- title: the current catalogue title (dim_documents, kept by change data capture) when
-- not blank, else the non-empty title of the document's latest click in the window
-- (latest event time, then greatest dedup key), else null.
delete from mart_realtime_top_docs_1h
where snapshot_ts = %(snapshot_ts)s or snapshot_ts < %(clock)s - %(retention)s;

insert into mart_realtime_top_docs_1h
    (snapshot_ts, rank, document_id, title, click_count, unique_sessions)
with window_clicks as materialized (
    select document_id, session_id, title, event_ts, dedup_key
    from tripflow.hot_clicks
    where event_ts > %(clock)s - interval '1 hour' and event_ts <= %(clock)s
), top as (
    select document_id,
           count(*) as click_count,
           count(distinct session_id) as unique_sessions,
           row_number() over (order by count(*) desc, count(distinct session_id) desc,
                                       document_id) as rank
    from window_clicks
    group by document_id
    order by rank
    limit 20
), titles as (
    select distinct on (w.document_id) w.document_id, w.title
    from window_clicks as w
    join top using (document_id)
    where w.title <> ''
    order by w.document_id, w.event_ts desc, w.dedup_key desc
)
select %(snapshot_ts)s, top.rank, top.document_id, coalesce(dim.title, titles.title),
       top.click_count, top.unique_sessions
from top
left join titles using (document_id)
left join dim_documents as dim
    on dim.document_id = top.document_id and dim.is_current and btrim(dim.title) <> '';
