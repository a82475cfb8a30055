-- A quarantined record is identified by its position *and* its bytes. The embedded broker
-- forgets its log on restart and hands out the same offsets again, so a different bad
-- record can come at a position already quarantined: it now gets a row of its own instead
-- of being lost to the conflict. The same record seen again (a retry, or the batch path
-- after the hot path) is still one row.
alter table tripflow.quarantine
    add column if not exists raw_md5 text generated always as (md5(raw)) stored;
alter table tripflow.quarantine drop constraint if exists quarantine_pkey;
alter table tripflow.quarantine add primary key (topic, partition, "offset", raw_md5);
