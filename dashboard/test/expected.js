// What each page must show, as the views answer it: per page, an async function of (q, controls) -> {metrics,
// tables, charts, absent (the charts not drawn: their view has no row)}, where q(sql, params) reads a view over the
// ClickHouse HTTP interface as the page's user and controls are the page's control values (site, from, to, stream,
// conversion, model, steps, window, noshow).
// The queries select, filter and order view columns as dashboard/README.md says the page does; the views' own
// exactness is tested against plain Python in tests/test_analytics*.py.
import assert from 'node:assert/strict'
import { same } from './harness.js'

const DAY_MS = 86400000
const RANGE = 'site = {site:String}, date_from = {date_from:Date}, date_to = {date_to:Date}'
const STREAM = 'site_id = {site:String} AND stream_id = {stream:String}'

// A point's value, whatever shape ECharts keeps it in: a number, [x, y] or {name, value}.
const y = (point) => (Array.isArray(point) ? point[1] : typeof point == 'object' && point ? point.value : point)
const x = (point) => (Array.isArray(point) ? point[0] : point?.name)

function assertPoints(chart, drawn, want, { name = y } = {}) {
  assert.equal(drawn.length, want.length, `${chart}: ${drawn.length} points drawn, the view has ${want.length}`)
  want.forEach((w, i) => {
    const got = name(drawn[i])
    assert.ok(same(got, w), `${chart}: point ${i} is ${JSON.stringify(drawn[i])}, the view says ${w}`)
  })
}

function days(from, to) {
  const out = []
  for (let t = Date.parse(from); t <= Date.parse(to); t += DAY_MS) out.push(new Date(t).toISOString().slice(0, 10))
  return out
}

const utcMs = (text) => Date.parse(`${text.replace(' ', 'T')}Z`)

// The bars of one series drawn from a table's rows: the values of `col` in the table's order.
const barsOf = (chart, rows, col) => (series) => {
  assert.equal(series.length, 1, `${chart}: one series`)
  assertPoints(chart, series[0].data, rows.map((r) => r[col]))
}

