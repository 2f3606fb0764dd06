// The script the loader snippet fetches: replaces the snippet's queue with the real function and
// runs the calls queued before it arrived.
import { init } from './index.js'

const w = window
const n = 'clicktrail'
const queued = w[n]?.q || []
// The gateway that served this script, when init gives no host: https://gw.example.com/sdk/clicktrail.min.js
const host = document.currentScript?.src.replace(/\/sdk\/[^/]*$/, '')
let ct
let waiting = []

function clicktrail(command, ...args) {
  if (command == 'init') {
    ct ||= init({ host, ...args[0] })
    waiting.forEach((a) => clicktrail(...a))
    waiting = []
    return ct
  }
  if (!ct) return waiting.push([command, ...args])
  return typeof command == 'function' ? command(ct) : ct[command]?.(...args) // an unknown name: nothing
}

w[n] = clicktrail
queued.forEach((a) => clicktrail(...a)) // calls before init wait for it
