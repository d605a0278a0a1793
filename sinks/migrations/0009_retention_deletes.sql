-- 0009_retention_deletes: let retention expire KPI windows and suppressed-event counts by patch part.
--
-- sinks.clickhouse_retention deletes rows past a tenant's retention from every table it
-- expires (attribution_credits, conversions, dead_letters, suppressed_events, kpi_windows)
-- with a lightweight DELETE written as a patch part, as 0008_fast_deletes allowed for the
-- first three. This gives the other two the block columns a patch part needs. Parts
-- written before get them at their next merge; patches apply to them meanwhile.
--
-- tolerate: UNKNOWN_SETTING

ALTER TABLE suppressed_events MODIFY SETTING enable_block_number_column = 1, enable_block_offset_column = 1;

ALTER TABLE kpi_windows MODIFY SETTING enable_block_number_column = 1, enable_block_offset_column = 1;
