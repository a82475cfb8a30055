-- The hot store's key leads with event time: (event_ts, dedup_key) instead of (dedup_key,
-- event_ts). A unique constraint does not depend on its columns' order, so it allows the
-- same rows. Every read of the store but the anomaly one is a range on event time, which
-- the key now serves, so the separate event_ts index goes: one B-tree less to maintain per
-- stored click, and the key's inserts land near the right edge of the index (clicks come
-- roughly in time order) instead of at random places of a hashed key.
alter table tripflow.hot_clicks drop constraint hot_clicks_pkey;
alter table tripflow.hot_clicks add primary key (event_ts, dedup_key);
drop index if exists tripflow.hot_clicks_event_ts;
