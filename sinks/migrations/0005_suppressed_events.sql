-- 0005_suppressed_events: events the flow neither kept nor credited because their person has not
-- granted (consent_mode opt_in) or has withdrawn the tenant's attribution purpose. Counted only:
-- a row names no person, and event_key is a digest of the event id (the key, so a replay counts once).
--
--   SELECT tenant_id, reason, count() FROM suppressed_events FINAL GROUP BY tenant_id, reason

CREATE TABLE IF NOT EXISTS suppressed_events
(
    tenant_id    String,
    reason       LowCardinality(String),
    event_type   LowCardinality(String),
    event_key    String,
    event_ts     DateTime64(3, 'UTC'),
    received_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(received_at)
PARTITION BY toYYYYMM(event_ts)
ORDER BY (tenant_id, reason, event_key)
SETTINGS non_replicated_deduplication_window = 10000;
