// Unit tests of src/ in node, with a stand-in for the browser (fakedom.js), mocked timers and clock,
// and a scripted fetch.
import { beforeEach, test } from 'node:test'
import assert from 'node:assert/strict'
import { installBrowser, settle } from './fakedom.js'
import { init } from '../src/index.js'

const KEY = 'wk_unit'
const QUEUE = 'ct_q_' + KEY
const T0 = Date.UTC(2026, 10, 23, 10, 0, 0)
const MIN = 60_000
let env

beforeEach((t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: T0 })
  env = installBrowser({ url: 'https://www.example.com/webinar?ch=poster_7&utm_source=wechat&sharer=emp_042', referrer: 'https://t.co/x', title: 'Webinar' })
})

// Advance the mocked clock by ms, letting answers to requests arrive on the way.
async function tick(t, ms, step = 250) {
  for (let left = ms; left > 0; left -= step) {
    t.mock.timers.tick(Math.min(step, left))
    await settle()
  }
}

test('page_view on init with the core fields; events go out after the flush delay', async (t) => {
  init({ key: KEY, host: 'https://gw.example.com/' })
  assert.equal(env.requests.length, 0)
  await tick(t, 1000)
  assert.equal(env.requests.length, 1)
  const { url, keepalive, body } = env.requests[0]
  assert.equal(url, 'https://gw.example.com/v1/batch?k=wk_unit')
  assert.equal(keepalive, false)
  assert.equal(body.sent_at, T0 + 1000)
  const [e] = body.batch
  const { a, s } = env.cookie()
  assert.match(e.event_id, /^[0-9a-f]{32}$/)
  assert.match(a, /^[0-9a-f]{32}$/)
  assert.deepEqual(e, {
    event: 'page_view',
    event_id: e.event_id,
    anonymous_id: a,
    session_id: s,
    ts: T0,
    url: 'https://www.example.com/webinar?ch=poster_7&utm_source=wechat&sharer=emp_042',
    referrer: 'https://t.co/x',
    title: 'Webinar',
    channel: 'poster_7',
    utm_source: 'wechat',
    sharer: 'emp_042',
    props: { $first_channel: 'poster_7', $first_utm_source: 'wechat', $first_sharer: 'emp_042' },
  })
  assert.deepEqual(env.stored(QUEUE), [], 'the outbox is empty once the gateway accepted')
})

test('first touch stays, last touch is replaced by the next landing with parameters', async (t) => {
  const options = { key: KEY, channelParam: 'from', cookieDomain: '.example.com' }
  env.navigate('https://www.example.com/?from=partner_a&utm_campaign=spring&ch=ignored')
  init(options)
  env.navigate('https://events.example.com/live') // a later page without parameters
  init(options).track('cta_click', { position: 'hero' })
  env.navigate('https://www.example.com/?utm_source=newsletter&utm_medium=email')
  init(options)
  await tick(t, 1000)
  const [first, second, cta, third] = env.sent()
  assert.deepEqual([first.channel, first.utm_campaign], ['partner_a', 'spring'])
  assert.deepEqual([second.event, second.channel, second.utm_campaign], ['page_view', 'partner_a', 'spring'])
  assert.deepEqual([cta.channel, cta.props.position], ['partner_a', 'hero'])
  assert.equal(third.channel, undefined) // the last touch is the newsletter alone
  assert.deepEqual([third.utm_source, third.utm_medium], ['newsletter', 'email'])
  for (const e of env.sent()) {
    assert.equal(e.props.$first_channel, 'partner_a')
    assert.equal(e.props.$first_utm_campaign, 'spring')
    assert.equal(e.props.$first_utm_source, undefined)
  }
  assert.ok(env.cookieAttributes().includes('domain=.example.com'))
  assert.ok(env.cookieAttributes().includes('max-age=31536000'))
})

test('the session id is renewed after 30 minutes without activity, the anonymous id kept', async (t) => {
  const ct = init({ key: KEY })
  const { a, s } = env.cookie()
  await tick(t, 29 * MIN, MIN)
  ct.track('still_here')
  assert.equal(env.cookie().s, s)
  await tick(t, 30 * MIN + 1000, MIN)
  ct.track('back_later')
  assert.notEqual(env.cookie().s, s)
  assert.equal(env.cookie().a, a)
  await tick(t, 1000)
  assert.deepEqual(
    env.sent().map((e) => [e.event, e.session_id == s]),
    [
      ['page_view', true],
      ['still_here', true],
      ['back_later', false],
    ],
  )
})

