-- Sessions (会话): sessions and channel_sessions, over the rollup of migration 0010, the identity map and
-- touch_channels (views/channels.sql).

-- sessions: one row per (site_id, anonymous_id, session_id). Its entry is its first page_view (by ts, then
-- event_id), or its first event when it has no page_view; its person is the entry event's: the entry's
-- user_id, else the person of the session's anonymous_id (clicktrail_person). Its entry channel
-- is that person's latest touch at or before the entry (an entry that is a touch is its own) within 90 days,
-- else '(direct)': an ASOF join finds the latest touch, then the 90 days are checked. A bounce (跳出) is a
-- session of exactly one page_view and no event other than page_view and page_leave.
CREATE OR REPLACE VIEW clicktrail.sessions AS
SELECT s.site_id AS site_id, s.anonymous_id AS anonymous_id, s.session_id AS session_id, s.person_id AS person_id,
       s.start_ts AS start, s.end_ts AS `end`,
       (toUnixTimestamp64Milli(s.end_ts) - toUnixTimestamp64Milli(s.start_ts)) / 1000 AS duration_s,
       s.views AS pageviews, s.entry_path AS entry_path,
       if(t.ts >= s.entry_ts - INTERVAL 90 DAY AND t.channel != '', t.channel, '(direct)') AS entry_channel,
       s.entry_utm_term AS entry_utm_term, toDate(s.start_ts) AS day,
       s.views = 1 AND NOT s.engaged AS bounce
FROM (
    SELECT site_id, anonymous_id, session_id, start_ts, end_ts, views, engaged,
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
) AS s
ASOF LEFT JOIN (SELECT site_id, person_id, ts, channel FROM clicktrail.touch_channels) AS t
    ON t.site_id = s.site_id AND t.person_id = s.person_id AND t.ts <= s.entry_ts;

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
