-- Attribution (归因): which channels and sharers brought the conversions, under five models.
--
-- A conversion is every event of a name (registration, form_submit, download, ...) or, as
-- 'lead_stage:<stage>', every lead_stage event of that stage. Its path is its person's touches at or
-- before it within 90 days, oldest first. Credit over a path of n touches: first_touch and last_touch
-- give 1 to that end; linear 1/n each; u_shaped 40% to each end and 20% shared by the ones between
-- (one touch 100%, two 50/50); time_decay 2^(-age / 7 days), normalized to sum 1. A conversion
-- without a touch credits '(direct)' (by sharer: '(none)') with 1.

-- Internal: one row per (conversion, touch) with that touch's credit.
CREATE OR REPLACE VIEW clicktrail.attribution_credits AS
WITH
    splitByChar(':', {conversion:String}) AS wanted,
    conversions AS (
        SELECT event_id AS conversion_id, ts, site_id, clicktrail_person(site_id, anonymous_id, user_id) AS person_id
        FROM clicktrail.events
        WHERE site_id = {site:String} AND event = wanted[1]
          AND (length(wanted) = 1 OR JSONExtractString(props, 'stage') = wanted[2])
          AND toDate(ts) BETWEEN {date_from:Date} AND {date_to:Date}
          AND throwIf({model:String} NOT IN ('first_touch', 'last_touch', 'linear', 'u_shaped', 'time_decay'),
                      'model: must be one of first_touch, last_touch, linear, u_shaped, time_decay') = 0
    ),
    paths AS (
        SELECT c.conversion_id AS conversion_id, any(c.ts) AS ts,
               arraySort(x -> (x.1, x.4), groupArrayIf((t.ts, t.channel, t.sharer, t.event_id),
                   t.ts >= c.ts - INTERVAL 90 DAY AND t.ts <= c.ts)) AS path
        FROM conversions AS c
        LEFT JOIN (
            -- Only the touches a path can hold: those of the site in the lookback of the period's conversions.
            SELECT * FROM clicktrail.touch_channels
            WHERE site_id = {site:String}
              AND ts >= {date_from:Date} - INTERVAL 90 DAY AND ts < {date_to:Date} + INTERVAL 1 DAY
        ) AS t ON t.person_id = c.person_id
        GROUP BY conversion_id
    )
SELECT conversion_id, channel, sharer, credit
FROM (
    SELECT conversion_id, length(path) AS n,
           arrayMap(x -> pow(2, -dateDiff('millisecond', x.1, ts) / 604800000), path) AS decay,
           if(n = 0, [1.], arrayMap(k -> multiIf(
               {model:String} = 'first_touch', toFloat64(k = 1),
               {model:String} = 'last_touch', toFloat64(k = n),
               {model:String} = 'linear', 1 / n,
               {model:String} = 'u_shaped', multiIf(n = 1, 1, n = 2, 0.5, k = 1 OR k = n, 0.4, 0.2 / (n - 2)),
               decay[k] / arraySum(decay)), range(1, n + 1))) AS credits,
           if(n = 0, ['(direct)'], arrayMap(x -> x.2, path)) AS channels,
           if(n = 0, ['(none)'], arrayMap(x -> if(x.3 = '', '(none)', x.3), path)) AS sharers
    FROM paths
)
ARRAY JOIN channels AS channel, sharers AS sharer, credits AS credit;

-- attribution(site, conversion, model, date_from, date_to): credit by channel, over the conversions
-- whose UTC date lies in [date_from, date_to]; channels with no credit are left out.
CREATE OR REPLACE VIEW clicktrail.attribution AS
SELECT channel, sum(credit) AS conversions
FROM clicktrail.attribution_credits(site = {site:String}, conversion = {conversion:String}, model = {model:String},
                                    date_from = {date_from:Date}, date_to = {date_to:Date})
GROUP BY channel
HAVING conversions > 0;

-- attribution_by_sharer: the same by the sharer of each touch ('(none)' without one).
CREATE OR REPLACE VIEW clicktrail.attribution_by_sharer AS
SELECT sharer, sum(credit) AS conversions
FROM clicktrail.attribution_credits(site = {site:String}, conversion = {conversion:String}, model = {model:String},
                                    date_from = {date_from:Date}, date_to = {date_to:Date})
GROUP BY sharer
HAVING conversions > 0;
