-- What marketing returns (渠道ROI, 活动影响): channel_roi and stream_influence, over channel_costs (migration 0012),
-- lead_persons and lead_stage_persons (views/lifecycle.sql), live_view_persons (views/live.sql) and
-- first_touch_channels (views/channels.sql).

-- channel_roi(site, date_from, date_to): per first-touch channel ('(direct)' without a touch), over the UTC days
-- [date_from, date_to]: its cost, its net-new leads (persons whose first lead_stage or first form_submit, whichever
-- came first, lies in the period), cost per lead, the persons who reached opportunity in the period (their first
-- lead_stage of opportunity or later), the amounts of the won deals in the period and (won_revenue - cost) / cost.
-- One row per channel with a cost, a new lead, an opportunity or a deal won in the period. channel_costs is read
-- FINAL: a re-imported day counts once, with its last cost.
CREATE OR REPLACE VIEW clicktrail.channel_roi AS
SELECT channel, sum(c) AS cost, sum(n) AS new_leads, if(new_leads = 0, 0., cost / new_leads) AS cpl,
       sum(o) AS opportunities, sum(r) AS won_revenue, if(cost = 0, 0., (won_revenue - cost) / cost) AS roi
FROM (
    SELECT channel, cost AS c, 0 AS n, 0 AS o, 0. AS r
    FROM clicktrail.channel_costs FINAL
    WHERE site_id = {site:String} AND day BETWEEN {date_from:Date} AND {date_to:Date}
    UNION ALL
    SELECT if(f.channel = '', '(direct)', f.channel), 0, p.n, p.o, p.r
    FROM (
        SELECT person_id, toDate(lead_at) BETWEEN {date_from:Date} AND {date_to:Date} AS n,
               ifNull(toDate(reached[5]) BETWEEN {date_from:Date} AND {date_to:Date}, 0) AS o, 0. AS r, 0 AS won
        FROM clicktrail.lead_persons
        WHERE site_id = {site:String}
        UNION ALL
        SELECT person_id, 0, 0, amount, 1
        FROM clicktrail.lead_stage_persons
        WHERE site_id = {site:String} AND stage = 'won' AND toDate(ts) BETWEEN {date_from:Date} AND {date_to:Date}
    ) AS p
    LEFT JOIN (SELECT person_id, channel FROM clicktrail.first_touch_channels WHERE site_id = {site:String}) AS f
        ON f.person_id = p.person_id
    WHERE p.n OR p.o OR p.won
)
GROUP BY channel
ORDER BY channel;

-- stream_influence(site, stream, window_days): pipeline after a live event (活动后规定天数内新销售机会). Each viewer
-- of the stream (live or replay) is taken at t0, their first view of it, and put in a category by what they had
-- done before t0: 'customer' with a won deal, else 'existing_lead' with a lead_stage or a form_submit, else 'new'.
-- Per category: viewers, those with an opportunity (a lead_stage of opportunity, or won, which passed it) in
-- (t0, t0 + window_days], their share, and the amounts of their deals won in the same window. A row for each
-- category once the stream has a viewer.
CREATE OR REPLACE VIEW clicktrail.stream_influence AS
WITH
    viewers AS (
        SELECT v.person_id AS person_id, v.t0 AS t0,
               multiIf(l.first_won_at < v.t0, 'customer', l.lead_at < v.t0, 'existing_lead', 'new') AS category
        FROM (
            SELECT person_id, min(first_view_ts) AS t0
            FROM clicktrail.live_view_persons
            WHERE site_id = {site:String} AND stream_id = {stream:String} AND viewing
            GROUP BY person_id
        ) AS v
        LEFT JOIN (
            SELECT person_id, first_won_at, toNullable(lead_at) AS lead_at
            FROM clicktrail.lead_persons
            WHERE site_id = {site:String}
        ) AS l ON l.person_id = v.person_id
    ),
    outcomes AS (
        SELECT v.person_id AS person_id, 1 AS opportunity, sumIf(s.amount, s.stage = 'won') AS revenue
        FROM viewers AS v
        INNER JOIN (
            SELECT person_id, ts, stage, amount
            FROM clicktrail.lead_stage_persons
            WHERE site_id = {site:String} AND stage IN ('opportunity', 'won')
        ) AS s ON s.person_id = v.person_id
        WHERE s.ts > v.t0 AND s.ts <= v.t0 + toIntervalDay({window_days:UInt32})
        GROUP BY person_id
    )
SELECT category, viewers, opportunities, if(viewers = 0, 0., opportunities / viewers) AS opportunity_rate, won_revenue
FROM (
    SELECT category, countIf(category_of = category) AS viewers,
           countIf(category_of = category AND opportunity = 1) AS opportunities,
           sumIf(revenue, category_of = category) AS won_revenue
    FROM (
        SELECT v.category AS category_of, o.opportunity AS opportunity, o.revenue AS revenue
        FROM viewers AS v
        LEFT JOIN outcomes AS o ON o.person_id = v.person_id
    )
    ARRAY JOIN ['new', 'existing_lead', 'customer'] AS category
    GROUP BY category
)
ORDER BY indexOf(['new', 'existing_lead', 'customer'], category);
