-- Per-connection scratch tables of the stream worker (temporary: private to the session,
-- emptied at every commit). hot_stage receives a batch's clicks by COPY; hot_new holds the
-- clicks the batch actually added to the hot store, which drive the mart refresh.
create temp table if not exists hot_stage (
    dedup_key       text   not null,
    event_ms        bigint not null,
    session_id      text   not null,
    document_id     bigint not null,
    title           text,
    areas           text,   -- canonical clinical areas joined by ',' (names hold no comma)
    kafka_partition integer not null,
    kafka_offset    bigint  not null
) on commit delete rows;
create temp table if not exists hot_new (
    dedup_key      text        not null,
    event_ts       timestamptz not null,
    session_id     text        not null,
    document_id    bigint      not null,
    clinical_areas text[]
) on commit delete rows;
