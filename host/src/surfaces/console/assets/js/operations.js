// #/operations: search, a page of results, keyset paging.

import { h, replace, timeEl, statusBadge, faultText, formatInt, tableWrap } from './dom.js';
import { filterForm, filtersFromParams } from './filters.js';
import { pagedList, PAGE_SIZE } from './list.js';

/** Where a row's link goes. */
export function opHref(ctx, opId) {
  return ctx.href(`/operations/${encodeURIComponent(opId)}`);
}

/** The error of a row: the retry's last error, else a fault. */
export function rowError(op) {
  if (op.error_message) return op.error_message;
  if (op.fault) return faultText(op.fault);
  return '';
}

export function render(ctx) {
  const { main, api, signal, params } = ctx;
  ctx.setTitle('Operations');
  const filters = filtersFromParams(params, true);

  const search = filterForm({
    params,
    withStatus: true,
    label: 'Search operations',
    onSubmit: (values) => {
      const target = ctx.href('/operations', values);
      if (target === window.location.hash) list.reset();
      else window.location.hash = target;
    },
  });

  const tbody = h('tbody');
  const heading = h('h2', { id: 'results-heading', tabindex: '-1', text: 'Results' });
  const table = h(
    'table',
    { class: 'data ops-table', 'aria-labelledby': 'results-heading', 'data-testid': 'op-table' },
    h('thead', {}, h('tr', {},
      ['Operation id', 'Timestamp (UTC)', 'Actor', 'DOID', 'Producer', 'Type', 'Source', 'Status', 'Retries', 'Last error']
        .map((t) => h('th', { scope: 'col', text: t })))),
    tbody,
  );
  const wrap = tableWrap('Operations found', table);

  const list = pagedList({
    key: `${ctx.tenant}|${window.location.hash}`,
    signal,
    noun: ['operation', 'operations'],
    busyEl: wrap,
    focusAfter: heading,
    fetchPage: (after, wantCount) => api.operations({ ...filters, after, limit: PAGE_SIZE, count: wantCount ? 'true' : '' }, { signal }),
    renderRows: (ops) => {
      if (ops.length === 0) {
        replace(tbody, h('tr', { class: 'empty' }, h('td', { colspan: '10', text: Object.keys(filters).length ? 'No operation matches these filters.' : 'No operation stored yet.' })));
        return;
      }
      replace(tbody, ops.map((op) => h(
        'tr',
        { 'data-testid': 'op-row', dataset: { opId: op.op_id } },
        h('th', { scope: 'row', class: 'op-id' }, h('a', { href: opHref(ctx, op.op_id), text: op.op_id })),
        h('td', { class: 'nowrap' }, timeEl(op.timestamp)),
        h('td', { text: op.op_actor ?? '' }),
        h('td', { class: 'doid', text: op.doid ?? '' }),
        h('td', { text: op.producer_id ?? '' }),
        h('td', { text: op.op_type ?? '' }),
        h('td', { text: op.op_source ?? '' }),
        h('td', { class: 'nowrap' }, statusBadge(op.status), op.retry_status ? [' ', statusBadge(op.retry_status)] : null),
        h('td', { class: 'num', text: op.retry_count === null || op.retry_count === undefined ? '' : formatInt(op.retry_count) }),
        h('td', { class: 'error-text', text: rowError(op) }),
      )));
    },
    onError: (e) => {
      // Mark the control the server names; the message shows below the table too.
      if (e.field) search.showFieldError(e.field, e.message);
      return false;
    },
  });

  const refresh = h('button', { type: 'button', id: 'results-refresh', class: 'small', text: 'Refresh' });
  refresh.addEventListener('click', () => list.load());

  main.append(
    h('div', { class: 'page-head' }, h('h1', { tabindex: '-1', text: 'Operations' }), h('p', { class: 'page-sub' }, 'Tenant ', h('strong', { text: ctx.tenant }))),
    h('section', { class: 'panel' }, search.form),
    h('section', { class: 'panel', 'aria-labelledby': 'results-heading' },
      h('div', { class: 'results-head' }, heading, list.head, refresh),
      wrap,
      list.foot),
  );
  list.load();
}
