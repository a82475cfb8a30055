-- PostgreSQL statements of tripflow.db (migrations and the reader role), by name.

-- name: create_migrations
create table if not exists tripflow.schema_migrations (
    version    integer primary key,
    name       text not null,
    checksum   text not null,
    applied_at timestamptz not null default now());

-- name: create_reader_roles
-- This database's read-only role (the one row), so that a change of role
-- (TRIPFLOW_READER_ROLE) moves the grants from the one before.
create table if not exists tripflow.reader_roles (role text primary key);

-- name: applied_versions
select version from tripflow.schema_migrations;

-- name: record_migration
insert into tripflow.schema_migrations (version, name, checksum) values (%s, %s, %s);

-- name: role_powers
-- Whether a role can do more than read (or is the current user), when it exists.
select rolsuper or rolcreaterole or rolcreatedb or rolbypassrls or rolreplication,
       rolname = current_user
from pg_roles where rolname = %s;

-- name: can_connect
select has_database_privilege(%s, current_database(), 'CONNECT');

-- name: earlier_readers
select role from tripflow.reader_roles;

-- name: forget_readers
delete from tripflow.reader_roles where role <> %s;

-- name: remember_reader
insert into tripflow.reader_roles (role) values (%s) on conflict do nothing;

-- name: table_grants
-- Schema, table and privilege of every table grant a role holds here.
select n.nspname, c.relname, a.privilege_type
from pg_class c join pg_namespace n on n.oid = c.relnamespace, aclexplode(c.relacl) a
where a.grantee = (select oid from pg_roles where rolname = %s);

-- name: schema_grants
select distinct n.nspname from pg_namespace n, aclexplode(n.nspacl) a
where a.grantee = (select oid from pg_roles where rolname = %s);

-- name: database_grant
select 1 from pg_database d, aclexplode(d.datacl) a
where d.datname = current_database()
  and a.grantee = (select oid from pg_roles where rolname = %s);
