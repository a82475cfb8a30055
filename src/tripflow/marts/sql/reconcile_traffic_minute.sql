-- Reconciliation of the hot mart mart_realtime_traffic_minute (spec/marts.md): its exact
-- values recomputed from silver, one row per minute (event_ts truncated to the minute).
SELECT
    DATE_TRUNC('minute', event_ts) AS event_minute,
    COUNT(*)                       AS total_clicks,
    COUNT(DISTINCT session_id)     AS unique_sessions,
    COUNT(DISTINCT document_id)    AS unique_docs
FROM silver_clicks
GROUP BY DATE_TRUNC('minute', event_ts)
