-- OneID (身份统一): which user_id each anonymous id was linked to, by its earliest identify.
-- One row per (site_id, anonymous_id) once merged; views resolve an event's person at query time
-- through it, so an identify that arrives weeks after the visits it links re-attributes them all
-- without rewriting a row. argMin over (ts, user_id) is idempotent (a re-run backfill changes
-- nothing) and breaks a tie of two identifies in the same millisecond by the smaller user_id.
-- Ordered by the join key of that resolution.
CREATE TABLE IF NOT EXISTS clicktrail.identity_links
(
    site_id       LowCardinality(String),
    anonymous_id  String,
    linked_user_id AggregateFunction(argMin, String, Tuple(DateTime64(3, 'UTC'), String)),
    identified_at SimpleAggregateFunction(min, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, anonymous_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicktrail.identity_links_mv TO clicktrail.identity_links AS
SELECT site_id, anonymous_id, argMinState(user_id, (ts, user_id)) AS linked_user_id, min(ts) AS identified_at
FROM clicktrail.events
WHERE event = 'identify' AND anonymous_id != '' AND user_id != ''
GROUP BY site_id, anonymous_id;
