-- Where each partition's reader has got to in event time, published by the stream workers
-- to each other: a worker lets its own records go only up to a bound that every partition
-- still being read allows, its own and the other workers' (event-time alignment across
-- workers, tripflow.processing.alignment). Advisory only: nothing exact depends on it, and
-- a row not refreshed for a few seconds (its worker stopped or lost the partition) is
-- ignored. Unlogged: rewritten many times a second, and worthless after a crash.
create unlogged table if not exists tripflow.hot_progress (
    consumer_group text        not null,
    topic          text        not null,
    partition      integer     not null,
    event_ms       bigint,      -- where its records still to be written start (epoch ms;
                                -- null: none fetched yet)
    may_have_more  boolean     not null,  -- records to come: unwritten, or maybe unfetched
    updated_at     timestamptz not null,
    primary key (consumer_group, topic, partition)
);
