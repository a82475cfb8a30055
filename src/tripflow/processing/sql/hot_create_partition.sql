-- Create a day partition of the store (outside any batch transaction: it locks the parent
-- table, briefly). The last statement is composed: name, start and end are filled in.
set local lock_timeout = '10s';
select pg_advisory_xact_lock(%(lock)s);
create table if not exists tripflow.{name} partition of tripflow.hot_clicks
for values from ({start}) to ({end});