export const EXPECTED = {
  async overview(q, c) {
    const range = { site: c.site, date_from: c.from, date_to: c.to }
    const n = days(c.from, c.to).length
    const before = (d, k) => new Date(Date.parse(d) - k * DAY_MS).toISOString().slice(0, 10)
    const previous = { site: c.site, date_from: before(c.from, n), date_to: before(c.from, 1) }
    const summary = `SELECT visitors, sessions, registrations, new_leads, bounce_rate
      FROM clicktrail.overview(${RANGE})`
    const [[now], [then], daily, channels, sharers] = await Promise.all([
      q(summary, range),
      q(summary, previous),
      q(`SELECT day, channel, sessions FROM clicktrail.overview_daily(${RANGE}) ORDER BY day, channel`, range),
      q(`SELECT channel, visitors, sessions, bounce_rate, registrations, new_leads
         FROM clicktrail.overview_channels(${RANGE})
         ORDER BY sessions DESC, channel LIMIT 10`, range),
      q(`SELECT sharer, conversions FROM clicktrail.attribution_by_sharer(site = {site:String},
           conversion = 'registration', model = 'first_touch', date_from = {date_from:Date}, date_to = {date_to:Date})
         WHERE sharer != '(none)' ORDER BY conversions DESC, sharer LIMIT 10`, range),
    ])
    const metrics = { ...now }
    for (const [k, v] of Object.entries(then)) metrics[`${k}_previous`] = v
    const names = [...new Set(daily.map((r) => r.channel))]
    const axis = days(c.from, c.to)
    return {
      metrics,
      tables: { top_channels: { rows: channels }, top_sharers: { rows: sharers } },
      charts: {
        daily(series) {
          assert.deepEqual(series.map((s) => s.name), names, 'daily: one series per channel')
          for (const s of series) {
            const want = axis.map((d) => daily.find((r) => r.day == d && r.channel == s.name)?.sessions ?? 0)
            assertPoints(`daily ${s.name}`, s.data, want)
          }
        },
        ...(sharers.length ? { top_sharers: barsOf('top_sharers', sharers, 'conversions') } : {}),
      },
      absent: sharers.length ? [] : ['top_sharers'],
    }
  },

  async live(q, c) {
    const site = { site: c.site }
    const streams = await q(`SELECT stream_id, viewers, live_viewers, replay_viewers, peak_concurrency, avg_watch_ms,
        completion_rate, interaction_rate, no_shows, no_show_replay_viewers
      FROM clicktrail.live_stream_stats WHERE site_id = {site:String} ORDER BY first_ts DESC, stream_id`, site)
    const stream = streams.find((s) => s.stream_id == c.stream)
    assert.ok(stream, `the stream picked (${c.stream}) is one of the site's: ${streams.map((s) => s.stream_id)}`)
    const p = { site: c.site, stream: c.stream }
    const [[chain], concurrency, retention, interactions, distribution, journey] = await Promise.all([
      q(`SELECT registrants, attendees, attendance_rate, completed, completed_rate FROM clicktrail.live_registrant_chain
         WHERE ${STREAM}`, p),
      q(`SELECT minute, viewers FROM clicktrail.live_concurrency WHERE ${STREAM} ORDER BY minute`, p),
      q(`SELECT mode, minute, share FROM clicktrail.live_retention WHERE ${STREAM} ORDER BY mode, minute`, p),
      q(`SELECT kind, interactions, interactors, interaction_rate FROM clicktrail.live_interactions WHERE ${STREAM}
         ORDER BY interactions DESC, kind`, p),
      q(`SELECT mode, bucket_min, persons FROM clicktrail.live_watch_distribution WHERE ${STREAM}
         ORDER BY mode, bucket_min`, p),
      q(`SELECT person_id, registered_at, registration_channel, first_touch_channel, attended, completed, no_show,
           live_watch_ms, replay_watch_ms, interactions, pages_after, downloads_after, forms_after
         FROM clicktrail.stream_journey WHERE ${STREAM} ${c.noshow ? 'AND no_show = 1' : ''}
         ORDER BY registered_at IS NULL, registered_at, person_id`, p),
    ])
    const { stream_id, ...stats } = stream
    // One series per mode with rows, live first (README.md); a chart whose view has no row is not drawn.
    const byMode = (rows) =>
      ['live', 'replay'].map((mode) => rows.filter((r) => r.mode == mode)).filter((r) => r.length)
    const charts = {
      concurrency: concurrency.length && ((series) => {
        assert.equal(series.length, 1)
        assertPoints('concurrency minutes', series[0].data, concurrency.map((r) => utcMs(r.minute)), { name: x })
        assertPoints('concurrency viewers', series[0].data, concurrency.map((r) => r.viewers))
      }),
      retention: retention.length && ((series) => {
        assert.equal(series.length, byMode(retention).length, 'retention: a series per mode')
        byMode(retention).forEach((rows, i) => {
          assertPoints(`retention ${rows[0].mode} minute`, series[i].data, rows.map((r) => r.minute), { name: x })
          assertPoints(`retention ${rows[0].mode} share`, series[i].data, rows.map((r) => r.share))
        })
      }),
      watch_time: distribution.length && ((series) => {
        assert.equal(series.length, byMode(distribution).length, 'watch_time: a series per mode')
        byMode(distribution).forEach((rows, i) => {
          const labels = rows.map((r) => `${r.bucket_min}–${+r.bucket_min + 5}`)
          assertPoints(`watch_time ${rows[0].mode} bucket`, series[i].data, labels, { name: x })
          assertPoints(`watch_time ${rows[0].mode} persons`, series[i].data, rows.map((r) => r.persons))
        })
      }),
      interactions: interactions.length && barsOf('interactions', interactions, 'interactions'),
    }
    return {
      metrics: { ...chain, ...stats },
      tables: { interactions: { rows: interactions }, registrants: { rows: journey } },
      charts: Object.fromEntries(Object.entries(charts).filter(([, check]) => check)),
      absent: Object.keys(charts).filter((chart) => !charts[chart]),
    }
  },

  async attribution(q, c) {
    const p = { site: c.site, conversion: c.conversion, model: c.model, date_from: c.from, date_to: c.to }
    const args = `site = {site:String}, conversion = {conversion:String}, model = {model:String},
      date_from = {date_from:Date}, date_to = {date_to:Date}`
    const [channels, sharers] = await Promise.all([
      q(`SELECT channel, conversions FROM clicktrail.attribution(${args}) ORDER BY conversions DESC, channel`, p),
      q(`SELECT sharer, conversions FROM clicktrail.attribution_by_sharer(${args})
         ORDER BY conversions DESC, sharer`, p),
    ])
    return {
      tables: { attribution: { rows: channels }, attribution_by_sharer: { rows: sharers } },
      charts: {
        attribution: barsOf('attribution', channels, 'conversions'),
        attribution_by_sharer: barsOf('attribution_by_sharer', sharers, 'conversions'),
      },
    }
  },

  async funnels(q, c) {
    const p = { site: c.site, steps: c.steps, window_s: +c.window * 86400, date_from: c.from, date_to: c.to }
    const args = `site = {site:String}, steps = {steps:Array(String)}, window_s = {window_s:UInt64},
      date_from = {date_from:Date}, date_to = {date_to:Date}`
    const [steps, byChannel] = await Promise.all([
      q(`SELECT step, name, persons, conversion_from_previous, conversion_from_first, median_s_from_previous
         FROM clicktrail.funnel(${args}) ORDER BY step`, p),
      q(`SELECT channel, step, name, persons, conversion_from_previous, conversion_from_first
         FROM clicktrail.funnel_by_channel(${args}) ORDER BY channel, step`, p),
    ])
    const channels = [...new Set(byChannel.map((r) => r.channel))]
    return {
      tables: { funnel: { rows: steps }, funnel_by_channel: { rows: byChannel } },
      charts: {
        funnel(series) {
          assert.equal(series.length, 1)
          assertPoints('funnel names', series[0].data, steps.map((r) => `${r.step}. ${r.name}`), { name: x })
          assertPoints('funnel persons', series[0].data, steps.map((r) => r.persons))
        },
        funnel_by_channel(series) {
          assert.deepEqual(series.map((s) => s.name), channels)
          for (const s of series) {
            const at = (st) => byChannel.find((r) => r.channel == s.name && r.step == st.step)
            const want = steps.map((st) => at(st)?.persons ?? 0)
            assertPoints(`funnel_by_channel ${s.name}`, s.data, want)
          }
        },
      },
    }
  },

  async lifecycle(q, c) {
    const range = { site: c.site, date_from: c.from, date_to: c.to }
    const [stages, recycling, roi, influence] = await Promise.all([
      q(`SELECT stage, persons, conversion_from_previous, reference_conversion, reference_rate,
           median_days_from_previous, lost FROM clicktrail.lifecycle_funnel(${RANGE})`, range),
      q(`SELECT from_stage, nurtured, returned, return_rate, median_days_to_return
         FROM clicktrail.lifecycle_recycling(${RANGE})`, range),
      q(`SELECT channel, cost, new_leads, cpl, opportunities, won_revenue, roi FROM clicktrail.channel_roi(${RANGE})
         ORDER BY new_leads DESC, cost DESC, channel`, range),
      q(`SELECT category, viewers, opportunities, opportunity_rate, won_revenue FROM clicktrail.stream_influence(
           site = {site:String}, stream = {stream:String}, window_days = {window_days:UInt32})`,
        { site: c.site, stream: c.stream, window_days: c.window }),
    ])
    const paid = roi.filter((r) => Number(r.cost) > 0)
    return {
      tables: {
        lifecycle: { rows: stages },
        recycling: { rows: recycling },
        roi: { rows: roi },
        influence: { rows: influence },
      },
      charts: {
        lifecycle(series) {
          assert.equal(series.length, 1)
          assertPoints('lifecycle', series[0].data, stages.map((r) => r.persons))
        },
        ...(paid.length ? { cpl: barsOf('cpl', paid, 'cpl') } : {}),
      },
      absent: paid.length ? [] : ['cpl'],
    }
  },

  async content(q, c) {
    const site = { site: c.site }
    const [pages, downloads, sharers] = await Promise.all([
      q(`SELECT url_path, views, readers, avg_engaged_ms, read_through_rate FROM clicktrail.content_engagement
         WHERE site_id = {site:String} ORDER BY read_through_rate DESC, views DESC, url_path`, site),
      q(`SELECT file_url, downloads, persons FROM clicktrail.downloads_by_file WHERE site_id = {site:String}
         ORDER BY downloads DESC, file_url`, site),
      q(`SELECT sharer, views, readers, avg_engaged_ms, registrations, leads FROM clicktrail.sharer_stats
         WHERE site_id = {site:String} ORDER BY leads DESC, registrations DESC, readers DESC, sharer`, site),
    ])
    return {
      tables: { pages: { rows: pages }, downloads: { rows: downloads }, sharers: { rows: sharers } },
      charts: {
        read_through: barsOf('read_through', pages.slice(0, 15), 'read_through_rate'),
        downloads: barsOf('downloads', downloads.slice(0, 15), 'downloads'),
      },
    }
  },
}

