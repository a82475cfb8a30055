-- mart_clinical_areas (spec/marts.md): one row per UTC date and clinical area.
-- silver_click_areas has one row per click and area of its (de-duplicated) area set, so
-- COUNT(*) counts clicks whose set holds the area; clicks without areas have no row there
-- and are not counted. Unknown names kept by the normalisation (title-cased) are areas
-- here too; the quality checks count them as unmapped.
SELECT
    event_date,
    clinical_area,
    COUNT(*)                   AS search_count,
    COUNT(DISTINCT session_id) AS unique_sessions
FROM silver_click_areas
GROUP BY event_date, clinical_area