test('503 with Retry-After: the events stay and the next try waits that long', async (t) => {
  env.answers.push([503, 7])
  init({ key: KEY })
  await tick(t, 1000)
  assert.equal(env.requests.length, 1)
  assert.equal(env.stored(QUEUE).length, 1, 'kept in localStorage')
  await tick(t, 6500)
  assert.equal(env.requests.length, 1)
  await tick(t, 750)
  assert.equal(env.requests.length, 2)
  assert.deepEqual(env.requests[1].body.batch, env.requests[0].body.batch, 'the same events, the same event_ids')
  assert.equal(env.stored(QUEUE).length, 0)
})

test('network errors back off exponentially up to a minute; 429 is retried', async (t) => {
  env.answers.push(...Array(8).fill('network'), [429])
  init({ key: KEY })
  const times = []
  for (let i = 0; i < 10 * 60; i++) {
    const before = env.requests.length
    await tick(t, 1000, 1000)
    if (env.requests.length > before) times.push(Date.now() - T0)
  }
  const gaps = times.slice(1).map((x, i) => x - times[i])
  assert.deepEqual(gaps, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000])
  assert.equal(env.stored(QUEUE).length, 0, 'delivered by the tenth request')
})

test('408 is retried: the gateway timed the body out, the events were not stored', async (t) => {
  env.answers.push(408)
  init({ key: KEY })
  await tick(t, 1000)
  assert.equal(env.requests.length, 1)
  assert.equal(env.stored(QUEUE).length, 1, 'kept in localStorage')
  await tick(t, 1000)
  assert.equal(env.requests.length, 2)
  assert.deepEqual(env.requests[1].body.batch, env.requests[0].body.batch, 'the same events, the same event_ids')
  assert.equal(env.stored(QUEUE).length, 0)
})

for (const status of [400, 401, 403, 413, 415]) {
  test(`${status} is final: the batch is dropped, not retried`, async (t) => {
    env.answers.push(status)
    const ct = init({ key: KEY })
    await tick(t, 5000)
    assert.equal(env.requests.length, 1)
    assert.equal(env.stored(QUEUE).length, 0)
    ct.track('next')
    await tick(t, 1000)
    assert.deepEqual(env.requests[1].body.batch.map((e) => e.event), ['next'])
  })
}

test('the outbox keeps the newest 200 events and sends them 15 at a time', async (t) => {
  env.answers.push('network')
  const ct = init({ key: KEY })
  for (let i = 0; i < 250; i++) ct.track('custom', { i })
  const kept = env.stored(QUEUE)
  assert.equal(kept.length, 200)
  assert.deepEqual([kept[0].props.i, kept[199].props.i], [50, 249])
  await tick(t, 10000)
  assert.ok(env.requests.every((r) => r.body.batch.length <= 15))
  assert.deepEqual(
    env.sent().map((e) => e.props.i),
    Array.from({ length: 200 }, (_, i) => i + 50),
  )
  assert.equal(env.stored(QUEUE).length, 0)
})

test('without localStorage the outbox lives in memory', async (t) => {
  Object.defineProperty(globalThis, 'localStorage', { configurable: true, get: () => { throw new Error('denied') } })
  env.answers.push('network')
  init({ key: KEY }).track('custom')
  await tick(t, 4000)
  assert.deepEqual(env.requests.at(-1).body.batch.map((e) => e.event), ['page_view', 'custom'])
})

test('page hide: page_leave with engaged time and scroll depth, sent once with keepalive', async (t) => {
  init({ key: KEY, flush: 600000 })
  await tick(t, 2000)
  globalThis.scrollY = 2000
  env.dispatch('scroll') // (2000 + 1000) / 4000 = 75 %
  await tick(t, 3000)
  document.hidden = true
  env.dispatch('visibilitychange')
  env.dispatch('pagehide')
  await settle()
  assert.equal(env.requests.length, 1, 'pagehide after visibilitychange sends nothing new')
  const [{ keepalive, body }] = env.requests
  assert.equal(keepalive, true)
  assert.deepEqual(
    body.batch.map((e) => [e.event, e.props.engaged_ms, e.props.scroll_pct]),
    [
      ['page_view', undefined, undefined],
      ['page_leave', 5000, 75],
    ],
  )
})

