// First-party storage: ids, the state cookie, and the outbox of events not yet confirmed.

// Listens on window, in the capture phase: a page's own handlers cannot hide an event from us.
export const on = (type, f) => addEventListener(type, f, true)

// 128 random bits in 32 hex digits (a UUID without dashes), also on http: pages where
// crypto.randomUUID is missing.
export const uuid = () => [...crypto.getRandomValues(new Uint8Array(16))].map((b) => (b + 256).toString(16).slice(1)).join('')

// The cookie "ct" holds the visitor's state as JSON, for a year, on `domain` when given
// (".example.com" shares it across subdomains). jar() reads it, jar(value, age) writes it.
export const cookie =
  (domain) =>
  (value, age = 31536000) => {
    if (value)
      document.cookie =
        'ct=' + encodeURIComponent(JSON.stringify(value)) + ';path=/;max-age=' + age + (domain ? ';domain=' + domain : '')
    else
      try {
        return JSON.parse(decodeURIComponent(document.cookie.match(/(^|; )ct=([^;]*)/)[2]))
      } catch {
        return {}
      }
  }

// Events in localStorage under `name` (in memory where storage is refused), the newest 200 kept.
// box() returns them; box(change) replaces them with change(events) in one step, so the tabs of
// a site share the outbox.
export function outbox(name) {
  let mem = []
  let ls
  try {
    ls = localStorage
  } catch {}
  return (change) => {
    try {
      mem = JSON.parse(ls.getItem(name)) || []
    } catch {}
    if (!change) return mem
    mem = change(mem).slice(-200)
    try {
      mem[0] ? ls.setItem(name, JSON.stringify(mem)) : ls.removeItem(name)
    } catch {
      ls = 0 // full or refused: memory from now on
    }
  }
}
