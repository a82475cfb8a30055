"""Realistic mart rows for the dashboard tests, written straight into PostgreSQL.

Synthetic clicks (sessions of varied length, a skewed popularity of documents and clinical
areas, a daily rhythm, two bot sessions) are loaded into a temporary table, and every mart
is computed from them with SQL that follows spec/marts.md — so the marts agree with each
other as the pipeline's would. Used while the pipeline's own commands are not available.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import psycopg

AREAS = ("Cardiology", "Oncology", "Pediatrics", "Primary Care", "Neurology", "Psychiatry",
         "Infectious Disease", "Emergency Medicine", "Endocrinology", "Surgery",
         "Dermatology", "Rheumatology", "Pulmonology", "Geriatrics", "Urology")
TOPICS = ("Hypertension", "Type 2 diabetes", "Asthma", "Atrial fibrillation", "Depression",
          "Sepsis", "Migraine", "COPD", "Breast cancer", "Otitis media", "Heart failure",
          "Pneumonia", "Osteoarthritis", "Psoriasis", "Stroke", "Anxiety")
KINDS = ("management in adults", "a systematic review", "diagnosis and treatment",
         "guideline update", "a randomised controlled trial", "in primary care")


def _clicks(start: date, days: int, sessions_per_day: int, seed: int
            ) -> list[tuple[datetime, str, int, str | None, list[str]]]:
    rng = random.Random(seed)
    documents = [(1_000_000 + i,
                  f"{rng.choice(TOPICS)}: {rng.choice(KINDS)}" if rng.random() > 0.05 else None,
                  rng.sample(AREAS, rng.choice((0, 1, 1, 2, 3))))
                 for i in range(400)]
    weights = [1 / (rank + 1) ** 0.9 for rank in range(len(documents))]
    rows = []
    for day in range(days):
        midnight = datetime.combine(start + timedelta(days=day), datetime.min.time(), UTC)
        for n in range(sessions_per_day):
            # Busy in the European/US working day, quiet at night.
            hour = min(23, max(0, int(rng.gauss(14, 4.5))))
            if day == days - 1 and hour >= 16:
                continue  # the data ends mid-afternoon of its last day: "now"
            ts = midnight + timedelta(hours=hour, seconds=rng.randrange(3600))
            session = f"s{day:02d}{n:05d}"
            for _ in range(min(60, int(rng.expovariate(0.45)) + 1)):
                doc_id, title, areas = rng.choices(documents, weights)[0]
                rows.append((ts, session, doc_id, title, areas))
                ts += timedelta(seconds=int(rng.expovariate(1 / 70)) + 2)
    # Two bots on the last day: one WARNING-sized, one CRITICAL-sized burst.
    last = datetime.combine(start + timedelta(days=days - 1), datetime.min.time(), UTC)
    for name, hour, clicks in (("bot-warning", 9, 70), ("bot-critical", 14, 130)):
        ts = last + timedelta(hours=hour)
        for i in range(clicks):
            doc_id, title, areas = documents[i % 50]
            rows.append((ts + timedelta(seconds=2 * i), name, doc_id, title, areas))
    return rows


MARTS = ("mart_session_analysis", "mart_hourly_traffic", "mart_daily_traffic",
         "mart_clinical_areas", "mart_popular_documents", "mart_realtime_traffic_minute",
         "mart_realtime_top_docs_1h", "mart_realtime_clinical_trend_24h",
         "mart_realtime_anomaly_sessions", "mart_catalog_changes")

MART_SQL = """
insert into mart_session_analysis
select session_id, event_ts::date, count(*), count(distinct document_id), min(event_ts),
       max(event_ts), floor(extract(epoch from max(event_ts) - min(event_ts)))::bigint
from fill_clicks group by session_id, event_ts::date;

insert into mart_hourly_traffic
select event_ts::date, extract(hour from event_ts)::int, count(*), count(distinct session_id)
from fill_clicks group by 1, 2;

insert into mart_daily_traffic
select d.event_date, d.clicks, d.sessions, d.docs,
       (select h.event_hour from mart_hourly_traffic h where h.event_date = d.event_date
        order by h.clicks desc, h.event_hour limit 1)
from (select event_ts::date as event_date, count(*) as clicks,
             count(distinct session_id) as sessions, count(distinct document_id) as docs
      from fill_clicks group by 1) d;

insert into mart_clinical_areas
select event_ts::date, area, count(*), count(distinct session_id)
from fill_clicks cross join unnest(areas) as area group by 1, 2;

insert into mart_popular_documents
select event_ts::date, document_id, max(title), count(*), count(distinct session_id)
from fill_clicks group by 1, 2;

insert into mart_realtime_traffic_minute (event_minute, total_clicks, unique_sessions,
                                          unique_docs)
select date_trunc('minute', event_ts), count(*), count(distinct session_id),
       count(distinct document_id)
from fill_clicks group by 1;

insert into mart_realtime_top_docs_1h
select date_trunc('minute', c.clock), rank() over (order by n desc, s desc, document_id),
       document_id, title, n, s
from (select document_id, max(title) as title, count(*) as n, count(distinct session_id) as s
      from fill_clicks, (select max(event_ts) as clock from fill_clicks) k
      where event_ts > k.clock - interval '1 hour' group by document_id
      order by n desc, s desc, document_id limit 20) t,
     (select max(event_ts) as clock from fill_clicks) c;

insert into mart_realtime_clinical_trend_24h
select date_trunc('minute', k.clock), cur.area, cur.n, cur.s,
       round(100.0 * (cur.n - prev.n) / nullif(prev.n, 0), 2)
from (select max(event_ts) as clock from fill_clicks) k
cross join lateral (
    select area, count(*) as n, count(distinct session_id) as s
    from fill_clicks cross join unnest(areas) as area
    where event_ts > k.clock - interval '24 hours' group by area) cur
left join lateral (
    select count(*) as n from fill_clicks cross join unnest(areas) as area
    where area = cur.area and event_ts > k.clock - interval '48 hours'
      and event_ts <= k.clock - interval '24 hours') prev on true;

-- Editors correct a title for one clicked document in 50, add one in 200 (CDC's mart).
insert into mart_catalog_changes
select event_ts::date, op, greatest(1, count(distinct document_id) / share)
from fill_clicks, (values ('update', 50), ('create', 200)) as kinds (op, share)
group by 1, op, share;

insert into mart_realtime_anomaly_sessions
select min(event_ts) + interval '98 seconds', session_id,
       min(event_ts) + interval '98 seconds' - interval '5 minutes', max(event_ts),
       least(count(*), 150), case when count(*) >= 100 then 'CRITICAL' else 'WARNING' end
from fill_clicks where session_id like 'bot-%' group by session_id;
"""


def fill_marts(dsn: str, *, start: date = date(2016, 3, 7), days: int = 7,
               sessions_per_day: int = 400, seed: int = 7) -> int:
    """Fill every mart of `dsn` from synthetic clicks; returns the number of clicks."""
    rows = _clicks(start, days, sessions_per_day, seed)
    with psycopg.connect(dsn) as conn:
        conn.execute("set search_path to public")
        conn.execute("truncate " + ", ".join(MARTS))
        conn.execute("create temp table fill_clicks (event_ts timestamptz, session_id text, "
                     "document_id bigint, title text, areas text[])")
        with conn.cursor() as cur, cur.copy("copy fill_clicks from stdin") as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(MART_SQL)
    return len(rows)