test('engaged time stops 15 s after the last input and while the page is hidden', async (t) => {
  init({ key: KEY })
  await tick(t, 10000) // loading counts as activity: 10 s
  env.dispatch('keydown')
  await tick(t, 60000) // 15 s more, then idle
  env.dispatch('pointermove')
  await tick(t, 5000) // 5 s
  document.hidden = true
  env.dispatch('visibilitychange')
  await tick(t, 60000) // hidden: nothing
  document.hidden = false
  env.dispatch('visibilitychange')
  await tick(t, 4000) // 4 s
  document.hidden = true
  env.dispatch('visibilitychange')
  await tick(t, 1000)
  assert.deepEqual(
    env.sent().filter((e) => e.event == 'page_leave').map((e) => e.props.engaged_ms),
    [30000, 4000], // hidden twice: the second page_leave carries the time since the first
  )
})

test('single-page apps: pushState, popstate and hash changes; hash: false ignores fragments', async (t) => {
  init({ key: KEY })
  history.pushState({}, '', '/pricing')
  history.pushState({}, '', '/pricing') // the same URL again: nothing
  env.navigate('/pricing#faq')
  env.dispatch('hashchange')
  env.dispatch('popstate')
  await tick(t, 1000)
  assert.deepEqual(
    env.sent().map((e) => [e.event, new URL(e.url).pathname + new URL(e.url).hash]),
    [
      ['page_view', '/webinar'],
      ['page_leave', '/webinar'],
      ['page_view', '/pricing'],
      ['page_leave', '/pricing'],
      ['page_view', '/pricing#faq'],
    ],
  )
  assert.equal(env.sent()[4].referrer, 'https://www.example.com/pricing')

  env = installBrowser({ url: 'https://www.example.com/docs' })
  init({ key: KEY, hash: false })
  env.navigate('/docs#install')
  env.dispatch('hashchange')
  history.pushState({}, '', '/docs/api#top')
  await tick(t, 1000)
  assert.deepEqual(
    env.sent().filter((e) => e.event == 'page_view').map((e) => e.url),
    ['https://www.example.com/docs', 'https://www.example.com/docs/api#top'],
  )
})

test('watch time: a heartbeat every 10 s by default, watched_ms cumulative per view', async (t) => {
  const ct = init({ key: KEY, pageviews: false })
  const player = ct.watch(null, { stream_id: 'webinar-12', mode: 'live' })
  player.play()
  await tick(t, 25000, 1000) // heartbeats at 10 s and 20 s
  player.pause() // 5 s more
  await tick(t, 30000, 1000) // paused: no heartbeat
  player.play()
  player.time(42.5, 3600)
  await tick(t, 3000, 1000)
  player.ended()
  player.ended() // once only
  await tick(t, 1000)
  const events = env.sent()
  assert.deepEqual(
    events.map((e) => [e.event, e.props.watched_ms, e.ts - T0]),
    [
      ['live_join', undefined, 0],
      ['live_heartbeat', 10000, 10000],
      ['live_heartbeat', 20000, 20000],
      ['live_heartbeat', 25000, 25000],
      ['live_heartbeat', 28000, 58000],
      ['live_leave', undefined, 58000],
    ],
  )
  assert.ok(events.every((e) => e.props.view_id == events[0].props.view_id && e.props.stream_id == 'webinar-12'))
  assert.deepEqual([events[4].props.position_s, events[4].props.duration_s], [42.5, 3600])
  player.play() // played again: a new view
  await tick(t, 1000)
  const join = env.sent().at(-1)
  assert.equal(join.event, 'live_join')
  assert.notEqual(join.props.view_id, events[0].props.view_id)
})

