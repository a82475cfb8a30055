-- The event-time clock and the first instant the store holds.
select clock, store_from from tripflow.hot_state;
