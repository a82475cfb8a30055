-- mart_session_analysis (spec/marts.md): one row per session and UTC date.
-- A session crossing midnight has a row on each date (silver_clicks is per event_date).
-- session_duration_sec: whole seconds from first to last click, rounded down; computed
-- from event_ms (epoch milliseconds) because engines disagree on timestamp arithmetic.
SELECT
    session_id,
    event_date,
    COUNT(*)                                                          AS click_count,
    COUNT(DISTINCT document_id)                                       AS unique_docs,
    MIN(event_ts)                                                     AS first_click_ts,
    MAX(event_ts)                                                     AS last_click_ts,
    CAST(FLOOR((MAX(event_ms) - MIN(event_ms)) / 1000.0) AS BIGINT)   AS session_duration_sec
FROM silver_clicks
GROUP BY session_id, event_date
