-- 0008_fast_deletes: let the right-to-be-forgotten DELETEs write patch parts instead of mutations.
--
-- sinks.clickhouse_forget deletes a person's rows with a lightweight DELETE by row key.
-- Run as a mutation (the default, lightweight_delete_mode='alter_update') it rewrites
-- the mask of every active part of the table: 1-3 s per DELETE on a 200k-row, 16-part
-- table, even when nothing matches, and the sink waits for it in snapshot(). With
-- lightweight_delete_mode='lightweight_update_force' the DELETE instead writes one small
-- patch part (the matched rows' sort key, _block_number, _block_offset, _row_exists = 0):
-- ~6 ms. That needs the two columns below to be materialized. Parts written before this
-- migration get them at their next merge; patches apply to them meanwhile.
--
-- MODIFY SETTING only changes metadata and is idempotent.
-- A server too old to know these settings fails with UNKNOWN_SETTING: the directive below
-- makes the migration runner skip such a statement with a warning and leave this file
-- unrecorded (it is tried again at the next start, e.g. after a server upgrade); the
-- deletes then stay mutations (sinks.clickhouse_forget falls back by itself).
--
-- tolerate: UNKNOWN_SETTING

ALTER TABLE attribution_credits MODIFY SETTING enable_block_number_column = 1, enable_block_offset_column = 1;

ALTER TABLE conversions MODIFY SETTING enable_block_number_column = 1, enable_block_offset_column = 1;

ALTER TABLE dead_letters MODIFY SETTING enable_block_number_column = 1, enable_block_offset_column = 1;
