// The loader snippet pasted into every page (built into dist/snippet.html): defines clicktrail()
// as a queue at once and loads the script asynchronously; the script then runs the queue.
;(function (w, d, n, s) {
  w[n] =
    w[n] ||
    function () {
      ;(w[n].q = w[n].q || []).push(arguments)
    }
  s = d.createElement('script')
  s.async = 1
  s.src = 'GATEWAY_URL/sdk/clicktrail.min.js'
  d.head.appendChild(s)
})(window, document, 'clicktrail')
clicktrail('init', { key: 'WRITE_KEY' })
