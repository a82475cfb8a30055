-- A quarantined record is one row per distinct raw bytes (spec "Bad input": the same bytes
-- quarantined again — a resend, a second server — are one bad record seen more than once),
-- with how often it was seen. Each sighting is kept once by where it was seen (a Kafka
-- position, or for lines the producer could not send, a file line of one produce run), so
-- the hot path and silver meeting the same Kafka record, or a rerun, count it once.

alter table tripflow.quarantine drop constraint if exists quarantine_pkey;
alter table tripflow.quarantine drop column if exists raw_md5;
alter table tripflow.quarantine
    alter column topic drop not null,
    alter column partition drop not null,
    alter column "offset" drop not null,
    add column if not exists raw_sha256  bytea,
    add column if not exists raw_length  bigint,
    add column if not exists source_file text,  -- too_large: the file and line it was in
    add column if not exists source_line bigint,
    add column if not exists seen_count  bigint not null default 1,
    add column if not exists last_seen   timestamptz not null default now();

create table if not exists tripflow.quarantine_sightings (
    raw_sha256 bytea not null,
    sighting   text  not null,  -- 'kafka:<topic>:<partition>:<offset>' or 'file:<run>:<file>:<line>'
    primary key (raw_sha256, sighting)
);

-- Existing rows: every row was one sighting at its Kafka position; keep the first row of
-- each distinct raw as the record.
update tripflow.quarantine
set raw_sha256 = sha256(raw), raw_length = length(raw)
where raw_sha256 is null;
insert into tripflow.quarantine_sightings (raw_sha256, sighting)
select raw_sha256, format('kafka:%s:%s:%s', topic, partition, "offset")
from tripflow.quarantine
on conflict do nothing;
delete from tripflow.quarantine q
using tripflow.quarantine older
where q.raw_sha256 = older.raw_sha256
  and (older.first_seen, older.topic, older.partition, older."offset")
      < (q.first_seen, q.topic, q.partition, q."offset");
update tripflow.quarantine q
set seen_count = (select count(*) from tripflow.quarantine_sightings s
                  where s.raw_sha256 = q.raw_sha256);

alter table tripflow.quarantine alter column raw_sha256 set not null;
alter table tripflow.quarantine alter column raw_length set not null;
alter table tripflow.quarantine add primary key (raw_sha256);
create index if not exists quarantine_position
    on tripflow.quarantine (topic, partition, "offset");

-- Records that had U+0000 removed from a string field (spec "Hostile bytes").
alter table tripflow.hot_state
    add column if not exists nul_removed bigint not null default 0;
