-- The hot store's partitions (one per day: hot_clicks_pYYYYMMDD).
select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
where i.inhparent = 'tripflow.hot_clicks'::regclass;
