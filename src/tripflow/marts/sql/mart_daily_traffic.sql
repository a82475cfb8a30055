-- mart_daily_traffic (spec/marts.md): one row per UTC date.
-- peak_hour: the hour of day (0-23, UTC) with the most clicks; on a tie, the earliest.
WITH per_hour AS (
    SELECT event_date, CAST(HOUR(event_ts) AS INT) AS event_hour, COUNT(*) AS clicks
    FROM silver_clicks
    GROUP BY event_date, CAST(HOUR(event_ts) AS INT)
),
peak AS (
    SELECT event_date, event_hour AS peak_hour
    FROM (
        SELECT event_date, event_hour,
               ROW_NUMBER() OVER (PARTITION BY event_date
                                  ORDER BY clicks DESC, event_hour ASC) AS pick
        FROM per_hour
    ) ranked
    WHERE pick = 1
),
totals AS (
    SELECT event_date,
           COUNT(*)                    AS total_events,
           COUNT(DISTINCT session_id)  AS unique_sessions,
           COUNT(DISTINCT document_id) AS unique_documents
    FROM silver_clicks
    GROUP BY event_date
)
SELECT t.event_date, t.total_events, t.unique_sessions, t.unique_documents, p.peak_hour
FROM totals t
JOIN peak p ON p.event_date = t.event_date
