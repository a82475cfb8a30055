-- Silver now remembers which undated bronze rows it quarantined by bronze version (in
-- tripflow.batch_state, step 'silver-undated'), not by the highest Kafka offset per
-- partition: a broker whose log was replaced hands out the same offsets again.
drop table if exists tripflow.bronze_undated_done;
