// #/operations/OPID: the stored row, its status and retries, the envelope sent,
// the ledger entry and its neighbours, and "Verify".

import { isAbort } from './api.js';
import { h, replace, timeEl, valueEl, statusBadge, statusLabel, formatInt, notice, formatRelative } from './dom.js';

const FIELDS = [
  ['op_id', 'Operation id'],
  ['timestamp', 'Timestamp (UTC)'],
  ['op_actor', 'Actor'],
  ['doid', 'DOID'],
  ['producer_id', 'Producer'],
  ['op_type', 'Type'],
  ['op_source', 'Source'],
  ['do_prefix', 'DO prefix'],
  ['do_repository', 'DO repository'],
  ['request_body_hash', 'Request body hash'],
  ['response_body_hash', 'Response body hash'],
  ['client_ip', 'Client IP'],
  ['server_ip', 'Server IP'],
];

function row(label, content, attrs = {}) {
  return h('div', { class: 'dl-row', ...attrs }, h('dt', {}, label), h('dd', {}, content));
}

function code(text, attrs = {}) {
  if (text === null || text === undefined) return valueEl(null);
  return h('code', { class: 'hash', ...attrs, text: String(text) });
}

export function render(ctx, opId) {
  const { main, api, signal, isAdmin } = ctx;
  ctx.setTitle(`Operation ${opId}`);

  const body = h('div', { class: 'detail-body', 'aria-busy': 'true' }, h('p', { class: 'loading', text: 'Loading…' }));
  main.append(
    h('p', { class: 'breadcrumb' }, h('a', { href: ctx.href('/operations'), id: 'back-to-operations', text: '← Operations' })),
    h('div', { class: 'page-head' },
      h('h1', { tabindex: '-1' }, 'Operation ', h('code', { class: 'op-id-title', 'data-testid': 'detail-op-id', text: opId })),
      h('p', { class: 'page-sub' }, 'Tenant ', h('strong', { text: ctx.tenant }))),
    body,
  );

  async function load() {
    body.setAttribute('aria-busy', 'true');
    try {
      const d = await api.operation(opId, { signal });
      replace(body, ...build(d));
    } catch (e) {
      if (isAbort(e)) return;
      if (e.status === 404) {
        replace(body, notice('error', `There is no operation “${opId}” in tenant ${ctx.tenant}.`),
          h('p', {}, h('a', { href: ctx.href('/operations', { op_id: opId }), text: 'Search for it' }), ' or go ', h('a', { href: ctx.href('/operations'), text: 'back to the operations' }), '.'));
      } else {
        const retry = h('button', { type: 'button', text: 'Try again' });
        retry.addEventListener('click', load);
        replace(body, notice('error', e.message), retry);
      }
    } finally {
      body.removeAttribute('aria-busy');
    }
  }

  function build(d) {
    const op = d.operation || {};
    const sections = [];

    // Status.
    const retry = d.retry;
    const statusLine = h('p', { class: 'status-line' },
      statusBadge(d.status), h('span', { 'data-testid': 'op-status', class: 'visually-hidden', text: d.status || '' }),
      ' ', h('span', { class: 'muted', text: statusLabel(d.status) }),
      retry && retry.retry_status ? [' · retry ', statusBadge(retry.retry_status)] : null);
    const statusSection = h('section', { class: 'panel', 'aria-labelledby': 'status-heading' },
      h('h2', { id: 'status-heading', text: 'Status' }), statusLine);
    if (d.fault) {
      statusSection.append(h('p', { class: 'notice error', 'data-testid': 'op-fault' },
        'This row cannot be delivered: ', d.fault.column ? h('code', { text: d.fault.column }) : null, d.fault.column ? ': ' : '', d.fault.message || ''));
    }
    if (isAdmin && retry && retry.retry_status === 'DEAD_LETTER') {
      const replayBtn = h('button', { type: 'button', id: 'detail-replay', class: 'primary', text: 'Replay this dead letter' });
      const result = h('p', { class: 'action-message', role: 'status', 'data-testid': 'action-result' });
      replayBtn.addEventListener('click', async () => {
        replayBtn.disabled = true;
        try {
          const r = await api.replay({ op_id: opId }, { signal });
          result.textContent = `Replayed ${formatInt(r.replayed)} dead letter${r.replayed === 1 ? '' : 's'}.`;
          result.className = 'action-message ok';
          setTimeout(load, 800);
        } catch (e) {
          if (isAbort(e)) return;
          result.textContent = e.message;
          result.className = 'action-message error';
          replayBtn.disabled = false;
        }
      });
      statusSection.append(h('div', { class: 'actions' }, replayBtn), result);
    }
    sections.push(statusSection);

    // The stored row.
    const faultColumn = d.fault && d.fault.column;
    sections.push(h('section', { class: 'panel', 'aria-labelledby': 'fields-heading' },
      h('h2', { id: 'fields-heading', text: 'Stored fields' }),
      h('dl', { class: 'fields', 'data-testid': 'op-fields' },
        FIELDS.map(([key, label]) => row(
          [label, ' ', h('code', { class: 'column', text: key })],
          key === 'timestamp' ? timeEl(op[key]) : valueEl(op[key]),
          { class: `dl-row${faultColumn === key ? ' fault' : ''}`, dataset: { field: key } },
        )))));

    // Retries.
    const retrySection = h('section', { class: 'panel', 'aria-labelledby': 'retry-heading' }, h('h2', { id: 'retry-heading', text: 'Retries' }));
    if (retry) {
      retrySection.append(h('dl', { class: 'fields', 'data-testid': 'op-retry' },
        row('Retry status', statusBadge(retry.retry_status)),
        row('Tries so far', h('span', { 'data-testid': 'retry-count', text: formatInt(retry.retry_count) })),
        row('First failure', timeEl(retry.created_at)),
        row('Last try', timeEl(retry.last_retry_at)),
        row('Next try', retry.next_retry_at ? [timeEl(retry.next_retry_at), h('span', { class: 'muted', text: ` (${formatRelative(retry.next_retry_at)})` })] : valueEl(null)),
        row('Updated', timeEl(retry.updated_at)),
        row('Last error', retry.error_message ? h('pre', { class: 'error-text wrap', 'data-testid': 'retry-error', text: retry.error_message }) : valueEl(null)),
      ));
    } else {
      retrySection.append(h('p', { class: 'muted', text: d.status === 'TRUSTLOGGED'
        ? 'No retry record: delivered without one, or its record was cleared on delivery.'
        : 'No retry record: no delivery of this operation has failed.' }));
    }
    sections.push(retrySection);

    // The envelope.
    const envSection = h('section', { class: 'panel', 'aria-labelledby': 'envelope-heading' }, h('h2', { id: 'envelope-heading', text: 'Envelope' }));
    if (d.envelope) {
      let pretty = null;
      try {
        pretty = JSON.stringify(JSON.parse(d.envelope.payload), null, 2);
      } catch {
        pretty = null;
      }
      envSection.append(
        h('p', { class: 'muted', text: 'The canonical JSON sent to the trust log, byte for byte, and its SHA-256.' }),
        h('dl', { class: 'fields' }, row('SHA-256', code(d.envelope.sha256, { 'data-testid': 'envelope-sha256', id: 'envelope-sha256' }))),
        h('pre', { class: 'payload wrap', 'data-testid': 'envelope-payload', id: 'envelope-payload', tabindex: '0', 'aria-label': 'Canonical envelope', text: d.envelope.payload }),
        pretty && pretty !== d.envelope.payload
          ? h('details', { class: 'pretty' }, h('summary', { text: 'Indented (for reading; not what was hashed)' }), h('pre', { class: 'payload', tabindex: '0', text: pretty }))
          : null,
      );
    } else {
      envSection.append(h('p', { class: 'muted', text: d.fault ? 'No envelope: the row has a fault (above).' : 'No envelope for this operation.' }));
    }
    sections.push(envSection);

    // The ledger.
    const ledgerSection = h('section', { class: 'panel', 'aria-labelledby': 'ledger-heading' }, h('h2', { id: 'ledger-heading', text: 'Ledger entry' }));
    const l = d.ledger;
    if (l) {
      const prevOk = l.previous ? l.previous.hash === l.prev : null;
      const nextOk = l.next ? l.next.prev === l.hash : null;
      ledgerSection.append(h('dl', { class: 'fields', 'data-testid': 'ledger' },
        row('File', code(l.path)),
        row('Sequence', h('span', { 'data-testid': 'ledger-seq', id: 'ledger-seq', text: String(l.seq) })),
        row('Envelope SHA-256', code(l.sha256, { 'data-testid': 'ledger-sha256', id: 'ledger-sha256' }),
          { class: 'dl-row' }),
        row('Entry hash', code(l.hash, { 'data-testid': 'ledger-hash', id: 'ledger-hash' })),
        row('Previous hash', code(l.prev, { 'data-testid': 'ledger-prev' })),
      ));
      if (d.envelope && l.sha256 && d.envelope.sha256) {
        ledgerSection.append(chainCheck(l.sha256 === d.envelope.sha256, 'The ledger holds this envelope’s SHA-256.', 'The ledger’s SHA-256 differs from this envelope’s.'));
      }
      ledgerSection.append(h('h3', { text: 'Neighbours in the chain' }),
        h('dl', { class: 'fields neighbours' },
          row('Previous entry', l.previous ? neighbour(ctx, l.previous, 'ledger-previous', 'hash', l.previous.hash) : h('span', { class: 'muted', text: 'none: this is the first entry' })),
          row('Next entry', l.next ? neighbour(ctx, l.next, 'ledger-next', 'prev', l.next.prev) : h('span', { class: 'muted', text: 'none yet: this is the last entry' })),
        ));
      if (prevOk !== null) ledgerSection.append(chainCheck(prevOk, 'This entry’s previous hash is the previous entry’s hash.', 'This entry’s previous hash is NOT the previous entry’s hash.'));
      if (nextOk !== null) ledgerSection.append(chainCheck(nextOk, 'The next entry’s previous hash is this entry’s hash.', 'The next entry’s previous hash is NOT this entry’s hash.'));
    } else {
      ledgerSection.append(h('p', { class: 'muted', text: d.status === 'TRUSTLOGGED' ? 'No ledger entry found for this operation (the publisher may not be a ledger file).' : 'Not in the ledger: not delivered yet.' }));
    }
    sections.push(ledgerSection);

    // Verify.
    const verifyBtn = h('button', { type: 'button', id: 'verify', class: 'primary', text: 'Verify' });
    const verifyOut = h('div', { class: 'verify-out', role: 'status', 'aria-live': 'polite' });
    verifyBtn.addEventListener('click', async () => {
      verifyBtn.disabled = true;
      replace(verifyOut, h('p', { class: 'muted', text: 'Verifying…' }));
      try {
        const v = await api.verify(opId, { signal });
        replace(verifyOut, verifyResult(v));
      } catch (e) {
        if (isAbort(e)) return;
        replace(verifyOut, notice('error', e.message));
      } finally {
        verifyBtn.disabled = false;
      }
    });
    sections.push(h('section', { class: 'panel', 'aria-labelledby': 'verify-heading' },
      h('h2', { id: 'verify-heading', text: 'Verify' }),
      h('p', { class: 'muted', text: 'Recomputes the envelope from the stored row and checks it against the ledger and its chain.' }),
      h('div', { class: 'actions' }, verifyBtn),
      verifyOut));
    return sections;
  }

  load();
}

