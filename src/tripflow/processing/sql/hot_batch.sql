-- The batch transaction's own statements (tripflow.processing.hotstore.commit_batch).
-- No need to wait for the WAL flush: the offsets are in the same transaction, so if a
-- server crash loses it, it loses the offsets too and the batch is read again from Kafka.
set local synchronous_commit = off;
-- shared: batches run side by side; pruning takes it exclusively
select pg_advisory_xact_lock_shared(%(prune_lock)s);
select clock from tripflow.hot_state;
copy hot_stage from stdin (format csv);
-- serialises mart refreshes (see the hotstore module docstring)
select pg_advisory_xact_lock(%(refresh_lock)s);
