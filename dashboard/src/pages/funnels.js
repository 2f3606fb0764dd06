// Funnels: steps typed or picked from the event names in use, persons at each step, and the same split by the
// persons' first-touch channel. A step is an event name, `lead_stage:<stage>` or `<event>[<prop>=<value>]`.
import { chart, funnel } from '../charts.js'
import { duration_s, int, pct } from '../format.js'
import { t } from '../i18n.js'
import { empty_state, h, section, select } from '../ui.js'
import { table } from '../table.js'

const DEFAULT_STEPS = ['page_view', 'registration', 'live_join']
const WINDOWS_DAYS = [1, 7, 14, 30]
const parse = (text) => text.split(',').map((s) => s.trim()).filter(Boolean)

export default async function funnels(ctx) {
  const { site } = ctx
  const names = await ctx.query(`SELECT event FROM clicktrail.event_names WHERE site_id = {site:String}
    ORDER BY events DESC, event`, { site })
  if (!names.length) {
    ctx.body.replaceChildren(empty_state(t('no_events'), t('no_events_help')))
    return 'empty'
  }
  const in_use = names.map((r) => r.event)
  const steps = ctx.state.steps ?? DEFAULT_STEPS.filter((s) => in_use.includes(s))
  const window_days = ctx.state.window ?? 14
  const input = h('input', { 'data-control': 'steps', value: steps.join(', '), size: 48,
    onchange: (e) => { ctx.state.steps = parse(e.target.value); ctx.rerender() } })
  ctx.controls.append(
    h('label', {}, t('steps'), input),
    h('label', {}, t('window'), select('window', WINDOWS_DAYS.map((d) => [d, t('days_n', d)]), window_days,
      (d) => { ctx.state.window = Number(d); ctx.rerender() })),
    h('div', { class: 'chips' }, t('events_in_use'), in_use.map((name) => h('button', { type: 'button',
      class: 'chip', 'data-action': 'add-step', 'data-step': name,
      onclick: () => { ctx.state.steps = [...parse(input.value), name]; ctx.rerender() } }, name))))
  if (!steps.length) {
    ctx.body.replaceChildren(empty_state(t('no_steps'), t('no_steps_help')))
    return 'empty'
  }
  const params = { site, steps, window_s: window_days * 86400, date_from: ctx.from, date_to: ctx.to }
  const args = `site = {site:String}, steps = {steps:Array(String)}, window_s = {window_s:UInt64},
    date_from = {date_from:Date}, date_to = {date_to:Date}`
  // funnel's rows and funnel_by_channel's from one pass over the persons' chains (funnel_split), not two.
  const split_rows = await ctx.query(`SELECT all_channels, channel, step, name, persons, conversion_from_previous,
      conversion_from_first, median_s_from_previous
    FROM clicktrail.funnel_split(${args}) ORDER BY all_channels DESC, channel, step`, params)
  const rows = split_rows.filter((r) => Number(r.all_channels) === 1)
  const by_channel = split_rows.filter((r) => Number(r.all_channels) === 0)
  if (!rows.length) {
    ctx.body.replaceChildren(empty_state(t('no_funnel'), t('no_funnel_help')))
    return 'empty'
  }
  const overall = section(t('funnel'))
  const split = section(t('by_first_touch_channel'))
  ctx.body.replaceChildren(overall, split)
  chart(overall, 'funnel', funnel(rows.map((r) => [`${r.step}. ${r.name}`, r.persons])))
  overall.append(table('funnel', [
    { col: 'step', label: t('step'), format: int },
    { col: 'name', label: t('step_name') },
    { col: 'persons', label: t('persons'), format: int },
    { col: 'conversion_from_previous', label: t('conversion_from_previous'), format: pct },
    { col: 'conversion_from_first', label: t('conversion_from_first'), format: pct },
    { col: 'median_s_from_previous', label: t('median_from_previous'), format: duration_s },
  ], rows))
  const channels = [...new Set(by_channel.map((r) => r.channel))]
  chart(split, 'funnel_by_channel', {
    legend: { type: 'scroll', top: 0 },
    xAxis: { type: 'category', data: rows.map((r) => `${r.step}. ${r.name}`) },
    yAxis: { type: 'value', minInterval: 1 },
    series: channels.map((channel) => ({
      name: channel, type: 'bar',
      data: rows.map((s) => Number(by_channel.find((r) => r.channel === channel && Number(r.step) === Number(s.step))?.persons ?? 0)),
    })),
  })
  split.append(table('funnel_by_channel', [
    { col: 'channel', label: t('channel') },
    { col: 'step', label: t('step'), format: int },
    { col: 'name', label: t('step_name') },
    { col: 'persons', label: t('persons'), format: int },
    { col: 'conversion_from_previous', label: t('conversion_from_previous'), format: pct },
    { col: 'conversion_from_first', label: t('conversion_from_first'), format: pct },
  ], by_channel))
}
