// Benchmark (not a test): how long each dashboard page takes in Debian's headless Chromium, from the navigation to
// the page (a hash route change, the app already loaded and logged in) until it reports data-state=ready, for one
// site and date range; the median of --runs runs per page. Between two runs of a page another page is opened, so
// each run asks the views again.
//
//   node bench.mjs --url http://127.0.0.1:8123/dashboard/ --user admin --password PW --site site_a \
//                  --from 2026-10-01 --to 2026-10-31 [--runs 3] [--pages overview,live]
//   node bench.mjs --data-dir /path/to/gateway/data ...   (starts a gateway on that data directory first: the
//                  config has site_a, site_b, site_c and the user admin/admin-pw; --url, --user, --password unused)
//
// Prints one line per page (its number of queries and the slowest three, by view, in ms) and a JSON line.
// Target (issue 15): every page within a second on the 10-million-event benchmark dataset.
import { parseArgs } from 'node:util'
import { resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import {
  DashboardGateway,
  PAGES,
  USERS,
  VIEWPORT,
  choose,
  launchChromium,
  login,
  rmSync,
  tempDir,
} from './test/harness.js'

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    user: { type: 'string', default: USERS.admin.user },
    password: { type: 'string', default: USERS.admin.password },
    'data-dir': { type: 'string' },
    site: { type: 'string', default: 'site_a' },
    from: { type: 'string' },
    to: { type: 'string' },
    runs: { type: 'string', default: '3' },
    pages: { type: 'string', default: PAGES.join(',') },
    timeout: { type: 'string', default: '60000' },
  },
})
if (!args.url && !args['data-dir']) {
  console.error('give --url (a running gateway\'s /dashboard/) or --data-dir (a gateway data directory)')
  process.exit(2)
}
const runs = +args.runs
const pages = args.pages.split(',')

let gw, dir
let who = { user: args.user, password: args.password }
let url = args.url
if (args['data-dir']) {
  dir = tempDir('clicktrail-dashboard-bench-')
  gw = await new DashboardGateway(dir, { dataDir: resolve(args['data-dir']) }).configure()
  await gw.start()
  url = gw.dashboard
  who = USERS.admin
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const browser = await launchChromium()
const results = {}
const range = {}
try {
  const context = await browser.newContext({ viewport: VIEWPORT })
  const page = await context.newPage()
  await page.goto(url)
  await login(page, who)
  await choose(page, 'site', args.site)
  if (args.from) await choose(page, 'from', args.from)
  if (args.to) await choose(page, 'to', args.to)
  for (const c of ['from', 'to']) range[c] = await page.inputValue(`[data-control=${c}]`)
  // The page's queries (POSTs to the ClickHouse interface) with their time from request to the answer's end, named
  // by the first view they read: which view a slow page waits for.
  let queries = []
  page.on('requestfinished', (request) => {
    if (request.method() != 'POST' || new URL(request.url()).pathname != '/') return
    const view = /FROM\s+clicktrail\.(\w+)/i.exec(request.postData() ?? '')?.[1] ?? '?'
    queries.push({ view, ms: Math.round(request.timing().responseEnd) })
  })
  const open = async (name) => {
    queries = []
    const started = performance.now()
    await page.evaluate((n) => {
      location.hash = `#/${n}`
    }, name)
    await page.waitForSelector(`main[data-page="${name}"]:not([data-state="loading"])`, { timeout: +args.timeout })
    return { ms: performance.now() - started, state: await page.getAttribute('main', 'data-state'), queries }
  }
  for (const name of pages) {
    const opened = []
    for (let i = 0; i < runs; i++) {
      await open(PAGES.find((other) => other != name)) // elsewhere first (settled): a real navigation
      opened.push(await open(name))
    }
    const times = opened.map((o) => o.ms)
    const middle = opened.find((o) => o.ms == median(times))
    const slowest = [...middle.queries].sort((a, b) => b.ms - a.ms).slice(0, 3)
    results[name] = { median_ms: Math.round(median(times)), runs_ms: times.map(Math.round), state: middle.state,
      queries: middle.queries.length, slowest }
    const flag = middle.state != 'ready' ? `  (${middle.state})` : median(times) > 1000 ? '  > 1 s' : ''
    const { median_ms, runs_ms } = results[name]
    const views = slowest.map((q) => `${q.view} ${q.ms}`).join(', ')
    console.log(`${name.padEnd(12)} ${String(median_ms).padStart(7)} ms   runs ${runs_ms.join(', ')}${flag}` +
      `   ${middle.queries.length} queries, slowest: ${views}`)
  }
  await context.close()
} finally {
  await browser.close()
  if (gw) await gw.stop()
  if (dir) rmSync(dir, { recursive: true, force: true })
}
console.log(JSON.stringify({ site: args.site, ...range, runs, pages: results }))
