// A small stand-in for the browser globals the SDK touches, for the unit tests in node. The real
// browser is covered by e2e.test.js; here timers and the clock are mocked and fetch is scripted.

export function installBrowser({ url = 'https://www.example.com/', referrer = '', title = 'Page', storage } = {}) {
  const g = globalThis
  const listeners = {}
  const cookies = new Map()
  const store = storage || new Map()
  const env = {
    url: new URL(url),
    cookieWrites: [],
    requests: [], // {url, keepalive, body}
    // Answers for fetch, in order; when empty: 200. A function answers each call; 'network' throws.
    answers: [],
    dispatch(type, props = {}) {
      for (const f of listeners[type] || []) f({ type, ...props })
    },
    navigate(to) {
      env.url = new URL(to, env.url)
    },
    cookie: () => {
      const raw = cookies.get('ct')
      return raw === undefined ? undefined : JSON.parse(decodeURIComponent(raw.value))
    },
    cookieAttributes: () => cookies.get('ct')?.attributes,
    stored: (key) => JSON.parse(store.get(key) || '[]'),
    // Events as the gateway keeps them: once per event_id, in the order first sent. Two trackers
    // (two pages, two tabs) share the outbox and may both send an event; so may a retry.
    sent: () => [...new Map(env.requests.flatMap((r) => r.body.batch).map((e) => [e.event_id, e])).values()],
  }
  g.window = g
  g.addEventListener = (type, f) => (listeners[type] ||= []).push(f)
  Object.defineProperty(g, 'location', {
    configurable: true,
    get: () => ({
      href: env.url.href,
      search: env.url.search,
      origin: env.url.origin,
      pathname: env.url.pathname,
      protocol: env.url.protocol,
    }),
  })
  Object.defineProperty(g, 'navigator', { configurable: true, value: {} })
  g.history = {
    pushState: (state, unused, to) => env.navigate(to),
    replaceState: (state, unused, to) => env.navigate(to),
  }
  g.innerHeight = 1000
  g.scrollY = 0
  g.document = {
    title,
    referrer,
    hidden: false,
    documentElement: { scrollHeight: 4000 },
    querySelector: () => null,
    get cookie() {
      return [...cookies].map(([k, v]) => `${k}=${v.value}`).join('; ')
    },
    set cookie(text) {
      env.cookieWrites.push(text)
      const [pair, ...attributes] = text.split(';')
      const [name, value] = pair.split('=')
      if (attributes.includes('max-age=0')) cookies.delete(name)
      else cookies.set(name, { value, attributes })
    },
  }
  const localStorage = {
    getItem: (k) => (store.has(k) ? store.get(k) : null),
    setItem: (k, v) => store.set(k, String(v)),
    removeItem: (k) => store.delete(k),
  }
  Object.defineProperty(g, 'localStorage', { configurable: true, get: () => localStorage })
  g.fetch = async (target, init) => {
    env.requests.push({ url: target, keepalive: init.keepalive, body: JSON.parse(init.body) })
    let answer = env.answers.length ? env.answers.shift() : 200
    if (typeof answer == 'function') answer = answer()
    if (answer == 'network') throw new TypeError('Failed to fetch')
    const [status, retryAfter] = [].concat(answer)
    return {
      ok: status >= 200 && status < 300,
      status,
      headers: { get: (h) => (h.toLowerCase() == 'retry-after' && retryAfter !== undefined ? String(retryAfter) : null) },
    }
  }
  return env
}

// Lets the promise chains of a send settle (setImmediate is not mocked).
export const settle = () => new Promise((resolve) => setImmediate(resolve))
