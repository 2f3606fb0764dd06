// Live streams: a stream's registrants → attendees → completed, its concurrency by minute (re-read every 5 s
// while the stream is live), retention, watch time, interactions and the registrant journey (no-shows for the
// replay push). Streams are all the site's, newest first: a webinar's replay is watched long after its range.
import { bars, chart } from '../charts.js'
import { utc_ms } from '../dates.js'
import { duration_ms, int, pct, time } from '../format.js'
import { t } from '../i18n.js'
import { empty_state, h, metric, nothing, section, select } from '../ui.js'
import { table } from '../table.js'

const REFRESH_MS = 5000
// A stream is live while live-mode heartbeats keep coming (the SDK sends one every 10 s of playing): its
// latest minute of concurrency is at most this old.
const LIVE_WITHIN_MS = 5 * 60000
const CHAIN = ['registrants', 'attendees', 'attendance_rate', 'completed', 'completed_rate']
const STATS = ['viewers', 'live_viewers', 'replay_viewers', 'peak_concurrency', 'avg_watch_ms', 'completion_rate',
  'interaction_rate', 'no_shows', 'no_show_replay_viewers']
const FORMATS = { attendance_rate: pct, completed_rate: pct, completion_rate: pct, interaction_rate: pct,
  avg_watch_ms: duration_ms }
const yes_no = (v) => t(Number(v) ? 'yes' : 'no')
// The registrant journey table: stream_journey's columns (the CSV for the replay push to no-shows).
const journey_columns = () => [
  { col: 'person_id', label: t('person') },
  { col: 'registered_at', label: t('registered_at'), format: time },
  { col: 'registration_channel', label: t('registration_channel') },
  { col: 'first_touch_channel', label: t('first_touch_channel') },
  { col: 'attended', label: t('attended'), format: yes_no },
  { col: 'completed', label: t('completed'), format: yes_no },
  { col: 'no_show', label: t('no_show'), format: yes_no },
  { col: 'live_watch_ms', label: t('live_watch'), format: duration_ms },
  { col: 'replay_watch_ms', label: t('replay_watch'), format: duration_ms },
  { col: 'interactions', label: t('interactions'), format: int },
  { col: 'pages_after', label: t('pages_after'), format: int },
  { col: 'downloads_after', label: t('downloads_after'), format: int },
  { col: 'forms_after', label: t('forms_after'), format: int },
]

const CONCURRENCY = `SELECT minute, viewers FROM clicktrail.live_concurrency
  WHERE site_id = {site:String} AND stream_id = {stream:String} ORDER BY minute`

