-- Live streams and replays (直播 / 回放): three rollups that views read instead of raw heartbeats.
-- Each holds only idempotent states (min, max, uniqExact), so a re-run backfill doubles nothing, and
-- the ids (anonymous_id, user_id) rather than the person: the person is resolved at query time
-- through identity_links. All are ordered (site_id, stream_id, ...): every question is per stream.

-- One row per viewing (view_id) once merged: a heartbeat every 10 s shrinks about 360 to 1 per hour.
-- A view's ids are the same on all its events (the SDK keeps them), so min() just picks them.
-- viewing: it has a live_join or live_heartbeat (a lone live_leave is not a viewing).
CREATE TABLE IF NOT EXISTS clicktrail.live_views
(
    site_id      LowCardinality(String),
    stream_id    String,
    view_id      String,
    mode         SimpleAggregateFunction(max, String),
    anonymous_id SimpleAggregateFunction(min, String),
    user_id      SimpleAggregateFunction(max, String),
    viewing      SimpleAggregateFunction(max, UInt8),
    watched_ms   SimpleAggregateFunction(max, UInt64) COMMENT 'largest cumulative watched_ms: the view''s watch time',
    duration_s   SimpleAggregateFunction(max, Float64) COMMENT 'largest duration_s of its heartbeats, 0 if unknown',
    first_ts     SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_ts      SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    first_view_ts SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))) COMMENT 'its first join or heartbeat'
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, stream_id, view_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicktrail.live_views_mv TO clicktrail.live_views AS
SELECT
    site_id,
    JSONExtractString(props, 'stream_id') AS stream_id,
    JSONExtractString(props, 'view_id') AS view_id,
    max(JSONExtractString(props, 'mode')) AS mode,
    min(anonymous_id) AS anonymous_id,
    max(user_id) AS user_id,
    max(event != 'live_leave') AS viewing,
    max(JSONExtractUInt(props, 'watched_ms')) AS watched_ms,
    max(JSONExtractFloat(props, 'duration_s')) AS duration_s,
    min(ts) AS first_ts,
    max(ts) AS last_ts,
    minIfOrNull(ts, event != 'live_leave') AS first_view_ts
FROM clicktrail.events
WHERE event IN ('live_join', 'live_heartbeat', 'live_leave')
GROUP BY site_id, stream_id, view_id;

-- Who watched live in each UTC minute (观看峰值): one row per (minute, ids), six heartbeats to one.
-- ReplacingMergeTree only to shed repeats; readers count distinct persons, so unmerged repeats are harmless.
CREATE TABLE IF NOT EXISTS clicktrail.live_minutes
(
    site_id      LowCardinality(String),
    stream_id    String,
    minute       DateTime('UTC'),
    anonymous_id String,
    user_id      String
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, stream_id, minute, anonymous_id, user_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicktrail.live_minutes_mv TO clicktrail.live_minutes AS
SELECT DISTINCT site_id, JSONExtractString(props, 'stream_id') AS stream_id, toStartOfMinute(ts) AS minute,
       anonymous_id, user_id
FROM clicktrail.events
WHERE event = 'live_heartbeat' AND JSONExtractString(props, 'mode') = 'live';

-- Registrations and interactions per stream and ids: activity is 'registration' or 'interaction:<kind>'.
CREATE TABLE IF NOT EXISTS clicktrail.stream_activity
(
    site_id      LowCardinality(String),
    stream_id    String,
    activity     String,
    anonymous_id String,
    user_id      String,
    events       AggregateFunction(uniqExact, String) COMMENT 'distinct event_ids',
    first_ts     SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_ts      SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, stream_id, activity, anonymous_id, user_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicktrail.stream_activity_mv TO clicktrail.stream_activity AS
SELECT
    site_id,
    JSONExtractString(props, 'stream_id') AS stream_id,
    if(event = 'registration', 'registration', 'interaction:' || JSONExtractString(props, 'kind')) AS activity,
    anonymous_id,
    user_id,
    uniqExactState(event_id) AS events,
    min(ts) AS first_ts,
    max(ts) AS last_ts
FROM clicktrail.events
WHERE event = 'registration' OR (event = 'interaction' AND JSONExtractString(props, 'stream_id') != '')
GROUP BY site_id, stream_id, activity, anonymous_id, user_id;
