// End-to-end harness: a real gateway process (python -m gateway serve), a static server for the
// test pages on another loopback port, Debian's Chromium through playwright-core, and ClickHouse
// read back over the gateway's HTTP interface.
import { spawn, execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, createWriteStream, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { dirname, extname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import net from 'node:net'

export const SDK = fileURLToPath(new URL('..', import.meta.url))
export const ROOT = process.env.CLICKTRAIL_ROOT || join(SDK, '..')
const PAGES = join(SDK, 'test', 'pages')
export const KEY = 'wk_js_e2e'
export const SITE = 'js_e2e'
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'

export function python() {
  if (process.env.CLICKTRAIL_PYTHON) return process.env.CLICKTRAIL_PYTHON
  const venv = join(ROOT, '.venv', 'bin', 'python')
  return existsSync(venv) ? venv : 'python3'
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.unref()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

export async function until(check, { timeout = 20000, interval = 150, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout
  let last
  while (Date.now() < deadline) {
    last = await check()
    if (last) return last
    await sleep(interval)
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
}

export class Gateway {
  constructor(dir, origins) {
    this.dir = dir
    this.origins = origins
  }

  async configure() {
    this.port = await freePort()
    this.clickhousePort = await freePort()
    this.base = `http://127.0.0.1:${this.port}`
    this.origins.push(this.base)
    return this
  }

  // Written at each start, so origins added after configure() count.
  writeConfig() {
    mkdirSync(this.dir, { recursive: true })
    this.config = join(this.dir, 'clicktrail.toml')
    writeFileSync(
      this.config,
      `[server]
host = "127.0.0.1"
port = ${this.port}
clickhouse_port = ${this.clickhousePort}
ops_port = 0
data_dir = "data"
segment_max_age_ms = 200

[[sites]]
id = "${SITE}"
write_key = "${KEY}"
allowed_origins = ${JSON.stringify(this.origins)}

[[users]]
name = "admin"
password = "admin-pw"
readonly = false
`,
    )
  }

  async start() {
    this.writeConfig()
    const log = createWriteStream(join(this.dir, 'gateway.log'), { flags: 'a' })
    await new Promise((r) => log.on('open', r))
    this.proc = spawn(python(), ['-m', 'gateway', 'serve', '--config', this.config], {
      cwd: ROOT,
      stdio: ['ignore', log, log],
    })
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code)))
    await until(
      async () => {
        if (this.proc.exitCode !== null) throw new Error(`gateway exited:\n${this.log()}`)
        try {
          return (await fetch(this.base + '/readyz')).status == 200
        } catch {
          return false
        }
      },
      { timeout: 60000, what: 'the gateway to be ready' },
    )
    return this
  }

  async stop(signal = 'SIGTERM') {
    if (!this.proc || this.proc.exitCode !== null) return
    this.proc.kill(signal)
    await this.exited
    this.proc = null
  }

  log() {
    try {
      return readFileSync(join(this.dir, 'gateway.log'), 'utf8')
    } catch {
      return ''
    }
  }

  async query(sql) {
    const r = await fetch(`http://127.0.0.1:${this.clickhousePort}/`, {
      method: 'POST',
      body: sql + ' FORMAT JSONEachRow',
      headers: { Authorization: 'Basic ' + Buffer.from('admin:admin-pw').toString('base64') },
    })
    const text = await r.text()
    if (r.status != 200) throw new Error(`query failed (${r.status}): ${text}`)
    return text
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line))
  }

  // Events of this site matching `where`, polled until at least `count` are in ClickHouse, oldest first.
  async events(where, count, timeout = 20000) {
    const sql = `SELECT event, event_id, anonymous_id, user_id, session_id, channel, utm_source, utm_medium,
      utm_campaign, sharer, url, url_path, referrer, title, props, toUnixTimestamp64Milli(ts) AS ms
      FROM clicktrail.events
      WHERE site_id = '${SITE}' AND (${where}) ORDER BY ts, received_at`
    let rows = []
    await until(
      async () => {
        try {
          rows = await this.query(sql)
        } catch {
          rows = [] // ClickHouse still opening after a restart
        }
        return rows.length >= count
      },
      { timeout, what: `${count} events where ${where}` },
    ).catch((e) => {
      e.message += `; have ${rows.length}: ${JSON.stringify(rows.map((r) => r.event))}`
      throw e
    })
    return rows.map((r) => ({ ...r, ms: +r.ms, props: JSON.parse(r.props) }))
  }
}

// The test pages: test/pages/*.html with {{SNIPPET}} replaced by dist/snippet.html, pointed at the
// gateway, its init options extended by the page's `ctOpts`; /files/* are downloads; /media/* the
// generated video.
export async function startStatic(gatewayBase, mediaDir) {
  const port = await freePort()
  const origin = `http://127.0.0.1:${port}`
  const snippet = readFileSync(join(SDK, 'dist', 'snippet.html'), 'utf8')
    .replace('GATEWAY_URL', gatewayBase())
    .replace('{key:"WRITE_KEY"}', `Object.assign({key:"${KEY}"},window.ctOpts)`)
  const server = createServer((req, res) => {
    const url = new URL(req.url, origin)
    let path = url.pathname
    if (path.startsWith('/files/')) {
      res.writeHead(200, {
        'Content-Type': 'application/octet-stream',
        'Content-Disposition': 'attachment',
      })
      return res.end('file ' + path)
    }
    if (path.startsWith('/doc/')) {
      // A document link that opens as a page: the click must not hold up this navigation.
      res.writeHead(200, { 'Content-Type': 'text/html' })
      return res.end('<!doctype html><title>doc</title><p>opened</p>')
    }
    if (path.startsWith('/media/')) {
      const file = join(mediaDir(), path.slice(7))
      if (!existsSync(file)) return res.writeHead(404).end()
      const body = readFileSync(file)
      res.writeHead(200, { 'Content-Type': 'video/webm', 'Content-Length': body.length })
      return res.end(body)
    }
    if (path.startsWith('/spa/')) path = '/spa.html'
    if (path == '/') path = '/basic.html'
    const file = join(PAGES, path)
    if (!file.startsWith(PAGES) || extname(file) != '.html' || !existsSync(file)) return res.writeHead(404).end()
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' })
    res.end(
      readFileSync(file, 'utf8')
        .replaceAll('{{SNIPPET}}', snippet)
        .replaceAll('{{GATEWAY}}', gatewayBase())
        .replaceAll('{{KEY}}', KEY),
    )
  })
  await new Promise((r) => server.listen(port, '127.0.0.1', r))
  return { origin, close: () => new Promise((r) => server.close(r)) }
}

// Playwright gives the browser a fresh, temporary user-data dir; each test opens its own context.
export async function launchChromium() {
  const { chromium } = await import('playwright-core')
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--disable-sync',
      '--disable-quic',
      '--autoplay-policy=no-user-gesture-required',
    ],
    timeout: 60000,
  })
}

// A short test video made with ffmpeg: `seconds` long, VP8 in WebM (no audio), 10 frames a second.
export function makeVideo(dir, seconds) {
  const file = join(dir, 'clip.webm')
  execFileSync('ffmpeg', [
    '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', `testsrc=duration=${seconds}:size=160x120:rate=10`,
    '-c:v', 'libvpx', '-b:v', '200k', '-an', file,
  ])
  return file
}

export function tempDir(prefix) {
  return mkdtempSync(join(tmpdir(), prefix))
}

export { sleep, rmSync, dirname }