test('watch time of a page left while playing: a last heartbeat and live_leave on pagehide', async (t) => {
  const ct = init({ key: KEY, pageviews: false })
  const player = ct.watch(null, { stream_id: 's', mode: 'replay', heartbeat: 4000 })
  player.play()
  await tick(t, 6000, 1000)
  document.hidden = true
  env.dispatch('visibilitychange') // hidden: the watch time so far goes out
  await tick(t, 1000, 1000)
  env.dispatch('pagehide')
  await settle()
  assert.deepEqual(
    env.sent().map((e) => [e.event, e.props.watched_ms]),
    [
      ['live_join', undefined],
      ['live_heartbeat', 4000],
      ['live_heartbeat', 6000],
      ['live_heartbeat', 7000],
      ['live_leave', undefined],
    ],
  )
  assert.equal(env.requests.at(-1).keepalive, true)
})

test('watch time of a <video>: buffering and pauses are not watch time; live or replay from the duration', async (t) => {
  const video = (duration) => {
    const handlers = {}
    return {
      paused: true,
      readyState: 4,
      currentTime: 0,
      duration,
      addEventListener: (type, f) => (handlers[type] ||= []).push(f),
      emit: (type) => handlers[type]?.forEach((f) => f({ type })),
    }
  }
  const ct = init({ key: KEY, pageviews: false })
  const v = video(120)
  document.querySelector = (selector) => (selector == '#player' ? v : null)
  ct.watch('#player', { stream_id: 'replay-1' })
  v.emit('playing')
  await tick(t, 3000, 1000)
  v.emit('waiting') // buffering
  await tick(t, 5000, 1000)
  v.emit('playing')
  await tick(t, 2000, 1000)
  v.currentTime = 5.25
  v.emit('pause')
  document.hidden = true
  env.dispatch('visibilitychange') // paused and hidden: nothing more to report
  await tick(t, 1000)
  const beats = env.sent().filter((e) => e.event == 'live_heartbeat')
  assert.deepEqual(
    beats.map((e) => e.props.watched_ms),
    [3000, 5000],
  )
  assert.deepEqual([beats[1].props.mode, beats[1].props.position_s, beats[1].props.duration_s], ['replay', 5.25, 120])

  const live = video(Infinity)
  live.paused = false // already playing when bound
  ct.watch(live, { stream_id: 'live-1' })
  await tick(t, 1000)
  const join = env.sent().at(-1)
  assert.deepEqual([join.event, join.props.mode, join.props.stream_id], ['live_join', 'live', 'live-1'])
})

test('consent mode: nothing stored or sent before consent; consent(true) sends what was held', async (t) => {
  const ct = init({ key: KEY, consent: true })
  ct.track('early')
  await tick(t, 3000)
  assert.deepEqual([env.requests.length, env.cookieWrites.length, env.stored(QUEUE).length], [0, 0, 0])
  ct.consent(true)
  await tick(t, 1000)
  assert.deepEqual(env.sent().map((e) => e.event), ['page_view', 'early'])
  assert.equal(env.cookie().c, 1)
  // The next page: consent is remembered.
  init({ key: KEY, consent: true }).track('later')
  await tick(t, 1000)
  assert.deepEqual(env.sent().map((e) => e.event), ['page_view', 'early', 'page_view', 'later'])
  // Withdrawn: the cookie goes, nothing more is sent.
  ct.consent(false)
  ct.track('after_withdrawal')
  await tick(t, 3000)
  assert.equal(env.cookie(), undefined)
  assert.equal(env.sent().length, 4)
})

test('opt-out is remembered in the cookie; optIn resumes', async (t) => {
  const ct = init({ key: KEY })
  ct.optOut()
  ct.track('ignored')
  await tick(t, 2000)
  assert.equal(env.requests.length, 0, 'the page_view was dropped from the outbox too')
  assert.deepEqual(env.cookie(), { o: 1 })
  init({ key: KEY }).track('next_page')
  await tick(t, 2000)
  assert.equal(env.requests.length, 0)
  ct.optIn()
  ct.track('back')
  await tick(t, 2000)
  assert.deepEqual(env.sent().map((e) => e.event), ['back'])
})

test('respectDnt honours Do Not Track and Global Privacy Control', async (t) => {
  navigator.doNotTrack = '1'
  init({ key: KEY, respectDnt: true }).track('x')
  env = installBrowser()
  navigator.globalPrivacyControl = true
  init({ key: KEY, respectDnt: true }).track('x')
  await tick(t, 2000)
  assert.equal(env.requests.length, 0)
  assert.equal(env.cookieWrites.length, 0)
  init({ key: KEY }).track('x') // not asked to: tracked
  await tick(t, 2000)
  assert.equal(env.requests.length, 1)
})

