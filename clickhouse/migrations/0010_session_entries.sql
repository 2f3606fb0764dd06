-- Sessions (会话), rebuilt: the same one row per (site_id, anonymous_id, session_id) as 0005, with the entry kept
-- in states ClickHouse merges fast. 0005 kept the entry as argMin over tuples, a state of the generic kind that
-- is (de)serialized value by value: merging a site's 154k sessions took 450 ms of the sessions view's time.
-- Here each argMin is over two Strings: the key is the event's (ts, event_id) as one string (the time zero-padded
-- to fixed width, so string order is (ts, event_id) order), the value the event's fields as a JSON array (any
-- character survives it), decoded once per session by the views: 66 ms for the same merge.
-- Migrations run before the loader starts, so no event loads between the drop and the backfill of the new
-- materialized view; a re-run after a crash drops what a first run backfilled and backfills it again.
DROP VIEW IF EXISTS clicktrail.session_rollup_mv;

DROP TABLE IF EXISTS clicktrail.session_rollup;

CREATE TABLE IF NOT EXISTS clicktrail.session_rollup
(
    site_id      LowCardinality(String),
    anonymous_id String,
    session_id   String,
    start_ts     SimpleAggregateFunction(min, DateTime64(3, 'UTC')) COMMENT 'its first event''s time',
    end_ts       SimpleAggregateFunction(max, DateTime64(3, 'UTC')) COMMENT 'its last event''s time',
    pageviews    AggregateFunction(uniqExact, String) COMMENT 'distinct page_view event_ids',
    engaged      SimpleAggregateFunction(max, UInt8) COMMENT '1 when it has an event other than page_view and page_leave',
    entry        AggregateFunction(argMin, String, String)
                 COMMENT 'its first page_view''s [ts in ms, url_path, utm_term, user_id], a JSON array',
    first_event  AggregateFunction(argMin, String, String) COMMENT 'its first event''s [ts in ms, user_id], a JSON array'
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, anonymous_id, session_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicktrail.session_rollup_mv TO clicktrail.session_rollup AS
SELECT
    site_id,
    anonymous_id,
    session_id,
    min(ts) AS start_ts,
    max(ts) AS end_ts,
    uniqExactIfState(event_id, event = 'page_view') AS pageviews,
    max(event NOT IN ('page_view', 'page_leave')) AS engaged,
    argMinIfState(toJSONString((toUnixTimestamp64Milli(ts), url_path, utm_term, user_id)), order_key,
                  event = 'page_view') AS entry,
    argMinState(toJSONString((toUnixTimestamp64Milli(ts), user_id)), order_key) AS first_event
FROM (
    SELECT *, concat(leftPad(toString(toUnixTimestamp64Milli(ts)), 15, '0'), event_id) AS order_key
    FROM clicktrail.events
    WHERE session_id != ''
)
GROUP BY site_id, anonymous_id, session_id;
