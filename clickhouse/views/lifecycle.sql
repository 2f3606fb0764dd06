-- The lead lifecycle (线索生命周期): Leads → MQL → SAL → SQL → Opportunity → Won, and recycling through nurture,
-- over the lead_stages rollup (migration 0011), form submissions (content_hits, migration 0006), the identity map
-- and first_touch_channels (views/channels.sql).

-- clicktrail_stage_rank(stage): a stage's place in the lifecycle, 1 (lead) to 6 (won); 0 for lost and nurture,
-- which leave it. A person reached a stage when they have a lead_stage of that rank or a later one, so a skipped
-- stage counts as passed, at the time of the later one.
CREATE OR REPLACE FUNCTION clicktrail_stage_rank AS (stage) ->
    indexOf(['lead', 'mql', 'sal', 'sql', 'opportunity', 'won'], stage);

-- Internal: every lead_stage event with its person and rank (lead_stages read FINAL: each event once).
CREATE OR REPLACE VIEW clicktrail.lead_stage_persons AS
SELECT site_id, clicktrail_person(site_id, anonymous_id, user_id) AS person_id, ts, event_id, stage,
       clicktrail_stage_rank(stage) AS rank, amount, reason
FROM clicktrail.lead_stages FINAL;

-- Internal: one row per person with a lead_stage or a form_submit (留资): when they became a lead (lead_at:
-- their first lead_stage or first form_submit, whichever came first), their first lead_stage of any stage
-- (entered_at, NULL without one), when they reached each stage of the lifecycle (reached[1] = entered_at,
-- reached[2] the first lead_stage of mql or later, ... reached[6] the first won; NULL: not reached), their latest
-- lead_stage by (ts, event_id) ('' without one), and their first won (NULL: none).
CREATE OR REPLACE VIEW clicktrail.lead_persons AS
SELECT site_id, person_id, min(ts) AS lead_at, minIfOrNull(ts, is_stage) AS entered_at,
       [entered_at, minIfOrNull(ts, rank >= 2), minIfOrNull(ts, rank >= 3), minIfOrNull(ts, rank >= 4),
        minIfOrNull(ts, rank >= 5), minIfOrNull(ts, rank >= 6)] AS reached,
       argMaxIf(stage, (ts, event_id), is_stage) AS latest_stage,
       minIfOrNull(ts, stage = 'won') AS first_won_at
FROM (
    SELECT site_id, person_id, ts, event_id, stage, rank, 1 AS is_stage FROM clicktrail.lead_stage_persons
    UNION ALL
    SELECT site_id, person_id, first_ts, '', '', 0, 0 FROM clicktrail.content_hit_persons WHERE event = 'form_submit'
)
GROUP BY site_id, person_id;

-- Internal: lifecycle_stages(site, date_from, date_to, by_channel): lifecycle_funnel's rows, per first-touch
-- channel with by_channel = 1 (every channel '' with 0). The cohort: persons whose first lead_stage lies in
-- [date_from, date_to]; each stage counts those of them who reached it by now. The industry reference beside a
-- stage is a conversion over a span (Leads→MQL 15%, MQL→SQL 50%, SQL→Opportunity 41%, Opportunity→Won 37%):
-- reference_from names the stage the span starts at, and reference_conversion is the cohort's own conversion
-- over it, since MQL→SQL spans SAL and so compares with no single step's conversion.
CREATE OR REPLACE VIEW clicktrail.lifecycle_stages AS
WITH
    ['lead', 'mql', 'sal', 'sql', 'opportunity', 'won'] AS stage_names,
    [0, 1, 0, 2, 4, 5] AS reference_from,
    [0., 0.15, 0., 0.5, 0.41, 0.37] AS reference_rates
SELECT channel, step, stage_names[step] AS stage,
       countIf(reached[step] IS NOT NULL) AS persons,
       countIf(reached[greatest(step - 1, 1)] IS NOT NULL) AS previous,
       if(previous = 0, 0., persons / previous) AS conversion_from_previous,
       if(reference_from[step] = 0, NULL, reference_rates[step]) AS reference_rate,
       countIf(reached[reference_from[step]] IS NOT NULL) AS reference_base,
       if(reference_from[step] = 0, NULL, if(reference_base = 0, 0., persons / reference_base)) AS reference_conversion,
       if(step = 1 OR persons = 0, 0.,
          quantileExactInclusiveIf(0.5)(
              (toUnixTimestamp64Milli(reached[step]) - toUnixTimestamp64Milli(reached[step - 1])) / 86400000,
              reached[step] IS NOT NULL)) AS median_days_from_previous,
       countIf(latest_stage = 'lost' AND furthest = step) AS lost
