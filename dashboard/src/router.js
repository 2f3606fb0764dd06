// Hash routes (#/overview ...): the gateway serves one index.html, and a reload or a shared link keeps the page.
export const PAGES = ['overview', 'live', 'attribution', 'funnels', 'lifecycle', 'content']

export function current() {
  const name = location.hash.replace(/^#\/?/, '')
  return PAGES.includes(name) ? name : PAGES[0]
}

export function on_route(render) {
  addEventListener('hashchange', render)
}
