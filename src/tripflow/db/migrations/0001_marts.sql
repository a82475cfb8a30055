-- The eight marts of spec/marts.md (names, column order and primary keys are a contract),
-- the schema for tripflow's own tables, and the read-only role dashboards use.

create schema if not exists tripflow;

-- Cold marts: exact, rebuilt per date from silver.
create table if not exists mart_session_analysis (
    session_id           text        not null,
    event_date           date        not null,
    click_count          bigint      not null,
    unique_docs          bigint      not null,
    first_click_ts       timestamptz not null,
    last_click_ts        timestamptz not null,
    session_duration_sec bigint      not null,
    primary key (session_id, event_date)
);
create index if not exists mart_session_analysis_date on mart_session_analysis (event_date);

create table if not exists mart_daily_traffic (
    event_date       date    not null primary key,
    total_events     bigint  not null,
    unique_sessions  bigint  not null,
    unique_documents bigint  not null,
    peak_hour        integer not null check (peak_hour between 0 and 23)
);

create table if not exists mart_clinical_areas (
    event_date      date   not null,
    clinical_area   text   not null,
    search_count    bigint not null,
    unique_sessions bigint not null,
    primary key (event_date, clinical_area)
);

create table if not exists mart_popular_documents (
    event_date      date   not null,
    document_id     bigint not null,
    title           text,
    view_count      bigint not null,
    unique_sessions bigint not null,
    primary key (event_date, document_id)
);

-- Hot marts: near real time, from the hot store.
create table if not exists mart_realtime_traffic_minute (
    event_minute    timestamptz not null primary key,
    total_clicks    bigint      not null,
    unique_sessions bigint      not null,
    unique_docs     bigint      not null,
    updated_at      timestamptz not null default now()
);

create table if not exists mart_realtime_top_docs_1h (
    snapshot_ts     timestamptz not null,
    rank            integer     not null check (rank between 1 and 20),
    document_id     bigint      not null,
    title           text,
    click_count     bigint      not null,
    unique_sessions bigint      not null,
    primary key (snapshot_ts, rank)
);

create table if not exists mart_realtime_clinical_trend_24h (
    snapshot_ts     timestamptz   not null,
    clinical_area   text          not null,
    click_count     bigint        not null,
    unique_sessions bigint        not null,
    trend_pct       numeric(10,2),
    primary key (snapshot_ts, clinical_area)
);

create table if not exists mart_realtime_anomaly_sessions (
    detected_ts  timestamptz not null,
    session_id   text        not null,
    window_start timestamptz not null,
    window_end   timestamptz not null,
    click_count  bigint      not null,
    severity     text        not null check (severity in ('WARNING', 'CRITICAL')),
    primary key (detected_ts, session_id)
);

-- Dashboards connect as tripflow_reader: SELECT on the marts and nothing else. The role is
-- cluster-wide, so another database of the same server may have created it already.
do $$
begin
    create role tripflow_reader login;
exception when duplicate_object or unique_violation then null;
end
$$;

grant usage on schema public to tripflow_reader;
grant select on
    mart_session_analysis, mart_daily_traffic, mart_clinical_areas, mart_popular_documents,
    mart_realtime_traffic_minute, mart_realtime_top_docs_1h, mart_realtime_clinical_trend_24h,
    mart_realtime_anomaly_sessions
to tripflow_reader;
