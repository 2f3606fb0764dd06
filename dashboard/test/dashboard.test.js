// End to end: the built dashboard (dist/) served by a real gateway process on its ClickHouse port, over the analytics
// tests' seeded dataset sent through the ingest API, in Debian's headless Chromium. Each figure, table cell and
// chart point shown is held against the views' answers, which the test reads itself over the ClickHouse HTTP
// interface with basic auth (the views are held against plain Python in tests/test_analytics*.py).
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  DashboardGateway,
  EMPTY_SITE,
  PAGES,
  USERS,
  choose,
  launchChromium,
  login,
  metrics,
  openDashboard,
  openPage,
  rmSync,
  same,
  screenshot,
  series,
  setLang,
  settled,
  table,
  tempDir,
  until,
} from './harness.js'
import { EXPECTED } from './expected.js'
import { parseCsv } from './csv.js'

const DAY_MS = 86400000
const CJK = /[\u4e00-\u9fff]/
let dir, gw, browser, loaded

before(async () => {
  dir = tempDir('clicktrail-dashboard-e2e-')
  gw = await new DashboardGateway(join(dir, 'gw')).configure()
  await gw.start()
  // The data ends at today's UTC midnight, as in the analytics tests: the default range (the last 30 days) holds it.
  loaded = await gw.load(Math.floor(Date.now() / DAY_MS) * DAY_MS)
  browser = await launchChromium()
})