FROM (
    SELECT l.reached AS reached, l.latest_stage AS latest_stage, arrayCount(t -> t IS NOT NULL, l.reached) AS furthest,
           if({by_channel:UInt8}, if(f.channel = '', '(direct)', f.channel), '') AS channel
    FROM clicktrail.lead_persons AS l
    LEFT JOIN (
        -- Read only when asked for: without by_channel the filter names no site ('' is none), so the key reads
        -- no touch. (A constant false filter is not pushed down at all: every site's first touches were worked
        -- out, then dropped.)
        SELECT person_id, channel FROM clicktrail.first_touch_channels
        WHERE site_id = if({by_channel:UInt8} = 1, {site:String}, '')
    ) AS f ON f.person_id = l.person_id
    WHERE l.site_id = {site:String} AND l.entered_at IS NOT NULL
      AND toDate(l.entered_at) BETWEEN {date_from:Date} AND {date_to:Date}
)
ARRAY JOIN range(1, 7) AS step
GROUP BY channel, step;

-- lifecycle_funnel(site, date_from, date_to): one row per stage, Leads to Won, for the persons whose first
-- lead_stage lies in [date_from, date_to] (UTC days); no rows when there are none. The columns are described in
-- clickhouse/README.md.
CREATE OR REPLACE VIEW clicktrail.lifecycle_funnel AS
SELECT stage, persons, conversion_from_previous, reference_rate, reference_conversion, median_days_from_previous,
       lost
FROM clicktrail.lifecycle_stages(site = {site:String}, date_from = {date_from:Date}, date_to = {date_to:Date},
                                 by_channel = 0)
ORDER BY step;

-- lifecycle_by_channel(site, date_from, date_to): the same per first-touch channel (第一来源, '(direct)' without a
-- touch), for every channel with a person in the cohort.
CREATE OR REPLACE VIEW clicktrail.lifecycle_by_channel AS
SELECT channel, stage, persons, conversion_from_previous, reference_rate, reference_conversion,
       median_days_from_previous, lost
FROM clicktrail.lifecycle_stages(site = {site:String}, date_from = {date_from:Date}, date_to = {date_to:Date},
                                 by_channel = 1)
ORDER BY channel, step;

-- lifecycle_recycling(site, date_from, date_to): the persons sent back to marketing (nurture, 返回MA重新培育) in
-- [date_from, date_to], by the furthest stage they had reached before their first nurture in the period
-- (from_stage; 'lead' when none), and those of them with a lead_stage of mql or later after it (returned: they
-- came back as MQLs), with the median days until the first of those.
CREATE OR REPLACE VIEW clicktrail.lifecycle_recycling AS
WITH ['lead', 'mql', 'sal', 'sql', 'opportunity', 'won'] AS stage_names
SELECT stage_names[from_rank] AS from_stage, count() AS nurtured, countIf(returned_at IS NOT NULL) AS returned,
       returned / nurtured AS return_rate,
       if(returned = 0, 0., quantileExactInclusiveIf(0.5)(
           (toUnixTimestamp64Milli(returned_at) - toUnixTimestamp64Milli(nurtured_at)) / 86400000,
           returned_at IS NOT NULL)) AS median_days_to_return
FROM (
    SELECT s.person_id AS person_id, n.nurtured_at AS nurtured_at,
           greatest(1, maxIf(s.rank, s.ts < n.nurtured_at)) AS from_rank,
           minIfOrNull(s.ts, s.rank >= 2 AND s.ts > n.nurtured_at) AS returned_at
    FROM (
        SELECT person_id, min(ts) AS nurtured_at
        FROM clicktrail.lead_stage_persons
        WHERE site_id = {site:String} AND stage = 'nurture' AND toDate(ts) BETWEEN {date_from:Date} AND {date_to:Date}
        GROUP BY person_id
    ) AS n
    INNER JOIN (SELECT person_id, ts, rank FROM clicktrail.lead_stage_persons WHERE site_id = {site:String}) AS s
        ON s.person_id = n.person_id
    GROUP BY person_id, nurtured_at
)
GROUP BY from_rank
ORDER BY from_rank;
