-- Live streams and replays (直播 / 回放): live_stream_stats, live_concurrency, live_retention,
-- live_interactions, over the rollups of migration 0003 and the identity map.

-- Internal: each viewing with its person (clicktrail_person of the ids of its events).
CREATE OR REPLACE VIEW clicktrail.live_view_persons AS
SELECT site_id, stream_id, view_id, view_mode AS mode, clicktrail_person(site_id, anonymous, user) AS person_id,
       is_viewing AS viewing, watched AS watched_ms, duration AS duration_s, first_at AS first_ts,
       last_at AS last_ts, first_view_at AS first_view_ts
FROM (
    SELECT site_id, stream_id, view_id, max(mode) AS view_mode, min(anonymous_id) AS anonymous,
           max(user_id) AS user, max(viewing) AS is_viewing, max(watched_ms) AS watched,
           max(duration_s) AS duration, min(first_ts) AS first_at, max(last_ts) AS last_at,
           min(first_view_ts) AS first_view_at
    FROM clicktrail.live_views
    GROUP BY site_id, stream_id, view_id
);

-- Internal: registrations and interactions per stream and person.
CREATE OR REPLACE VIEW clicktrail.stream_activity_persons AS
SELECT site_id, stream_id, activity, clicktrail_person(site_id, anonymous_id, user_id) AS person_id,
       n AS events, first_at AS first_ts, last_at AS last_ts
FROM (
    SELECT site_id, stream_id, activity, anonymous_id, user_id, uniqExactMerge(events) AS n,
           min(first_ts) AS first_at, max(last_ts) AS last_at
    FROM clicktrail.stream_activity
    GROUP BY site_id, stream_id, activity, anonymous_id, user_id
);

-- live_concurrency: per stream and UTC minute, distinct persons with a live-mode heartbeat in it.
CREATE OR REPLACE VIEW clicktrail.live_concurrency AS
SELECT site_id, stream_id, minute, uniqExact(clicktrail_person(site_id, anonymous_id, user_id)) AS viewers
FROM clicktrail.live_minutes
GROUP BY site_id, stream_id, minute;

-- live_retention: per stream, mode and minute m = 0, 1, ...: the views of that mode watched at least
-- m minutes, and their share of all the views of that mode (where viewers drop off).
CREATE OR REPLACE VIEW clicktrail.live_retention AS
SELECT site_id, stream_id, mode, minute, views, views / total AS share
FROM (
    SELECT site_id, stream_id, mode, minute, count() AS views, any(total) AS total
    FROM (
        SELECT site_id, stream_id, mode, watched_ms, count() OVER (PARTITION BY site_id, stream_id, mode) AS total
        FROM clicktrail.live_view_persons
        WHERE viewing
    )
    ARRAY JOIN range(toUInt64(intDiv(watched_ms, 60000) + 1)) AS minute
    GROUP BY site_id, stream_id, mode, minute
);

