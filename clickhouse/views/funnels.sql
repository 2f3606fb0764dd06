-- Funnels (转化漏斗): how many persons did given steps in order within a window, where they dropped off and how long
-- each step took, overall or by first-touch channel. Steps may name any event or prop, so these views read the
-- events of the steps' names (the sort key (site_id, day, event, ts) reads just those), resolving persons through
-- the identity map.
--
-- A step is an event name (`registration`), `<event>:<stage>` for a stage (`lead_stage:mql`), or an event with one
-- condition on a string prop (`download[file_name=whitepaper.pdf]`). A person reaches step k when they have events
-- e1, ..., ek of steps 1..k, each strictly later than the one before (so one event never fills two steps), e1 in
-- [date_from, date_to] and ek at most window_s after e1: ClickHouse's windowFunnel(window, 'strict_increase')
-- semantics (whose greedy pass can stop a step short when two of a person's step events share a millisecond; the
-- chains here cannot). The times of a person's steps are those of their first way through the funnel as far as they got: the
-- earliest e1 from which they reached their furthest step, then each step's first event after the one before.

-- Internal: funnel_persons(site, steps, window_s, date_from, date_to): one row per person who did step 1 in the
-- period, with `chain`, the times (ms) of the steps of their first way through as far as they got (its length is
-- their furthest step). Each event carries which steps it matches (step 1 only within the period); then, per
-- person and for each step-1 event, the steps are followed greedily (the first event of the next step that is
-- later and within the window: no later choice reaches further), and the first of the longest chains is kept.
CREATE OR REPLACE VIEW clicktrail.funnel_persons AS
WITH
    {steps:Array(String)} AS steps,
    length(steps) AS n,
    throwIf(n = 0, 'steps: give at least one step') AS no_steps,
    toInt64({window_s:UInt64}) * 1000 AS window_ms,
    toDateTime64({date_from:Date}, 3, 'UTC') AS period_start,
    toDateTime64({date_to:Date} + 1, 3, 'UTC') AS period_end,
    arrayMap(s -> match(s, '^[^\\[:]+\\[[^=\\]]+=.*\\]$'), steps) AS conditional,
    arrayMap((s, c) -> multiIf(c, extract(s, '^([^\\[]*)'), position(s, ':') > 0,
                               substring(s, 1, position(s, ':') - 1), s), steps, conditional) AS names,
    arrayMap((s, c) -> multiIf(c, extract(s, '^[^\\[]*\\[([^=\\]]*)='), position(s, ':') > 0, 'stage', ''),
             steps, conditional) AS prop_keys,
    arrayMap((s, c) -> multiIf(c, extract(s, '^[^\\[]*\\[[^=\\]]*=(.*)\\]$'), position(s, ':') > 0,
                               substring(s, position(s, ':') + 1), ''), steps, conditional) AS prop_values
SELECT person_id, arrayFirst(c -> length(c) = furthest, chains) AS chain
FROM (
    SELECT person_id, chains, arrayMax(arrayMap(c -> length(c), chains)) AS furthest
    FROM (
        SELECT person_id,
               arrayMap(i -> arrayFold(
                            (acc, e) -> if(length(acc) < n AND e.2[length(acc) + 1] AND e.1 > acc[-1]
                                           AND e.1 <= acc[1] + window_ms, arrayPushBack(acc, e.1), acc),
                            arraySlice(evs, i + 1), [evs[i].1]),
                        arrayFilter(i -> evs[i].2[1], arrayEnumerate(evs))) AS chains
        FROM (
            SELECT person_id, arraySort(groupArray((ms, matched))) AS evs
            FROM (
                SELECT clicktrail_person(site_id, anonymous_id, user_id) AS person_id,
                       toUnixTimestamp64Milli(ts) AS ms,
                       -- if() evaluates the props (JSON) only for the events of a step with a condition.
                       arrayMap(k -> if(event != names[k] OR (k = 1 AND ts >= period_end), 0,
                                        prop_keys[k] = '' OR (JSONType(props, prop_keys[k]) = 'String'
                                                              AND JSONExtractString(props, prop_keys[k])
                                                                  = prop_values[k])), range(1, n + 1)) AS matched
                FROM clicktrail.events
                -- The check of the steps is made where it cannot be skipped: in the set the events are looked up in.
                WHERE site_id = {site:String} AND event IN if(no_steps, [], names)
                  AND ts >= period_start AND ts < period_end + toIntervalMillisecond(window_ms)
            )
            WHERE has(matched, 1)
            GROUP BY person_id
        )
    )
    WHERE length(chains) > 0
);