export default async function live(ctx) {
  const { site } = ctx
  const streams = await ctx.query(`SELECT stream_id, ${STATS.join(', ')}, first_ts, last_ts
    FROM clicktrail.live_stream_stats WHERE site_id = {site:String} ORDER BY first_ts DESC, stream_id`, { site })
  if (!streams.length) {
    ctx.body.replaceChildren(empty_state(t('no_streams'), t('no_streams_help')))
    return 'empty'
  }
  const stream = streams.find((s) => s.stream_id === ctx.state.stream) ?? streams[0]
  ctx.state.stream = stream.stream_id
  const noshow = ctx.state.noshow ?? false
  ctx.controls.append(
    h('label', {}, t('stream'), select('stream', streams.map((s) => [s.stream_id, s.stream_id]), stream.stream_id,
      (id) => { ctx.state.stream = id; ctx.rerender() })),
    h('span', { class: 'note' }, `${time(stream.first_ts)} – ${time(stream.last_ts)}`))

  const params = { site, stream: stream.stream_id }
  const [[chain], concurrency, retention, interactions, distribution, audience] = await Promise.all([
    ctx.query(`SELECT ${CHAIN.join(', ')} FROM clicktrail.live_registrant_chain
      WHERE site_id = {site:String} AND stream_id = {stream:String}`, params),
    ctx.query(CONCURRENCY, params),
    ctx.query(`SELECT mode, minute, views, share FROM clicktrail.live_retention
      WHERE site_id = {site:String} AND stream_id = {stream:String} ORDER BY mode, minute`, params),
    ctx.query(`SELECT kind, interactions, interactors, interaction_rate FROM clicktrail.live_interactions
      WHERE site_id = {site:String} AND stream_id = {stream:String} ORDER BY interactions DESC, kind`, params),
    ctx.query(`SELECT mode, bucket_min, persons, share FROM clicktrail.live_watch_distribution
      WHERE site_id = {site:String} AND stream_id = {stream:String} ORDER BY mode, bucket_min`, params),
    ctx.query(`SELECT ${journey_columns().map((c) => c.col).join(', ')}
      FROM clicktrail.stream_journey WHERE site_id = {site:String} AND stream_id = {stream:String}
        AND (NOT {noshow:Bool} OR no_show = 1)
      ORDER BY registered_at IS NULL, registered_at, person_id`, { ...params, noshow }),
  ])

  // The chain's figures (registrants → attendees → completed) first, then the stream's others.
  const figures = [...CHAIN.map((name) => [name, chain[name]]), ...STATS.map((name) => [name, stream[name]])]
  const numbers = h('div', { class: 'metrics' }, figures.map(([name, value]) =>
    metric(name, value, (FORMATS[name] ?? int)(value), t(name))))
  const curve = section(t('concurrency'))
  const drop = section(t('retention'))
  const watch = section(t('watch_distribution'))
  const kinds = section(t('interactions_by_kind'))
  const journey = section(t('registrant_journey'))
  ctx.body.replaceChildren(numbers, curve, h('div', { class: 'columns' }, drop, watch), kinds, journey)

  // A chart is drawn only with rows to draw, and a mode's series only when the mode has rows.
  if (!concurrency.length) curve.append(nothing())
  else draw_concurrency(ctx, curve, concurrency, params)
  const modes = (rows) => ['live', 'replay'].filter((mode) => rows.some((r) => r.mode === mode))
  if (!retention.length) drop.append(nothing())
  else {
    chart(drop, 'retention', {
      legend: { top: 0 },
      tooltip: { trigger: 'axis', valueFormatter: pct },
      xAxis: { type: 'value', name: t('minute'), minInterval: 1 },
      yAxis: { type: 'value', max: 1, axisLabel: { formatter: pct } },
      series: modes(retention).map((mode) => ({
        name: t(mode), type: 'line', step: 'end', showSymbol: false,
        data: retention.filter((r) => r.mode === mode).map((r) => [Number(r.minute), Number(r.share)]),
      })),
    })
  }
  // Buckets of 5 minutes (bucket_min is the lower bound), labelled 0–5, 5–10, ...
  const bucket_label = (m) => `${m}–${Number(m) + 5}`
  if (!distribution.length) watch.append(nothing())
  else {
    const buckets = [...new Set(distribution.map((r) => Number(r.bucket_min)))].sort((a, b) => a - b)
    chart(watch, 'watch_time', {
      legend: { top: 0 },
      xAxis: { type: 'category', name: t('minutes_watched'), data: buckets.map(bucket_label) },
      yAxis: { type: 'value', minInterval: 1 },
      series: modes(distribution).map((mode) => ({
        name: t(mode), type: 'bar',
        data: distribution.filter((r) => r.mode === mode).map((r) => [bucket_label(r.bucket_min), Number(r.persons)]),
      })),
    })
  }
  if (interactions.length) chart(kinds, 'interactions', bars(interactions.map((r) => [r.kind, r.interactions])))
  kinds.append(interactions.length ? table('interactions', [
    { col: 'kind', label: t('kind') },
    { col: 'interactions', label: t('interactions'), format: int },
    { col: 'interactors', label: t('interactors'), format: int },
    { col: 'interaction_rate', label: t('interaction_rate'), format: pct },
  ], interactions) : nothing())
  journey.append(
    h('label', { class: 'check' }, h('input', { type: 'checkbox', 'data-control': 'noshow', checked: noshow,
      onchange: (e) => { ctx.state.noshow = e.target.checked; ctx.rerender() } }), t('noshow_only')),
    table('registrants', journey_columns(), audience))
}

/** The concurrency curve, re-read every 5 s while the stream is live; a badge says whether it is. */
function draw_concurrency(ctx, parent, rows, params) {
  const curve = chart(parent, 'concurrency', concurrency_option(rows))
  const badge = h('span', { class: 'badge' }, t('ended'))
  ctx.controls.append(badge)
  if (!is_live(rows)) return
  badge.className = 'badge live'
  badge.textContent = t('live_now')
  // Only the curve moves during a stream; the rest is re-read when the page is drawn again.
  const timer = setInterval(async () => {
    const now = await ctx.query(CONCURRENCY, params).catch(() => null)
    if (!now) return
    curve.setOption(concurrency_option(now))
    if (!is_live(now)) {
      clearInterval(timer)
      badge.className = 'badge'
      badge.textContent = t('ended')
    }
  }, REFRESH_MS)
  ctx.on_leave(() => clearInterval(timer))
}

const is_live = (concurrency) => concurrency.length > 0 && Date.now() - utc_ms(concurrency.at(-1).minute) < LIVE_WITHIN_MS

function concurrency_option(rows) {
  return {
    xAxis: { type: 'time' },
    yAxis: { type: 'value', minInterval: 1 },
    series: [{ name: 'viewers', type: 'line', showSymbol: false, data: rows.map((r) => [utc_ms(r.minute), Number(r.viewers)]) }],
  }
}
