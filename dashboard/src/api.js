// The server side of the dashboard: the session endpoints under /dashboard/api/ and the ClickHouse HTTP interface
// at /, which accepts the session cookie only with the X-Clicktrail-Dashboard header (a cross-site form cannot set it).

const HEADER = { 'X-Clicktrail-Dashboard': '1' }

async function session_call(path, init = {}) {
  const response = await fetch(new URL(`api/${path}`, document.baseURI), { credentials: 'same-origin', ...init })
  const body = response.status === 204 ? null : await response.json().catch(() => null)
  return { response, body }
}

/** The session ({user, sites, readonly}) after logging in; throws the server's refusal. */
export async function login(user, password) {
  const { response, body } = await session_call('login', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user, password }),
  })
  if (!response.ok) throw new Error(body?.error || `${response.status} ${response.statusText}`)
  return body
}

/** The current session, or null when there is none (401). */
export async function session() {
  const { response, body } = await session_call('session')
  if (response.status === 401) return null
  if (!response.ok) throw new Error(body?.error || `${response.status} ${response.statusText}`)
  return body
}

export async function logout() {
  await session_call('logout', { method: 'POST' })
}

// A query parameter in ClickHouse's text form: arrays as ['a','b'] literals, quotes and backslashes escaped.
function param_text(value) {
  if (!Array.isArray(value)) return String(value)
  return `[${value.map((v) => `'${String(v).replace(/[\\']/g, (c) => `\\${c}`)}'`).join(',')}]`
}

/** The rows of `sql`, whose {name:Type} placeholders ClickHouse binds from `params`; throws ClickHouse's message. */
export async function query(sql, params = {}) {
  const url = new URL('/', location.origin)
  url.searchParams.set('default_format', 'JSONEachRow')
  // The gateway holds the answer until the query has ended, so a failure is always an HTTP error with ClickHouse's
  // message, never an answer broken off after its first rows (the dashboard's answers are small).
  url.searchParams.set('wait_end_of_query', '1')
  for (const [name, value] of Object.entries(params)) url.searchParams.set(`param_${name}`, param_text(value))
  const response = await fetch(url, { method: 'POST', body: sql, headers: HEADER, credentials: 'same-origin' })
  const text = await response.text()
  if (!response.ok) {
    // 403 (ClickHouse's failed login, code 516) when the session expired: the app asks api/session and shows the login.
    throw Object.assign(new Error(text.trim() || `${response.status} ${response.statusText}`), { status: response.status })
  }
  return text.split('\n').filter(Boolean).map((line) => JSON.parse(line))
}
