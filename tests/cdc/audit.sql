-- The test's independent record of catalog.documents' history: a row per insert, update
-- and delete, written by a trigger in the editing transaction.
create table public.catalog_audit (
    seq         bigserial primary key,
    op          text not null,
    document_id bigint not null,
    title       text,
    url         text,
    doi         text
);
create function public.catalog_audit() returns trigger language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        insert into public.catalog_audit (op, document_id, title, url, doi)
        values ('d', old.document_id, old.title, old.url, old.doi);
    else
        insert into public.catalog_audit (op, document_id, title, url, doi)
        values (lower(left(tg_op, 1)), new.document_id, new.title, new.url, new.doi);
    end if;
    return null;
end $$;
create trigger catalog_audit after insert or update or delete on catalog.documents
for each row execute function public.catalog_audit();
