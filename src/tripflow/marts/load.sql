-- PostgreSQL queries of tripflow.marts.load.

-- name: primary_keys
-- The primary-key columns of the given tables (schema public), in key order.
select c.relname, a.attname
from pg_index i
join pg_class c on c.oid = i.indrelid
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum = any(i.indkey)
where i.indisprimary and n.nspname = 'public' and c.relname = any(%s)
order by c.relname, array_position(i.indkey::int2[], a.attnum)
