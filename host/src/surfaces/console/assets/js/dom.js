// Small DOM and formatting helpers. Everything that shows data goes through
// textContent (never innerHTML), so values from the server cannot inject markup.

/**
 * Creates an element. `attrs` keys:
 * - `class`, `text` (textContent), `hidden`, `disabled`, `checked`, `value`
 * - `on<Event>` (a function, e.g. onClick) for listeners
 * - `dataset` (object) for data-* attributes
 * - anything else is set with setAttribute (skipped when null/undefined/false)
 * Children may be nodes, strings, numbers, arrays, or null (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'hidden' || key === 'disabled' || key === 'checked' || key === 'required') el[key] = Boolean(value);
    else if (key === 'value') el.value = value;
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2).toLowerCase(), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
/** A page-unique id with a readable prefix. */
export function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

const intFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

/** An integer with the reader's thousands separators; '–' when absent. */
export function formatInt(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return '–';
  return intFormat.format(Number(n));
}

/** A number with at most `digits` fraction digits. */
export function formatNumber(n, digits = 2) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return '–';
  return new Intl.NumberFormat(undefined, { maximumFractionDigits: digits }).format(Number(n));
}

/** Seconds as a number for the cursor lag: whole seconds from 10 s up, one decimal below. */
export function formatLagNumber(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  const s = Number(seconds);
  if (s === 0) return '0';
  if (s < 10) return formatNumber(s, 1);
  return formatInt(Math.round(s));
}

/** A duration in words: "45 s", "3 min 20 s", "2 h 5 min", "3 d 4 h". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  let s = Math.max(0, Number(seconds));
  if (s < 1) return s === 0 ? '0 s' : `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${formatNumber(s, s < 10 ? 1 : 0)} s`;
  s = Math.round(s);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  if (d > 0) return `${d} d ${hh} h`;
  if (hh > 0) return `${hh} h ${mm} min`;
  return ss ? `${mm} min ${ss} s` : `${mm} min`;
}

/** A latency in seconds, in ms below one second. */
export function formatSeconds(v) {
  if (v === null || v === undefined) return '–';
  const s = Number(v);
  if (s < 1) return `${formatNumber(s * 1000, s < 0.01 ? 2 : 0)} ms`;
  return `${formatNumber(s, 2)} s`;
}

/** Relative time ("in 3 min", "5 s ago") from an RFC 3339 string. */
export function formatRelative(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const diff = (t - now) / 1000;
  if (Math.abs(diff) < 1) return 'now';
  return diff > 0 ? `in ${formatDuration(diff)}` : `${formatDuration(-diff)} ago`;
}

/** A <time> element for an RFC 3339 timestamp, shown as stored (UTC). */
export function timeEl(iso, { relative = false } = {}) {
  if (iso === null || iso === undefined) return nullEl();
  const el = h('time', { datetime: iso, text: String(iso).replace('T', ' ') });
  if (relative) {
    const rel = formatRelative(iso);
    if (rel) return h('span', {}, el, h('span', { class: 'muted', text: ` (${rel})` }));
  }
  return el;
}

/** Shows null and "" distinctly, as the store keeps them distinct. */
export function nullEl() {
  return h('span', { class: 'null', text: 'null' });
}

export function valueEl(v) {
  if (v === null || v === undefined) return nullEl();
  if (v === '') return h('span', { class: 'null', text: '"" (empty)' });
  return h('span', { class: 'value', text: String(v) });
}

const STATUS_LABELS = {
  NOT_TRUSTLOGGED: 'waiting',
  TRUSTLOGGED: 'delivered',
  DB_ONLY: 'database only',
  PENDING: 'retry pending',
  RETRYING: 'retrying',
  DEAD_LETTER: 'dead letter',
};

/** A status badge: the API's value, with a plain-words hint. */
export function statusBadge(status) {
  if (!status) return nullEl();
  const cls = `badge status-${String(status).toLowerCase().replace(/_/g, '-')}`;
  return h('span', { class: cls, title: STATUS_LABELS[status] || null, text: status });
}

export function statusLabel(status) {
  return STATUS_LABELS[status] || status;
}

/** A fault from the API, which may be an object {column, message} or a string. */
export function faultText(fault) {
  if (fault === null || fault === undefined) return '';
  if (typeof fault === 'string') return fault;
  if (fault.column && fault.message) return `${fault.column}: ${fault.message}`;
  return fault.message || JSON.stringify(fault);
}

/** "2026-11-24T10:23" or "…:54" from a datetime-local input, read as UTC → RFC 3339. */
export function localInputToRfc3339(value) {
  if (!value) return '';
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(:\d{2}(\.\d+)?)?$/.exec(value);
  if (!m) return '';
  return `${m[1]}T${m[2]}${m[3] || ':00'}Z`;
}

/** The inverse: an RFC 3339 UTC string → a datetime-local value (UTC wall time). */
export function rfc3339ToLocalInput(iso) {
  if (!iso) return '';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const s = new Date(t).toISOString(); // 2026-11-24T10:23:54.123Z
  const seconds = s.slice(17, 19);
  return seconds === '00' ? s.slice(0, 16) : s.slice(0, 19);
}

/** A message box; kind is 'error', 'ok' or 'info'. */
export function notice(kind, text, attrs = {}) {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status', ...attrs, text });
}

/** A horizontally scrollable, keyboard-focusable wrapper for a wide table. */
export function tableWrap(label, table) {
  return h('div', { class: 'table-wrap', role: 'region', 'aria-label': label, tabindex: '0' }, table);
}
