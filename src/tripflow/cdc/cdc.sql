-- The statements of tripflow.cdc (capture's role and status, apply's sink), by name.

-- name: role_exists
select 1 from pg_roles where rolname = %(role)s;

-- name: slot_lag
-- The capture slot: bytes of WAL not yet confirmed by Debezium, and whether it is read now.
select active, confirmed_flush_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
from pg_replication_slots where slot_name = %(slot)s;

-- name: capture_started
insert into tripflow.cdc_capture (slot_name, topic, started_at, updated_at)
values (%(slot)s, %(topic)s, now(), now())
on conflict (slot_name) do update
set topic = excluded.topic, started_at = now(), updated_at = now(), changes_rate = 0;

-- name: capture_progress
update tripflow.cdc_capture
set last_lsn = coalesce(%(lsn)s, last_lsn), changes = changes + %(changes)s,
    changes_rate = %(rate)s, updated_at = now()
where slot_name = %(slot)s;

-- name: capture_status
select slot_name, topic, last_lsn, changes, changes_rate, started_at, updated_at
from tripflow.cdc_capture order by slot_name;

-- name: stored_positions
select partition, next_offset, fingerprint from tripflow.cdc_offsets
where topic = %(topic)s and partition = any(%(partitions)s);

-- name: lock_positions
select partition, next_offset from tripflow.cdc_offsets
where topic = %(topic)s and partition = any(%(partitions)s) for update;

-- name: save_position
insert into tripflow.cdc_offsets (topic, partition, next_offset, fingerprint, updated_at)
values (%(topic)s, %(partition)s, %(next_offset)s, %(fingerprint)s, now())
on conflict (topic, partition) do update
set next_offset = excluded.next_offset, fingerprint = excluded.fingerprint,
    updated_at = excluded.updated_at;

-- name: record_changes
-- The batch's changes (unique keys); returns those not recorded before: a repeated
-- envelope (at-least-once delivery) conflicts and is not returned.
insert into tripflow.cdc_changes (source_lsn, document_id, op, changed_at, kafka_partition,
                                  kafka_offset)
select * from unnest(%(lsns)s::bigint[], %(ids)s::bigint[], %(ops)s::char(1)[],
                     %(at)s::timestamptz[], %(partitions)s::integer[], %(offsets)s::bigint[])
on conflict do nothing
returning source_lsn, document_id, op::text;

-- name: current_versions
select document_id, version, title, url, doi from dim_documents
where document_id = any(%(ids)s) and is_current for update;

-- name: last_versions
select document_id, max(version) from dim_documents where document_id = any(%(ids)s)
group by document_id;

-- name: close_version
update dim_documents set valid_to = %(changed_at)s, is_current = false,
                         is_deleted = %(deleted)s
where document_id = %(document_id)s and version = %(version)s;

-- name: open_version
-- (A version opened and closed within one batch is inserted closed.)
insert into dim_documents (document_id, version, title, url, doi, valid_from, valid_to,
                           is_current, is_deleted, source_lsn)
values (%(document_id)s, %(version)s, %(title)s, %(url)s, %(doi)s, %(valid_from)s,
        %(valid_to)s, %(is_current)s, %(is_deleted)s, %(lsn)s);

-- name: refresh_changes_mart
-- mart_catalog_changes for the dates a batch touched, recomputed from every change.
-- (Changes are only ever added, so an upsert of the recomputed counts is exact.)
insert into mart_catalog_changes (event_date, op, changes)
select (c.changed_at at time zone 'UTC')::date,
       case c.op when 'c' then 'create' when 'u' then 'update' when 'd' then 'delete'
                 else 'snapshot' end,
       count(*)
from tripflow.cdc_changes c
where (c.changed_at at time zone 'UTC')::date = any(%(dates)s::date[])
group by 1, 2
on conflict (event_date, op) do update set changes = excluded.changes;

-- name: retitle_top_docs
-- A corrected title shows in the latest real-time top-20 snapshot at once (the stream
-- worker's next refresh takes it from dim_documents too).
update mart_realtime_top_docs_1h m set title = d.title
from dim_documents d
where d.document_id = m.document_id and d.is_current and m.document_id = any(%(ids)s)
  and m.snapshot_ts = (select max(snapshot_ts) from mart_realtime_top_docs_1h)
  and d.title is not null and btrim(d.title) <> '' and m.title is distinct from d.title;

-- name: dim_rows
select document_id, version, title, url, doi, valid_from, valid_to, is_current, is_deleted,
       source_lsn
from dim_documents order by document_id, version;

-- name: stage_catalog
create temporary table catalog_load (document_id bigint, title text, url text)
on commit drop;

-- name: upsert_catalog
-- Only rows that differ are written: an unchanged document makes no change event.
insert into catalog.documents as d (document_id, title, url, updated_at)
select document_id, title, url, now() from catalog_load
on conflict (document_id) do update
set title = excluded.title, url = excluded.url, updated_at = excluded.updated_at
where (d.title, d.url) is distinct from (excluded.title, excluded.url);

-- name: catalog_ids
select document_id from catalog.documents order by document_id;

-- name: catalog_row
select title, url, doi from catalog.documents where document_id = %(id)s;

-- name: edit_document
update catalog.documents set title = %(title)s, url = %(url)s, doi = %(doi)s,
                             updated_at = clock_timestamp()
where document_id = %(id)s;

-- name: add_document
insert into catalog.documents (document_id, title, url, doi, updated_at)
values (%(id)s, %(title)s, %(url)s, %(doi)s, clock_timestamp());

-- name: delete_document
delete from catalog.documents where document_id = %(id)s;

-- name: apply_status
-- The dimension and what apply has done: versions, current and deleted documents, changes
-- applied, the newest change's commit time and when it was applied.
select (select count(*) from dim_documents),
       (select count(*) from dim_documents where is_current),
       (select count(*) from dim_documents where is_deleted),
       count(*), max(changed_at), max(applied_at),
       (select count(*) from catalog.documents),
       (select string_agg(partition || '@' || next_offset, ', ' order by partition)
        from tripflow.cdc_offsets where topic = %(topic)s)
from tripflow.cdc_changes;
