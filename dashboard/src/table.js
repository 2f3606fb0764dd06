// Tables of a view's rows, with the CSV export marketers take to Excel (a BOM, or Excel reads UTF-8 Chinese as
// mojibake). The CSV holds the view's columns and raw values, as data-col and data-value do.
import { h } from './ui.js'
import { t } from './i18n.js'

/**
 * columns: [{col: view column, label, format: value → text}], rows: the view's rows.
 * Returns a wrapper with the table and its CSV button.
 */
export function table(name, columns, rows) {
  const el = h('table', { 'data-table': name },
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', {}, c.label)))),
    h('tbody', {}, rows.map((row) => h('tr', { 'data-row': true }, columns.map((c) => {
      const value = row[c.col]
      // Numbers align right, text left.
      const numeric = value != null && value !== '' && !Number.isNaN(Number(value))
      return h('td', { 'data-col': c.col, 'data-value': value ?? '', class: numeric ? 'num' : null },
        c.format && value != null ? c.format(value) : value ?? '–')
    })))))
  const button = h('button', { type: 'button', class: 'csv', 'data-action': 'csv', 'data-table': name,
    onclick: () => download(`${name}.csv`, csv(columns, rows)) }, t('csv'))
  return h('div', { class: 'table' }, button, h('div', { class: 'scroll' }, el))
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
