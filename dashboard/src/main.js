// The app: the login form or the top bar (site, dates, language, logout) and the page of the route. A page is an
// async function of a context (site, dates, query, its controls and content elements); see render().
import * as api from './api.js'
import { DAY_MS, day_text } from './dates.js'
import { charts, dispose_charts } from './charts.js'
import { lang, set_lang, t } from './i18n.js'
import { PAGES, current, on_route } from './router.js'
import { alert, h, select } from './ui.js'
import attribution from './pages/attribution.js'
import content from './pages/content.js'
import funnels from './pages/funnels.js'
import lifecycle from './pages/lifecycle.js'
import live from './pages/live.js'
import overview from './pages/overview.js'

const pages = { overview, live, attribution, funnels, lifecycle, content }

// Views count UTC days; the default range is the last 30 of them, today included.
const state = { session: null, site: '', from: day_text(Date.now() - 29 * DAY_MS), to: day_text(Date.now()), pages: {} }
window.clicktrail = { charts, lang: lang(), page: null }

// A page's queries answer after the user may have moved on: a newer render makes the older one's results void.
const STALE = Symbol('stale')
let generation = 0
let leave = []

/** Stops what the page shown left running (the live page's refresh) and forgets its charts. */
function leave_page() {
  leave.forEach((f) => f())
  leave = []
  dispose_charts()
}

function show_login(message) {
  state.session = null
  leave_page()
  window.clicktrail.page = 'login'
  const user = h('input', { 'data-control': 'user', name: 'user', autocomplete: 'username', required: true })
  const password = h('input', { 'data-control': 'password', name: 'password', type: 'password',
    autocomplete: 'current-password', required: true })
  const refusal = h('div')
  const form = h('form', { class: 'login card', onsubmit: async (e) => {
    e.preventDefault()
    refusal.replaceChildren()
    try {
      state.session = await api.login(user.value, password.value)
      show_app()
    } catch (err) {
      refusal.replaceChildren(alert(err.message))
    }
  } },
  h('h1', {}, 'Clicktrail'),
  h('label', {}, t('user'), user),
  h('label', {}, t('password'), password),
  h('button', { type: 'submit', 'data-action': 'login' }, t('login')),
  lang_button(() => show_login()),
  refusal)
  document.body.replaceChildren(h('main', { 'data-page': 'login', 'data-state': 'ready' }, form))
  if (message) refusal.append(alert(message))
}

function lang_button(redraw) {
  return h('button', { type: 'button', class: 'lang', 'data-action': 'lang', onclick: () => {
    set_lang(lang() === 'en' ? 'zh' : 'en')
    window.clicktrail.lang = lang()
    redraw()
  } }, t('other_lang'))
}

function top_bar() {
  const date = (name) => h('input', { type: 'date', 'data-control': name, value: state[name], required: true,
    onchange: (e) => {
      if (!e.target.value) return
      state[name] = e.target.value
      render()
    } })
  return h('header', { class: 'top' },
    h('strong', { class: 'brand' }, 'Clicktrail'),
    h('nav', {}, PAGES.map((name) => h('a', { href: `#/${name}`, 'data-nav': name }, t(`page_${name}`)))),
    h('div', { class: 'global' },
      h('label', {}, t('site'), select('site', state.session.sites.map((s) => [s, s]), state.site, (site) => {
        state.site = site
        localStorage.setItem('clicktrail.site', site)
        render()
      })),
      h('label', {}, t('from'), date('from')),
      h('label', {}, t('to'), date('to')),
      lang_button(show_app),
      h('span', { class: 'user' }, state.session.user),
      h('button', { type: 'button', 'data-action': 'logout', onclick: async () => {
        await api.logout()
        show_login()
      } }, t('logout'))))
}

function show_app() {
  const sites = state.session.sites
  const remembered = localStorage.getItem('clicktrail.site')
  if (!sites.includes(state.site)) state.site = sites.includes(remembered) ? remembered : sites[0]
  document.body.replaceChildren(top_bar(), h('main'))
  if (!sites.length) {
    document.querySelector('main').replaceWith(h('main', { 'data-page': current(), 'data-state': 'empty' },
      h('div', { class: 'empty' }, h('h2', {}, t('no_sites')), h('p', {}, t('no_sites_help')))))
    return
  }
  render()
}

/** Draws the route's page: data-state loading → ready | empty | error (the contract of dashboard/README.md). */
async function render() {
  if (!state.session) return
  leave_page()
  const mine = ++generation
  const name = current()
  window.clicktrail.page = name
  document.querySelectorAll('[data-nav]').forEach((a) => a.classList.toggle('active', a.dataset.nav === name))
  const controls = h('div', { class: 'controls' })
  const body = h('div', { class: 'content' }, h('p', { class: 'loading' }, t('loading')))
  const main = h('main', { 'data-page': name, 'data-state': 'loading' }, h('h1', {}, t(`page_${name}`)), controls, body)
  document.querySelector('main').replaceWith(main)
  const ctx = {
    site: state.site, from: state.from, to: state.to, controls, body,
    state: (state.pages[name] ??= {}),
    rerender: render,
    on_leave: (f) => leave.push(f),
    query: async (sql, params) => {
      const rows = await api.query(sql, params)
      if (mine !== generation) throw STALE
      return rows
    },
  }
  try {
    const shown = await pages[name](ctx)
    main.dataset.state = shown === 'empty' ? 'empty' : 'ready'
  } catch (err) {
    if (err === STALE) return
    // A refused query (403) after the session expired: log in again, the rest is the query's own error.
    if (err.status === 403 && (await api.session().catch(() => undefined)) === null) {
      return show_login(t('session_expired'))
    }
    body.replaceChildren(alert(err.message))
    main.dataset.state = 'error'
  }
}

async function start() {
  on_route(render)
  try {
    state.session = await api.session()
  } catch (err) {
    return show_login(err.message)
  }
  state.session ? show_app() : show_login()
}

start()
