-- Insert the staged clicks that are not stored yet and not late for hot (event time before
-- the threshold, epoch ms: the caller counts those as late); keep the new ones in hot_new.
-- Sorted in the key's order, (event time, dedup key), so that two workers inserting
-- overlapping keys lock them in the same order (no deadlock) and the index is filled from
-- left to right; among copies of one click the first by (partition, offset) wins, as in
-- silver. Event time is built from integer milliseconds: exact, no float or text step.
with inserted as (
    insert into tripflow.hot_clicks (dedup_key, event_ts, session_id, document_id, title,
                                     clinical_areas, kafka_partition, kafka_offset)
    select dedup_key,
           timestamptz 'epoch' + event_ms * interval '1 millisecond',
           session_id,
           document_id,
           title,
           string_to_array(nullif(areas, ''), ','),
           kafka_partition,
           kafka_offset
    from hot_stage
    where event_ms >= %(threshold_ms)s
    order by event_ms, dedup_key, kafka_partition, kafka_offset
    on conflict do nothing
    returning dedup_key, event_ts, session_id, document_id, clinical_areas
)
insert into hot_new (dedup_key, event_ts, session_id, document_id, clinical_areas)
select dedup_key, event_ts, session_id, document_id, clinical_areas
from inserted;
