// Lifecycle and revenue: the range's lead cohort through Leads → MQL → SAL → SQL → Opportunity → Won beside the
// industry's reference conversions, leads sent back to nurture, each channel's cost per lead and ROI, and the new
// pipeline after a stream within a window.
import { bars, chart, funnel } from '../charts.js'
import { days, int, money, pct } from '../format.js'
import { t } from '../i18n.js'
import { empty_state, h, nothing, section, select } from '../ui.js'
import { table } from '../table.js'

// Small customers decide in 15–30 days, key accounts in 60–90.
const WINDOWS_DAYS = [15, 30, 60, 90]
const rate = (v) => (v == null ? '–' : pct(v))

export default async function lifecycle(ctx) {
  const { site } = ctx
  const range = { site, date_from: ctx.from, date_to: ctx.to }
  const window_days = ctx.state.window ?? 30
  // The stream's influence needs the stream list first; the range's views need nothing: all run at once.
  const chosen = ctx.query(`SELECT stream_id FROM clicktrail.live_stream_stats WHERE site_id = {site:String}
    ORDER BY first_ts DESC, stream_id`, { site }).then(async (streams) => {
    const stream = streams.find((s) => s.stream_id === ctx.state.stream)?.stream_id ?? streams[0]?.stream_id ?? ''
    const influence = stream ? await ctx.query(`SELECT category, viewers, opportunities, opportunity_rate, won_revenue
      FROM clicktrail.stream_influence(site = {site:String}, stream = {stream:String}, window_days = {window_days:UInt32})`,
    { site, stream, window_days }) : []
    return { streams, stream, influence }
  })
  const args = 'site = {site:String}, date_from = {date_from:Date}, date_to = {date_to:Date}'
  const [stages, recycling, roi, { streams, stream, influence }] = await Promise.all([
    ctx.query(`SELECT stage, persons, conversion_from_previous, reference_conversion, reference_rate,
        median_days_from_previous, lost FROM clicktrail.lifecycle_funnel(${args})`, range),
    ctx.query(`SELECT from_stage, nurtured, returned, return_rate, median_days_to_return
      FROM clicktrail.lifecycle_recycling(${args})`, range),
    ctx.query(`SELECT channel, cost, new_leads, cpl, opportunities, won_revenue, roi
      FROM clicktrail.channel_roi(${args}) ORDER BY new_leads DESC, cost DESC, channel`, range),
    chosen,
  ])
  if (!stages.length && !roi.length) {
    ctx.body.replaceChildren(empty_state(t('no_leads'), t('no_leads_help')))
    return 'empty'
  }
  const cohort = section(t('lead_funnel'))
  const recycled = section(t('recycling'))
  const channels = section(t('channel_roi'))
  const pipeline = section(t('stream_influence'))
  ctx.body.replaceChildren(cohort, h('div', { class: 'columns' }, recycled, channels), pipeline)

  if (stages.length) chart(cohort, 'lifecycle', funnel(stages.map((r) => [t(`stage_${r.stage}`), r.persons])))
  cohort.append(stages.length ? table('lifecycle', [
    { col: 'stage', label: t('stage'), format: (v) => t(`stage_${v}`) },
    { col: 'persons', label: t('persons'), format: int },
    { col: 'conversion_from_previous', label: t('conversion_from_previous'), format: pct },
    { col: 'reference_conversion', label: t('reference_conversion'), format: rate },
    { col: 'reference_rate', label: t('reference_rate'), format: rate },
    { col: 'median_days_from_previous', label: t('median_days_from_previous'), format: days },
    { col: 'lost', label: t('lost'), format: int },
  ], stages) : nothing())
  recycled.append(recycling.length ? table('recycling', [
    { col: 'from_stage', label: t('from_stage'), format: (v) => t(`stage_${v}`) },
    { col: 'nurtured', label: t('nurtured'), format: int },
    { col: 'returned', label: t('returned'), format: int },
    { col: 'return_rate', label: t('return_rate'), format: pct },
    { col: 'median_days_to_return', label: t('median_days_to_return'), format: days },
  ], recycling) : nothing())
  const paid = roi.filter((r) => Number(r.cost) > 0)
  if (paid.length) chart(channels, 'cpl', bars(paid.map((r) => [r.channel, r.cpl]), { horizontal: true, format: money }))
  channels.append(roi.length ? table('roi', [
    { col: 'channel', label: t('channel') },
    { col: 'cost', label: t('cost'), format: money },
    { col: 'new_leads', label: t('new_leads'), format: int },
    { col: 'cpl', label: t('cpl'), format: money },
    { col: 'opportunities', label: t('opportunities'), format: int },
    { col: 'won_revenue', label: t('won_revenue'), format: money },
    { col: 'roi', label: t('roi'), format: pct },
  ], roi) : nothing())

  pipeline.append(h('div', { class: 'controls' },
    stream && h('label', {}, t('stream'), select('stream', streams.map((s) => [s.stream_id, s.stream_id]), stream,
      (id) => { ctx.state.stream = id; ctx.rerender() })),
    h('label', {}, t('window'), select('window', WINDOWS_DAYS.map((d) => [d, t('days_n', d)]), window_days,
      (d) => { ctx.state.window = Number(d); ctx.rerender() }))),
  influence.length ? table('influence', [
    { col: 'category', label: t('category'), format: (v) => t(`category_${v}`) },
    { col: 'viewers', label: t('viewers'), format: int },
    { col: 'opportunities', label: t('opportunities'), format: int },
    { col: 'opportunity_rate', label: t('opportunity_rate'), format: pct },
    { col: 'won_revenue', label: t('won_revenue'), format: money },
  ], influence) : nothing())
}
