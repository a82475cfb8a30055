-- Event-time progress (see migration 0022): publish this worker's partitions, and read the
-- other partitions whose rows are fresh and whose readers may still get older records.
-- The statement sees the table as it was before its own upsert; it reads other rows only.
with published as (
    insert into tripflow.hot_progress as h
        (consumer_group, topic, partition, event_ms, may_have_more, updated_at)
    select %(group)s, %(topic)s, p, t, m, clock_timestamp()
    from unnest(%(partitions)s::integer[], %(event_ms)s::bigint[], %(more)s::boolean[])
         as u(p, t, m)
    order by p  -- one lock order for every worker
    on conflict (consumer_group, topic, partition) do update
    set event_ms = excluded.event_ms, may_have_more = excluded.may_have_more,
        updated_at = excluded.updated_at
)
select partition, event_ms
from tripflow.hot_progress
where consumer_group = %(group)s and topic = %(topic)s and may_have_more
  and updated_at > clock_timestamp() - make_interval(secs => %(fresh_s)s)
  and partition <> all(%(partitions)s::integer[]);
