// Content: which pages are read to the end, which files are downloaded, whose shares bring readers and leads.
// The content views count all time (they have no date parameter), so the range does not apply here.
import { bars, chart } from '../charts.js'
import { duration_ms, int, pct } from '../format.js'
import { t } from '../i18n.js'
import { empty_state, h, nothing, section } from '../ui.js'
import { table } from '../table.js'

export default async function content(ctx) {
  const params = { site: ctx.site }
  const [pages, downloads, sharers] = await Promise.all([
    ctx.query(`SELECT url_path, views, readers, avg_engaged_ms, read_through_rate FROM clicktrail.content_engagement
      WHERE site_id = {site:String} ORDER BY read_through_rate DESC, views DESC, url_path`, params),
    ctx.query(`SELECT file_url, downloads, persons FROM clicktrail.downloads_by_file
      WHERE site_id = {site:String} ORDER BY downloads DESC, file_url`, params),
    ctx.query(`SELECT sharer, views, readers, avg_engaged_ms, registrations, leads FROM clicktrail.sharer_stats
      WHERE site_id = {site:String} ORDER BY leads DESC, registrations DESC, readers DESC, sharer`, params),
  ])
  if (!pages.length) {
    ctx.body.replaceChildren(empty_state(t('no_events'), t('no_events_help')))
    return 'empty'
  }
  ctx.controls.append(h('span', { class: 'note' }, t('all_time')))
  const read = section(t('pages_by_read_through'))
  const files = section(t('downloads_by_file'))
  const board = section(t('sharer_leaderboard'))
  ctx.body.replaceChildren(read, h('div', { class: 'columns' }, files, board))
  chart(read, 'read_through', bars(pages.slice(0, 15).map((r) => [r.url_path, r.read_through_rate]),
    { horizontal: true, format: pct }))
  read.append(table('pages', [
    { col: 'url_path', label: t('page') },
    { col: 'views', label: t('views'), format: int },
    { col: 'readers', label: t('readers'), format: int },
    { col: 'avg_engaged_ms', label: t('avg_engaged'), format: duration_ms },
    { col: 'read_through_rate', label: t('read_through_rate'), format: pct },
  ], pages))
  if (downloads.length) chart(files, 'downloads', bars(downloads.slice(0, 15).map((r) => [r.file_url.split('/').pop(), r.downloads]), { horizontal: true }))
  files.append(downloads.length ? table('downloads', [
    { col: 'file_url', label: t('file') },
    { col: 'downloads', label: t('downloads'), format: int },
    { col: 'persons', label: t('persons'), format: int },
  ], downloads) : nothing())
  board.append(sharers.length ? table('sharers', [
    { col: 'sharer', label: t('sharer') },
    { col: 'views', label: t('views'), format: int },
    { col: 'readers', label: t('readers'), format: int },
    { col: 'avg_engaged_ms', label: t('avg_engaged'), format: duration_ms },
    { col: 'registrations', label: t('registrations'), format: int },
    { col: 'leads', label: t('leads'), format: int },
  ], sharers) : nothing())
}
