// #/overview: the tenant's figures, polled every 2 s, two charts of the last
// hour, and (for admins) pause/resume.

import { isAbort } from './api.js';
import { h, replace, formatInt, formatLagNumber, formatDuration, timeEl, notice, formatRelative } from './dom.js';
import { createChart, formatRate, formatSeconds } from './charts.js';

const POLL_MS = 2000;

const COUNTS = [
  { id: 'count-total', label: 'Stored', key: 'total', hint: 'operations in the database' },
  { id: 'count-waiting', label: 'Waiting', key: 'not_trustlogged', hint: 'not yet in the trust log' },
  { id: 'count-delivered', label: 'Delivered', key: 'trustlogged', hint: 'confirmed by the trust log' },
  { id: 'count-retry', label: 'Retry queue', key: 'retry_pending', hint: 'waiting for their next try' },
  { id: 'count-dead', label: 'Dead letters', key: 'dead_letter', hint: 'gave up; replay or purge' },
  { id: 'count-db-only', label: 'Database only', key: 'db_only', hint: 'stored with db-only, never delivered' },
];

export function render(ctx) {
  const { main, api, isAdmin, signal } = ctx;
  ctx.setTitle('Overview');

  const errorBox = h('div', { class: 'poll-error', 'aria-live': 'polite' });
  const updated = h('p', { class: 'muted updated', id: 'last-updated' }, 'Loading…');

  // Delivery state and the admin's pause/resume.
  const stateBadge = h('span', { class: 'badge', 'data-testid': 'delivery-state', text: '…' });
  const stateDetail = h('span', { class: 'muted' });
  const pauseBtn = h('button', { type: 'button', id: 'pause-delivery', hidden: true, text: 'Pause delivery' });
  const resumeBtn = h('button', { type: 'button', id: 'resume-delivery', class: 'primary', hidden: true, text: 'Resume delivery' });
  const pauseResult = h('p', { class: 'action-message', role: 'status', 'data-testid': 'pause-result' });

  // The counts.
  const values = {};
  const cards = COUNTS.map((c) => {
    values[c.id] = h('dd', { class: 'stat-value', 'data-testid': c.id, id: c.id, text: '–' });
    return h('div', { class: `stat stat-${c.key}` }, h('dt', { text: c.label }), values[c.id], h('dd', { class: 'stat-hint', text: c.hint }));
  });
  const nextRetry = h('dd', { class: 'stat-hint' }, 'nothing queued');
  cards[3].append(nextRetry);
  const deadLink = h('dd', { class: 'stat-hint' }, h('a', { href: ctx.href('/dead-letters'), text: 'Review dead letters' }));
  cards[4].replaceChild(deadLink, cards[4].querySelector('.stat-hint'));

  const lagValue = h('span', { 'data-testid': 'cursor-lag', id: 'cursor-lag', text: '–' });
  const lagWords = h('dd', { class: 'stat-hint', text: 'age of the oldest waiting operation' });
  const lagCard = h('div', { class: 'stat stat-lag' }, h('dt', { text: 'Cursor lag' }), h('dd', { class: 'stat-value' }, lagValue, h('span', { class: 'unit', text: ' s' })), lagWords);
  const cursorPos = h('dd', { class: 'stat-detail' }, '–');
  const cursorCard = h('div', { class: 'stat stat-cursor' }, h('dt', { text: 'Cursor' }), cursorPos, h('dd', { class: 'stat-hint', text: 'the last operation the scan passed' }));

  const stats = h('dl', { class: 'stats' }, cards);

  const deliveredChartBox = h('div', { class: 'chart', id: 'chart-delivered' });
  const latencyChartBox = h('div', { class: 'chart', id: 'chart-latency' });
  const deliveredSummary = h('p', { class: 'chart-summary muted' });
  const latencySummary = h('p', { class: 'chart-summary muted' });

  main.append(
    h('div', { class: 'page-head' }, h('h1', { tabindex: '-1', text: 'Overview' }), h('p', { class: 'page-sub' }, 'Tenant ', h('strong', { text: ctx.tenant }))),
    errorBox,
    h(
      'section',
      { class: 'panel delivery', 'aria-labelledby': 'delivery-heading' },
      h('h2', { id: 'delivery-heading', text: 'Delivery' }),
      h('div', { class: 'delivery-row' }, h('p', { class: 'delivery-state' }, stateBadge, ' ', stateDetail), isAdmin ? h('div', { class: 'delivery-actions' }, pauseBtn, resumeBtn) : null),
      pauseResult,
      h('dl', { class: 'stats delivery-stats' }, lagCard, cursorCard),
    ),
    h('section', { class: 'panel', 'aria-labelledby': 'counts-heading' }, h('h2', { id: 'counts-heading', text: 'Operations' }), stats, updated),
    h(
      'section',
      { class: 'panel charts', 'aria-labelledby': 'charts-heading' },
      h('h2', { id: 'charts-heading', text: 'The last hour' }),
      h('div', { class: 'chart-grid' },
        h('figure', { class: 'chart-figure' }, h('figcaption', { text: 'Delivered per second' }), deliveredChartBox, deliveredSummary),
        h('figure', { class: 'chart-figure' }, h('figcaption', { text: 'Delivery latency (p50, p99)' }), latencyChartBox, latencySummary),
      ),
    ),
  );

  const deliveredChart = createChart(deliveredChartBox, {
    series: [{ label: 'delivered/s', stroke: '#1d4ed8', fill: 'rgba(29, 78, 216, 0.12)' }],
    format: formatRate,
    yLabel: 'operations/s',
  });
  const latencyChart = createChart(latencyChartBox, {
    series: [
      { label: 'p50', stroke: '#047857' },
      { label: 'p99', stroke: '#b45309' },
    ],
    format: formatSeconds,
    yLabel: 'latency',
  });

  let stopped = false;
  let timer = null;
  let lastHistoryAt = 0;
  let historyEveryMs = 10000;
  let paused = null;

  ctx.onCleanup(() => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisible);
    deliveredChart.destroy();
    latencyChart.destroy();
  });

  function showStatus(s) {
    for (const c of COUNTS) {
      const el = values[c.id];
      const v = s[c.key];
      el.textContent = formatInt(v);
      el.dataset.value = v === null || v === undefined ? '' : String(v);
    }
    lagValue.textContent = formatLagNumber(s.cursor_lag_seconds);
    lagValue.dataset.value = String(s.cursor_lag_seconds ?? '');
    lagWords.textContent = Number(s.cursor_lag_seconds) > 0
      ? `the oldest waiting operation is ${formatDuration(s.cursor_lag_seconds)} old`
      : 'nothing is waiting';

    replace(nextRetry, s.next_retry_at
      ? h('span', {}, 'next try ', h('time', { datetime: s.next_retry_at, title: s.next_retry_at, text: formatRelative(s.next_retry_at) }))
      : 'nothing queued');

    if (s.cursor) {
      replace(cursorPos, timeEl(s.cursor.timestamp), h('br'), h('a', { href: ctx.href(`/operations/${encodeURIComponent(s.cursor.op_id)}`), text: s.cursor.op_id }));
    } else {
      replace(cursorPos, h('span', { class: 'muted', text: 'not set (nothing delivered yet)' }));
    }

    paused = s.state === 'paused';
    const state = s.state || (paused ? 'paused' : 'running');
    stateBadge.textContent = paused && state !== 'paused' ? `paused (${state})` : state;
    stateBadge.className = `badge state-${paused ? 'paused' : String(state).split(/[^a-z]/)[0]}`;
    const bits = [];
    if (s.reason) bits.push(s.reason);
    if (s.delivery && s.delivery.host) bits.push(`delivering host: ${s.delivery.host}`);
    if (s.delivery && s.delivery.state && !s.delivery.host) bits.push(s.delivery.state);
    stateDetail.textContent = bits.join(' · ');
    pauseBtn.hidden = paused;
    resumeBtn.hidden = !paused;

    updated.textContent = `Updated ${new Date().toISOString().slice(11, 19)} UTC, every ${POLL_MS / 1000} s`;
  }

  function showHistory(hist) {
    const points = Array.isArray(hist.points) ? hist.points : [];
    if (hist.interval_seconds) historyEveryMs = Math.max(POLL_MS, hist.interval_seconds * 1000);
    const xs = points.map((p) => Date.parse(p.at) / 1000);
    deliveredChart.setData(xs, points.map((p) => p.per_second ?? null));
    latencyChart.setData(xs, points.map((p) => p.latency_p50_seconds ?? null), points.map((p) => p.latency_p99_seconds ?? null));
    const delivered = points.reduce((sum, p) => sum + (Number(p.delivered) || 0), 0);
    const last = points[points.length - 1];
    deliveredSummary.textContent = points.length
      ? `${formatInt(delivered)} delivered in the last hour; latest ${formatRate(last.per_second ?? 0)}.`
      : 'No figures yet.';
    const withLatency = points.filter((p) => p.latency_p50_seconds !== null && p.latency_p50_seconds !== undefined);
    const lastLat = withLatency[withLatency.length - 1];
    latencySummary.textContent = lastLat
      ? `Latest p50 ${formatSeconds(lastLat.latency_p50_seconds)}, p99 ${formatSeconds(lastLat.latency_p99_seconds)} (from recording to the trust log's confirmation).`
      : 'No deliveries in the last hour.';
  }

  function showError(e) {
    replace(errorBox, notice('error', e.message));
  }

  let inFlight = false;
  let again = false;

  async function pollOnce() {
    if (document.hidden) return true;
    const wantHistory = Date.now() - lastHistoryAt >= historyEveryMs;
    const [st, hi] = await Promise.allSettled([
      api.status({ signal }),
      wantHistory ? api.history({ signal }) : Promise.resolve(null),
    ]);
    if (stopped) return false;
    let keepGoing = true;
    if (st.status === 'fulfilled') {
      errorBox.replaceChildren();
      showStatus(st.value);
    } else if (!isAbort(st.reason)) {
      showError(st.reason);
      // Neither a refused credential nor an unknown tenant gets better by asking again.
      keepGoing = ![401, 403, 404].includes(st.reason.status);
    }
    if (wantHistory) {
      if (hi.status === 'fulfilled' && hi.value) {
        lastHistoryAt = Date.now();
        showHistory(hi.value);
      } else if (hi.status === 'rejected' && !isAbort(hi.reason) && st.status === 'fulfilled') {
        deliveredSummary.textContent = hi.reason.status === 404 ? 'The history of this tenant is not available.' : hi.reason.message;
        latencySummary.textContent = '';
        lastHistoryAt = Date.now(); // not every 2 s against a failing endpoint
      }
    }
    if (!keepGoing) updated.textContent = 'Stopped refreshing; reload the page to try again.';
    return keepGoing;
  }

  /** One refresh now, then every POLL_MS; never two requests at once. */
  async function poll() {
    if (stopped) return;
    if (inFlight) {
      again = true;
      return;
    }
    clearTimeout(timer);
    timer = null;
    inFlight = true;
    let keepGoing = true;
    try {
      keepGoing = await pollOnce();
    } catch (e) {
      if (!isAbort(e)) showError(e);
    } finally {
      inFlight = false;
    }
    if (stopped || !keepGoing) return;
    if (again) {
      again = false;
      timer = setTimeout(poll, 0);
    } else {
      timer = setTimeout(poll, POLL_MS);
    }
  }

  function onVisible() {
    if (!document.hidden) poll();
  }
  document.addEventListener('visibilitychange', onVisible);

  async function setPaused(wantPaused) {
    const btn = wantPaused ? pauseBtn : resumeBtn;
    btn.disabled = true;
    pauseResult.textContent = '';
    pauseResult.className = 'action-message';
    try {
      const answer = wantPaused ? await api.pause({ signal }) : await api.resume({ signal });
      const nowPaused = answer && typeof answer.paused === 'boolean' ? answer.paused : wantPaused;
      pauseBtn.hidden = nowPaused;
      resumeBtn.hidden = !nowPaused;
      pauseResult.textContent = wantPaused
        ? 'Delivery paused: operations are still stored; no new batch starts on this host.'
        : 'Delivery resumed.';
      pauseResult.classList.add('ok');
      (nowPaused ? resumeBtn : pauseBtn).focus();
      poll();
    } catch (e) {
      if (isAbort(e)) return;
      pauseResult.textContent = e.message;
      pauseResult.classList.add('error');
    } finally {
      btn.disabled = false;
    }
  }
  pauseBtn.addEventListener('click', () => setPaused(true));
  resumeBtn.addEventListener('click', () => setPaused(false));

  poll();
}
