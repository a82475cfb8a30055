-- Stage of one call's quarantined records (tripflow.processing.quarantine.store).
create temp table if not exists quarantine_stage (
    raw_sha256 bytea, raw bytea, raw_length bigint, reason text, detail text,
    topic text, partition integer, "offset" bigint, source_file text, source_line bigint,
    sighting text
) on commit delete rows;
-- New sightings only (a retry, or silver after the hot path, adds none); then one row per
-- distinct raw bytes, its first sighting's position, seen_count raised by the new ones.
-- Ordered by key, so two paths storing at once take their locks in the same order.
with new_sightings as (
    insert into tripflow.quarantine_sightings (raw_sha256, sighting)
    select distinct raw_sha256, sighting from quarantine_stage order by 1, 2
    on conflict do nothing
    returning raw_sha256
), counted as (
    select raw_sha256, count(*) as seen from new_sightings group by raw_sha256
)
insert into tripflow.quarantine as q (raw_sha256, raw, raw_length, reason, detail, topic,
                                      partition, "offset", source_file, source_line,
                                      seen_count)
select distinct on (s.raw_sha256) s.raw_sha256, s.raw, s.raw_length, s.reason, s.detail,
       s.topic, s.partition, s."offset", s.source_file, s.source_line, c.seen
from quarantine_stage s join counted c using (raw_sha256)
order by s.raw_sha256, s.topic, s.partition, s."offset", s.source_file, s.source_line
on conflict (raw_sha256) do update
    set seen_count = q.seen_count + excluded.seen_count, last_seen = now()
returning (xmax = 0) as inserted;
delete from quarantine_stage;
