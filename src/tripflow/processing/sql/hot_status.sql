-- What `tripflow status` shows about the hot path (tripflow.processing.stream_status).
-- 1. state: clock, last commit, its age, the store's start and the totals
select clock, last_commit_at, extract(epoch from now() - last_commit_at),
       store_from, records, clicks_new, duplicates, late_for_hot, quarantined,
       batches, nul_removed
from tripflow.hot_state;
-- 2. stored offsets of the group on the topic
select partition, next_offset, updated_at from tripflow.hot_offsets
where consumer_group = %(group)s and topic = %(topic)s;
-- 3. the hot store's rows, bytes and day partitions
select (select count(*) from tripflow.hot_clicks),
       coalesce(sum(pg_total_relation_size(i.inhrelid)), 0), count(*)
from pg_inherits i where i.inhparent = 'tripflow.hot_clicks'::regclass;
