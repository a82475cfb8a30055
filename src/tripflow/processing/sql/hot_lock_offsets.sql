-- Fencing: lock this batch's partitions' offset rows (in partition order, so two workers
-- never deadlock) and read them. The batch commits only if they still hold the offsets
-- this worker started from; otherwise another worker has processed these records.
select partition, next_offset
from tripflow.hot_offsets
where consumer_group = %(group)s and topic = %(topic)s and partition = any(%(partitions)s)
order by partition
for update;
