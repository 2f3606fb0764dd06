// End-to-end harness of the dashboard: one real gateway process (sdk_js's harness starts it) with the analytics
// tests' seeded dataset sent through its ingest API, Debian's Chromium through playwright-core, and the views'
// answers read back over the ClickHouse HTTP interface with basic auth.
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Gateway, ROOT, python } from '../../sdk_js/test/harness.js'

export { launchChromium, rmSync, tempDir, until } from '../../sdk_js/test/harness.js'

export const DASHBOARD = fileURLToPath(new URL('..', import.meta.url))
export const SCREENSHOTS = join(DASHBOARD, 'test', 'screenshots')
export const VIEWPORT = { width: 1440, height: 900 }
export const PAGES = ['overview', 'live', 'attribution', 'funnels', 'lifecycle', 'content']

// Seed 1 of tests/analytics/generate.py sends traffic for site_a and site_b only: site_c stays empty.
export const SEED = 1
export const EMPTY_SITE = 'site_c'
export const USERS = {
  admin: { user: 'admin', password: 'admin-pw' },
  agency: { user: 'agency_a', password: 'agency-a-pw', sites: ['site_a'] }, // an analyst limited to one site
  viewer: { user: 'viewer', password: 'viewer-pw' }, // a read-only analyst of every site
  capped: { user: 'capped', password: 'capped-pw' }, // max_rows_to_read = 10: every page's query fails
}

// The generator's sites with their secret keys (its events go back weeks: more than a write key may back-date).
// `dataDir`: an existing gateway data directory to serve (bench.mjs on a benchmark's data); default: one in `dir`.
export class DashboardGateway extends Gateway {
  constructor(dir, { dataDir = 'data' } = {}) {
    super(dir, [])
    this.dataDir = dataDir
  }

  writeConfig() {
    mkdirSync(this.dir, { recursive: true })
    this.config = join(this.dir, 'clicktrail.toml')
    const sites = ['a', 'b', 'c'].map(
      (s) => `[[sites]]\nid = "site_${s}"\nwrite_key = "wk_${s}"\nsecret_key = "sk_${s}"\n`,
    )
    writeFileSync(
      this.config,
      `[server]
host = "127.0.0.1"
port = ${this.port}
clickhouse_port = ${this.clickhousePort}
ops_port = 0
data_dir = ${JSON.stringify(this.dataDir)}
segment_max_age_ms = 200
min_free_disk_bytes = ${32 * 1024 * 1024}

${sites.join('\n')}
[[users]]
name = "${USERS.admin.user}"
password = "${USERS.admin.password}"
readonly = false

[[users]]
name = "${USERS.agency.user}"
password = "${USERS.agency.password}"
sites = ${JSON.stringify(USERS.agency.sites)}

[[users]]
name = "${USERS.viewer.user}"
password = "${USERS.viewer.password}"
readonly = true

[[users]]
name = "${USERS.capped.user}"
password = "${USERS.capped.password}"
max_rows_to_read = 10
`,
    )
  }

  get dashboard() {
    return `http://127.0.0.1:${this.clickhousePort}/dashboard/`
  }

  // The seeded dataset sent through the ingest API and the cost importer (load_dataset.py); resolves once every
  // event is stored, with {sites, events}.
  async load(nowMs) {
    const script = join(DASHBOARD, 'test', 'load_dataset.py')
    const args = [script, '--config', this.config, '--seed', SEED, '--now-ms', nowMs]
    const proc = spawn(python(), args.map(String), {
      cwd: ROOT,
      env: { ...process.env, PYTHONPATH: ROOT },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    proc.stdout.on('data', (d) => (out += d))
    proc.stderr.on('data', (d) => (err += d))
    const code = await new Promise((resolve) => proc.on('exit', resolve))
    if (code !== 0) throw new Error(`load_dataset.py exited with ${code}:\n${err}\n${this.log().slice(-3000)}`)
    return JSON.parse(out)
  }

  // A view's answer as an analyst asks for it: POST SQL, {name:Type} parameters as param_<name>, as `who` (basic
  // auth), in the JSON format (the front end reads JSONEachRow: a slip in either's parsing shows as a difference).
  async rows(sql, params = {}, who = USERS.admin) {
    const url = new URL(`http://127.0.0.1:${this.clickhousePort}/`)
    url.searchParams.set('default_format', 'JSON')
    for (const [k, v] of Object.entries(params)) url.searchParams.set(`param_${k}`, paramText(v))
    const r = await fetch(url, {
      method: 'POST',
      body: sql,
      headers: { Authorization: 'Basic ' + Buffer.from(`${who.user}:${who.password}`).toString('base64') },
    })
    const text = await r.text()
    if (r.status != 200) throw new Error(`query failed (${r.status}): ${text}\n${sql}`)
    return JSON.parse(text).data
  }
}

// A query parameter in ClickHouse's text form: arrays as ['a','b'] literals with quotes and backslashes escaped.
function paramText(value) {
  if (!Array.isArray(value)) return String(value)
  return `[${value.map((v) => `'${String(v).replace(/[\\']/g, (c) => `\\${c}`)}'`).join(',')}]`
}

