// trustlog operator console: entry point. Loads the session, fills in the
// header (credential, role, tenant switcher, sign-out CSRF token) and starts the
// hash router. The pages are in ./js/.

import { loadSession, ApiError } from './js/api.js';
import { startRouter } from './js/router.js';

async function boot() {
  const main = document.getElementById('main');
  let session;
  try {
    session = await loadSession();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return; // reloading to the sign-in page
    const p = document.createElement('p');
    p.className = 'notice error';
    p.setAttribute('role', 'alert');
    p.textContent = `The console could not load your session: ${e.message}`;
    const retry = document.createElement('button');
    retry.type = 'button';
    retry.textContent = 'Try again';
    retry.addEventListener('click', () => window.location.reload());
    main.replaceChildren(p, retry);
    return;
  }

  const csrfInput = document.getElementById('sign-out-csrf');
  csrfInput.value = session.csrf || '';
  document.getElementById('sign-out').disabled = false;

  document.getElementById('session-credential').textContent = session.credential || '';
  const role = document.getElementById('session-role');
  role.textContent = session.role || '';
  role.classList.add(`role-${session.role}`);
  role.title = {
    read: 'may read figures and operations',
    admin: 'may also replay and purge dead letters and pause delivery',
    ingest: 'may only record operations',
  }[session.role] || '';
  document.getElementById('who').hidden = false;
  document.body.classList.toggle('is-admin', session.role === 'admin');

  startRouter(session);
}

boot();
