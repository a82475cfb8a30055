-- Change data capture of the document catalogue (tripflow.cdc; README "Change data capture").
--
-- catalog.documents: the operational table editors change (as a CMS would). Debezium reads
-- it through logical replication (pgoutput) and the publication below; REPLICA IDENTITY
-- FULL puts the whole old row in updates and deletes (the envelope's `before`).
create schema if not exists catalog;
create table if not exists catalog.documents (
    document_id bigint      primary key,
    title       text,
    url         text,
    doi         text,
    updated_at  timestamptz not null default now()
);
alter table catalog.documents replica identity full;
-- Created here (by the table's owner) so the capture role needs no ownership.
do $$
begin
    if not exists (select 1 from pg_publication where pubname = 'tripflow_catalog') then
        create publication tripflow_catalog for table catalog.documents;
    end if;
end $$;

-- dim_documents: type-2 dimension of the catalogue, kept by `tripflow cdc apply`. Every
-- change opens a version (valid_from = the change's commit time) and closes the previous
-- one (valid_to); a delete closes the current version and marks it is_deleted, so a
-- deleted document has no current row.
create table if not exists dim_documents (
    document_id bigint      not null,
    version     integer     not null,
    title       text,
    url         text,
    doi         text,
    valid_from  timestamptz not null,
    valid_to    timestamptz,
    is_current  boolean     not null,
    is_deleted  boolean     not null default false,
    source_lsn  bigint      not null,  -- the change that opened this version
    primary key (document_id, version)
);
create unique index if not exists dim_documents_current
    on dim_documents (document_id) where is_current;

-- Every change applied, once: at-least-once delivery repeats envelopes, and a repeat has
-- the same (source LSN, key, op). Also the input of mart_catalog_changes.
create table if not exists tripflow.cdc_changes (
    source_lsn      bigint      not null,
    document_id     bigint      not null,
    op              char(1)     not null check (op in ('c', 'u', 'd', 'r')),
    changed_at      timestamptz not null,  -- source.ts_ms: commit time in the catalogue
    kafka_partition integer     not null,
    kafka_offset    bigint      not null,
    applied_at      timestamptz not null default clock_timestamp(),
    primary key (source_lsn, document_id, op)
);
create index if not exists cdc_changes_changed_at on tripflow.cdc_changes (changed_at);

-- Where `tripflow cdc apply` stands in the change topic: written in the transaction that
-- applies the records (the exactly-once consumer core's sink positions).
create table if not exists tripflow.cdc_offsets (
    topic       text    not null,
    partition   integer not null,
    next_offset bigint  not null,
    fingerprint text,
    updated_at  timestamptz not null default now(),
    primary key (topic, partition)
);

-- What `tripflow cdc capture` reports, for `tripflow status`.
create table if not exists tripflow.cdc_capture (
    slot_name    text        primary key,
    topic        text        not null,
    last_lsn     bigint,
    changes      bigint      not null default 0,
    changes_rate numeric(12, 2),  -- changes/s over the last 10 s
    started_at   timestamptz not null,
    updated_at   timestamptz not null
);

-- mart_catalog_changes: catalogue changes per UTC date of their commit and kind (op:
-- create, update, delete, snapshot). Recomputed for the dates a batch of changes touches.
create table if not exists mart_catalog_changes (
    event_date date   not null,
    op         text   not null check (op in ('create', 'update', 'delete', 'snapshot')),
    changes    bigint not null,
    primary key (event_date, op)
);

grant select on dim_documents, mart_catalog_changes to tripflow_reader;
