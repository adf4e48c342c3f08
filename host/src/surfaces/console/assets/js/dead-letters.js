// #/dead-letters: the operations whose retries gave up, with replay and purge
// (one, the selected, or all matching the filters) for admins.

import { isAbort } from './api.js';
import { h, replace, timeEl, formatInt, tableWrap } from './dom.js';
import { filterForm, filtersFromParams, describeFilters } from './filters.js';
import { pagedList, PAGE_SIZE } from './list.js';
import { confirmAction } from './dialog.js';
import { opHref, rowError } from './operations.js';

const NOUN = ['dead letter', 'dead letters'];

function plural(n) {
  return `${formatInt(n)} ${n === 1 ? NOUN[0] : NOUN[1]}`;
}

export function render(ctx) {
  const { main, api, signal, params, isAdmin } = ctx;
  ctx.setTitle('Dead letters');
  const filters = filtersFromParams(params, false);
  const selected = new Set();

  const search = filterForm({
    params,
    withStatus: false,
    label: 'Filter dead letters',
    onSubmit: (values) => {
      const target = ctx.href('/dead-letters', values);
      if (target === window.location.hash) reload();
      else window.location.hash = target;
    },
  });

  // The outcome of the last action; stays while the list reloads.
  const actionResult = h('p', { class: 'action-message', role: 'status', 'data-testid': 'action-result', id: 'action-result' });

  const replaySelected = h('button', { type: 'button', id: 'replay-selected', class: 'primary', disabled: true, text: 'Replay selected' });
  const purgeSelected = h('button', { type: 'button', id: 'purge-selected', class: 'danger', disabled: true, text: 'Purge selected' });
  const replayMatching = h('button', { type: 'button', id: 'replay-matching', text: 'Replay all matching…' });
  const purgeMatching = h('button', { type: 'button', id: 'purge-matching', class: 'danger-outline', text: 'Purge all matching…' });
  const selectionInfo = h('span', { class: 'muted selection-info', 'aria-live': 'polite', 'data-testid': 'selection-count' });

  const selectAll = h('input', { type: 'checkbox', id: 'dl-select-all' });
  const tbody = h('tbody');
  const heading = h('h2', { id: 'dl-results-heading', tabindex: '-1', text: 'Dead letters' });
  const headers = [
    isAdmin ? h('th', { scope: 'col', class: 'select' }, selectAll, h('label', { for: 'dl-select-all', class: 'visually-hidden', text: 'Select every dead letter on this page' })) : null,
    ...['Operation id', 'Timestamp (UTC)', 'Actor', 'DOID', 'Producer', 'Tries', 'Last error'].map((t) => h('th', { scope: 'col', text: t })),
    isAdmin ? h('th', { scope: 'col' }, h('span', { class: 'visually-hidden', text: 'Actions' })) : null,
  ];
  const table = h('table', { class: 'data dl-table', 'aria-labelledby': 'dl-results-heading', 'data-testid': 'dl-table' },
    h('thead', {}, h('tr', {}, headers)), tbody);
  const wrap = tableWrap('Dead letters found', table);
  const columns = headers.filter(Boolean).length;

  function updateSelection() {
    const boxes = [...tbody.querySelectorAll('input[type=checkbox]')];
    const checked = boxes.filter((b) => b.checked).length;
    selectAll.checked = boxes.length > 0 && checked === boxes.length;
    selectAll.indeterminate = checked > 0 && checked < boxes.length;
    replaySelected.disabled = selected.size === 0;
    purgeSelected.disabled = selected.size === 0;
    replaySelected.textContent = selected.size ? `Replay selected (${formatInt(selected.size)})` : 'Replay selected';
    purgeSelected.textContent = selected.size ? `Purge selected (${formatInt(selected.size)})` : 'Purge selected';
    selectionInfo.textContent = selected.size ? `${plural(selected.size)} selected` : '';
  }

  selectAll.addEventListener('change', () => {
    for (const box of tbody.querySelectorAll('input[type=checkbox]')) {
      box.checked = selectAll.checked;
      if (box.checked) selected.add(box.value);
      else selected.delete(box.value);
    }
    updateSelection();
  });

  function renderRows(ops) {
    selected.clear();
    if (ops.length === 0) {
      replace(tbody, h('tr', { class: 'empty' }, h('td', { colspan: String(columns), text: Object.keys(filters).length ? 'No dead letter matches these filters.' : 'No dead letters. Everything was delivered or is still being tried.' })));
      updateSelection();
      return;
    }
    replace(tbody, ops.map((op, i) => {
      const cells = [];
      if (isAdmin) {
        const id = `dl-select-${i}`;
        const box = h('input', { type: 'checkbox', id, value: op.op_id, 'data-testid': 'dl-select' });
        box.addEventListener('change', () => {
          if (box.checked) selected.add(op.op_id);
          else selected.delete(op.op_id);
          updateSelection();
        });
        cells.push(h('td', { class: 'select' }, box, h('label', { for: id, class: 'visually-hidden', text: `Select ${op.op_id}` })));
      }
      cells.push(
        h('th', { scope: 'row', class: 'op-id' }, h('a', { href: opHref(ctx, op.op_id), text: op.op_id })),
        h('td', { class: 'nowrap' }, timeEl(op.timestamp)),
        h('td', { text: op.op_actor ?? '' }),
        h('td', { class: 'doid', text: op.doid ?? '' }),
        h('td', { text: op.producer_id ?? '' }),
        h('td', { class: 'num', text: op.retry_count === null || op.retry_count === undefined ? '' : formatInt(op.retry_count) }),
        h('td', { class: 'error-text', text: rowError(op) }),
      );
      if (isAdmin) {
        const replay = h('button', { type: 'button', class: 'small', 'data-testid': 'replay-one', 'aria-label': `Replay ${op.op_id}`, text: 'Replay' });
        replay.addEventListener('click', () => run(replay, () => api.replay({ op_id: op.op_id }, { signal }), 'replayed'));
        cells.push(h('td', { class: 'row-actions' }, replay));
      }
      return h('tr', { 'data-testid': 'dl-row', dataset: { opId: op.op_id } }, cells);
    }));
    updateSelection();
  }

  const list = pagedList({
    key: `${ctx.tenant}|${window.location.hash}`,
    signal,
    noun: NOUN,
    busyEl: wrap,
    focusAfter: heading,
    fetchPage: (after, wantCount) => api.operations({ ...filters, status: 'DEAD_LETTER', after, limit: PAGE_SIZE, count: wantCount ? 'true' : '' }, { signal }),
    renderRows,
    onError: (e) => {
      if (e.field) search.showFieldError(e.field, e.message);
      return false;
    },
  });

  function reload() {
    return list.reset();
  }

  /** Runs an admin action, shows its outcome, reloads the list. */
  async function run(button, call, verb) {
    const buttons = [replaySelected, purgeSelected, replayMatching, purgeMatching, button];
    const wasDisabled = buttons.map((b) => b.disabled);
    buttons.forEach((b) => { b.disabled = true; });
    actionResult.className = 'action-message';
    actionResult.textContent = `${verb === 'purged' ? 'Purging' : 'Replaying'}…`;
    try {
      const r = await call();
      const n = Number(r && (r[verb] ?? 0));
      actionResult.textContent = verb === 'replayed'
        ? `Replayed ${plural(n)}: back in the retry queue and tried again at once.`
        : `Purged ${plural(n)}: kept in the database as DB_ONLY, never delivered.`;
      actionResult.dataset.count = String(n);
      actionResult.classList.add('ok');
      await reload();
    } catch (e) {
      if (isAbort(e)) return;
      actionResult.textContent = e.message;
      actionResult.classList.add('error');
      buttons.forEach((b, i) => { b.disabled = wasDisabled[i]; });
    } finally {
      updateSelection();
      replayMatching.disabled = false;
      purgeMatching.disabled = false;
      if (button.isConnected) button.disabled = false;
    }
  }

  async function actOnSelected(purge) {
    const ids = [...selected];
    if (ids.length === 0) return;
    const ok = await confirmAction({
      title: purge ? 'Purge the selected dead letters?' : 'Replay the selected dead letters?',
      verb: purge ? 'Purge' : 'Replay',
      count: ids.length,
      noun: NOUN,
      detail: purge
        ? 'Purged operations stay stored, marked DB_ONLY, and are never delivered.'
        : 'They go back to the retry queue and are tried again at once.',
      okLabel: purge ? 'Purge' : 'Replay',
      danger: purge,
      returnFocus: purge ? purgeSelected : replaySelected,
    });
    if (!ok) return;
    const button = purge ? purgeSelected : replaySelected;
    await run(button, () => (purge ? api.purge({ op_ids: ids }, { signal }) : api.replay({ op_ids: ids }, { signal })), purge ? 'purged' : 'replayed');
  }

  async function actOnMatching(purge) {
    const button = purge ? purgeMatching : replayMatching;
    const filter = search.values();
    delete filter.status;
    button.disabled = true;
    let count;
    try {
      const res = await api.operations({ ...filter, status: 'DEAD_LETTER', limit: 1, count: 'true' }, { signal });
      count = typeof res.count === 'number' ? res.count : null;
    } catch (e) {
      if (isAbort(e)) return;
      actionResult.className = 'action-message error';
      actionResult.textContent = e.message;
      if (e.field) search.showFieldError(e.field, e.message);
      return;
    } finally {
      button.disabled = false;
    }
    if (count === null) {
      actionResult.className = 'action-message error';
      actionResult.textContent = 'The server did not say how many dead letters match; nothing was done.';
      return;
    }
    const ok = await confirmAction({
      title: purge ? 'Purge every matching dead letter?' : 'Replay every matching dead letter?',
      verb: purge ? 'Purge' : 'Replay',
      count,
      noun: NOUN,
      detail: `Filter: ${describeFilters(filter)}.${purge ? ' Purged operations stay stored, marked DB_ONLY, and are never delivered.' : ' They go back to the retry queue and are tried again at once.'}`,
      okLabel: purge ? 'Purge all' : 'Replay all',
      danger: purge,
      returnFocus: button,
    });
    if (!ok) return;
    await run(button, () => (purge ? api.purge({ filter }, { signal }) : api.replay({ filter }, { signal })), purge ? 'purged' : 'replayed');
  }

  replaySelected.addEventListener('click', () => actOnSelected(false));
  purgeSelected.addEventListener('click', () => actOnSelected(true));
  replayMatching.addEventListener('click', () => actOnMatching(false));
  purgeMatching.addEventListener('click', () => actOnMatching(true));

  const refresh = h('button', { type: 'button', id: 'results-refresh', class: 'small', text: 'Refresh' });
  refresh.addEventListener('click', () => list.load());

  main.append(
    h('div', { class: 'page-head' }, h('h1', { tabindex: '-1', text: 'Dead letters' }), h('p', { class: 'page-sub' }, 'Tenant ', h('strong', { text: ctx.tenant }))),
    h('section', { class: 'panel' }, search.form),
    h('section', { class: 'panel', 'aria-labelledby': 'dl-results-heading' },
      h('div', { class: 'results-head' }, heading, list.head, refresh),
      isAdmin
        ? h('div', { class: 'bulk-actions', role: 'group', 'aria-label': 'Dead letter actions' },
          h('div', { class: 'button-row' }, replaySelected, purgeSelected, selectionInfo),
          h('div', { class: 'button-row' }, replayMatching, purgeMatching))
        : h('p', { class: 'muted', text: 'Replaying and purging need an admin credential.' }),
      actionResult,
      wrap,
      list.foot),
  );
  list.load();
}
