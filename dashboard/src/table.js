// Tables of a view's rows, with the CSV export marketers take to Excel (a BOM, or Excel reads UTF-8 Chinese as
// mojibake). The CSV holds the view's columns and raw values, as data-col and data-value do.
import { h } from './ui.js'
import { t } from './i18n.js'

/** Rows drawn at first: a stream's registrants run to thousands, whose cells would take the page a second to lay out. */
export const FIRST_ROWS = 200

/**
 * columns: [{col: view column, label, format: value → text}], rows: the view's rows.
 * Returns a wrapper with the table (its first FIRST_ROWS rows, and a button for the rest) and its CSV button,
 * whose file holds every row.
 */
export function table(name, columns, rows) {
  const tr = (row) => h('tr', { 'data-row': true }, columns.map((c) => {
    const value = row[c.col]
    // Numbers align right, text left.
    const numeric = value != null && value !== '' && !Number.isNaN(Number(value))
    return h('td', { 'data-col': c.col, 'data-value': value ?? '', class: numeric ? 'num' : null },
      c.format && value != null ? c.format(value) : value ?? '–')
  }))
  const body = h('tbody', {}, rows.slice(0, FIRST_ROWS).map(tr))
  const el = h('table', { 'data-table': name, 'data-rows': rows.length },
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', {}, c.label)))), body)
  const button = h('button', { type: 'button', class: 'csv', 'data-action': 'csv', 'data-table': name,
    onclick: () => download(`${name}.csv`, csv(columns, rows)) }, t('csv'))
  const more = rows.length > FIRST_ROWS && h('button', {
    type: 'button', class: 'more', 'data-action': 'more', 'data-table': name,
    onclick: () => { body.append(...rows.slice(FIRST_ROWS).map(tr)); more.remove() },
  }, t('show_all', rows.length))
  return h('div', { class: 'table' }, button, h('div', { class: 'scroll' }, el), more)
}

function csv(columns, rows) {
  const cell = (v) => {
    const text = String(v ?? '')
    return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text
  }
  const lines = [columns.map((c) => c.col), ...rows.map((row) => columns.map((c) => row[c.col]))]
  return `\uFEFF${lines.map((line) => line.map(cell).join(',')).join('\r\n')}\r\n`
}

function download(filename, text) {
  const url = URL.createObjectURL(new Blob([text], { type: 'text/csv;charset=utf-8' }))
  h('a', { href: url, download: filename }).click()
  setTimeout(() => URL.revokeObjectURL(url), 1000)
}
