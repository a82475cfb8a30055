-- The hot store's key leads with event time: (event_ts, dedup_key) instead of (dedup_key,
-- event_ts) (this supersedes 0004's key and its event_ts index). A unique constraint does
-- not depend on its columns' order, so it allows the same rows. The marts' and the
-- reconciliation's reads of the store are ranges on event time, which the key now serves,
-- so the separate event_ts index goes: one B-tree less to maintain per stored click, and
-- the key's inserts land near the right edge of the index (clicks come roughly in time
-- order) instead of at random places of a hashed key. The anomaly query keeps its session
-- index.
-- Upgrading holds the store's lock while the key is rebuilt (seconds for millions of
-- clicks): stream workers wait for it. A worker of the previous version still sorts its
-- inserts by dedup key first; should it deadlock with a new one, its batch is retried.
alter table tripflow.hot_clicks drop constraint hot_clicks_pkey;
alter table tripflow.hot_clicks add primary key (event_ts, dedup_key);
drop index if exists tripflow.hot_clicks_event_ts;
