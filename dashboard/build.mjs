// npm run build: src/main.js → dist/app.js (one minified bundle, ECharts included: no CDN at run time),
// src/index.html and src/app.css copied to dist/. dist/ is committed so the gateway serves it without npm;
// build() is exported so a test can rebuild and compare.
import * as esbuild from 'esbuild'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('.', import.meta.url))

export async function build() {
  const app = await esbuild.build({
    entryPoints: [join(root, 'src/main.js')], bundle: true, minify: true, format: 'iife', target: 'es2020',
    legalComments: 'none', charset: 'utf8', write: false,
  })
  return {
    'app.js': app.outputFiles[0].text,
    'index.html': readFileSync(join(root, 'src/index.html'), 'utf8'),
    'app.css': readFileSync(join(root, 'src/app.css'), 'utf8'),
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
