// Automatic events from the page: downloads (link clicks) and form submissions.
import { on } from './store.js'

// Links to documents and archives: downloads unless options.downloads lists other extensions.
const DOCS = /\.(pdf|docx?|pptx?|ppsx?|xlsx?|csv|txt|rtf|od[tsp]|key|pages|numbers|epub|zip|rar|7z|t?gz|bz2|xz|tar|dmg|exe|msi|apk|pkg|iso)$/i
// Never a value from these, and no hidden or password field at all.
const SKIP = /^(hidden|password|submit|button|reset|image)$/

export function autotrack(ct, o) {
  const docs = o.downloads?.join ? RegExp('\\.(' + o.downloads.join('|') + ')$', 'i') : DOCS
  const allow = o.formValues || []

  // A download is recorded on the click and the click goes on: nothing waits for the request.
  const click = (e) => {
    const a = e.button < 2 && e.target.closest?.('a[href]')
    if (!a || o.downloads === false) return
    const path = a.pathname || ''
    if (!a.hasAttribute('download') && !docs.test(path)) return
    let name = a.getAttribute('download') || path.split('/').pop()
    try {
      name = decodeURIComponent(name)
    } catch {}
    ct.track('download', { file_url: a.href.slice(0, 2048), file_name: name })
  }
  on('click', click)
  on('auxclick', click)

  if (o.forms === false) return
  on('submit', (e) => {
    const f = e.target
    if (f.hasAttribute('data-ct-ignore')) return
    const fields = {}
    for (const el of f.elements) {
      const n = el.name
      if (!n || SKIP.test(el.type)) continue
      fields[n] ??= null
      if (allow.includes(n) && (el.checked || !/^(checkbox|radio|file)$/.test(el.type)))
        fields[n] = fields[n] == null ? el.value : fields[n] + ',' + el.value
    }
    const id = f.getAttribute('id') || f.getAttribute('name') || f.getAttribute('action') || 'form'
    ct.track('form_submit', { form_id: id.slice(0, 200), fields })
  })
}
