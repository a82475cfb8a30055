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

-- name: is_empty
-- True when the table has no row visible to this transaction.
select not exists (select from {table})

-- name: indexes
-- Every index of a table, with the constraint it backs (primary key, unique) if any:
-- what drops it and what makes it again.
select i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid),
       c.conname, pg_get_constraintdef(c.oid)
from pg_index i
left join pg_constraint c on c.conindid = i.indexrelid and c.contype in ('p', 'u')
where i.indrelid = %s::regclass
order by c.conname is null, 1
