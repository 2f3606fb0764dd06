-- Content (内容): what gets read, downloaded and shared, and who converts. Two rollups; the ids are kept,
-- not the person (views resolve it through identities at query time).

-- Page views, downloads, registrations and form submits per object, sharer and ids: the object is the
-- page_view's url_path, the download's props.file_url, the registration's props.stream_id, the
-- form_submit's props.form_id; the sharer is the event's own sharer field (分享人). Distinct event_ids
-- (uniqExact), so a re-run backfill doubles nothing; the groups are disjoint, so views may add up their
-- counts. Ordered (site_id, event, object, ...): each view reads one or two event names of a site.
CREATE TABLE IF NOT EXISTS clicktrail.content_hits
(
    site_id      LowCardinality(String),
    event        LowCardinality(String),
    object       String COMMENT 'url_path (page_view), file_url (download), stream_id (registration), form_id (form_submit)',
    sharer       String,
    anonymous_id String,
    user_id      String,
    hits         AggregateFunction(uniqExact, String) COMMENT 'distinct event_ids',
    first_ts     SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_ts      SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, event, object, sharer, anonymous_id, user_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicktrail.content_hits_mv TO clicktrail.content_hits AS
SELECT
    site_id,
    event,
    multiIf(event = 'page_view', url_path, event = 'download', JSONExtractString(props, 'file_url'),
            event = 'registration', JSONExtractString(props, 'stream_id'), JSONExtractString(props, 'form_id')) AS object,
    sharer,
    anonymous_id,
    user_id,
    uniqExactState(event_id) AS hits,
    min(ts) AS first_ts,
    max(ts) AS last_ts
FROM clicktrail.events
WHERE event IN ('page_view', 'download', 'registration', 'form_submit')
GROUP BY site_id, event, object, sharer, anonymous_id, user_id;

-- One row per page_leave: its engaged time and scroll depth. Averages (人均阅读时长, 完读率) are means
-- over page_leave events, and no idempotent aggregate state holds an exact mean, so each event keeps a
-- row of its own, keyed by its event_id: ReplacingMergeTree, read with FINAL, so a page_leave that both
-- the materialized view and a backfill wrote is averaged once. (One row per page read: about as many as
-- page_views, far fewer than the heartbeats and clicks.) Ordered by path: content_engagement's grouping.
CREATE TABLE IF NOT EXISTS clicktrail.page_leaves
(
    site_id    LowCardinality(String),
    url_path   String,
    event_id   String,
    ts         DateTime64(3, 'UTC'),
    sharer     String COMMENT 'the event''s own sharer field (分享人)',
    engaged_ms Float64 COMMENT 'props.engaged_ms: time the page was visible and in use',
    scroll_pct Float64 COMMENT 'props.scroll_pct: the deepest scroll, in percent of the page'
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, url_path, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicktrail.page_leaves_mv TO clicktrail.page_leaves AS
SELECT site_id, url_path, event_id, ts, sharer,
       JSONExtractFloat(props, 'engaged_ms') AS engaged_ms,
       JSONExtractFloat(props, 'scroll_pct') AS scroll_pct
FROM clicktrail.events
WHERE event = 'page_leave';
