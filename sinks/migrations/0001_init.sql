-- 0001_init: the four tables the ClickHouse sink writes.
--
-- Rules for every migration file (see sinks/clickhouse_migrations.py):
--   * statements end with ';' at the end of a line;
--   * every statement is idempotent (IF NOT EXISTS ...), because ClickHouse DDL
--     is not transactional: a crash half-way through a file re-runs the whole file;
--   * an applied file is never edited: add NNNN+1_name.sql instead.
--
-- All tables are ReplacingMergeTree over a deterministic row key (ORDER BY), so a
-- replayed row can never become a distinct row: duplicates collapse on merge and
-- are invisible to SELECT ... FINAL. The partition expression only uses key-derived
-- values, so copies of a row always land in the same partition. The version column
-- (scored_at / emitted_at / received_at) is the write time: the newest copy wins.
-- non_replicated_deduplication_window makes insert_deduplication_token work on
-- non-replicated tables (chDB and single servers).

CREATE TABLE IF NOT EXISTS attribution_credits
(
    tenant_id       String,
    conversion_id   String,
    person_id       String,
    model           LowCardinality(String),
    model_version   UInt32,
    channel         LowCardinality(String),
    campaign_id     String,
    touch_event_id  String,
    touch_ts        DateTime64(3, 'UTC'),
    conversion_ts   DateTime64(3, 'UTC'),
    credit          Float64,
    revenue_credit  Float64,
    scored_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(scored_at)
PARTITION BY toYYYYMM(conversion_ts)
ORDER BY (tenant_id, conversion_id, model, touch_event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS conversions
(
    tenant_id            String,
    conversion_id        String,
    person_id            String,
    event_id             String,
    conversion_ts        DateTime64(3, 'UTC'),
    value                Float64,
    currency             LowCardinality(String),
    conversion_type      LowCardinality(String),
    touch_count          UInt32,
    attributed           UInt8,
    first_touch_channel  LowCardinality(String),
    last_touch_channel   LowCardinality(String),
    first_utm_source     String,
    first_utm_medium     String,
    first_utm_campaign   String,
    first_utm_content    String,
    first_utm_term       String,
    last_utm_source      String,
    last_utm_medium      String,
    last_utm_campaign    String,
    last_utm_content     String,
    last_utm_term        String,
    scored_at            DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(scored_at)
PARTITION BY toYYYYMM(conversion_ts)
ORDER BY (tenant_id, conversion_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS kpi_windows
(
    tenant_id     String,
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC'),
    channel       LowCardinality(String),
    campaign_id   String,
    impressions   UInt64,
    clicks        UInt64,
    conversions   Float64,
    cost          Float64,
    revenue       Float64,
    ctr           Nullable(Float64),
    cvr           Nullable(Float64),
    cpa           Nullable(Float64),
    roas          Nullable(Float64),
    emitted_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(emitted_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant_id, window_start, channel, campaign_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- No PARTITION BY here: received_at is the write time, not part of the row key,
-- so partitioning by it would split copies of one dead letter across partitions.
CREATE TABLE IF NOT EXISTS dead_letters
(
    `reason`      LowCardinality(String),
    `detail`      String,
    `raw`         String,
    `source`      String,
    `partition`   String,
    `position`    String,
    `tenant_id`   String,
    `event_id`    String,
    `event_type`  String,
    `received_at` DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(received_at)
ORDER BY (`source`, `partition`, `position`, `reason`)
SETTINGS non_replicated_deduplication_window = 10000;
