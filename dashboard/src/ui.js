// Small DOM helpers shared by the pages, and the markup conventions the end-to-end tests read
// (data-metric/data-value, role=alert): see dashboard/README.md.
import { t } from './i18n.js'

/** h('div', {class: 'x', onclick: f}, child, 'text', [more]) → an element; null/false children are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value)
    else if (key in el) el[key] = value // a property: value, checked, type ... (an attribute sets only the default)
    else el.setAttribute(key, value === true ? '' : value)
  }
  el.append(...children.flat(Infinity).filter((c) => c != null && c !== false))
  return el
}

/** A card with a title: the unit every page is made of. */
export function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...children)
}

/** A figure: its label, and the value as shown with the view's raw value in data-value. */
export function metric(name, value, text, label, note) {
  return h('div', { class: 'metric' },
    h('span', { class: 'label' }, label),
    h('strong', { 'data-metric': name, 'data-value': value ?? '' }, text),
    note && h('span', { class: 'note' }, note))
}

/** What to do when there is nothing to show yet. */
export function empty_state(title, what_to_do) {
  return h('div', { class: 'empty' }, h('h2', {}, title), h('p', {}, what_to_do))
}

/** A failed query's message, as ClickHouse gave it. */
export function alert(message) {
  return h('div', { class: 'alert', role: 'alert' }, message)
}

/** A <select> of [value, label] options. */
export function select(control, options, value, onchange) {
  const el = h('select', { 'data-control': control, onchange: (e) => onchange(e.target.value) },
    options.map(([v, label]) => h('option', { value: v }, label)))
  el.value = value
  return el
}

export const nothing = () => h('p', { class: 'none' }, t('no_rows'))
