// Time-series charts on uPlot (vendor/uPlot.iife.min.js defines window.uPlot).
// Times are shown in UTC, as everywhere else in the console.

import { h, formatNumber, formatSeconds } from './dom.js';

const HEIGHT = 220;

/**
 * A chart in `container`. `series`: [{label, stroke, fill?}]; `format`: value → text.
 * Returns {setData(xs, ...ys), destroy()}; xs in Unix seconds.
 */
export function createChart(container, { series, format, yLabel }) {
  const uPlot = window.uPlot;
  if (typeof uPlot !== 'function') {
    container.append(h('p', { class: 'notice error', text: 'The chart library did not load.' }));
    return { setData() {}, destroy() {} };
  }

  const width = () => Math.max(240, Math.floor(container.clientWidth || 600));
  const opts = {
    width: width(),
    height: HEIGHT,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
    cursor: { drag: { x: false, y: false } },
    legend: { live: true },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, 0) * 1.1 || 1] } },
    series: [
      { label: 'Time (UTC)', value: (u, ts) => (ts === null || ts === undefined ? '–' : new Date(ts * 1000).toISOString().slice(0, 19).replace('T', ' ')) },
      ...series.map((s) => ({
        label: s.label,
        stroke: s.stroke,
        fill: s.fill,
        width: 2,
        spanGaps: false,
        points: { show: false },
        value: (u, v) => (v === null || v === undefined ? '–' : format(v)),
      })),
    ],
    axes: [
      {
        stroke: '#4b5563',
        grid: { stroke: '#e5e7eb' },
        ticks: { stroke: '#e5e7eb' },
        // 24-hour UTC clock times: the charts cover one hour.
        values: (u, splits) => splits.map((ts) => new Date(ts * 1000).toISOString().slice(11, 16)),
      },
      {
        stroke: '#4b5563',
        label: yLabel,
        size: 70,
        grid: { stroke: '#e5e7eb' },
        ticks: { stroke: '#e5e7eb' },
        values: (u, splits) => splits.map((v) => (v === null ? '' : format(v))),
      },
    ],
  };
  const empty = [[], ...series.map(() => [])];
  const plot = new uPlot(opts, empty, container);

  let lastWidth = opts.width;
  const ro = new ResizeObserver(() => {
    const w = width();
    if (w !== lastWidth) {
      lastWidth = w;
      plot.setSize({ width: w, height: HEIGHT });
    }
  });
  ro.observe(container);

  return {
    setData(xs, ...ys) {
      plot.setData([xs, ...ys]);
    },
    destroy() {
      ro.disconnect();
      plot.destroy();
    },
  };
}

export const formatRate = (v) => `${formatNumber(v, v < 10 ? 2 : 0)}/s`;
export { formatSeconds };
