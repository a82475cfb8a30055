-- Advance the event-time clock (greatest event_ts ever stored) and the running totals.
update tripflow.hot_state
set clock = greatest(clock, (select max(event_ts) from hot_new)),
    last_commit_at = now(),
    batches = batches + 1,
    records = records + %(records)s,
    clicks_new = clicks_new + %(new)s,
    duplicates = duplicates + %(duplicates)s,
    late_for_hot = late_for_hot + %(late)s,
    quarantined = quarantined + %(quarantined)s,
    nul_removed = nul_removed + %(nul_removed)s
returning clock, store_from;
