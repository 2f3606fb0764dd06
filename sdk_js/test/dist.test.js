// dist/ is what the gateway serves and npm installs: it must be built from src/ as it is now,
// and small (the whole script at most 3 KB gzipped, the snippet under 1 KB).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { build } from '../build.mjs'

const SDK = new URL('..', import.meta.url).pathname
const dist = (name) => readFileSync(join(SDK, 'dist', name), 'utf8')

test('dist/ is up to date with src/ (run npm run build)', async () => {
  for (const [name, text] of Object.entries(await build())) assert.equal(dist(name), text, `dist/${name} is stale`)
})

test('the complete script is at most 3 KB gzipped', () => {
  const size = gzipSync(dist('clicktrail.min.js')).length
  console.log(`clicktrail.min.js: ${Buffer.byteLength(dist('clicktrail.min.js'))} bytes, ${size} gzipped`)
  assert.ok(size <= 3072, `${size} bytes gzipped`)
})

test('the loader snippet is under 1 KB', () => {
  const size = Buffer.byteLength(dist('snippet.html'))
  assert.ok(size < 1024, `${size} bytes`)
  assert.match(dist('snippet.html'), /^<script>\n.*GATEWAY_URL\/sdk\/clicktrail\.min\.js.*clicktrail\("init",\{key:"WRITE_KEY"\}\);\n<\/script>\n$/s)
})

test("the gateway's demo page carries the snippet as built", () => {
  const demo = readFileSync(join(SDK, '..', 'gateway', 'demo.html'), 'utf8')
  const snippet = dist('snippet.html').replace('GATEWAY_URL', '').replace('WRITE_KEY', '{{write_key}}')
  assert.ok(demo.includes(snippet), 'gateway/demo.html does not contain dist/snippet.html')
})

test('the ES module exports init; the package has no runtime dependencies', async () => {
  const mod = await import('../dist/clicktrail.mjs')
  assert.equal(typeof mod.init, 'function')
  assert.equal(mod.default, mod.init)
  const pkg = JSON.parse(readFileSync(join(SDK, 'package.json'), 'utf8'))
  assert.equal(pkg.dependencies, undefined)
  assert.equal(pkg.exports['.'], './dist/clicktrail.mjs')
})
