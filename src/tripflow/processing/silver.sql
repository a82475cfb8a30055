-- PostgreSQL statements of tripflow.processing.silver, by name.

-- name: read_state
select input_table, input_version from tripflow.batch_state where step = %s;

-- name: write_state
-- The table and version an incremental step read, for its next run.
insert into tripflow.batch_state (step, input_table, input_version) values (%s, %s, %s)
on conflict (step) do update set
    input_table = excluded.input_table, input_version = excluded.input_version,
    updated_at = now();

-- name: forget_state
-- The step's next --changed run starts over: every date.
delete from tripflow.batch_state where step = %s;
