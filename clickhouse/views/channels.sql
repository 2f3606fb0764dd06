-- Channels (渠道): each touch with its channel and person, and the rule that gives any event its channel.

-- clicktrail_referrer_channel(site_id, referrer_host): the channel a referrer host stands for: the site's own
-- rule, else the built-in class, for the longest domain the host equals or ends in (m.sogou.com, sogou.com,
-- com), else the host itself.
CREATE OR REPLACE FUNCTION clicktrail_referrer_channel AS (site, host) ->
    arrayFirst(c -> c != '', arrayConcat(
        arrayFlatten(arrayMap(rules -> arrayMap(
            domain -> dictGetOrDefault('clicktrail.referrer_channels_dict', 'channel', (rules, domain), ''),
            arrayMap(k -> arrayStringConcat(arraySlice(splitByChar('.', host), k), '.'),
                     arrayEnumerate(splitByChar('.', host)))), [site, ''])),
        [host]));

-- touch_channels: one row per touch, with its person and channel: the one it names itself, else its
-- referrer's. A site has a few dozen referrer hosts and many thousand touches, so each host's channel is
-- worked out once per query and joined, not once per touch.
CREATE OR REPLACE VIEW clicktrail.touch_channels AS
SELECT t.site_id AS site_id, clicktrail_person(t.site_id, t.anonymous_id, t.user_id) AS person_id,
       t.ts AS ts, t.event_id AS event_id, t.sharer AS sharer, if(t.direct != '', t.direct, r.channel) AS channel
FROM clicktrail.touches AS t FINAL
LEFT JOIN (
    SELECT site_id, referrer_host, clicktrail_referrer_channel(site_id, referrer_host) AS channel
    FROM (SELECT DISTINCT site_id, referrer_host FROM clicktrail.touches WHERE direct = '')
) AS r ON r.site_id = t.site_id AND r.referrer_host = t.referrer_host;

-- event_channels: every event with its person and its channel by the last-touch rule: the channel of
-- its person's latest touch (by ts, then event_id) at or before it within 90 days, '(direct)' without one.
-- Filter by site_id and ts: it reads the events it answers for. Each event meets its person's touches in a
-- plain LEFT JOIN and keeps the latest that qualifies (argMaxIf), not through an ASOF join: ClickHouse pushes
-- an analyst's site_id filter across a plain join's keys to the touches too, never to an ASOF join's right
-- side, which then read every site's touches (1.5x slower for one site of three). A person has a handful
-- of touches, so the join multiplies few rows. The grouping keys are the event's own columns, so filters on
-- them still reach the events table.
CREATE OR REPLACE VIEW clicktrail.event_channels AS
SELECT site_id, event_id, event, ts, person_id, if(latest.1 != '', latest.2, '(direct)') AS channel,
       latest.3 AS sharer
FROM (
    SELECT e.site_id AS site_id, e.event_id AS event_id, e.event AS event, e.ts AS ts, e.person_id AS person_id,
           argMaxIf((t.event_id, t.channel, t.sharer), (t.ts, t.event_id),
                    t.event_id != '' AND t.ts <= e.ts AND t.ts >= e.ts - INTERVAL 90 DAY) AS latest
    FROM (
        SELECT site_id, event_id, event, ts, clicktrail_person(site_id, anonymous_id, user_id) AS person_id
        FROM clicktrail.events
    ) AS e
    LEFT JOIN clicktrail.touch_channels AS t ON t.site_id = e.site_id AND t.person_id = e.person_id
    GROUP BY site_id, event_id, event, ts, person_id
);

-- first_touch_channels: each person's first touch ever in the site (第一来源), by (ts, event_id), without lookback:
-- its channel, sharer and time. A person without a touch has no row; the views that split by the first-touch
-- channel give them '(direct)'.
CREATE OR REPLACE VIEW clicktrail.first_touch_channels AS
SELECT site_id, person_id, argMin(t.channel, (t.ts, t.event_id)) AS channel,
       argMin(t.sharer, (t.ts, t.event_id)) AS sharer, min(t.ts) AS first_ts
FROM clicktrail.touch_channels AS t
GROUP BY site_id, person_id;
