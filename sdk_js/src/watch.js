// Watch time 观看时长 of a live stream or replay: live_join, live_heartbeat, live_leave.
// Bound to a <video>/<audio> element, or driven by a player adapter through the returned
// callbacks: play(), pause(), ended(), time(position_s, duration_s), leave().
import { uuid } from './store.js'

export function watch(ct, o, hooks, target, opts = {}) {
  const el = typeof target == 'string' ? document.querySelector(target) : target
  let view, since, timer, pos, dur
  let played = 0 // ms played in this view so far: cumulative, so a lost or repeated heartbeat changes nothing
  let told = 0 // played, as of the last heartbeat
  const props = (x) => ({
    stream_id: opts.stream_id,
    view_id: view,
    mode: opts.mode || (el?.duration == Infinity ? 'live' : 'replay'),
    ...x,
  })
  const beat = () => {
    const now = Date.now()
    if (since) played += now - since
    since &&= now
    if (el) h.time(el.currentTime, el.duration)
    if (view && played > told) {
      told = played
      ct.track('live_heartbeat', props({ watched_ms: Math.round(played), position_s: pos, duration_s: dur }))
    }
  }
  const h = {
    play() {
      if (!view) {
        view = uuid()
        played = told = 0
        ct.track('live_join', props())
      }
      if (!since) {
        since = Date.now()
        timer = setInterval(beat, opts.heartbeat || o.heartbeat)
      }
    },
    pause() {
      beat()
      since = 0
      clearInterval(timer)
    },
    ended: () => h.leave(),
    leave() {
      if (!view) return
      h.pause()
      ct.track('live_leave', props())
      view = 0
    },
    time(p, d) {
      pos = p >= 0 ? p : undefined
      dur = d > 0 && d < Infinity ? d : undefined
    },
  }
  // Page hidden: send the watch time so far; page left: close the view.
  hooks.push((unload) => (unload ? h.leave() : beat()))
  if (el) {
    const on = (type, f) => el.addEventListener(type, () => f())
    on('playing', h.play)
    on('pause', h.pause)
    on('waiting', h.pause) // buffering is not watching
    on('ended', h.ended)
    if (!el.paused && el.readyState > 2) h.play()
  }
  return h
}
