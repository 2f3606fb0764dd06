-- Channels (渠道): each touch with its channel and person, and the rule that gives any event its channel.

-- touch_channels: one row per touch, with its person (resolved through identities) and channel: the
-- one it names itself, else the referrer's: the site's rule, else the built-in class, for the longest
-- domain the host equals or ends in, else the host itself.
CREATE OR REPLACE VIEW clicktrail.touch_channels AS
SELECT t.site_id AS site_id,
       if(t.user_id != '', t.user_id, if(i.person_id != '', i.person_id, t.anonymous_id)) AS person_id,
       t.ts AS ts, t.event_id AS event_id, t.sharer AS sharer,
       if(t.direct != '', t.direct, arrayFirst(c -> c != '', arrayConcat(
           arrayMap(d -> dictGetOrDefault('clicktrail.referrer_channels_dict', 'channel', (t.site_id, d), ''),
                    t.domains),
           arrayMap(d -> dictGetOrDefault('clicktrail.referrer_channels_dict', 'channel', ('', d), ''), t.domains),
           [t.referrer_host]))) AS channel
FROM (
    -- The host and every domain it ends in, longest first: m.sogou.com, sogou.com, com.
    SELECT *, arrayMap(k -> arrayStringConcat(arraySlice(splitByChar('.', referrer_host), k), '.'),
                       arrayEnumerate(splitByChar('.', referrer_host))) AS domains
    FROM clicktrail.touches FINAL
) AS t
LEFT JOIN clicktrail.identities AS i ON i.site_id = t.site_id AND i.anonymous_id = t.anonymous_id;

-- event_channels: every event with its person and its channel by the last-touch rule: the channel of
-- its person's latest touch at or before it within 90 days, '(direct)' without one. Filter by site_id
-- and ts: it reads the events it answers for.
CREATE OR REPLACE VIEW clicktrail.event_channels AS
SELECT e.site_id AS site_id, e.event_id AS event_id, e.event AS event, e.ts AS ts, e.person_id AS person_id,
       if(t.event_id != '' AND t.ts >= e.ts - INTERVAL 90 DAY, t.channel, '(direct)') AS channel,
       if(t.event_id != '' AND t.ts >= e.ts - INTERVAL 90 DAY, t.sharer, '') AS sharer
FROM (
    SELECT ev.site_id AS site_id, ev.event_id AS event_id, ev.event AS event, ev.ts AS ts,
           if(ev.user_id != '', ev.user_id, if(i.person_id != '', i.person_id, ev.anonymous_id)) AS person_id
    FROM clicktrail.events AS ev
    LEFT JOIN clicktrail.identities AS i ON i.site_id = ev.site_id AND i.anonymous_id = ev.anonymous_id
) AS e
ASOF LEFT JOIN clicktrail.touch_channels AS t ON t.site_id = e.site_id AND t.person_id = e.person_id AND t.ts <= e.ts;