-- Internal: funnel_steps(site, steps, window_s, date_from, date_to, by_channel): funnel's rows, per first-touch
-- channel with by_channel = 1 (every channel '' with 0), and over every channel (all_channels = 1, channel ''):
-- both groupings of one pass over the persons, so a page that shows both pays for the persons' chains once.
CREATE OR REPLACE VIEW clicktrail.funnel_steps AS
WITH {steps:Array(String)} AS steps
SELECT grouping(channel) AS all_channels, channel, step, steps[step] AS name,
       countIf(length(chain) >= step) AS persons,
       countIf(length(chain) >= greatest(step - 1, 1)) AS previous,
       count() AS entered,
       if(previous = 0, 0., persons / previous) AS conversion_from_previous,
       if(entered = 0, 0., persons / entered) AS conversion_from_first,
       if(step = 1 OR persons = 0, 0.,
          quantileExactInclusiveIf(0.5)((chain[step] - chain[step - 1]) / 1000, length(chain) >= step))
           AS median_s_from_previous
FROM (
    SELECT p.chain AS chain, if({by_channel:UInt8}, if(f.channel = '', '(direct)', f.channel), '') AS channel
    FROM clicktrail.funnel_persons(site = {site:String}, steps = {steps:Array(String)}, window_s = {window_s:UInt64},
                                   date_from = {date_from:Date}, date_to = {date_to:Date}) AS p
    LEFT JOIN (
        -- Read only when asked for: without by_channel the filter names no site ('' is none), so the key reads
        -- no touch. (A constant false filter is not pushed down at all: every site's first touches were worked
        -- out, then dropped.)
        SELECT person_id, channel FROM clicktrail.first_touch_channels
        WHERE site_id = if({by_channel:UInt8} = 1, {site:String}, '')
    ) AS f ON f.person_id = p.person_id
)
ARRAY JOIN range(1, length(steps) + 1) AS step
GROUP BY GROUPING SETS ((channel, step), (step));

-- funnel(site, steps, window_s, date_from, date_to): one row per step, for the persons who did step 1 in
-- [date_from, date_to] (UTC days); no rows when nobody did. The columns are described in clickhouse/README.md.
CREATE OR REPLACE VIEW clicktrail.funnel AS
SELECT step, name, persons, conversion_from_previous, conversion_from_first, median_s_from_previous
FROM clicktrail.funnel_steps(site = {site:String}, steps = {steps:Array(String)}, window_s = {window_s:UInt64},
                             date_from = {date_from:Date}, date_to = {date_to:Date}, by_channel = 0)
WHERE all_channels
ORDER BY step;

-- funnel_by_channel(site, steps, window_s, date_from, date_to): the same per first-touch channel (第一来源,
-- '(direct)' without a touch), for every channel with a person at step 1.
CREATE OR REPLACE VIEW clicktrail.funnel_by_channel AS
SELECT channel, step, name, persons, conversion_from_previous, conversion_from_first, median_s_from_previous
FROM clicktrail.funnel_steps(site = {site:String}, steps = {steps:Array(String)}, window_s = {window_s:UInt64},
                             date_from = {date_from:Date}, date_to = {date_to:Date}, by_channel = 1)
WHERE NOT all_channels
ORDER BY channel, step;

-- funnel_split(site, steps, window_s, date_from, date_to): funnel's rows (all_channels = 1, channel '') and
-- funnel_by_channel's (all_channels = 0) from one pass: what a page showing both asks for, at the cost of one.
CREATE OR REPLACE VIEW clicktrail.funnel_split AS
SELECT all_channels, channel, step, name, persons, conversion_from_previous, conversion_from_first,
       median_s_from_previous
FROM clicktrail.funnel_steps(site = {site:String}, steps = {steps:Array(String)}, window_s = {window_s:UInt64},
                             date_from = {date_from:Date}, date_to = {date_to:Date}, by_channel = 1)
ORDER BY all_channels DESC, channel, step;
