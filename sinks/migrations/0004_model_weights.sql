-- 0004_model_weights: every published version of a tenant's data-driven weights, and
-- every rollback to one. The retrain job publishes to Redis (creditflow.weights_store);
-- the flow copies the `weights:log` stream here through its sink, so this table is
-- written by the one ClickHouse writer even on embedded chDB.
--
-- The tenant's current version is the `version` of its newest row by `published_at`.
-- Which version scored a credit: attribution_credits.model_version.

CREATE TABLE IF NOT EXISTS model_weights
(
    tenant_id        String,
    version          UInt32,
    action           LowCardinality(String),
    published_at     DateTime64(3, 'UTC'),
    method           LowCardinality(String),
    channel_weights  Map(String, Float64),
    half_life_days   Nullable(Float64),
    split            LowCardinality(String),
    trained_at       DateTime64(3, 'UTC'),
    window_start     DateTime64(3, 'UTC'),
    window_end       DateTime64(3, 'UTC'),
    journeys         UInt64,
    metrics          Map(String, Float64),
    shares           Map(String, Float64),
    written_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(written_at)
ORDER BY (tenant_id, version, action, published_at)
SETTINGS non_replicated_deduplication_window = 10000;
