-- Sessions (会话): session_facts, sessions and channel_sessions, over the rollup of migration 0010, the identity map and
-- touch_channels (views/channels.sql).

-- session_facts: one row per (site_id, anonymous_id, session_id), everything of sessions but the entry channel,
-- for the questions that need no channel (how many sessions, visitors, bounces): finding the channel is most of
-- sessions' cost. Its entry is its first page_view (by ts, then event_id), or its first event when it has no
-- page_view; its person is the entry event's: the entry's user_id, else the person of the session's anonymous_id
-- (clicktrail_person). A bounce (跳出) is a session of exactly one page_view and no event other than page_view
-- and page_leave.
CREATE OR REPLACE VIEW clicktrail.session_facts AS
SELECT site_id, anonymous_id, session_id, person_id, start, `end`,
       (toUnixTimestamp64Milli(`end`) - toUnixTimestamp64Milli(start)) / 1000 AS duration_s, pageviews, entry_path,
       entry_utm_term, toDate(start) AS day, pageviews = 1 AND NOT engaged AS bounce, entry_ts
FROM (
    SELECT site_id, anonymous_id, session_id, start_ts AS start, end_ts AS `end`, views AS pageviews, engaged,
           fromUnixTimestamp64Milli(if(views > 0, entry.1, first_event.1), 'UTC') AS entry_ts,
           if(views > 0, entry.2, '') AS entry_path,
           if(views > 0, entry.3, '') AS entry_utm_term,
           clicktrail_person(site_id, anonymous_id, if(views > 0, entry.4, first_event.2)) AS person_id
    FROM (
        SELECT site_id, anonymous_id, session_id, min(start_ts) AS start_ts, max(end_ts) AS end_ts,
               uniqExactMerge(pageviews) AS views, max(engaged) AS engaged,
               JSONExtract(argMinMerge(entry), 'Tuple(Int64, String, String, String)') AS entry,
               JSONExtract(argMinMerge(first_event), 'Tuple(Int64, String)') AS first_event
        FROM clicktrail.session_rollup
        GROUP BY site_id, anonymous_id, session_id
    )
);

-- sessions: session_facts with each session's entry channel: its person's latest touch (by ts, then event_id) at
-- or before the entry (an entry that is a touch is its own) within 90 days, else '(direct)': found by a plain
-- join on the person and argMaxIf, as in event_channels (views/channels.sql), so that an analyst's site_id filter
-- reaches the touches (an ASOF join would read every site's).
CREATE OR REPLACE VIEW clicktrail.sessions AS
SELECT site_id, anonymous_id, session_id, person_id, start, `end`, duration_s, pageviews, entry_path,
       if(latest.1 != '', latest.2, '(direct)') AS entry_channel, entry_utm_term, day, bounce
FROM (
    SELECT s.site_id AS site_id, s.anonymous_id AS anonymous_id, s.session_id AS session_id,
           any(s.person_id) AS person_id, any(s.start) AS start, any(s.`end`) AS `end`,
           any(s.duration_s) AS duration_s, any(s.pageviews) AS pageviews, any(s.entry_path) AS entry_path,
           any(s.entry_utm_term) AS entry_utm_term, any(s.day) AS day, any(s.bounce) AS bounce,
           argMaxIf((t.event_id, t.channel), (t.ts, t.event_id),
                    t.event_id != '' AND t.ts <= s.entry_ts AND t.ts >= s.entry_ts - INTERVAL 90 DAY) AS latest
    FROM clicktrail.session_facts AS s
    LEFT JOIN clicktrail.touch_channels AS t ON t.site_id = s.site_id AND t.person_id = s.person_id
    GROUP BY site_id, anonymous_id, session_id
);

-- session_keys(site, date_from, date_to): the (anonymous_id, session_id) of every session of the site that starts
-- in the UTC days [date_from, date_to], and of a few more, for a view of a period to filter sessions with ahead
-- of the day filter: a session's start is its earliest rollup row's, so a session starting in the period has a
-- row starting in it. On sessions' grouping key, this filter reaches the rollup and the touches; the day filter,
-- on an aggregate, reaches neither, so every session of the site would be built first.
CREATE OR REPLACE VIEW clicktrail.session_keys AS
SELECT anonymous_id, session_id
FROM clicktrail.session_rollup
WHERE site_id = {site:String} AND toDate(start_ts) BETWEEN {date_from:Date} AND {date_to:Date};

-- channel_sessions: sessions by UTC day of their start, entry channel and entry utm_term (搜索词): how many,
-- how many bounced and the bounce rate (跳出率), pages per session (人均浏览页数), mean duration in seconds
-- (平均访问时长).
CREATE OR REPLACE VIEW clicktrail.channel_sessions AS
SELECT site_id, day, channel, utm_term, n AS sessions, bounced AS bounces, bounced / n AS bounce_rate,
       pages / n AS pages_per_session, duration / n AS avg_duration_s
FROM (
    SELECT site_id, day, entry_channel AS channel, entry_utm_term AS utm_term, count() AS n,
           countIf(bounce) AS bounced, sum(pageviews) AS pages, sum(duration_s) AS duration
    FROM clicktrail.sessions
    GROUP BY site_id, day, channel, utm_term
);
