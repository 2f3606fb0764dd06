-- The raw event table: one row per accepted event, exactly once per (site_id, event_id).
-- Queries are per site over a time range, usually for a few event names, so the sort key
-- is (site_id, day, event, ts) and the partition is the month.
-- props is a String of JSON (an object): custom events carry arbitrary keys, and analysts read them
-- with JSONExtract*(props, 'key'); views that need a prop often materialize it in their own tables.
-- The projection by_event_id is the loader's dedup index: it lives in the same parts as the rows,
-- so it can never disagree with them, even after a crash in the middle of an insert.
CREATE TABLE IF NOT EXISTS clicktrail.events
(
    site_id         LowCardinality(String),
    event_id        String,
    event           LowCardinality(String),
    ts              DateTime64(3, 'UTC') COMMENT 'when it happened, corrected for client clock skew',
    received_at     DateTime64(3, 'UTC') COMMENT 'when the gateway accepted it',
    anonymous_id    String,
    user_id         String,
    session_id      String,
    channel         String COMMENT 'channel code (渠道码), from the event or the URL''s ch parameter',
    utm_source      LowCardinality(String),
    utm_medium      LowCardinality(String),
    utm_campaign    String,
    utm_content     String,
    utm_term        String,
    sharer          String COMMENT 'employee or customer who shared the link (分享人)',
    url             String,
    url_host        LowCardinality(String),
    url_path        String,
    url_query       String,
    referrer        String,
    referrer_host   LowCardinality(String),
    title           String,
    props           String COMMENT 'event properties, a JSON object',
    browser         LowCardinality(String),
    browser_version LowCardinality(String),
    os              LowCardinality(String),
    os_version      LowCardinality(String),
    device_type     LowCardinality(String) COMMENT 'desktop, mobile, tablet, bot or other',
    is_bot          Bool,
    ip              String COMMENT 'client IP, anonymized unless configured otherwise',
    user_agent      String,
    PROJECTION by_event_id (SELECT site_id, event_id ORDER BY site_id, event_id)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (site_id, toDate(ts), event, ts);
