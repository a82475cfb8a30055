-- What `tripflow metrics` (observability/metrics.py, PipelineCollector) reads at a scrape.

-- name: latest_checks
-- Each check's summary row (event_date null) of its latest run.
select distinct on (check_name) check_name, layer, severity, status, observed,
       extract(epoch from checked_at)::float8
from tripflow.quality_results
where event_date is null
order by check_name, checked_at desc;

-- name: quarantine
select reason, count(*) from tripflow.quarantine group by 1 order by 1;

-- name: lag_sample
insert into tripflow.consumer_lag (consumer_group, topic, partition, next_offset, end_offset, lag)
values (%s, %s, %s, %s, %s, %s);
