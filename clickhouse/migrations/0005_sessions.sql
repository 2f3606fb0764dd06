-- Sessions (会话): one rollup row per session once merged, instead of its raw events.
-- A session is a (site_id, anonymous_id, session_id) over the events with a non-empty session_id (the SDK
-- renews session_id after 30 idle minutes). Every state is idempotent (min, max, uniqExact, argMin), so
-- what the materialized view and the migrator's backfill both see counts once. The ids are kept, not the
-- person: views resolve the entry event's person through identities at query time.
-- Ordered by the session's key: views read every session of a site and group them by day and channel.
--
-- The entry is the first page_view by (ts, event_id): an argMinIf state, so that a session's other events
-- never win it (a session without a page_view keeps an empty entry state, and pageviews = 0 says so).
-- first_event is its first event of any name: the entry of a session without a page_view.
-- (The -If states are stored in columns of the plain function's type: ClickHouse stores them alike.)
CREATE TABLE IF NOT EXISTS clicktrail.session_rollup
(
    site_id      LowCardinality(String),
    anonymous_id String,
    session_id   String,
    start_ts     SimpleAggregateFunction(min, DateTime64(3, 'UTC')) COMMENT 'its first event''s time',
    end_ts       SimpleAggregateFunction(max, DateTime64(3, 'UTC')) COMMENT 'its last event''s time',
    pageviews    AggregateFunction(uniqExact, String) COMMENT 'distinct page_view event_ids',
    engaged      SimpleAggregateFunction(max, UInt8) COMMENT '1 when it has an event other than page_view and page_leave',
    entry        AggregateFunction(argMin, Tuple(DateTime64(3, 'UTC'), String, String, String, String),
                                   Tuple(DateTime64(3, 'UTC'), String))
                 COMMENT 'its first page_view''s (ts, event_id, url_path, utm_term, user_id)',
    first_event  AggregateFunction(argMin, Tuple(DateTime64(3, 'UTC'), String, String), Tuple(DateTime64(3, 'UTC'), String))
                 COMMENT 'its first event''s (ts, event_id, user_id)'
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
    argMinIfState((ts, event_id, url_path, utm_term, user_id), (ts, event_id), event = 'page_view') AS entry,
    argMinState((ts, event_id, user_id), (ts, event_id)) AS first_event
FROM clicktrail.events
WHERE session_id != ''
GROUP BY site_id, anonymous_id, session_id;
