// Clicktrail browser SDK: identity, attribution, page views and reading time, and delivery.
// init(options) returns the tracker; see ../README.md for the options and the API.
import { uuid, cookie, outbox, on } from './store.js'
import { autotrack } from './auto.js'
import { watch } from './watch.js'

// Core fields filled from the landing URL's query (channel from options.channelParam, default ?ch=).
const TOUCH = ['channel', 'utm_source', 'utm_medium', 'utm_campaign', 'utm_content', 'utm_term', 'sharer']
const SESSION_MS = 30 * 60e3 // a new session_id after 30 minutes without activity
const IDLE_MS = 15e3 // reading time stops 15 s after the last input

export function init(options) {
  const o = { channelParam: 'ch', heartbeat: 1e4, flush: 1e3, hash: true, ...options }
  const d = document
  const nav = navigator
  const endpoint = (o.host || location.origin).replace(/\/$/, '') + '/v1/batch?k=' + o.key
  const jar = cookie(o.cookieDomain)
  const box = outbox('ct_q_' + o.key)
  const hooks = [] // run when the page is hidden: players flush their watch time
  // State kept in the first-party cookie: a anonymous id, s session id, t last activity,
  // u user id, f first touch, l last touch, c consent given, o opted out.
  let st = jar()
  let off = st.o || (o.respectDnt && (nav.doNotTrack == '1' || nav.globalPrivacyControl))
  let held = o.consent && !st.c && [] // events waiting for consent, in memory only
  let ref = d.referrer
  let cur // URL of the current page view
  let timer, busy, hidden, fails = 0
  let engaged, since, idle, scroll, left

  const save = () => off || held || jar(st)

  function session(now) {
    if (!(now - st.t < SESSION_MS)) st.s = uuid()
    st.a ||= uuid()
    st.t = now
    save()
  }

  // Channel attribution: a landing URL with any of the TOUCH parameters is a new touch.
  function touch() {
    const q = new URLSearchParams(location.search)
    const t = {}
    for (const k of TOUCH) {
      const v = q.get(k == 'channel' ? o.channelParam : k)
      if (v) t[k] = v.slice(0, 200)
    }
    if (Object.keys(t)[0]) {
      st.l = t
      st.f ||= t
    }
  }

  function track(event, props) {
    if (off) return
    const now = Date.now()
    session(now)
    const p = { ...props }
    for (const k in st.f) p['$first_' + k] = st.f[k]
    const e = {
      event,
      event_id: uuid(),
      anonymous_id: st.a,
      user_id: st.u,
      session_id: st.s,
      ts: now,
      // Cut to the contract's limits: a longer value would get the whole event refused.
      url: (cur || location.href).slice(0, 2048),
      referrer: ref.slice(0, 2048),
      title: d.title.slice(0, 1000),
      ...st.l,
      props: p,
    }
    if (held) held.push(e)
    else {
      box((q) => [...q, e])
      soon(o.flush)
    }
  }

  // -- delivery: every event waits in the outbox (localStorage) until the gateway answered for it ----

  function soon(ms) {
    timer ||= setTimeout(() => {
      timer = 0
      send()
    }, ms)
  }

  function retry(seconds) {
    clearTimeout(timer)
    timer = 0
    soon(seconds > 0 ? seconds * 1e3 : Math.min(6e4, 1e3 * 2 ** fails++))
  }

  // Posts the oldest 15 events (15 × 32 KB fits the gateway's 512 KB) as text/plain with ?k=, so
  // no preflight is needed; on page hide with keepalive, so the request outlives the page. The
  // gateway drops duplicates by event_id: an event resent after an unanswered request counts once.
  function send(hide) {
    const batch = box().slice(0, 15)
    const ids = batch.map((e) => e.event_id)
    // Nothing to send, a request under way, or pagehide right after visibilitychange sent the same.
    if (!batch[0] || (hide ? ids + '' == hidden : busy)) return
    if (hide) hidden = ids + ''
    if (!hide) busy = 1
    fetch(endpoint, { method: 'POST', body: JSON.stringify({ batch, sent_at: Date.now() }), keepalive: !!hide })
      .then(
        (r) => {
          // 2xx, or a refusal a retry cannot fix (400, 401, 403, 413, 415): done with these events. A 408
          // (the body came too slowly) and a 429 are the gateway's word to send them again.
          if (r.status < 500 && r.status != 429 && r.status != 408) {
            box((q) => q.filter((e) => !ids.includes(e.event_id)))
            fails = 0
            return 1
          }
          retry(+r.headers.get('Retry-After'))
        },
        () => retry(),
      )
      .then((ok) => {
        if (!hide) busy = 0
        if (ok && box()[0]) soon(0)
      })
  }

  // -- page views, reading time (engaged_ms) and scroll depth ----------------------------------------

  function depth() {
    const h = d.documentElement.scrollHeight
    const v = innerHeight
    scroll = Math.max(scroll, h > v ? Math.min(100, Math.round(((scrollY + v) / h) * 100)) : 100)
  }
  function stop() {
    if (since) engaged += Date.now() - since
    since = 0
  }
  function active() {
    const now = Date.now()
    if (d.hidden) return
    since ||= now
    clearTimeout(idle)
    idle = setTimeout(stop, IDLE_MS)
    if (now - st.t > 6e4) session(now) // a reader without events keeps the session alive
  }
  function leave() {
    stop()
    if (cur && (!left || engaged)) track('page_leave', { engaged_ms: Math.round(engaged), scroll_pct: scroll })
    left = 1
    engaged = 0
  }
  function page(props) {
    leave() // the page before, if any
    touch()
    if (cur) ref = cur
    cur = location.href
    engaged = scroll = left = 0
    track('page_view', props)
    depth()
    active()
  }
  function hide(e) {
    leave()
    hooks.forEach((f) => f(e.type == 'pagehide'))
    send(1)
  }

  const ct = {
    track,
    page,
    identify(user_id, traits) {
      st.u = user_id
      track('identify', { traits })
    },
    reset() {
      st = { f: st.f, l: st.l, c: st.c }
      save()
    },
    register: (stream_id, props) => track('registration', { stream_id, ...props }),
    interact: (kind, props) => track('interaction', { kind, ...props }),
    watch: (target, opts) => watch(ct, o, hooks, target, opts),
    // Consent given: store the cookie and send what was held. Refused or withdrawn: delete the
    // cookie and hold events in memory again (never sent unless consent comes on this page).
    consent(yes) {
      if (!yes) {
        jar(1, 0)
        held = []
      } else if (held) {
        box((q) => q.concat(held))
        held = 0
        st.c = 1
        save()
        soon(0)
      }
    },
    optOut() {
      off = 1
      box(() => [])
      jar((st = { o: 1 }))
    },
    optIn() {
      off = 0
      delete st.o
      save()
    },
    flush: () => send(),
  }

  touch()
  if (off) return ct
  if (box()[0]) soon(o.flush) // left over from earlier pages
  on('visibilitychange', (e) => (d.hidden ? hide(e) : active()))
  on('pagehide', hide)
  for (const t of ['pointermove', 'pointerdown', 'keydown']) on(t, active)
  on('scroll', () => (depth(), active()))
  if (o.pageviews !== false) {
    const strip = (u) => (o.hash ? u : u.split('#')[0]) // hash: false ignores changes of #fragment
    const nav = () => {
      if (strip(location.href) != strip(cur)) page()
    }
    const push = history.pushState
    history.pushState = function () {
      push.apply(this, arguments)
      nav()
    }
    on('popstate', nav)
    on('hashchange', nav)
    on('pageshow', (e) => e.persisted && page()) // back to a page kept in the bfcache
    page()
  }
  autotrack(ct, o)
  return ct
}

export default init
