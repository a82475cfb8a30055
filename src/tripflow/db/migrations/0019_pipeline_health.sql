-- Pipeline health (issue 19).
-- The hot mart's minutes of a date just before reconciliation rewrote them: the hot/cold
-- drift check compares only dates the hot path had (0: a batch-only date, no drift to
-- measure; null: reconciled before this column existed).
alter table tripflow.reconciliation add column if not exists minutes_in_hot bigint;

-- Consumer lag samples (`tripflow metrics` writes one per partition at most once a
-- minute): the pipeline-health dashboard's lag over time.
create table if not exists tripflow.consumer_lag (
    sampled_at     timestamptz not null default now(),
    consumer_group text        not null,
    topic          text        not null,
    partition      integer     not null,
    next_offset    bigint,      -- the consumer's stored position (null: none yet)
    end_offset     bigint      not null,
    lag            bigint      not null,
    primary key (consumer_group, topic, partition, sampled_at)
);