after(async () => {
  await browser?.close()
  await gw?.stop()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

// The labels a language switch must change: the navigation, the cards' titles, the figures' labels.
const labels = (page) =>
  page.$$eval('a[data-nav], main h2, main .metric .label, main th', (els) => els.map((e) => e.textContent.trim()))

// The page's figures, tables and charts against the views' answers for what the page's controls say.
async function assertShowsTheViews(page, name, who) {
  const controls = await page.evaluate(() => {
    const value = (c) => document.querySelector(`[data-control=${c}]`)?.value
    const noshow = document.querySelector('[data-control=noshow]')
    return {
      site: value('site'),
      from: value('from'),
      to: value('to'),
      stream: value('stream'),
      conversion: value('conversion'),
      model: value('model'),
      steps: (value('steps') ?? '').split(',').map((s) => s.trim()).filter(Boolean),
      window: value('window'),
      noshow: noshow ? noshow.checked : undefined,
    }
  })
  const want = await EXPECTED[name]((sql, params) => gw.rows(sql, params, who), controls)
  const shown = await metrics(page)
  // What was compared, for the test's diagnostics: the figures, each table's rows, each chart's points.
  const compared = {
    metrics: Object.keys(want.metrics ?? {}).length,
    rows: Object.fromEntries(Object.entries(want.tables ?? {}).map(([t, { rows }]) => [t, rows.length])),
  }
  for (const [metric, value] of Object.entries(want.metrics ?? {})) {
    assert.ok(metric in shown, `${name}: no data-metric=${metric} shown (shown: ${Object.keys(shown)})`)
    assert.ok(same(shown[metric], value), `${name}: ${metric} shows ${shown[metric]}, the view says ${value}`)
  }
  // A table: the view's rows in the page's order (every ORDER BY of README.md breaks its ties), each cell the
  // view's column of its data-col.
  for (const [t, { rows }] of Object.entries(want.tables ?? {})) {
    const got = await table(page, t) // no rows: the page shows a "nothing" note instead
    assert.equal(got.length, rows.length, `${name}: table ${t} shows ${got.length} rows, the view has ${rows.length}`)
    rows.forEach((row, i) => {
      assert.deepEqual(Object.keys(got[i]), Object.keys(row), `${name}: ${t} shows the columns README.md names`)
      for (const [col, value] of Object.entries(row)) {
        const shown = got[i][col]
        assert.ok(same(shown, value), `${name}: ${t} row ${i} ${col} shows ${shown}, the view says ${value}`)
      }
    })
  }
  for (const [chart, check] of Object.entries(want.charts ?? {})) {
    const drawn = await series(page, chart)
    assert.ok(drawn, `${name}: no chart ${chart} in window.clicktrail.charts`)
    check(drawn) // the chart's own check of its points against the view
    compared[`chart ${chart}`] = drawn.map((s) => s.data.length)
  }
  for (const chart of want.absent ?? []) {
    assert.equal(await page.$(`main [data-chart="${chart}"]`), null, `${name}: chart ${chart} drawn without rows`)
  }
  // Every chart on the page has drawn its series, also one the expectations do not name.
  for (const chart of await page.$$eval('main [data-chart]', (els) => els.map((e) => e.dataset.chart))) {
    const drawn = await series(page, chart)
    assert.ok(drawn?.length > 0 && drawn.some((s) => s.data?.length > 0), `${name}: chart ${chart} drew no series`)
  }
  // The seeded data reaches every page: a test that compared nothing would prove nothing.
  assert.ok(Object.values(compared.rows).some((n) => n > 0) || compared.metrics > 0, `${name}: nothing to compare`)
  return compared
}

describe('login', () => {
  test('a wrong password is refused and nothing of the data is shown', async () => {
    const { context, page } = await openDashboard(browser, gw, null)
    await login(page, { ...USERS.admin, password: 'wrong' }, { refused: true })
    const alert = await page.waitForSelector('[role=alert]', { state: 'visible', timeout: 10000 })
    assert.ok((await alert.textContent()).trim(), 'the refusal says something')
    assert.equal(await page.getAttribute('main', 'data-page'), 'login')
    assert.equal(await page.$('[data-control=site]'), null, 'no site picker without a session')
    assert.equal(await page.$('[data-metric]'), null, 'no figure without a session')
    assert.ok(!(await context.cookies()).some((c) => c.name == 'clicktrail_session'), 'no session cookie')
    const api = await fetch(gw.dashboard + 'api/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user: USERS.admin.user, password: 'wrong' }),
    })
    assert.equal(api.status, 401)
    assert.ok((await api.json()).error)
    await context.close()
  })

  test('login gives a session of the user; the views answer to it, read-only and only with the header', async () => {
    const { context, page } = await openDashboard(browser, gw)
    const cookie = (await context.cookies()).find((c) => c.name == 'clicktrail_session')
    assert.ok(cookie?.httpOnly, 'an HttpOnly session cookie')
    assert.equal(cookie.sameSite, 'Strict')
    const session = await page.evaluate(async () => (await fetch('api/session')).json())
    assert.deepEqual(
      { user: session.user, sites: [...session.sites].sort() },
      { user: 'admin', sites: ['site_a', 'site_b', 'site_c'] },
    )
    const ask = (sql, header = true) =>
      page.evaluate(
        async ([q, h]) => {
          const r = await fetch('/?default_format=JSON', {
            method: 'POST',
            body: q,
            headers: h ? { 'X-Clicktrail-Dashboard': '1' } : {},
          })
          return { status: r.status, text: await r.text() }
        },
        [sql, header],
      )
    const count = await ask('SELECT count() AS n FROM clicktrail.events')
    assert.equal(count.status, 200, count.text)
    assert.equal(+JSON.parse(count.text).data[0].n, loaded.events, 'every event of the dataset')
    assert.ok((await ask('SELECT 1', false)).status >= 400, 'the cookie alone (a cross-site form) is no authentication')
    const write = await ask(
      "INSERT INTO clicktrail.channel_costs (site_id, channel, day, cost) VALUES ('site_a', 'x', today(), 1)",
    )
    assert.ok(write.status >= 400, `the admin's cookie writes nothing: ${write.status} ${write.text}`)
    await page.click('[data-action=logout]')
    await page.waitForSelector('[data-control=password]')
    assert.ok((await ask('SELECT 1')).status >= 400, 'logged out: the session is gone')
    await context.close()
  })
})

describe('pages', () => {
  let context, page, errors
  before(async () => {
    ;({ context, page, errors } = await openDashboard(browser, gw))
  })
  after(() => context?.close())

  test('the default range is the last 30 days, the first site picked', async () => {
    await settled(page, 'overview')
    const from = await page.inputValue('[data-control=from]')
    const to = await page.inputValue('[data-control=to]')
    assert.equal(to, new Date().toISOString().slice(0, 10), 'to: today')
    assert.ok([29, 30].includes((Date.parse(to) - Date.parse(from)) / DAY_MS), `the last 30 days: ${from} .. ${to}`)
    const options = await page.$$eval('[data-control=site] option', (os) => os.map((o) => o.value))
    assert.deepEqual([...options].sort(), ['site_a', 'site_b', 'site_c'])
  })

  for (const name of PAGES) {
    test(`${name}: ready, every figure the view's, every chart drawn`, async (t) => {
      await choose(page, 'site', 'site_a')
      const state = await openPage(page, name)
      const alert = state == 'error' ? await page.textContent('[role=alert]') : ''
      assert.equal(state, 'ready', `${name} settled as ${state} ${alert}`)
      t.diagnostic(JSON.stringify(await assertShowsTheViews(page, name, USERS.admin)))
      await screenshot(page, `${name}.en.png`)
      assert.deepEqual(errors, [])
    })
  }

  test('the pickers re-draw their page with the views\' answers for what they say', async () => {
    await choose(page, 'site', 'site_a')
    await openPage(page, 'live')
    const streams = (await gw.rows(
      "SELECT stream_id FROM clicktrail.live_stream_stats WHERE site_id = 'site_a' ORDER BY first_ts DESC, stream_id",
    )).map((r) => r.stream_id)
    assert.ok(streams.length > 1, 'the data has several streams')
    assert.equal(await page.inputValue('[data-control=stream]'), streams[0], 'the newest stream first')
    await choose(page, 'stream', streams[1])
    assert.equal(await settled(page, 'live'), 'ready')
    await page.check('[data-control=noshow]')
    assert.equal(await settled(page, 'live'), 'ready')
    const live = await assertShowsTheViews(page, 'live', USERS.admin)
    assert.ok(live.rows.registrants > 0, 'the stream has no-shows to list')
    await screenshot(page, 'live.noshow.en.png')

    await openPage(page, 'attribution')
    for (const [control, value] of [['conversion', 'lead_stage:mql'], ['model', 'u_shaped']]) {
      await choose(page, control, value)
      assert.equal(await settled(page, 'attribution'), 'ready', `attribution with ${control} ${value}`)
    }
    assert.ok((await assertShowsTheViews(page, 'attribution', USERS.admin)).rows.attribution > 0)

    await openPage(page, 'funnels')
    await choose(page, 'steps', 'page_view, download, form_submit')
    assert.equal(await settled(page, 'funnels'), 'ready')
    await choose(page, 'window', '7')
    assert.equal(await settled(page, 'funnels'), 'ready')
    assert.equal((await assertShowsTheViews(page, 'funnels', USERS.admin)).rows.funnel, 3)

    await openPage(page, 'lifecycle')
    await choose(page, 'window', '90')
    assert.equal(await settled(page, 'lifecycle'), 'ready')
    await assertShowsTheViews(page, 'lifecycle', USERS.admin)

    // A narrower range re-draws with that range's answers.
    await openPage(page, 'overview')
    const to = await page.inputValue('[data-control=to]')
    await choose(page, 'from', new Date(Date.parse(to) - 6 * DAY_MS).toISOString().slice(0, 10))
    assert.equal(await settled(page, 'overview'), 'ready')
    await assertShowsTheViews(page, 'overview', USERS.admin)
  })

  test('the language switch turns the labels Chinese and back, and is remembered', async () => {
    await openPage(page, 'overview')
    const to = await page.inputValue('[data-control=to]')
    await choose(page, 'from', new Date(Date.parse(to) - 29 * DAY_MS).toISOString().slice(0, 10)) // the default
    await settled(page, 'overview')
    assert.equal(await page.getAttribute('html', 'lang'), 'en')
    const english = await labels(page)
    assert.ok(english.length > 6 && english.every((l) => !CJK.test(l)), `English labels: ${english}`)
    await setLang(page, 'zh')
    await settled(page, 'overview')
    const chinese = await labels(page)
    assert.ok(chinese.every((l) => CJK.test(l)), `Chinese labels: ${chinese}`)
    await assertShowsTheViews(page, 'overview', USERS.admin) // the same figures in either language
    await screenshot(page, 'overview.zh.png')
    await openPage(page, 'live')
    await screenshot(page, 'live.zh.png')
    await page.reload()
    await settled(page, 'live')
    assert.equal(await page.getAttribute('html', 'lang'), 'zh-CN', 'the choice survives a reload')
    await setLang(page, 'en')
    await settled(page, 'live')
    assert.equal(await page.getAttribute('html', 'lang'), 'en')
    await openPage(page, 'overview')
    const again = await labels(page)
    assert.ok(again.length > 6 && again.every((l) => !CJK.test(l)), `English labels again: ${again}`)
  })

  test('CSV export: the table rows, UTF-8 with a BOM', async () => {
    // The registrant journey (after the pickers test: a stream's no-shows, the replay-push list).
    await choose(page, 'site', 'site_a')
    await openPage(page, 'live')
    const name = 'registrants'
    const button = await page.$(`[data-action=csv][data-table=${name}]`)
    assert.ok(button, 'a CSV export of the registrant journey')
    const [download] = await Promise.all([page.waitForEvent('download'), button.click()])
    assert.equal(download.suggestedFilename(), `${name}.csv`)
    const bytes = readFileSync(await download.path())
    assert.deepEqual([...bytes.subarray(0, 3)], [0xef, 0xbb, 0xbf], 'a UTF-8 BOM')
    const [header, ...rows] = parseCsv(bytes.subarray(3).toString('utf8')).filter((r) => r.join('') != '')
    const shown = await table(page, name)
    assert.ok(shown.length > 0, `table ${name} has rows`)
    assert.equal(rows.length, shown.length)
    const cols = Object.keys(shown[0])
    assert.deepEqual(header, cols, 'the header names the view columns shown')
    rows.forEach((row, i) =>
      cols.forEach((c, j) => assert.ok(same(row[j], shown[i][c]), `row ${i} ${c}: ${row[j]} != ${shown[i][c]}`)),
    )
  })

  test('a site with no events: every page says what to do', async () => {
    await choose(page, 'site', EMPTY_SITE)
    for (const name of PAGES) {
      const state = await openPage(page, name)
      assert.equal(state, 'empty', `${name} on a site without events`)
      const text = (await page.textContent('main')).trim()
      assert.ok(text.length > 20, `${name}: the empty state says what to do: ${text}`)
      assert.equal(await page.$('main [data-metric][data-value]:not([data-value="0"])'), null, 'no figure but zero')
    }
    await openPage(page, 'overview')
    await screenshot(page, 'overview.empty.en.png')
  })
})

describe('users', () => {
  test('an analyst limited to one site sees only that site', async () => {
    const { context, page } = await openDashboard(browser, gw, USERS.agency)
    const options = await page.$$eval('[data-control=site] option', (os) => os.map((o) => o.value))
    assert.deepEqual(options, USERS.agency.sites)
    for (const name of ['overview', 'content']) {
      assert.equal(await openPage(page, name), 'ready')
      await assertShowsTheViews(page, name, USERS.agency)
    }
    const sites = await page.evaluate(async () => {
      const r = await fetch('/?default_format=JSON', {
        method: 'POST',
        body: 'SELECT DISTINCT site_id FROM clicktrail.events ORDER BY site_id',
        headers: { 'X-Clicktrail-Dashboard': '1' },
      })
      return (await r.json()).data.map((row) => row.site_id)
    })
    assert.deepEqual(sites, USERS.agency.sites, 'the session queries as the user, with its sites')
    await context.close()
  })

  test('a read-only analyst sees every site', async () => {
    const { context, page } = await openDashboard(browser, gw, USERS.viewer)
    const options = await page.$$eval('[data-control=site] option', (os) => os.map((o) => o.value))
    assert.deepEqual([...options].sort(), ['site_a', 'site_b', 'site_c'])
    await choose(page, 'site', 'site_b')
    assert.equal(await openPage(page, 'overview'), 'ready')
    await assertShowsTheViews(page, 'overview', USERS.viewer)
    await context.close()
  })

  test('a session that ended brings the login form back, not an error', async () => {
    const { context, page } = await openDashboard(browser, gw, USERS.viewer)
    assert.equal(await settled(page, 'overview'), 'ready')
    await page.evaluate(() => fetch('api/logout', { method: 'POST' })) // as a restart or the idle expiry would
    await choose(page, 'site', 'site_b')
    await page.waitForSelector('main[data-page=login] [data-control=password]')
    await login(page, USERS.viewer)
    assert.equal(await settled(page, 'overview'), 'ready')
    await context.close()
  })

  test('a query that fails shows its error', async (t) => {
    // A real refusal: the user's max_rows_to_read is below what any page's query reads.
    const { context, page } = await openDashboard(browser, gw, USERS.capped)
    for (const name of PAGES) {
      assert.equal(await openPage(page, name), 'error', name)
      const alert = await page.textContent('main [role=alert]')
      assert.match(alert, /TOO_MANY_ROWS/, `${name}: the error says what failed: ${alert}`)
      if (name == 'overview') t.diagnostic(alert.slice(0, 200))
    }
    await screenshot(page, 'content.error.en.png')
    await context.close()
  })
})

describe('a stream live now', () => {
  // Last: its events change site_b's figures, which the tests above compare.
  test('its concurrency curve is re-read every 5 s, without re-drawing the page', async () => {
    const stream = `live_now_${process.pid}`
    const view = (viewer) => ({ stream_id: stream, view_id: `view-${viewer}`, mode: 'live' })
    const send = async (viewer, events) => {
      const batch = events.map(([event, props]) => ({
        event, event_id: randomUUID(), anonymous_id: viewer, session_id: `s-${viewer}`, ts: Date.now(), props,
      }))
      const r = await fetch(`${gw.base}/v1/batch`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Write-Key': 'sk_b' },
        body: JSON.stringify({ batch }),
      })
      assert.equal(r.status, 200, await r.text())
    }
    const watching = (viewer) =>
      send(viewer, [['live_join', view(viewer)], ['live_heartbeat', { ...view(viewer), watched_ms: 10000 }]])
    const curve = async () =>
      (await gw.rows(
        `SELECT minute, viewers FROM clicktrail.live_concurrency
         WHERE site_id = {site:String} AND stream_id = {stream:String} ORDER BY minute`,
        { site: 'site_b', stream },
      )).map((r) => [Date.parse(`${r.minute.replace(' ', 'T')}Z`), +r.viewers])
    await watching('viewer-1')
    await until(async () => (await curve()).length > 0, { what: 'the first heartbeat stored' })

    const { context, page, errors } = await openDashboard(browser, gw)
    await choose(page, 'site', 'site_b')
    assert.equal(await openPage(page, 'live'), 'ready')
    assert.equal(await page.inputValue('[data-control=stream]'), stream, 'the stream live now comes first')
    const drawn = async () => (await series(page, 'concurrency'))[0].data.map(([t, v]) => [t, +v])
    assert.deepEqual(await drawn(), await curve())
    await page.evaluate(() => (document.querySelector('main').dataset.drawnBefore = '1'))

    await watching('viewer-2')
    const now = await until(async () => {
      const c = await curve()
      return JSON.stringify(c) != JSON.stringify(await drawn()) && c
    }, { what: 'the second viewer stored' })
    await until(async () => JSON.stringify(await drawn()) == JSON.stringify(now), {
      timeout: 12000, what: 'the curve re-read within 5 s (and a margin)',
    })
    assert.equal(await page.getAttribute('main', 'data-drawn-before'), '1', 'the same page, not drawn anew')
    assert.equal(await page.getAttribute('main', 'data-state'), 'ready')
    assert.deepEqual(errors, [])
    await context.close()
  })

  test('a long registrant list: the first 200 rows drawn, the rest on request, every row in the CSV', async () => {
    const stream = `crowd_${process.pid}`
    const registrants = 260
    const batch = Array.from({ length: registrants }, (_, i) => ({
      event: 'registration', event_id: randomUUID(), anonymous_id: `crowd-${i}`, ts: Date.now() - i * 1000,
      props: { stream_id: stream },
    }))
    batch.push({ event: 'live_join', event_id: randomUUID(), anonymous_id: 'crowd-0', ts: Date.now(),
      props: { stream_id: stream, view_id: 'crowd-view', mode: 'live' } })
    const r = await fetch(`${gw.base}/v1/batch`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Write-Key': 'sk_b' },
      body: JSON.stringify({ batch }),
    })
    assert.equal(r.status, 200, await r.text())
    const journey = () => gw.rows(
      `SELECT person_id FROM clicktrail.stream_journey WHERE site_id = {site:String} AND stream_id = {stream:String}
       ORDER BY registered_at IS NULL, registered_at, person_id`, { site: 'site_b', stream })
    const answer = await until(async () => {
      const rows = await journey()
      return rows.length == registrants && rows
    }, { what: 'every registration stored' })

    const { context, page, errors } = await openDashboard(browser, gw)
    await choose(page, 'site', 'site_b')
    await openPage(page, 'live')
    await choose(page, 'stream', stream)
    await settled(page, 'live')
    const ids = async () => (await table(page, 'registrants')).map((row) => row.person_id)
    assert.deepEqual(await ids(), answer.slice(0, 200).map((row) => row.person_id))
    assert.equal(await page.getAttribute('table[data-table=registrants]', 'data-rows'), String(registrants))
    const [download] = await Promise.all([page.waitForEvent('download'),
      page.click('[data-action=csv][data-table=registrants]')])
    const [header, ...rows] = parseCsv(readFileSync(await download.path()).subarray(3).toString('utf8'))
      .filter((row) => row.join('') != '')
    assert.deepEqual(rows.map((row) => row[header.indexOf('person_id')]), answer.map((row) => row.person_id))
    await page.click('[data-action=more][data-table=registrants]')
    assert.deepEqual(await ids(), answer.map((row) => row.person_id))
    assert.equal(await page.$('[data-action=more]'), null, 'the button goes once every row is drawn')
    assert.deepEqual(errors, [])
    await context.close()
  })
})
