-- The overview (概览) of a site over a period: how many came, how often, how many bounced, registered and became
-- leads, by day and channel; and the event names in use. Over sessions (views/sessions.sql), events, lead_persons
-- (views/lifecycle.sql), attribution (views/attribution.sql) and channel_roi (views/roi.sql), so that each number
-- here is the one those views give for the same period.

-- overview(site, date_from, date_to): one row for the UTC days [date_from, date_to]: visitors (distinct persons
-- with a session that started in the period), sessions, bounces and bounce_rate (跳出率) over those sessions,
-- registrations (registration events in the period: every one counts, as in attribution) and new_leads (persons
-- whose first lead_stage or first form_submit lies in the period, as channel_roi counts them).
CREATE OR REPLACE VIEW clicktrail.overview AS
SELECT s.visitors AS visitors, s.sessions AS sessions, s.bounces AS bounces,
       if(s.sessions = 0, 0., s.bounces / s.sessions) AS bounce_rate, r.registrations AS registrations,
       l.new_leads AS new_leads
FROM (
    SELECT uniqExact(person_id) AS visitors, count() AS sessions, countIf(bounce) AS bounces
    FROM clicktrail.session_facts
    WHERE site_id = {site:String} AND day BETWEEN {date_from:Date} AND {date_to:Date}
      AND (anonymous_id, session_id) IN (SELECT * FROM clicktrail.session_keys(
        site = {site:String}, date_from = {date_from:Date}, date_to = {date_to:Date}))
) AS s
CROSS JOIN (
    -- The sort key (site_id, toDate(ts), event, ts) reads only the period's registrations.
    SELECT count() AS registrations
    FROM clicktrail.events
    WHERE site_id = {site:String} AND toDate(ts) BETWEEN {date_from:Date} AND {date_to:Date} AND event = 'registration'
) AS r
CROSS JOIN (
    SELECT countIf(toDate(lead_at) BETWEEN {date_from:Date} AND {date_to:Date}) AS new_leads
    FROM clicktrail.lead_persons
    WHERE site_id = {site:String}
) AS l;

-- overview_daily(site, date_from, date_to): the sessions of each UTC day of the period by entry channel (the
-- stacked daily chart): sessions and bounces add up to the day's and the period's (channel_sessions' figures,
-- summed over utm_term); visitors are the day's distinct persons of the channel, which do not add up. A row per
-- day and channel with a session.
CREATE OR REPLACE VIEW clicktrail.overview_daily AS
SELECT day, entry_channel AS channel, count() AS sessions, countIf(bounce) AS bounces,
       uniqExact(person_id) AS visitors
FROM clicktrail.sessions
WHERE site_id = {site:String} AND day BETWEEN {date_from:Date} AND {date_to:Date}
  AND (anonymous_id, session_id) IN (SELECT * FROM clicktrail.session_keys(
      site = {site:String}, date_from = {date_from:Date}, date_to = {date_to:Date}))
GROUP BY day, channel
ORDER BY day, channel;

-- overview_channels(site, date_from, date_to): the top channels of the period: the traffic each brought by the
-- sessions' entry channel (visitors, sessions, bounces, bounce_rate), the registrations credited to it by the
-- last touch (attribution's last_touch model) and the new leads it first brought (channel_roi's first-touch
-- channel). A row per channel with any of them.
CREATE OR REPLACE VIEW clicktrail.overview_channels AS
SELECT channel, sum(v) AS visitors, sum(s) AS sessions, sum(b) AS bounces,
       if(sessions = 0, 0., bounces / sessions) AS bounce_rate, sum(r) AS registrations, sum(n) AS new_leads
FROM (
    SELECT entry_channel AS channel, uniqExact(person_id) AS v, count() AS s, countIf(bounce) AS b, 0. AS r,
           toUInt64(0) AS n
    FROM clicktrail.sessions
    WHERE site_id = {site:String} AND day BETWEEN {date_from:Date} AND {date_to:Date}
      AND (anonymous_id, session_id) IN (SELECT * FROM clicktrail.session_keys(
        site = {site:String}, date_from = {date_from:Date}, date_to = {date_to:Date}))
    GROUP BY channel
    UNION ALL
    SELECT channel, 0, 0, 0, conversions, 0
    FROM clicktrail.attribution(site = {site:String}, conversion = 'registration', model = 'last_touch',
                                date_from = {date_from:Date}, date_to = {date_to:Date})
    UNION ALL
    SELECT channel, 0, 0, 0, 0., new_leads
    FROM clicktrail.channel_roi(site = {site:String}, date_from = {date_from:Date}, date_to = {date_to:Date})
    WHERE new_leads > 0
)
GROUP BY channel
ORDER BY channel;

-- event_names: the event names in use in each site (funnel steps, conversions to attribute): how many events of
-- each and the latest one's time.
CREATE OR REPLACE VIEW clicktrail.event_names AS
SELECT site_id, event, count() AS events, max(ts) AS last_ts
FROM clicktrail.events
GROUP BY site_id, event;