// A page logged in as `who` (null: at the login form) in a fresh context (cookies and localStorage of its own) at
// 1440x900, with the page's errors kept.
export async function openDashboard(browser, gw, who = USERS.admin) {
  const context = await browser.newContext({ viewport: VIEWPORT, acceptDownloads: true, locale: 'en-US' })
  const page = await context.newPage()
  const errors = []
  page.on('pageerror', (e) => errors.push(String(e)))
  await page.goto(gw.dashboard)
  if (who) await login(page, who)
  return { context, page, errors }
}

// Fills in and sends the login form; waits for the top bar unless `refused` is expected.
export async function login(page, who, { refused = false } = {}) {
  await page.fill('[data-control=user]', who.user)
  await page.fill('[data-control=password]', who.password)
  await page.click('[data-action=login]')
  if (!refused) await page.waitForSelector('[data-control=site]', { timeout: 15000 })
}

export async function setLang(page, lang) {
  const want = lang == 'zh' ? 'zh-CN' : 'en'
  if ((await page.getAttribute('html', 'lang')) != want) await page.click('[data-action=lang]')
  await page.waitForFunction((w) => document.documentElement.lang == w, want)
}

// Opens a page by its hash route and waits until it has settled: ready, empty or error (never loading).
export async function openPage(page, name, { timeout = 30000 } = {}) {
  await page.evaluate((n) => {
    location.hash = `#/${n}`
  }, name)
  return settled(page, name, { timeout })
}

export async function settled(page, name, { timeout = 30000 } = {}) {
  await page.waitForSelector(`main[data-page="${name}"]:not([data-state="loading"])`, { timeout })
  return page.getAttribute('main', 'data-state')
}

// Sets a control (a select, a date, a text input) as a user would; the page re-draws (data-state goes to loading
// at once), so settled() after it waits for the new drawing.
export async function choose(page, control, value) {
  const sel = `[data-control=${control}]`
  const tag = await page.$eval(sel, (e) => e.tagName.toLowerCase())
  if (tag == 'select') return page.selectOption(sel, String(value))
  await page.fill(sel, String(value))
  await page.$eval(sel, (e) => e.dispatchEvent(new Event('change', { bubbles: true })))
}

// Every number shown on the page: {metric: data-value}.
export async function metrics(page) {
  return page.$$eval('main [data-metric]', (els) =>
    Object.fromEntries(els.map((e) => [e.dataset.metric, e.dataset.value])),
  )
}

// A table's rows as shown: [{column: data-value}], in the page's order.
export async function table(page, name) {
  return page.$$eval(`table[data-table="${name}"] tr[data-row]`, (trs) =>
    trs.map((tr) =>
      Object.fromEntries([...tr.querySelectorAll('td[data-col]')].map((td) => [td.dataset.col, td.dataset.value])),
    ),
  )
}

// A chart's series as drawn: [{name, type, data}] from window.clicktrail.charts[name].getOption().
export async function series(page, name) {
  return page.evaluate((n) => {
    const chart = window.clicktrail?.charts?.[n]
    if (!chart) return null
    return chart.getOption().series.map((s) => ({ name: s.name, type: s.type, data: s.data }))
  }, name)
}

export async function screenshot(page, file) {
  mkdirSync(SCREENSHOTS, { recursive: true })
  await page.screenshot({ path: join(SCREENSHOTS, file), fullPage: false })
}

// The same value, shown and answered: numbers compared as numbers (floats within 1e-9 relative), NULL as the empty
// data-value the tables give it, the rest as text.
export function same(shown, answer) {
  if (answer === null) return shown === '' || shown === null
  const a = Number(shown)
  const b = Number(answer)
  if (shown !== '' && answer !== '' && typeof answer != 'boolean' && Number.isFinite(a) && Number.isFinite(b)) {
    return a == b || Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b))
  }
  return String(shown) == String(answer)
}
