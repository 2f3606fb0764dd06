// Overview: the range's figures against the previous range of equal length, sessions by day and entry channel,
// the top channels and sharers.
import { bars, chart } from '../charts.js'
import { DAY_MS, day_ms, day_text } from '../dates.js'
import { change, change_points, int, pct, decimal } from '../format.js'
import { t } from '../i18n.js'
import { empty_state, h, metric, nothing, section } from '../ui.js'
import { table } from '../table.js'

const KPIS = [['visitors', int, change], ['sessions', int, change], ['registrations', int, change],
  ['new_leads', int, change], ['bounce_rate', pct, change_points]]

export default async function overview(ctx) {
  const { site, from, to } = ctx
  const length = day_ms(to) - day_ms(from) + DAY_MS
  const previous = { site, date_from: day_text(day_ms(from) - length), date_to: day_text(day_ms(to) - length) }
  const range = { site, date_from: from, date_to: to }
  const args = 'site = {site:String}, date_from = {date_from:Date}, date_to = {date_to:Date}'
  const summary = `SELECT ${KPIS.map((k) => k[0]).join(', ')} FROM clicktrail.overview(${args})`
  const [[now], [before], daily, channels, sharers] = await Promise.all([
    ctx.query(summary, range),
    ctx.query(summary, previous),
    ctx.query(`SELECT day, channel, sessions FROM clicktrail.overview_daily(${args}) ORDER BY day, channel`, range),
    ctx.query(`SELECT channel, visitors, sessions, bounce_rate, registrations, new_leads
      FROM clicktrail.overview_channels(${args}) ORDER BY sessions DESC, channel LIMIT 10`, range),
    ctx.query(`SELECT sharer, conversions FROM clicktrail.attribution_by_sharer(${args},
      conversion = 'registration', model = 'first_touch') WHERE sharer != '(none)'
      ORDER BY conversions DESC, sharer LIMIT 10`, range),
  ])
  if (!Number(now.visitors) && !Number(now.sessions)) {
    ctx.body.replaceChildren(empty_state(t('no_events'), t('no_events_help')))
    return 'empty'
  }
  ctx.body.replaceChildren(
    h('div', { class: 'metrics' }, KPIS.map(([name, format, delta]) => metric(name, now[name], format(now[name]),
      t(name), [t('vs_previous'), ' ', h('span', { 'data-metric': `${name}_previous`, 'data-value': before[name] },
        format(before[name])), ` (${delta(now[name], before[name])})`]))),
  )
  const by_day = section(t('sessions_by_channel'))
  const top_channels = section(t('top_channels'))
  const top_sharers = section(t('top_sharers'))
  ctx.body.append(by_day, top_channels, top_sharers)
  stacked_days(by_day, from, to, daily)
  top_channels.append(table('top_channels', [
    { col: 'channel', label: t('channel') },
    { col: 'visitors', label: t('visitors'), format: int },
    { col: 'sessions', label: t('sessions'), format: int },
    { col: 'bounce_rate', label: t('bounce_rate'), format: pct },
    { col: 'registrations', label: t('registrations_last_touch'), format: (v) => decimal(v) },
    { col: 'new_leads', label: t('new_leads_first_touch'), format: int },
  ], channels))
  if (sharers.length) {
    chart(top_sharers, 'top_sharers', bars(sharers.map((r) => [r.sharer, r.conversions]), { horizontal: true }))
  }
  top_sharers.append(sharers.length ? table('top_sharers', [
    { col: 'sharer', label: t('sharer') },
    { col: 'conversions', label: t('registrations_credited'), format: (v) => decimal(v) },
  ], sharers) : nothing())
}

/** Sessions stacked by channel for every day of the range (days without sessions drawn as 0). */
function stacked_days(parent, from, to, rows) {
  const days = []
  for (let ms = day_ms(from); ms <= day_ms(to); ms += DAY_MS) days.push(day_text(ms))
  const channels = [...new Set(rows.map((r) => r.channel))]
  const cell = new Map(rows.map((r) => [`${r.day} ${r.channel}`, Number(r.sessions)]))
  chart(parent, 'daily', {
    legend: { type: 'scroll', top: 0 },
    xAxis: { type: 'category', data: days },
    yAxis: { type: 'value', minInterval: 1 },
    series: channels.map((channel) => ({
      name: channel, type: 'bar', stack: 'sessions', data: days.map((d) => cell.get(`${d} ${channel}`) ?? 0),
    })),
  })
}
