-- 0003_sink_commits: one row per table per sink batch, written after the batch's
-- inserts returned. It says how fresh each table is: a row whose version column
-- (scored_at / emitted_at / received_at) equals `batch_at` became visible at
-- `committed_at`. Dashboards plot freshness from it; `creditflow loadtest` measures
-- conversion -> credit and window close -> KPI latency with it.
--
-- Operational telemetry, not a result table: append-only (a replayed batch logs
-- again, with its skipped rows in `replayed`), kept 7 days (TTL).

CREATE TABLE IF NOT EXISTS sink_commits
(
    writer        LowCardinality(String),
    table_name    LowCardinality(String),
    batch_at      DateTime64(3, 'UTC'),
    rows          UInt32,
    replayed      UInt32,
    min_event_at  DateTime64(3, 'UTC'),
    max_event_at  DateTime64(3, 'UTC'),
    committed_at  DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (table_name, committed_at)
TTL toDateTime(committed_at) + INTERVAL 7 DAY;
