-- Catalogue titles for mart_popular_documents (tripflow.marts.articles), by name.

-- name: titles
-- Per document: the current dim_documents title when not blank, else allarticles.txt's.
select a.document_id, case when btrim(d.title) <> '' then d.title else a.title end
from tripflow.articles a
left join dim_documents d on d.document_id = a.document_id and d.is_current
where a.document_id = any(%(ids)s)
union all
select d.document_id, d.title
from dim_documents d
where d.is_current and d.document_id = any(%(ids)s) and btrim(coalesce(d.title, '')) <> ''
  and not exists (select 1 from tripflow.articles a where a.document_id = d.document_id);

-- name: current_titles
select document_id, title from dim_documents
where is_current and document_id = any(%(ids)s) and btrim(coalesce(title, '')) <> '';

-- name: all_current_titles
-- The same titles for every document at once (a backfill reads them once).
copy (select document_id, title from dim_documents
      where is_current and btrim(coalesce(title, '')) <> '') to stdout (format csv);
