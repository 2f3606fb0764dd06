// Attribution: who gets the credit for a conversion in the range, by channel and by sharer, under a model.
import { bars, chart } from '../charts.js'
import { decimal } from '../format.js'
import { t } from '../i18n.js'
import { empty_state, h, section, select } from '../ui.js'
import { table } from '../table.js'

// The conversions a marketer asks about; any event name works in the view, these are the ones the SDKs send.
const CONVERSIONS = ['registration', 'form_submit', 'download',
  ...['mql', 'sal', 'sql', 'opportunity', 'won'].map((stage) => `lead_stage:${stage}`)]
const MODELS = ['first_touch', 'last_touch', 'linear', 'u_shaped', 'time_decay']

export default async function attribution(ctx) {
  const conversion = ctx.state.conversion ?? CONVERSIONS[0]
  const model = ctx.state.model ?? MODELS[0]
  ctx.controls.append(
    h('label', {}, t('conversion'), select('conversion', CONVERSIONS.map((c) => [c, t(c)]), conversion,
      (c) => { ctx.state.conversion = c; ctx.rerender() })),
    h('label', {}, t('model'), select('model', MODELS.map((m) => [m, t(m)]), model,
      (m) => { ctx.state.model = m; ctx.rerender() })))
  const params = { site: ctx.site, conversion, model, date_from: ctx.from, date_to: ctx.to }
  const args = `site = {site:String}, conversion = {conversion:String}, model = {model:String},
    date_from = {date_from:Date}, date_to = {date_to:Date}`
  const [channels, sharers] = await Promise.all([
    ctx.query(`SELECT channel, conversions FROM clicktrail.attribution(${args})
      ORDER BY conversions DESC, channel`, params),
    ctx.query(`SELECT sharer, conversions FROM clicktrail.attribution_by_sharer(${args})
      ORDER BY conversions DESC, sharer`, params),
  ])
  if (!channels.length) {
    ctx.body.replaceChildren(empty_state(t('no_conversions'), t('no_conversions_help')))
    return 'empty'
  }
  const by_channel = section(t('by_channel'))
  const by_sharer = section(t('by_sharer'))
  ctx.body.replaceChildren(h('div', { class: 'columns' }, by_channel, by_sharer))
  const credit = (v) => decimal(v)
  chart(by_channel, 'attribution', bars(channels.map((r) => [r.channel, r.conversions]), { horizontal: true, format: credit }))
  by_channel.append(table('attribution', [
    { col: 'channel', label: t('channel') },
    { col: 'conversions', label: t('conversions'), format: credit },
  ], channels))
  chart(by_sharer, 'attribution_by_sharer', bars(sharers.map((r) => [r.sharer, r.conversions]), { horizontal: true, format: credit }))
  by_sharer.append(table('attribution_by_sharer', [
    { col: 'sharer', label: t('sharer') },
    { col: 'conversions', label: t('conversions'), format: credit },
  ], sharers))
}
