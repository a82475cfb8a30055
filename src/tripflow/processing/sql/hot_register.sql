-- A partition assigned to this worker: make sure its offset row exists (so that fencing can
-- lock it), then read where to resume.
insert into tripflow.hot_offsets (consumer_group, topic, partition)
select %(group)s, %(topic)s, p from unnest(%(partitions)s::integer[]) as p
on conflict do nothing;
select partition, next_offset, fingerprint
from tripflow.hot_offsets
where consumer_group = %(group)s and topic = %(topic)s and partition = any(%(partitions)s)
order by partition;
