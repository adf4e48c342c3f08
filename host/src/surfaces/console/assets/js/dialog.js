// The confirmation dialog of index.html (<dialog id="confirm-dialog">).

import { formatInt } from './dom.js';

let wired = false;

function wire(dialog) {
  if (wired) return;
  wired = true;
  document.getElementById('confirm-cancel').addEventListener('click', () => dialog.close('cancel'));
  document.getElementById('confirm-ok').addEventListener('click', () => dialog.close('ok'));
}

/**
 * Shows the dialog; resolves true when confirmed, false when cancelled (Cancel,
 * Escape). With count 0 there is nothing to confirm and OK is disabled.
 */
export function confirmAction({ title, verb, count, noun, detail, okLabel, danger = false, returnFocus = null }) {
  const dialog = document.getElementById('confirm-dialog');
  wire(dialog);
  const ok = document.getElementById('confirm-ok');
  const cancel = document.getElementById('confirm-cancel');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-verb').textContent = verb;
  const countEl = document.getElementById('confirm-count');
  countEl.textContent = formatInt(count);
  countEl.dataset.value = String(count);
  document.getElementById('confirm-noun').textContent = count === 1 ? noun[0] : noun[1];
  document.getElementById('confirm-detail').textContent = count === 0 ? 'Nothing matches, so there is nothing to do.' : detail || '';
  ok.textContent = okLabel;
  ok.disabled = count === 0;
  ok.classList.toggle('danger', danger);
  ok.classList.toggle('primary', !danger);

  const opener = returnFocus || document.activeElement;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener(
      'close',
      () => {
        if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus();
        resolve(dialog.returnValue === 'ok');
      },
      { once: true },
    );
    dialog.showModal();
    cancel.focus();
  });
}