function neighbour(ctx, n, testid, hashKey, hashValue) {
  const seq = n.op_id
    ? h('a', { href: ctx.href(`/operations/${encodeURIComponent(n.op_id)}`), text: `#${n.seq}`, 'aria-label': `entry ${n.seq}, operation ${n.op_id}` })
    : h('span', { text: `#${n.seq}` });
  return h('span', { 'data-testid': testid, class: 'neighbour' },
    'seq ', seq, h('br'), h('span', { class: 'muted', text: `${hashKey} ` }), code(hashValue));
}

function chainCheck(ok, good, bad) {
  return h('p', { class: `check-line ${ok ? 'ok' : 'bad'}` }, h('span', { class: 'mark', 'aria-hidden': 'true', text: ok ? '✓ ' : '✗ ' }), ok ? good : bad);
}

/** The verify answer: "verified" or "failed", then each check. */
export function verifyResult(v) {
  const checks = Array.isArray(v.checks) ? v.checks : [];
  const failed = checks.filter((c) => !c.ok).length;
  const verified = Boolean(v.verified) && failed === 0;
  const summary = verified
    ? `${checks.length} of ${checks.length} checks passed`
    : `${failed} of ${checks.length} checks failed`;
  return h('div', { class: `verify-result ${verified ? 'ok' : 'bad'}`, 'data-testid': 'verify-result', id: 'verify-result', dataset: { verified: String(verified) } },
    h('p', { class: 'verify-summary' }, h('strong', { text: verified ? 'verified' : 'failed' }), `: ${summary}`),
    h('ul', { class: 'checks' }, checks.map((c) => h('li', { class: `check ${c.ok ? 'ok' : 'bad'}`, 'data-testid': 'verify-check', dataset: { ok: String(Boolean(c.ok)) } },
      h('span', { class: 'mark', text: c.ok ? '✓ ok' : '✗ failed' }), ' ',
      h('span', { class: 'check-name', text: c.name }),
      c.detail ? h('span', { class: 'check-detail', text: ` ${c.detail}` }) : null))));
}
