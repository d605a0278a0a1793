-- 0002_kpi_window_revisions: a KPI window can be restated by late events.
--
-- Each emission of a window carries `events`, the number of events its totals
-- hold. It joins the row key, so a restatement is a new row next to the earlier
-- one (nothing is overwritten; copies of the same revision still collapse), and
-- the window's current value is its row with the most events. Replays count
-- each event once, so the row with the most events covers the complete set, and
-- two rows with that count hold the same events. Dashboards read
-- `kpi_windows_latest`, which keeps that row per window.

ALTER TABLE kpi_windows ADD COLUMN IF NOT EXISTS events UInt64 AFTER roas, MODIFY ORDER BY (tenant_id, window_start, channel, campaign_id, events);

CREATE VIEW IF NOT EXISTS kpi_windows_latest AS
SELECT *
FROM kpi_windows
ORDER BY tenant_id, window_start, channel, campaign_id, events DESC
LIMIT 1 BY tenant_id, window_start, channel, campaign_id;
