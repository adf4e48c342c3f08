// The search form shared by #/operations and #/dead-letters. The applied
// filters live in the URL hash (the API's parameter names), so the back button
// and a copied link give the same search.

import { h, nextId, localInputToRfc3339, rfc3339ToLocalInput } from './dom.js';

export const STATUSES = [
  ['NOT_TRUSTLOGGED', 'NOT_TRUSTLOGGED (waiting)'],
  ['TRUSTLOGGED', 'TRUSTLOGGED (delivered)'],
  ['DB_ONLY', 'DB_ONLY (database only)'],
  ['PENDING', 'PENDING (retry queued)'],
  ['RETRYING', 'RETRYING'],
  ['DEAD_LETTER', 'DEAD_LETTER'],
];

const FIELDS = [
  { key: 'op_id', id: 'search-op-id', label: 'Operation id', kind: 'text' },
  { key: 'actor', id: 'search-actor', label: 'Actor', kind: 'text' },
  { key: 'doid', id: 'search-doid', label: 'DOID', kind: 'text' },
  { key: 'producer', id: 'search-producer', label: 'Producer', kind: 'text' },
  { key: 'status', id: 'search-status', label: 'Status', kind: 'status' },
  { key: 'from', id: 'search-from', label: 'From (UTC)', kind: 'datetime' },
  { key: 'to', id: 'search-to', label: 'To (UTC)', kind: 'datetime' },
];

/** The filter keys a page uses. */
export function filterKeys(withStatus) {
  return FIELDS.filter((f) => withStatus || f.key !== 'status').map((f) => f.key);
}

/** The applied filters from the hash parameters: {key: value} without empties. */
export function filtersFromParams(params, withStatus) {
  const out = {};
  for (const key of filterKeys(withStatus)) {
    const v = params.get(key);
    if (v) out[key] = v;
  }
  return out;
}

/**
 * Builds the form. `onSubmit(filters)` gets the API parameters (from/to as
 * RFC 3339 UTC). Returns {form, showFieldError(field, message) → bool, clearErrors()}.
 */
export function filterForm({ params, withStatus, label, onSubmit }) {
  const inputs = {};
  const errors = {};
  const headingId = nextId('search-heading');

  const controls = FIELDS.filter((f) => withStatus || f.key !== 'status').map((f) => {
    const value = params.get(f.key) || '';
    const errorId = `${f.id}-error`;
    let input;
    if (f.kind === 'status') {
      input = h(
        'select',
        { id: f.id, name: f.key },
        h('option', { value: '', text: 'Any status' }),
        STATUSES.map(([v, text]) => h('option', { value: v, text })),
      );
      input.value = value;
    } else if (f.kind === 'datetime') {
      input = h('input', { type: 'datetime-local', id: f.id, name: f.key, step: '1', 'aria-describedby': `${f.id}-hint` });
      input.value = rfc3339ToLocalInput(value);
    } else {
      input = h('input', { type: 'search', id: f.id, name: f.key, autocomplete: 'off', spellcheck: 'false' });
      input.value = value;
    }
    inputs[f.key] = input;
    errors[f.key] = h('p', { class: 'field-error', id: errorId, hidden: true });
    return h(
      'div',
      { class: `field field-${f.kind}` },
      h('label', { for: f.id, text: f.label }),
      input,
      f.kind === 'datetime' ? h('p', { class: 'hint', id: `${f.id}-hint`, text: 'Coordinated Universal Time' }) : null,
      errors[f.key],
    );
  });

  const submit = h('button', { type: 'submit', id: 'search-submit', class: 'primary', text: 'Search' });
  const clear = h('button', { type: 'button', id: 'search-clear', text: 'Clear' });
  const form = h(
    'form',
    { class: 'search-form', role: 'search', 'aria-labelledby': headingId, novalidate: true },
    h('h2', { id: headingId, class: 'visually-hidden', text: label }),
    h('div', { class: 'search-fields' }, controls),
    h('div', { class: 'search-buttons' }, submit, clear),
  );

  function values() {
    const out = {};
    for (const [key, input] of Object.entries(inputs)) {
      let v = input.value.trim();
      if (input.type === 'datetime-local') v = localInputToRfc3339(input.value);
      if (v) out[key] = v;
    }
    return out;
  }

  function clearErrors() {
    for (const [key, input] of Object.entries(inputs)) {
      input.removeAttribute('aria-invalid');
      const err = errors[key];
      err.hidden = true;
      err.textContent = '';
      const described = (input.getAttribute('aria-describedby') || '').split(' ').filter((x) => x && x !== err.id);
      if (described.length) input.setAttribute('aria-describedby', described.join(' '));
      else input.removeAttribute('aria-describedby');
    }
  }

  /** Marks the control the server named; false when it names none of them. */
  function showFieldError(field, message) {
    const key = field === 'producer_id' ? 'producer' : field === 'op_actor' ? 'actor' : field;
    const input = inputs[key];
    if (!input) return false;
    const err = errors[key];
    err.textContent = message;
    err.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    const described = (input.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
    if (!described.includes(err.id)) described.push(err.id);
    input.setAttribute('aria-describedby', described.join(' '));
    return true;
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    clearErrors();
    // A partly typed datetime-local reads as "" in the browser: say so rather than ignore it.
    for (const key of ['from', 'to']) {
      const input = inputs[key];
      if (input && input.validity && input.validity.badInput) {
        showFieldError(key, 'Enter a complete date and time.');
        input.focus();
        return;
      }
    }
    onSubmit(values());
  });
  clear.addEventListener('click', () => {
    for (const input of Object.values(inputs)) input.value = '';
    clearErrors();
    onSubmit({});
  });

  return { form, showFieldError, clearErrors, values };
}

/** A one-line description of the applied filters, for confirmations. */
export function describeFilters(filters) {
  const parts = Object.entries(filters).map(([k, v]) => `${k} = ${v}`);
  return parts.length ? parts.join(', ') : 'no filter: every dead letter of this tenant';
}
