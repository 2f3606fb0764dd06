-- The audience of a stream for the dashboard's live page: who of the registrants came and stayed to the end
-- (stream_attendance, live_registrant_chain), the registrant journey with those flags (stream_journey), and how
-- long viewers watched (live_watch_distribution). Over live_view_persons, stream_activity_persons and
-- stream_audience (views/live.sql).

-- Internal: stream_attendance: per stream and person who registered or watched live: registered (a registration),
-- attended (a live-mode view: live_stream_stats counts a registrant with one among attendees) and completed (a
-- live-mode view of completion >= 0.9, completion as in live_stream_stats: watched_ms over the view's largest
-- duration_s, known when duration_s > 0).
CREATE OR REPLACE VIEW clicktrail.stream_attendance AS
SELECT site_id, stream_id, person_id, max(r) AS registered, max(a) AS attended, max(c) AS completed
FROM (
    SELECT site_id, stream_id, person_id, toUInt8(1) AS r, toUInt8(0) AS a, toUInt8(0) AS c
    FROM clicktrail.stream_activity_persons
    WHERE activity = 'registration'
    UNION ALL
    SELECT site_id, stream_id, person_id, 0, 1,
           toUInt8(duration_s > 0 AND least(1, watched_ms / (duration_s * 1000)) >= 0.9)
    FROM clicktrail.live_view_persons
    WHERE viewing AND mode = 'live'
)
GROUP BY site_id, stream_id, person_id;

-- stream_journey: stream_audience (the registrant journey) with each person's attended, no_show (registered and
-- not attended: who gets the replay) and completed flags.
CREATE OR REPLACE VIEW clicktrail.stream_journey AS
SELECT j.*, ifNull(f.attended, 0) AS attended, toUInt8(j.registered_at IS NOT NULL AND NOT attended) AS no_show,
       ifNull(f.completed, 0) AS completed
FROM clicktrail.stream_audience AS j
LEFT JOIN clicktrail.stream_attendance AS f
    ON f.site_id = j.site_id AND f.stream_id = j.stream_id AND f.person_id = j.person_id;

-- live_registrant_chain: per stream, the chain registrants → attendees (who watched live) → completed (of them, those
-- who completed a live view), with each step's rate. A row for every stream of live_stream_stats (a registration,
-- an interaction or a view), zeros for one without registrants: the streams' other rows only add the stream.
CREATE OR REPLACE VIEW clicktrail.live_registrant_chain AS
SELECT site_id, stream_id, countIf(registered) AS registrants, countIf(registered AND attended) AS attendees,
       countIf(registered AND attended AND done) AS completed,
       if(registrants = 0, 0., attendees / registrants) AS attendance_rate,
       if(attendees = 0, 0., completed / attendees) AS completed_rate
FROM (
    SELECT site_id, stream_id, registered, attended, completed AS done FROM clicktrail.stream_attendance
    UNION ALL
    SELECT DISTINCT site_id, stream_id, 0, 0, 0 FROM clicktrail.stream_activity_persons
    UNION ALL
    SELECT DISTINCT site_id, stream_id, 0, 0, 0 FROM clicktrail.live_view_persons WHERE viewing
)
GROUP BY site_id, stream_id;

-- live_watch_distribution: per stream and mode, the persons with a view of that mode by their watch time in it (the
-- sum over their views), in 5-minute buckets: bucket_min = 0 holds [0, 5) minutes, 5 holds [5, 10), ...; every
-- bucket up to the longest watcher's, empty ones with 0 persons.
CREATE OR REPLACE VIEW clicktrail.live_watch_distribution AS
SELECT site_id, stream_id, mode, bucket_min, countIf(intDiv(watched_ms, 300000) * 5 = bucket_min) AS persons,
       persons / any(total) AS share
FROM (
    SELECT site_id, stream_id, mode, watched_ms, count() OVER w AS total, max(watched_ms) OVER w AS longest
    FROM (
        SELECT site_id, stream_id, mode, person_id, sum(watched_ms) AS watched_ms
        FROM clicktrail.live_view_persons
        WHERE viewing
        GROUP BY site_id, stream_id, mode, person_id
    )
    WINDOW w AS (PARTITION BY site_id, stream_id, mode)
)
ARRAY JOIN arrayMap(k -> k * 5, range(toUInt64(intDiv(longest, 300000) + 1))) AS bucket_min
GROUP BY site_id, stream_id, mode, bucket_min;
