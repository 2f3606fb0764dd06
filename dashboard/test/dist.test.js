// dist/ is what the gateway serves (gateway/_data/dashboard links to it): it must be built from src/ as it is now.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { build } from '../build.mjs'

const DASHBOARD = new URL('..', import.meta.url).pathname

test('dist/ is up to date with src/ (run npm run build)', async () => {
  for (const [name, text] of Object.entries(await build())) {
    assert.equal(readFileSync(join(DASHBOARD, 'dist', name), 'utf8'), text, `dist/${name} is stale`)
  }
})
