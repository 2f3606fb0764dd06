-- The lead lifecycle (线索阶段): every lead_stage event, with its stage, amount and reason out of props, for the
-- lifecycle, ROI and pipeline-influence views (views/lifecycle.sql, views/roi.sql).
--
-- One row per event, not one per person: those views look for stages in windows (the opportunities in the 30 days
-- after a webinar, the first MQL after a nurture, the deals won in a month), which needs each stage's time, and
-- they sum amounts, which no idempotent aggregate state holds. So each event keeps a row of its own, keyed by its
-- event_id: ReplacingMergeTree, read with FINAL, so a stage that both the materialized view and a backfill wrote
-- counts once. Lead stages are a CRM's few events per person (about 1% of all events), and the table spares the
-- views both the scan of events' days and the JSON of props.
-- Keyed by time, (site_id, ts, event_id), as touches and page_leaves (0007, 0008): the parts barely overlap, so
-- FINAL has little to merge. The ids are kept, not the person: the views resolve it at query time.
CREATE TABLE IF NOT EXISTS clicktrail.lead_stages
(
    site_id      LowCardinality(String),
    ts           DateTime64(3, 'UTC'),
    event_id     String,
    anonymous_id String,
    user_id      String,
    stage        LowCardinality(String) COMMENT 'props.stage: lead, mql, sal, sql, opportunity, won, lost, nurture',
    amount       Float64 COMMENT 'props.amount (the deal''s value), 0 when absent',
    reason       String COMMENT 'props.reason (why it was lost or sent back to nurture), empty when absent'
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, ts, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicktrail.lead_stages_mv TO clicktrail.lead_stages AS
SELECT site_id, ts, event_id, anonymous_id, user_id, JSONExtractString(props, 'stage') AS stage,
       JSONExtractFloat(props, 'amount') AS amount, JSONExtractString(props, 'reason') AS reason
FROM clicktrail.events
WHERE event = 'lead_stage';