-- live_stream_stats: one row per stream; the columns are described in clickhouse/README.md.
CREATE OR REPLACE VIEW clicktrail.live_stream_stats AS
WITH people AS (
    SELECT site_id, stream_id, person_id,
           max(registered) AS registered, max(live) AS live, max(replay) AS replay, max(interacted) AS interacted,
           sum(watch_ms) AS watch_ms, sum(live_ms) AS live_ms, sum(replay_ms) AS replay_ms,
           max(completed) AS completed, max(known_duration) AS known_duration
    FROM (
        SELECT site_id, stream_id, person_id, 0 AS registered, mode = 'live' AS live, mode = 'replay' AS replay,
               0 AS interacted, watched_ms AS watch_ms, if(mode = 'live', watched_ms, 0) AS live_ms,
               if(mode = 'replay', watched_ms, 0) AS replay_ms,
               duration_s > 0 AND least(1, watched_ms / (duration_s * 1000)) >= 0.9 AS completed,
               duration_s > 0 AS known_duration
        FROM clicktrail.live_view_persons
        WHERE viewing
        UNION ALL
        SELECT site_id, stream_id, person_id, activity = 'registration', 0, 0, startsWith(activity, 'interaction:'),
               0, 0, 0, 0, 0
        FROM clicktrail.stream_activity_persons
    )
    GROUP BY site_id, stream_id, person_id
),
bounds AS (
    SELECT site_id, stream_id, min(first_ts) AS first_ts, max(last_ts) AS last_ts
    FROM (
        SELECT site_id, stream_id, first_ts, last_ts FROM clicktrail.live_view_persons
        UNION ALL
        SELECT site_id, stream_id, first_ts, last_ts FROM clicktrail.stream_activity_persons
    )
    GROUP BY site_id, stream_id
),
peaks AS (
    SELECT site_id, stream_id, max(viewers) AS peak_concurrency FROM clicktrail.live_concurrency
    GROUP BY site_id, stream_id
),
totals AS (
    SELECT site_id, stream_id,
           countIf(registered) AS registrants,
           countIf(live OR replay) AS viewers,
           countIf(live) AS live_viewers,
           countIf(replay) AS replay_viewers,
           countIf(registered AND live) AS attendees,
           countIf(registered AND NOT live) AS no_shows,
           countIf(registered AND NOT live AND replay) AS no_show_replay_viewers,
           sum(watch_ms) AS watch_ms_total,
           sum(live_ms) AS live_watch_ms_total,
           sum(replay_ms) AS replay_watch_ms_total,
           countIf(completed) AS completers,
           countIf(known_duration) AS with_duration,
           countIf(interacted AND (live OR replay)) AS interactors
    FROM people
    GROUP BY site_id, stream_id
)
SELECT t.site_id AS site_id, t.stream_id AS stream_id,
       registrants, viewers, live_viewers, replay_viewers, attendees,
       if(registrants = 0, 0, attendees / registrants) AS attendance_rate,
       no_shows, no_show_replay_viewers,
       watch_ms_total, if(viewers = 0, 0, watch_ms_total / viewers) AS avg_watch_ms,
       live_watch_ms_total, replay_watch_ms_total,
       p.peak_concurrency AS peak_concurrency,
       if(with_duration = 0, 0, completers / with_duration) AS completion_rate,
       interactors, if(viewers = 0, 0, interactors / viewers) AS interaction_rate,
       b.first_ts AS first_ts, b.last_ts AS last_ts
FROM totals AS t
LEFT JOIN peaks AS p ON p.site_id = t.site_id AND p.stream_id = t.stream_id
LEFT JOIN bounds AS b ON b.site_id = t.site_id AND b.stream_id = t.stream_id;

-- live_interactions: per stream and interaction kind (互动率 by kind).
CREATE OR REPLACE VIEW clicktrail.live_interactions AS
WITH viewers AS (
    SELECT DISTINCT site_id, stream_id, person_id FROM clicktrail.live_view_persons WHERE viewing
)
SELECT a.site_id AS site_id, a.stream_id AS stream_id, substring(a.activity, 13) AS kind,
       sum(a.events) AS interactions,
       uniqExactIf(a.person_id, (a.site_id, a.stream_id, a.person_id) IN (SELECT * FROM viewers)) AS interactors,
       if(any(n.viewers) = 0, 0, interactors / any(n.viewers)) AS interaction_rate
FROM clicktrail.stream_activity_persons AS a
LEFT JOIN (SELECT site_id, stream_id, count() AS viewers FROM viewers GROUP BY site_id, stream_id) AS n
    ON n.site_id = a.site_id AND n.stream_id = a.stream_id
WHERE startsWith(a.activity, 'interaction:')
GROUP BY site_id, stream_id, kind;

