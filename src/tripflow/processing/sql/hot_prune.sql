-- Drop the day partitions wholly older than clock - max(horizon, 48 h), under the prune
-- lock held exclusively (no batch is between reading the clock and inserting meanwhile).
set local lock_timeout = '10s';
select pg_advisory_xact_lock(%(lock)s);
-- the drop is composed: the partition's name is filled in
drop table if exists tripflow.{name};
update tripflow.hot_state set store_from = greatest(store_from, %(store_from)s)
returning store_from;
