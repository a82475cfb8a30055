-- What the dashboards need beyond the eight marts of spec/marts.md.
--
-- mart_hourly_traffic: clicks per date and hour of day (UTC), for the "Daily traffic"
-- heatmap. A cold mart like the others: one SQL file (marts/sql/mart_hourly_traffic.sql)
-- over silver, rebuilt per date by the batch path (a date's rows replaced atomically). It
-- is a table, not a view, because PostgreSQL holds no per-click table outside the hot
-- store, whose 48 h horizon would lose history.
create table if not exists mart_hourly_traffic (
    event_date      date    not null,
    event_hour      integer not null check (event_hour between 0 and 23),
    clicks          bigint  not null,
    unique_sessions bigint  not null,
    primary key (event_date, event_hour)
);

grant select on mart_hourly_traffic to tripflow_reader;