test('identify sets user_id on this and later events; reset forgets the person and the ids', async (t) => {
  const ct = init({ key: KEY })
  const { a } = env.cookie()
  ct.identify('crm_7', { plan: 'pro' })
  init({ key: KEY }) // next page
  ct.reset()
  ct.track('logged_out')
  await tick(t, 1000)
  assert.deepEqual(
    env.sent().map((e) => [e.event, e.user_id, e.anonymous_id == a, e.props.traits]),
    [
      ['page_view', undefined, true, undefined],
      ['identify', 'crm_7', true, { plan: 'pro' }],
      ['page_view', 'crm_7', true, undefined],
      ['logged_out', undefined, false, undefined],
    ],
  )
  assert.equal(env.sent()[3].channel, 'poster_7', 'attribution survives reset')
})

test('registration and interactions in one call each', async (t) => {
  const ct = init({ key: KEY, pageviews: false })
  ct.register('webinar-12', { source: 'landing' })
  ct.interact('survey', { stream_id: 'webinar-12', answer: 'b' })
  await tick(t, 1000)
  assert.deepEqual(
    env.sent().map((e) => [e.event, e.props.stream_id, e.props.kind, e.props.source ?? e.props.answer]),
    [
      ['registration', 'webinar-12', undefined, 'landing'],
      ['interaction', 'webinar-12', 'survey', 'b'],
    ],
  )
})

test('downloads: document extensions or a download attribute; options.downloads replaces the list', async (t) => {
  const link = (href, download) => {
    const u = new URL(href, 'https://www.example.com/')
    const a = {
      href: u.href,
      pathname: u.pathname,
      hasAttribute: (n) => n == 'download' && download !== undefined,
      getAttribute: (n) => (n == 'download' ? (download ?? null) : null),
    }
    return { target: { closest: () => a }, button: 0 }
  }
  init({ key: KEY, pageviews: false })
  for (const [href, download] of [
    ['/files/%E7%99%BD%E7%9A%AE%E4%B9%A6.PDF'],
    ['/files/report.xlsx?v=3'],
    ['/export?id=1', ''],
    ['/export?id=2', 'data.csv'],
    ['/about'],
    ['/video.mp4'],
  ])
    env.dispatch('click', link(href, download))
  env.dispatch('auxclick', { ...link('/middle.zip'), button: 1 })
  env.dispatch('auxclick', { ...link('/right.zip'), button: 2 }) // a context menu: not a download
  await tick(t, 1000)
  assert.deepEqual(
    env.sent().map((e) => e.props.file_name),
    ['白皮书.PDF', 'report.xlsx', 'export', 'data.csv', 'middle.zip'],
  )
  env = installBrowser()
  init({ key: KEY, pageviews: false, downloads: ['mp4'] })
  env.dispatch('click', link('/video.mp4'))
  env.dispatch('click', link('/paper.pdf'))
  await tick(t, 1000)
  assert.deepEqual(env.sent().map((e) => e.props.file_url), ['https://www.example.com/video.mp4'])
})

test('the loader: calls queued before the script run after init, callbacks get the tracker, typos are ignored', async (t) => {
  const calls = []
  const q = [['track', 'early', { n: 1 }], [(ct) => calls.push(typeof ct.track)], ['init', { key: KEY }], ['trak', 'typo'], ['register', 'w']]
  globalThis.clicktrail = Object.assign(() => {}, { q })
  globalThis.document.currentScript = { src: 'https://gw.example.com/base/sdk/clicktrail.min.js' }
  await import('../src/browser.js?loader')
  assert.deepEqual(calls, ['function'])
  assert.equal(typeof clicktrail('init', { key: 'other' }).track, 'function', 'a second init returns the tracker')
  clicktrail('track', 'after')
  await tick(t, 1000)
  assert.equal(env.requests[0].url, 'https://gw.example.com/base/v1/batch?k=wk_unit')
  assert.deepEqual(env.sent().map((e) => e.event), ['page_view', 'early', 'registration', 'after'])
})
