"""Rows for the "Pipeline health" dashboard when the dashboards' tests fill the marts
directly (TRIPFLOW_DASHBOARD_FILL=direct) instead of through the pipeline."""

from __future__ import annotations

import psycopg

HEALTH_SQL = """
insert into tripflow.quality_results (run_id, check_name, layer, event_date, severity, status,
                                      observed, threshold, detail)
values (gen_random_uuid(), 'gold.daily_totals_match_silver', 'gold', null, 'fail', 'pass',
        0, 0, '0 of 7 dates differ'),
       (gen_random_uuid(), 'silver.quarantine_rate', 'silver', null, 'warn', 'fail',
        0.03, 0.02, 'worst 2016-03-07: 30 of 1,000 bronze records quarantined');
insert into tripflow.reconciliation (event_date, minutes_in_silver, minutes_changed,
                                     minutes_deleted, minutes_in_hot)
values ('2016-03-12', 900, 9, 0, 890), ('2016-03-13', 880, 2, 1, 879);
insert into tripflow.quarantine (topic, partition, "offset", reason, detail, raw, raw_sha256,
                                 raw_length)
values ('t', 0, 1, 'not_json', 'fill', 'x', sha256('x'), 1),
       ('t', 0, 2, 'missing_field', 'fill', 'y', sha256('y'), 1);
update tripflow.hot_state set last_commit_at = now() - interval '42 seconds';
insert into tripflow.consumer_lag (sampled_at, consumer_group, topic, partition, next_offset,
                                   end_offset, lag)
values (now() - interval '2 minutes', 'tripflow-hot', 't', 0, 10, 15, 5),
       (now() - interval '1 minute', 'tripflow-hot', 't', 0, 15, 15, 0);
"""


def fill_health(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(HEALTH_SQL)
