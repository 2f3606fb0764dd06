// ECharts, only the parts the pages draw (the full build is about 1 MB), on canvas: the dashboard's CSP allows no
// style attributes, which the SVG renderer writes. Every chart is registered by name in
// window.clicktrail.charts, so a test can read what was drawn (charts.concurrency.getOption().series).
import * as echarts from 'echarts/core'
import { BarChart, FunnelChart, LineChart } from 'echarts/charts'
import { GridComponent, LegendComponent, TooltipComponent } from 'echarts/components'
import { CanvasRenderer } from 'echarts/renderers'
import { h } from './ui.js'

echarts.use([BarChart, FunnelChart, LineChart, GridComponent, LegendComponent, TooltipComponent, CanvasRenderer])

export const charts = {}

// No animation: a chart is final the moment it is drawn (what the page's data-state=ready promises, and what a
// screenshot shows). UTC: the views' minutes and days are UTC.
const base = { animation: false, useUTC: true, tooltip: { trigger: 'axis' }, grid: { left: 8, right: 16, top: 36, bottom: 8, containLabel: true } }

/** Draws `option` into a new <div data-chart=name> appended to `parent` (`height` in px, else the CSS's);
 * returns the ECharts instance. */
export function chart(parent, name, { height, ...option }) {
  const el = h('div', { class: 'chart', 'data-chart': name })
  if (height) el.style.height = `${height}px`
  parent.append(el)
  charts[name]?.dispose()
  charts[name] = echarts.init(el)
  charts[name].setOption({ ...base, ...option })
  return charts[name]
}

/** Forgets the charts of the page left. */
export function dispose_charts() {
  for (const name of Object.keys(charts)) {
    charts[name].dispose()
    delete charts[name]
  }
}

addEventListener('resize', () => Object.values(charts).forEach((c) => c.resize()))

// The option shapes the pages share.

/** Bars of one series: [[label, value]] rows; horizontal ones as tall as their rows need. */
export const bars = (pairs, { horizontal = false, format } = {}) => {
  const category = { type: 'category', data: pairs.map((p) => p[0]), axisLabel: { interval: 0, hideOverlap: true } }
  const value = { type: 'value', axisLabel: format ? { formatter: format } : {} }
  return {
    height: horizontal ? Math.min(480, Math.max(140, 60 + 26 * pairs.length)) : undefined,
    tooltip: { trigger: 'axis', valueFormatter: format },
    xAxis: horizontal ? value : category, yAxis: horizontal ? { ...category, inverse: true } : value,
    series: [{ type: 'bar', barMaxWidth: 28, data: pairs.map((p) => Number(p[1])) }],
  }
}

/** A funnel of [[name, value]] stages, in the given order. */
export const funnel = (pairs) => ({
  tooltip: { trigger: 'item' },
  series: [{
    type: 'funnel', sort: 'none', left: '10%', width: '80%', minSize: '8%', gap: 2,
    label: { position: 'inside', formatter: '{b}: {c}' }, data: pairs.map(([name, value]) => ({ name, value: Number(value) })),
  }],
})
