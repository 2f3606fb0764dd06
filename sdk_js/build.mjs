// npm run build: src/ → dist/clicktrail.min.js (IIFE for the snippet), dist/clicktrail.mjs (ES module),
// dist/snippet.js and dist/snippet.html (the loader snippet). The tests rebuild and compare.
import * as esbuild from 'esbuild'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('.', import.meta.url))
const common = { bundle: true, minify: true, target: 'es2020', legalComments: 'none', write: false, charset: 'utf8' }

export async function build() {
  const iife = await esbuild.build({ ...common, entryPoints: [join(root, 'src/browser.js')], format: 'iife' })
  const esm = await esbuild.build({ ...common, entryPoints: [join(root, 'src/index.js')], format: 'esm' })
  const snippet = await esbuild.transform(readFileSync(join(root, 'src/snippet.js'), 'utf8'), { minify: true, target: 'es5' })
  return {
    'clicktrail.min.js': iife.outputFiles[0].text,
    'clicktrail.mjs': esm.outputFiles[0].text,
    'snippet.js': snippet.code,
    'snippet.html': `<script>\n${snippet.code}</script>\n`,
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dist = join(root, 'dist')
  mkdirSync(dist, { recursive: true })
  for (const [name, text] of Object.entries(await build())) {
    writeFileSync(join(dist, name), text)
    console.log(`dist/${name}  ${Buffer.byteLength(text)} bytes`)
  }
}
