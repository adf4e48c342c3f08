// Hash routes: #/overview, #/operations, #/operations/OPID, #/dead-letters,
// each with ?tenant=T (and a view's own parameters, such as search filters).

import { tenantApi } from './api.js';
import { h, replace } from './dom.js';
import * as overview from './overview.js';
import * as operations from './operations.js';
import * as detail from './detail.js';
import * as deadLetters from './dead-letters.js';

const ROUTES = [
  { nav: 'nav-overview', test: (p) => p === '/overview' || p === '/' || p === '', view: overview },
  { nav: 'nav-operations', test: (p) => p === '/operations', view: operations },
  {
    nav: 'nav-operations',
    test: (p) => p.startsWith('/operations/') && p.length > '/operations/'.length,
    arg: (p) => safeDecode(p.slice('/operations/'.length)),
    view: detail,
  },
  { nav: 'nav-dead-letters', test: (p) => p === '/dead-letters', view: deadLetters },
];

function safeDecode(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Splits "#/path?query" into its path and parameters. */
export function parseHash(hash) {
  let s = (hash || '').replace(/^#/, '');
  if (!s.startsWith('/')) s = `/${s}`;
  const qi = s.indexOf('?');
  const path = qi < 0 ? s : s.slice(0, qi);
  const params = new URLSearchParams(qi < 0 ? '' : s.slice(qi + 1));
  return { path, params };
}

/** "#/path?tenant=T&k=v" (tenant first, empty values left out). */
export function buildHash(path, tenant, params = {}) {
  const q = new URLSearchParams();
  if (tenant) q.set('tenant', tenant);
  const entries = params instanceof URLSearchParams ? params.entries() : Object.entries(params);
  for (const [k, v] of entries) {
    if (k === 'tenant' || v === null || v === undefined || v === '') continue;
    q.set(k, String(v));
  }
  const qs = q.toString();
  return `#${path}${qs ? `?${qs}` : ''}`;
}

export function startRouter(session) {
  const main = document.getElementById('main');
  const tenants = Array.isArray(session.tenants) ? session.tenants : [];
  const isAdmin = session.role === 'admin';
  let cleanups = [];
  let controller = null;
  let firstRender = true;

  function defaultTenant() {
    if (tenants.includes('default')) return 'default';
    return tenants[0] || null;
  }

  buildTenantPicker(session, tenants, (tenant) => {
    const { path, params } = parseHash(window.location.hash);
    // An operation belongs to one tenant: switching goes to the other tenant's list.
    const target = path.startsWith('/operations/') ? '/operations' : path;
    window.location.hash = buildHash(target, tenant, params);
  });

  document.getElementById('skip-link').addEventListener('click', (e) => {
    e.preventDefault();
    const heading = main.querySelector('h1');
    (heading || main).focus();
  });

  function render() {
    for (const fn of cleanups.splice(0)) {
      try {
        fn();
      } catch (e) {
        console.error(e);
      }
    }
    if (controller) controller.abort();
    controller = new AbortController();

    const { path, params } = parseHash(window.location.hash);
    let tenant = params.get('tenant');
    if (!tenant || !tenants.includes(tenant)) {
      tenant = defaultTenant();
      if (tenant) {
        // Keep the chosen tenant in the URL without adding a history entry.
        window.history.replaceState(null, '', buildHash(path === '/' ? '/overview' : path, tenant, params));
      }
    }

    const route = ROUTES.find((r) => r.test(path));
    updateNav(route ? route.nav : null, tenant);
    const select = document.getElementById('tenant-select');
    if (select && tenant) select.value = tenant;

    main.replaceChildren();
    if (!tenant) {
      main.append(
        h('h1', { tabindex: '-1', text: 'No tenant' }),
        h('p', { class: 'notice error', role: 'alert', text: `The credential ${session.credential} may read no tenant of this host.` }),
      );
      return;
    }

    const ctx = {
      main,
      session,
      tenant,
      isAdmin,
      path,
      params,
      api: tenantApi(tenant),
      signal: controller.signal,
      href: (p, extra = {}) => buildHash(p, tenant, extra),
      go: (p, extra = {}) => {
        window.location.hash = buildHash(p, tenant, extra);
      },
      setTitle: (title) => {
        document.title = `${title} · ${tenant} · trustlog console`;
      },
      onCleanup: (fn) => cleanups.push(fn),
    };

    if (!route) {
      ctx.setTitle('Not found');
      main.append(
        h('h1', { tabindex: '-1', text: 'Page not found' }),
        h('p', {}, 'There is no page at this address. ', h('a', { href: ctx.href('/overview'), text: 'Go to the overview' }), '.'),
      );
    } else {
      try {
        route.view.render(ctx, route.arg ? route.arg(path) : undefined);
      } catch (e) {
        console.error(e);
        main.append(h('p', { class: 'notice error', role: 'alert', text: `The page failed to render: ${e.message}` }));
      }
    }

    // Move focus to the new page's heading so keyboard and screen-reader users
    // start there (not on the first load: the page just opened).
    if (!firstRender) {
      const heading = main.querySelector('h1');
      if (heading) heading.focus({ preventScroll: false });
    }
    firstRender = false;
  }

  window.addEventListener('hashchange', render);
  render();
}

function updateNav(activeId, tenant) {
  const links = {
    'nav-overview': '/overview',
    'nav-operations': '/operations',
    'nav-dead-letters': '/dead-letters',
  };
  for (const [id, path] of Object.entries(links)) {
    const a = document.getElementById(id);
    if (!a) continue;
    a.href = buildHash(path, tenant);
    if (id === activeId) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const brand = document.getElementById('nav-brand');
  if (brand) brand.href = buildHash('/overview', tenant);
}

function buildTenantPicker(session, tenants, onChange) {
  const holder = document.getElementById('tenant-picker');
  if (!holder) return;
  if (session.host_wide && tenants.length > 0) {
    const select = h(
      'select',
      { id: 'tenant-select', name: 'tenant' },
      tenants.map((t) => h('option', { value: t, text: t })),
    );
    select.addEventListener('change', () => onChange(select.value));
    replace(holder, h('label', { for: 'tenant-select', text: 'Tenant' }), select);
  } else if (tenants.length > 0) {
    replace(holder, h('span', { class: 'label', text: 'Tenant' }), h('span', { class: 'tenant-name', id: 'tenant-name', text: tenants[0] }));
  }
}
