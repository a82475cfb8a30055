-- mart_hourly_traffic (migration 0005; the "Daily traffic" dashboard's heatmap): one row
-- per UTC date and hour of day (0-23) that has clicks. Same hour as mart_daily_traffic's
-- peak_hour, so the heatmap's brightest cell of a day is that day's peak hour.
SELECT
    event_date,
    CAST(HOUR(event_ts) AS INT)  AS event_hour,
    COUNT(*)                     AS clicks,
    COUNT(DISTINCT session_id)   AS unique_sessions
FROM silver_clicks
GROUP BY event_date, CAST(HOUR(event_ts) AS INT)
