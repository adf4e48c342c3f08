// Keyset paging over /operations for the two list pages: `after` tokens on a
// stack for "previous", the count fetched with the first page. The paging state
// is kept in the history entry (history.state), so coming back from a detail
// page with the back button shows the same page, while a new search or a nav
// link starts on page 1.

import { isAbort } from './api.js';
import { h, replace, formatInt, notice } from './dom.js';

export const PAGE_SIZE = 50;

function stateFor(key) {
  const saved = window.history.state && window.history.state.paging;
  if (saved && saved.key === key && Array.isArray(saved.stack)) {
    return { stack: saved.stack, after: saved.after ?? null, next: null, count: saved.count ?? null };
  }
  return { stack: [], after: null, next: null, count: null };
}

function remember(key, state) {
  try {
    const base = window.history.state && typeof window.history.state === 'object' ? window.history.state : {};
    window.history.replaceState({ ...base, paging: { key, stack: state.stack, after: state.after, count: state.count } }, '');
  } catch {
    // history.state is a nicety; paging works without it.
  }
}

/**
 * key: what identifies the list (the URL hash); fetchPage(after, wantCount) →
 * the API's answer; renderRows(operations) fills the table; onError(e) may
 * claim an error (return true) before it is shown here; noun: [one, many].
 * Returns {head, foot, load(), reset(), refresh()}.
 */
export function pagedList({ key, signal, fetchPage, renderRows, onError, noun, busyEl, focusAfter }) {
  const state = stateFor(key);
  const countNumber = h('span', { 'data-testid': 'result-count', id: 'result-count', text: '–' });
  const countWords = h('span', { class: 'count-words' });
  const range = h('span', { class: 'muted', 'data-testid': 'result-range' });
  const head = h('p', { class: 'count-line', 'aria-live': 'polite' }, countNumber, countWords, range);
  const errorBox = h('div', { class: 'list-error' });

  const prev = h('button', { type: 'button', id: 'page-prev', text: '← Previous page', disabled: true });
  const next = h('button', { type: 'button', id: 'page-next', text: 'Next page →', disabled: true });
  const pageNumber = h('span', { class: 'page-number', 'data-testid': 'page-number' });
  const foot = h('nav', { class: 'pager', 'aria-label': 'Pages' }, prev, pageNumber, next, errorBox);

  let loading = false;

  function showCount(rows) {
    const first = state.stack.length * PAGE_SIZE + 1;
    if (state.count !== null) {
      countNumber.textContent = formatInt(state.count);
      countNumber.dataset.value = String(state.count);
      countWords.textContent = state.count === 1 ? ` ${noun[0]} matches` : ` ${noun[1]} match`;
      countNumber.hidden = false;
    } else {
      countNumber.hidden = true;
      countWords.textContent = '';
    }
    range.textContent = rows > 0 ? ` · showing ${formatInt(first)}–${formatInt(first + rows - 1)}` : '';
    pageNumber.textContent = `Page ${state.stack.length + 1}`;
  }

  async function load() {
    if (loading) return;
    loading = true;
    const hadFocus = document.activeElement;
    prev.disabled = true;
    next.disabled = true;
    if (busyEl) busyEl.setAttribute('aria-busy', 'true');
    errorBox.replaceChildren();
    try {
      const wantCount = state.after === null;
      const res = await fetchPage(state.after, wantCount);
      if (wantCount) state.count = typeof res.count === 'number' ? res.count : null;
      state.next = res.next_after ?? null;
      const ops = Array.isArray(res.operations) ? res.operations : [];
      renderRows(ops);
      showCount(ops.length);
      remember(key, state);
    } catch (e) {
      if (isAbort(e)) return;
      if (!(onError && onError(e))) replace(errorBox, notice('error', e.message));
    } finally {
      loading = false;
      if (busyEl) busyEl.removeAttribute('aria-busy');
      prev.disabled = state.stack.length === 0;
      next.disabled = !state.next;
      // A button that just became disabled drops the focus: put it somewhere useful.
      if ((hadFocus === prev || hadFocus === next) && hadFocus.disabled) {
        const other = hadFocus === prev ? next : prev;
        if (!other.disabled) other.focus();
        else if (focusAfter) focusAfter.focus();
      }
    }
  }

  prev.addEventListener('click', () => {
    if (state.stack.length === 0) return;
    state.after = state.stack.pop();
    load();
  });
  next.addEventListener('click', () => {
    if (!state.next) return;
    state.stack.push(state.after);
    state.after = state.next;
    load();
  });

  return {
    head,
    foot,
    load,
    /** Back to the first page (and a fresh count). */
    reset() {
      state.stack = [];
      state.after = null;
      state.next = null;
      state.count = null;
      return load();
    },
    get page() {
      return state.stack.length + 1;
    },
  };
}
