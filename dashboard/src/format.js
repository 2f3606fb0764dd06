// Numbers as a marketer reads them, in the current language's conventions. Everything goes through Number()
// first: ClickHouse may quote 64-bit integers in JSON (output_format_json_quote_64bit_integers).
import { lang } from './i18n.js'

const locale = () => (lang() === 'zh' ? 'zh-CN' : 'en')

export function int(value) {
  return new Intl.NumberFormat(locale(), { maximumFractionDigits: 0 }).format(Number(value))
}

export function decimal(value, digits = 2) {
  return new Intl.NumberFormat(locale(), { maximumFractionDigits: digits }).format(Number(value))
}

/** A ratio from a view (0.123) as a percentage (12.3%). */
export function pct(value) {
  return new Intl.NumberFormat(locale(), { style: 'percent', maximumFractionDigits: 1 }).format(Number(value))
}

export function money(value) {
  return new Intl.NumberFormat(locale(), { minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(Number(value))
}

const UNITS = {
  en: { d: 'd ', h: 'h ', m: 'm ', s: 's', days: ' d', pp: ' pp' },
  zh: { d: '天', h: '小时', m: '分', s: '秒', days: ' 天', pp: ' 个百分点' },
}
const unit = (name) => UNITS[lang()][name]

/** Milliseconds in its two largest units: 6d 16h, 1h 2m, 3m 4s or 5s (6天16小时, 1小时2分, 3分4秒, 5秒). */
export function duration_ms(value) {
  const s = Math.round(Number(value) / 1000)
  const [d, h, m] = [Math.floor(s / 86400), Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60)]
  if (d) return `${d}${unit('d')}${h}${unit('h')}`.trim()
  if (h) return `${h}${unit('h')}${m}${unit('m')}`.trim()
  if (m) return `${m}${unit('m')}${s % 60}${unit('s')}`
  return `${s}${unit('s')}`
}

export const duration_s = (value) => duration_ms(Number(value) * 1000)

export const days = (value) => `${decimal(value, 1)}${unit('days')}`

/** A view's DateTime64 text (UTC) shortened to the minute; NULL as a dash. */
export function time(value) {
  return value == null ? '–' : `${String(value).slice(0, 16)} UTC`
}

/** The change of `current` against `previous` (+12.5%), or a dash when there was nothing before. */
export function change(current, previous) {
  const [c, p] = [Number(current), Number(previous)]
  if (!p) return '–'
  const r = (c - p) / p
  return `${r > 0 ? '+' : ''}${pct(r)}`
}

/** The change of a ratio in percentage points (+2.1 pp): a relative change of a rate misleads. */
export function change_points(current, previous) {
  const d = (Number(current) - Number(previous)) * 100
  return `${d > 0 ? '+' : ''}${decimal(d, 1)}${unit('pp')}`
}
