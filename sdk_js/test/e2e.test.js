// End to end: the built snippet and script in Debian's headless Chromium, sending to a real gateway
// process, with every expectation read back from ClickHouse.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Gateway, SDK, launchChromium, makeVideo, rmSync, sleep, startStatic, tempDir, until } from './harness.js'

const VIDEO_SECONDS = 4
let dir, gw, site, browser
let n = 0
const uniq = (prefix) => `${prefix}_${process.pid}_${++n}`

before(async () => {
  dir = tempDir('clicktrail-e2e-')
  makeVideo(dir, VIDEO_SECONDS)
  const origins = []
  gw = await new Gateway(join(dir, 'gw'), origins).configure()
  site = await startStatic(() => gw.base, () => dir)
  origins.push(site.origin)
  await gw.start()
  browser = await launchChromium()
})

after(async () => {
  await browser?.close()
  await site?.close()
  await gw?.stop()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

// A fresh browser profile (cookies, localStorage) per visitor, with the batch requests it makes.
async function visitor(options = {}) {
  const context = await browser.newContext({ viewport: { width: 800, height: 1000 }, ...options })
  const page = await context.newPage()
  const requests = []
  const errors = []
  page.on('request', (r) => r.url().includes('/v1/batch') && requests.push(JSON.parse(r.postData())))
  page.on('pageerror', (e) => errors.push(String(e)))
  if (process.env.DEBUG_E2E) {
    page.on('request', (r) => r.url().includes('/v1/') && console.log('request', r.postData().slice(0, 200)))
    page.on('requestfailed', (r) => console.log('failed', r.url(), r.failure()))
    page.on('response', async (r) => r.url().includes('/v1/') && console.log('response', r.status(), await r.text().catch(() => '')))
  }
  return { context, page, requests, errors }
}

async function state(context) {
  const c = (await context.cookies()).find((c) => c.name == 'ct')
  return c && JSON.parse(decodeURIComponent(c.value))
}


test('page views carry the channel code; first and last touch persist across pages', async () => {
  const { context, page, errors } = await visitor()
  const ch1 = uniq('wechat_group')
  const ch2 = uniq('partner')
  const landing = `${site.origin}/basic.html?ch=${ch1}&utm_source=newsletter&utm_medium=email&utm_campaign=launch&sharer=emp_042`
  // Each page is read (its page_view stored) before the next: the gateway orders by ts corrected
  // with the request's sent_at, so events a few ms apart in different requests may swap.
  await page.goto(landing)
  const { a: anonymous_id } = await until(() => state(context), { what: 'the cookie' })
  const viewed = (n) => gw.events(`anonymous_id = '${anonymous_id}' AND event = 'page_view'`, n)
  await viewed(1)
  await page.click('#next')
  await page.waitForURL(/other\.html$/)
  await viewed(2)
  await page.goto(`${site.origin}/other.html?ch=${ch2}&utm_source=partner_site`)
  await viewed(3)
  await page.goto(`${site.origin}/basic.html`)

  const views = await gw.events(`anonymous_id = '${anonymous_id}' AND event = 'page_view'`, 4)
  assert.deepEqual(
    views.map((v) => [v.url_path, v.channel, v.utm_source, v.utm_medium, v.utm_campaign, v.sharer]),
    [
      ['/basic.html', ch1, 'newsletter', 'email', 'launch', 'emp_042'],
      ['/other.html', ch1, 'newsletter', 'email', 'launch', 'emp_042'], // no parameters: last touch kept
      ['/other.html', ch2, 'partner_site', '', '', ''], // a new touch replaces the last touch whole
      ['/basic.html', ch2, 'partner_site', '', '', ''],
    ],
  )
  for (const v of views) {
    assert.equal(v.props.$first_channel, ch1)
    assert.equal(v.props.$first_utm_source, 'newsletter')
    assert.equal(v.props.$first_sharer, 'emp_042')
    assert.equal(v.session_id, views[0].session_id)
    assert.match(v.event_id, /^[0-9a-f]{32}$/)
  }
  assert.equal(views[1].referrer, landing)
  assert.equal(views[1].title, 'Other page')

  // Each page left sends page_leave once, although the next page resends what it could not confirm.
  const leaves = await gw.events(`anonymous_id = '${anonymous_id}' AND event = 'page_leave'`, 3)
  await sleep(1000)
  const all = await gw.events(`anonymous_id = '${anonymous_id}'`, 7)
  assert.equal(all.length, 7, 'four page views and three page leaves, none twice')
  assert.deepEqual(
    leaves.map((l) => l.url_path),
    ['/basic.html', '/other.html', '/other.html'],
  )
  assert.deepEqual(errors, [])
  await context.close()
})

test('calls made before the script arrives are queued and sent', async () => {
  const { context, page } = await visitor()
  await page.goto(`${site.origin}/queue.html`)
  assert.equal(await page.evaluate(() => window.queuedBeforeLoad), true)
  await until(() => state(context), { what: 'the cookie' })
  const { a } = await state(context)
  const rows = await gw.events(`anonymous_id = '${a}'`, 4)
  // Made within the same millisecond or two: compared in name order.
  assert.deepEqual(
    rows.map((r) => [r.event, r.props.position ?? r.props.stream_id ?? null, r.props.kind ?? null]).sort(),
    [
      ['cta_click', 'hero', null],
      ['interaction', 'webinar-q', 'lottery'],
      ['page_view', null, null],
      ['registration', 'webinar-q', null],
    ],
  )
  await context.close()
})

test('single-page-app navigation: history API and hash changes', async () => {
  const { context, page } = await visitor()
  const base = `${site.origin}/spa/home`
  await page.goto(base)
  const { a } = await until(() => state(context), { what: 'the cookie' })
  // A visitor's pace: each step a little later, so that the events' ts order is the steps' order.
  await sleep(100)
  await page.evaluate(() => history.pushState({}, '', '/spa/pricing'))
  await sleep(100)
  await page.evaluate(() => (location.hash = 'faq'))
  await page.waitForURL(/#faq$/)
  await sleep(100)
  await page.evaluate(() => history.replaceState({}, '', '/spa/pricing#faq')) // same URL: nothing
  await page.evaluate(() => history.back())
  await page.waitForURL(/pricing$/)
  const views = await gw.events(`anonymous_id = '${a}' AND event = 'page_view'`, 4)
  const urls = [base, `${site.origin}/spa/pricing`, `${site.origin}/spa/pricing#faq`, `${site.origin}/spa/pricing`]
  assert.deepEqual(
    views.map((v) => v.url),
    urls,
  )
  assert.deepEqual(
    views.map((v) => v.referrer),
    ['', ...urls.slice(0, 3)],
  )
  const leaves = await gw.events(`anonymous_id = '${a}' AND event = 'page_leave'`, 3)
  assert.deepEqual(
    leaves.map((l) => l.url),
    urls.slice(0, 3),
  )
  await context.close()
})

test('page hide: engaged time and scroll depth, delivered with keepalive as the page goes', async () => {
  const { context, page, requests } = await visitor()
  const t0 = Date.now()
  await page.goto(`${site.origin}/hide.html`)
  const tA = Date.now()
  await page.mouse.move(100, 100)
  const scroll = (y) =>
    page.evaluate((y) => new Promise((done) => (addEventListener('scroll', done, { once: true }), scrollTo(0, y))), y)
  await scroll(1000) // (1000 + 1000) / 4000 = 50 %
  await scroll(2000) // (2000 + 1000) / 4000 = 75 %
  await scroll(0)
  await page.evaluate(() => clicktrail('track', 'cta_click', { position: 'footer' }))
  await sleep(800)
  await page.mouse.move(200, 200)
  const tB = Date.now()
  assert.equal(requests.length, 0, 'nothing sent while the page is shown (flush is 10 minutes)')
  const { a } = await state(context)
  await page.click('#away') // plain.html has no snippet: only the request made on page hide can deliver
  await page.waitForURL(/plain\.html$/)
  const t1 = Date.now()
  const rows = await gw.events(`anonymous_id = '${a}'`, 3)
  assert.deepEqual(
    rows.map((r) => r.event),
    ['page_view', 'cta_click', 'page_leave'],
  )
  const leave = rows[2].props
  assert.equal(leave.scroll_pct, 75)
  assert.ok(leave.engaged_ms >= tB - tA - 50, `engaged ${leave.engaged_ms} ms, active for ${tB - tA} ms`)
  assert.ok(leave.engaged_ms <= t1 - t0, `engaged ${leave.engaged_ms} ms, on the page ${t1 - t0} ms`)
  await context.close()
})

test('downloads: document links and download attributes, navigation not held up', async () => {
  const { context, page } = await visitor({ acceptDownloads: true })
  await page.goto(`${site.origin}/downloads.html`)
  for (const id of ['pdf', 'pptx', 'attr', 'bin', 'anchor']) await page.click('#' + id)
  await page.click('#doc')
  await page.waitForURL(/\/doc\/brochure\.pdf$/) // the click went on to its page
  assert.equal(await page.textContent('p'), 'opened')
  const { a } = await state(context)
  const rows = await gw.events(`anonymous_id = '${a}' AND event = 'download'`, 4)
  await sleep(500)
  const again = await gw.events(`anonymous_id = '${a}' AND event = 'download'`, 4)
  assert.equal(again.length, 4)
  assert.deepEqual(
    rows.map((r) => [r.props.file_url, r.props.file_name]),
    [
      [`${site.origin}/files/Whitepaper%20%E7%99%BD%E7%9A%AE%E4%B9%A6.pdf`, 'Whitepaper 白皮书.pdf'],
      [`${site.origin}/files/deck.PPTX?v=2`, 'deck.PPTX'],
      [`${site.origin}/files/export?id=7`, 'report.csv'],
      [`${site.origin}/doc/brochure.pdf`, 'brochure.pdf'],
    ],
  )
  await context.close()
})

test('forms: form id and field names; values only where allowed, never passwords or hidden fields', async () => {
  const { context, page } = await visitor()
  await page.goto(`${site.origin}/form.html`)
  await page.click('#search') // data-ct-ignore
  await page.click('#subscribe')
  await page.click('#send')
  await page.waitForURL(/plain\.html$/)
  const { a } = await state(context)
  const rows = await gw.events(`anonymous_id = '${a}' AND event = 'form_submit'`, 2)
  await sleep(500)
  assert.equal((await gw.events(`anonymous_id = '${a}' AND event = 'form_submit'`, 2)).length, 2)
  assert.deepEqual(rows[0].props.form_id, 'newsletter')
  assert.deepEqual(rows[0].props.fields, { email: null })
  assert.equal(rows[1].props.form_id, 'lead')
  assert.deepEqual(rows[1].props.fields, {
    name: null,
    company: 'Acme 公司',
    email: null,
    newsletter: null,
    topics: 'live,download',
    size: '51-200',
    message: null,
  })
  await context.close()
})

test('identity: one anonymous id and session across pages, identify and reset', async () => {
  const { context, page } = await visitor()
  await page.goto(`${site.origin}/basic.html`)
  const first = await until(() => state(context), { what: 'the cookie' })
  await gw.events(`anonymous_id = '${first.a}'`, 1)
  await page.evaluate(() => clicktrail('identify', 'crm_1001', { company: 'Acme' }))
  await gw.events(`anonymous_id = '${first.a}'`, 2)
  await page.goto(`${site.origin}/other.html`)
  const rows = await gw.events(`anonymous_id = '${first.a}' AND event IN ('identify', 'page_view')`, 3)
  assert.deepEqual(
    rows.map((r) => [r.event, r.user_id, r.session_id]),
    [
      ['page_view', '', first.s],
      ['identify', 'crm_1001', first.s],
      ['page_view', 'crm_1001', first.s],
    ],
  )
  assert.deepEqual(rows[1].props, { traits: { company: 'Acme' } })
  await page.evaluate(() => {
    clicktrail('reset')
    clicktrail('track', 'after_reset')
  })
  const next = await state(context)
  assert.notEqual(next.a, first.a)
  assert.notEqual(next.s, first.s)
  const [after] = await gw.events(`anonymous_id = '${next.a}'`, 1)
  assert.deepEqual([after.event, after.user_id], ['after_reset', ''])
  await context.close()
})

// The visitor's one viewing once its live_leave is stored: one live_join and one live_leave around
// heartbeats, all of one view_id, stream and mode. Returns the heartbeats.
async function oneView(context, stream, mode) {
  const { a } = await state(context)
  const rows = await gw.events(`anonymous_id = '${a}' AND event LIKE 'live_%'`, 5)
  await until(async () => (await gw.events(`anonymous_id = '${a}' AND event = 'live_leave'`, 0)).length, {
    what: 'live_leave',
  })
  const all = await gw.events(`anonymous_id = '${a}' AND event LIKE 'live_%'`, rows.length)
  const [join, ...joins] = all.filter((r) => r.event == 'live_join')
  const [leave, ...leaves] = all.filter((r) => r.event == 'live_leave')
  assert.deepEqual([joins, leaves], [[], []], 'one live_join and one live_leave')
  assert.ok(all.every((r) => join.ms <= r.ms && r.ms <= leave.ms), 'heartbeats between join and leave')
  for (const r of all) {
    assert.deepEqual([r.props.stream_id, r.props.mode, r.props.view_id], [stream, mode, join.props.view_id])
  }
  return all.filter((r) => r.event == 'live_heartbeat')
}

test('watch time from a real <video>: join, heartbeats without the paused time, leave', async () => {
  const { context, page } = await visitor()
  await page.goto(`${site.origin}/video.html`)
  await page.evaluate(() => document.getElementById('v').play())
  await page.waitForFunction(() => document.getElementById('v').currentTime >= 1.5)
  await page.evaluate(() => document.getElementById('v').pause())
  await sleep(2000) // paused: not watch time
  await page.evaluate(() => document.getElementById('v').play())
  await page.waitForFunction(() => document.getElementById('v').ended, null, { timeout: 20000 })
  // What the browser itself says was played, in ms, to compare with the heartbeats' sum.
  const played = await page.evaluate(() => {
    const r = document.getElementById('v').played
    let s = 0
    for (let i = 0; i < r.length; i++) s += r.end(i) - r.start(i)
    return s * 1000
  })
  const beats = await oneView(context, 'webinar-e2e', 'replay') // a finite duration: a recording
  assert.ok(beats.length >= 3, `${beats.length} heartbeats for ${VIDEO_SECONDS} s at one a second`)
  const watched = Math.max(...beats.map((b) => b.props.watched_ms)) // cumulative: the view's watch time
  assert.ok(Math.abs(watched - played) < 700, `watched_ms reached ${watched}, the browser played ${played} ms`)
  const told = beats.map((b) => b.props.watched_ms)
  assert.deepEqual(told, [...told].sort((x, y) => x - y), 'watched_ms never goes down within a view')
  assert.ok(Math.abs(played - VIDEO_SECONDS * 1000) < 500, `played ${played} ms of a ${VIDEO_SECONDS} s video`)
  const last = beats.at(-1).props
  assert.ok(Math.abs(last.duration_s - VIDEO_SECONDS) < 0.2, `duration_s ${last.duration_s}`)
  assert.ok(Math.abs(last.position_s - last.duration_s) < 0.2, `position_s ${last.position_s} at the end`)
  await context.close()
})

test('watch time through a player adapter: live mode, closed when the page goes', async () => {
  const { context, page } = await visitor()
  await page.goto(`${site.origin}/basic.html`)
  await page.waitForFunction(() => !clicktrail.q) // the script has replaced the queue
  const t0 = Date.now()
  await page.evaluate(() => {
    window.w = clicktrail('watch', null, { stream_id: 'live-e2e', mode: 'live', heartbeat: 500 })
    w.play()
  })
  await sleep(1300)
  await page.evaluate(() => w.time(1234.5, Infinity))
  await page.goto(`${site.origin}/plain.html`)
  const t1 = Date.now()
  const beats = await oneView(context, 'live-e2e', 'live')
  const watched = Math.max(...beats.map((b) => b.props.watched_ms))
  assert.ok(watched >= 1300 && watched <= t1 - t0, `watched ${watched} ms of ${t1 - t0} ms`)
  assert.equal(beats.at(-1).props.position_s, 1234.5)
  assert.equal(beats.at(-1).props.duration_s, undefined) // a live stream has no duration
  await context.close()
})

test('consent mode: nothing stored or sent until consent, then everything held is sent', async () => {
  const { context, page, requests } = await visitor()
  await page.goto(`${site.origin}/consent.html`)
  await page.waitForFunction(() => !clicktrail.q)
  await page.evaluate(() => clicktrail('track', 'before_consent'))
  await sleep(800)
  assert.equal(requests.length, 0)
  assert.equal(await state(context), undefined)
  assert.equal(await page.evaluate(() => Object.keys(localStorage).length), 0)
  await page.evaluate(() => clicktrail('consent', true))
  const { a } = await until(() => state(context), { what: 'the cookie' })
  const rows = await gw.events(`anonymous_id = '${a}'`, 2)
  assert.deepEqual(
    rows.map((r) => r.event),
    ['page_view', 'before_consent'],
  )
  await context.close()
})

test('opt-out and Global Privacy Control: nothing sent', async () => {
  const gpc = await visitor()
  await gpc.context.addInitScript(() => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true }))
  await gpc.page.goto(`${site.origin}/gpc.html`)
  await gpc.page.waitForFunction(() => !clicktrail.q)
  await gpc.page.evaluate(() => clicktrail('track', 'with_gpc'))
  await sleep(800)
  assert.equal(gpc.requests.length, 0)
  assert.equal(await state(gpc.context), undefined)
  await gpc.context.close()

  const { context, page, requests } = await visitor()
  await page.goto(`${site.origin}/basic.html`)
  const { a } = await until(() => state(context), { what: 'the cookie' })
  await gw.events(`anonymous_id = '${a}'`, 1)
  await page.evaluate(() => clicktrail('optOut'))
  const sent = requests.length
  await page.evaluate(() => clicktrail('track', 'after_opt_out'))
  await page.goto(`${site.origin}/other.html`)
  await sleep(800)
  assert.equal(requests.length, sent, 'no request after opting out, also on the next page')
  assert.deepEqual(await state(context), { o: 1 })
  await context.close()
})

test('the ES module, imported from the gateway', async () => {
  const { context, page, errors } = await visitor()
  await page.goto(`${site.origin}/esm.html`)
  const { a } = await until(() => state(context), { what: 'the cookie' })
  const rows = await gw.events(`anonymous_id = '${a}'`, 2)
  assert.deepEqual(
    rows.map((r) => [r.event, r.props.how ?? '']).sort(),
    [
      ['esm_loaded', 'import'],
      ['page_view', ''],
    ],
  )
  assert.deepEqual(errors, [])
  await context.close()
})

test("the gateway's demo page uses the real snippet", async () => {
  const r = await fetch(gw.base + '/sdk/clicktrail.min.js')
  assert.equal(r.status, 200)
  assert.equal(r.headers.get('cache-control'), 'public, max-age=3600')
  assert.ok(r.headers.get('etag'))
  assert.equal(await r.text(), readFileSync(join(SDK, 'dist', 'clicktrail.min.js'), 'utf8'))

  const { context, page, errors } = await visitor()
  await page.goto(gw.base + '/')
  await page.click('#register')
  const { a } = await until(() => state(context), { what: 'the cookie' })
  const rows = await gw.events(`anonymous_id = '${a}'`, 2)
  assert.deepEqual(
    rows.map((r) => [r.event, r.url_path, r.props.stream_id ?? null]),
    [
      ['page_view', '/', null],
      ['registration', '/', 'webinar-2026-12'],
    ],
  )
  assert.deepEqual(errors, [])
  await context.close()
})

// Last: it stops and restarts the gateway.
test('events are kept while the gateway is down and delivered once it is back', async () => {
  const { context, page } = await visitor()
  await page.goto(`${site.origin}/basic.html`)
  const { a } = await until(() => state(context), { what: 'the cookie' })
  await gw.events(`anonymous_id = '${a}'`, 1)

  await gw.stop()
  await page.evaluate(() => ['one', 'two', 'three'].forEach((n) => clicktrail('track', 'offline', { n })))
  await page.click('#next') // page_leave on the way out, page_view on other.html: nobody answers
  await page.waitForURL(/other\.html$/)
  const stored = () => page.evaluate(() => JSON.parse(localStorage.getItem('ct_q_wk_js_e2e') || '[]').map((e) => e.event))
  await until(async () => (await stored()).length == 5, { what: 'five events in the outbox' })
  assert.deepEqual((await stored()).sort(), ['offline', 'offline', 'offline', 'page_leave', 'page_view'])
  await sleep(1500) // failed attempts

  await gw.start() // same ports and data directory
  const rows = await gw.events(`anonymous_id = '${a}'`, 6, 60000)
  await until(async () => (await stored()).length == 0, { what: 'an empty outbox', timeout: 60000 })
  await sleep(500)
  const all = await gw.events(`anonymous_id = '${a}'`, rows.length)
  assert.deepEqual(
    all.map((r) => [r.event, r.url_path, r.props.n ?? '']).sort(),
    [
      ['offline', '/basic.html', 'one'],
      ['offline', '/basic.html', 'three'],
      ['offline', '/basic.html', 'two'],
      ['page_leave', '/basic.html', ''],
      ['page_view', '/basic.html', ''],
      ['page_view', '/other.html', ''],
    ],
  )
  await context.close()
})