-- stream_audience: the registrant journey (参与直播后是否点播了其他内容), one row per stream and person who
-- registered or viewed. t0 is the person's first view of the stream (their first registration when they
-- never viewed); pages_after, downloads_after and forms_after count their events in the site in
-- (t0, t0 + 14 days]. The columns are described in clickhouse/README.md.
CREATE OR REPLACE VIEW clicktrail.stream_audience AS
WITH
    audience AS (
        SELECT site_id, stream_id, person_id,
               minIf(first_ts, activity = 'registration') AS first_registration,
               countIf(activity = 'registration') > 0 AS registered,
               sumIf(events, startsWith(activity, 'interaction:')) AS interactions,
               sumIf(watched_ms, mode = 'live') AS live_watch_ms,
               sumIf(watched_ms, mode = 'replay') AS replay_watch_ms,
               min(first_view_ts) AS first_view
        FROM (
            SELECT site_id, stream_id, person_id, activity, events, first_ts, '' AS mode, toUInt64(0) AS watched_ms,
                   CAST(NULL AS Nullable(DateTime64(3, 'UTC'))) AS first_view_ts
            FROM clicktrail.stream_activity_persons
            UNION ALL
            SELECT site_id, stream_id, person_id, '' AS activity, 0 AS events, first_ts, mode, watched_ms, first_view_ts
            FROM clicktrail.live_view_persons
            WHERE viewing
        )
        GROUP BY site_id, stream_id, person_id
        HAVING registered OR first_view IS NOT NULL
    ),
    -- The site's page views, downloads and forms of the audience's persons in (t0, t0 + 14 days]: the events
    -- stream through a hash table of the audience (thousands of rows), not the other way round.
    after AS (
        SELECT a.site_id AS site_id, a.stream_id AS stream_id, a.person_id AS person_id,
               countIf(l.event = 'page_view') AS pages_after, countIf(l.event = 'download') AS downloads_after,
               countIf(l.event = 'form_submit') AS forms_after
        FROM (
            SELECT site_id, event, ts, clicktrail_person(site_id, anonymous_id, user_id) AS person_id
            FROM clicktrail.events
            WHERE event IN ('page_view', 'download', 'form_submit')
        ) AS l
        INNER JOIN (
            SELECT site_id, stream_id, person_id, ifNull(first_view, first_registration) AS t0 FROM audience
        ) AS a ON a.site_id = l.site_id AND a.person_id = l.person_id
        WHERE l.ts > a.t0 AND l.ts <= a.t0 + INTERVAL 14 DAY
        GROUP BY site_id, stream_id, person_id
    )
SELECT a.site_id AS site_id, a.stream_id AS stream_id, a.person_id AS person_id,
       if(a.registered, a.first_registration, NULL) AS registered_at,
       if(a.registered, a.channel_at_registration, NULL) AS registration_channel,
       if(f.channel != '', f.channel, '(direct)') AS first_touch_channel,
       a.live_watch_ms AS live_watch_ms, a.replay_watch_ms AS replay_watch_ms, a.interactions AS interactions,
       x.pages_after AS pages_after, x.downloads_after AS downloads_after, x.forms_after AS forms_after
FROM (
    -- The channel of the person's latest touch (by ts, then event_id) at or before their first registration,
    -- within 90 days: a plain join and argMaxIf, as in event_channels (views/channels.sql), so the site filter
    -- reaches the touches.
    SELECT a.site_id AS site_id, a.stream_id AS stream_id, a.person_id AS person_id,
           a.first_registration AS first_registration, a.registered AS registered, a.interactions AS interactions,
           a.live_watch_ms AS live_watch_ms, a.replay_watch_ms AS replay_watch_ms, a.first_view AS first_view,
           argMaxIf((t.event_id, t.channel), (t.ts, t.event_id), t.event_id != '' AND t.ts <= a.first_registration
                    AND t.ts >= a.first_registration - INTERVAL 90 DAY) AS latest,
           if(latest.1 != '', latest.2, '(direct)') AS channel_at_registration
    FROM audience AS a
    LEFT JOIN clicktrail.touch_channels AS t ON t.site_id = a.site_id AND t.person_id = a.person_id
    GROUP BY site_id, stream_id, person_id, first_registration, registered, interactions, live_watch_ms,
             replay_watch_ms, first_view
) AS a
LEFT JOIN clicktrail.first_touch_channels AS f ON f.site_id = a.site_id AND f.person_id = a.person_id
LEFT JOIN after AS x ON x.site_id = a.site_id AND x.stream_id = a.stream_id AND x.person_id = a.person_id;
