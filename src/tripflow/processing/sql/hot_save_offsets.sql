-- The batch's end position per partition, in the batch's transaction.
update tripflow.hot_offsets o
set next_offset = b.next_offset, fingerprint = b.fingerprint, updated_at = now()
from unnest(%(partitions)s::integer[], %(next_offsets)s::bigint[], %(fingerprints)s::text[])
     as b(partition, next_offset, fingerprint)
where o.consumer_group = %(group)s and o.topic = %(topic)s and o.partition = b.partition;
