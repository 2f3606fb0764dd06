-- Channel costs (渠道成本), for channel_roi (views/roi.sql): what each channel cost a site per UTC day, in the
-- currency the CRM's amounts use. Not fed by events: admins fill it by SQL insert, or by
-- `python -m gateway costs import FILE.csv` (gateway/costs.py).
--
-- One row per (site_id, channel, day) once merged: ReplacingMergeTree keyed by exactly that, read with FINAL, so
-- importing a day's cost again (a corrected invoice, a re-run of the same file) replaces it instead of adding to
-- it; without a version column the row inserted last wins. A cost is removed by importing 0.
-- Small (a few dozen channels times the days), so the key serves the one question asked of it: a site's costs
-- over a period, by channel.
CREATE TABLE IF NOT EXISTS clicktrail.channel_costs
(
    site_id LowCardinality(String),
    channel String COMMENT 'a channel as the views name it: a channel code, a utm_source, search, wechat, a host',
    day     Date COMMENT 'the UTC day the cost is for',
    cost    Float64 COMMENT 'the day''s spend on the channel'
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, channel, day);
