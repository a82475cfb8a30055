-- The hot path's own state: the hot store (distinct clicks of the last ~48 h of event
-- time, the dedup horizon), the consumer's offsets, and the event-time clock.

-- One row per distinct click. Partitioned by UTC day of event_ts so that pruning old clicks
-- is a partition drop; partitions are created on demand by the stream worker
-- (tripflow.processing.hotstore), named hot_clicks_pYYYYMMDD.
-- The primary key must contain the partition key, hence (dedup_key, event_ts). That is no
-- weaker than a key on dedup_key alone: the dedup key hashes the event time's epoch_ms, so
-- two rows with one dedup_key have the same event_ts and meet in the same partition.
create table if not exists tripflow.hot_clicks (
    dedup_key       text        not null,
    event_ts        timestamptz not null,
    session_id      text        not null,
    document_id     bigint      not null,
    title           text,
    clinical_areas  text[],       -- canonical names, null when none
    kafka_partition integer     not null,
    kafka_offset    bigint      not null,
    primary key (dedup_key, event_ts)
) partition by range (event_ts);
-- Minutes, 1 h / 48 h windows: range scans on event time.
create index if not exists hot_clicks_event_ts on tripflow.hot_clicks (event_ts);
-- Anomaly episodes: one session's clicks in time order.
create index if not exists hot_clicks_session on tripflow.hot_clicks (session_id, event_ts);

-- Where each partition of the topic has been read up to, per consumer group. Written in the
-- same transaction as the clicks those records produced (exactly once). `fingerprint`
-- identifies the record at next_offset - 1 (Kafka timestamp and a hash of key and value),
-- so a worker can tell that the broker's log was replaced (embedded broker restarted).
create table if not exists tripflow.hot_offsets (
    consumer_group text        not null,
    topic          text        not null,
    partition      integer     not null,
    next_offset    bigint,      -- null: nothing committed yet (read from the beginning)
    fingerprint    text,
    updated_at     timestamptz not null default now(),
    primary key (consumer_group, topic, partition)
);

-- The hot store's clock and running totals: a single row.
create table if not exists tripflow.hot_state (
    id             boolean     primary key default true check (id),
    clock          timestamptz,  -- the greatest event_ts ever stored (never goes back)
    store_from     timestamptz,  -- clicks before this were pruned (null: nothing pruned)
    last_commit_at timestamptz,  -- wall-clock time of the last committed batch
    batches        bigint      not null default 0,
    records        bigint      not null default 0,  -- Kafka records read
    clicks_new     bigint      not null default 0,  -- distinct clicks stored
    duplicates     bigint      not null default 0,  -- valid clicks already stored
    late_for_hot   bigint      not null default 0,  -- older than clock - horizon: left to batch
    quarantined    bigint      not null default 0   -- bad records (stored in tripflow.quarantine)
);
insert into tripflow.hot_state (id) values (true) on conflict do nothing;
