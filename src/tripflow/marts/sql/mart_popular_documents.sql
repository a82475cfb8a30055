-- mart_popular_documents (spec/marts.md): every document clicked on a UTC date.
-- title: the allarticles.txt title when one is loaded for the document (and not blank),
-- else the non-blank title of the latest click of the document that day, latest by
-- event_ts, ties broken by the later Kafka position (partition, then offset), else null.
-- "Blank" = null or only spaces.
WITH counts AS (
    SELECT event_date, document_id,
           COUNT(*)                   AS view_count,
           COUNT(DISTINCT session_id) AS unique_sessions
    FROM silver_clicks
    GROUP BY event_date, document_id
),
latest_title AS (
    SELECT event_date, document_id, title
    FROM (
        SELECT event_date, document_id, title,
               ROW_NUMBER() OVER (PARTITION BY event_date, document_id
                                  ORDER BY event_ts DESC, kafka_partition DESC,
                                           kafka_offset DESC) AS pick
        FROM silver_clicks
        WHERE title IS NOT NULL AND TRIM(title) <> ''
    ) titled
    WHERE pick = 1
),
catalogue AS (
    SELECT document_id, title
    FROM articles
    WHERE title IS NOT NULL AND TRIM(title) <> ''
)
SELECT c.event_date, c.document_id, COALESCE(a.title, t.title) AS title,
       c.view_count, c.unique_sessions
FROM counts c
LEFT JOIN catalogue a ON a.document_id = c.document_id
LEFT JOIN latest_title t ON t.event_date = c.event_date AND t.document_id = c.document_id
