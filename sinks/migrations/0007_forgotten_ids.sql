-- 0007_forgotten_ids: the durable suppression list of the right to be forgotten.
--
-- One row per person key a `deletion_request` erased (creditflow.forgotten.ForgetPerson),
-- written by the sink next to the deletion of the person's rows. It holds only `id_hash`
-- (creditflow.forgotten.forget_hash: keyed BLAKE2b of the key under the tenant's secret
-- salt), NEVER the person key or the raw user/device/anonymous id. Every run loads it at
-- start (sinks.clickhouse_forget.load_forgotten) so that a replay or a backfill cannot
-- bring a forgotten person back, and `creditflow forget` sweeps the tables with it.
--
-- `requested_at` is the event time of the deletion request, `forgotten_at` the write
-- time (the ReplacingMergeTree version): a replayed request is the same key, skipped
-- by the sink or collapsed on merge. No PARTITION BY: the list is small (one 35-char
-- hash per erased key) and read whole.

CREATE TABLE IF NOT EXISTS forgotten_ids
(
    tenant_id     String,
    id_hash       String,
    requested_at  DateTime64(3, 'UTC'),
    forgotten_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(forgotten_at)
ORDER BY (tenant_id, id_hash)
SETTINGS non_replicated_deduplication_window = 10000;
