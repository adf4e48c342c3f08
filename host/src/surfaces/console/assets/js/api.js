// The JSON API: the session, GET and POST with the CSRF token, and errors.

export class ApiError extends Error {
  constructor(status, message, field = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.field = field;
  }
}

export const FORBIDDEN_MESSAGE = 'Refused (403): your credential may not do this.';

let csrfToken = '';
let reloading = false;

/** The session has ended: reloading /ui/ shows the sign-in page. */
function sessionGone() {
  if (!reloading) {
    reloading = true;
    window.location.reload();
  }
  return new ApiError(401, 'Your session has ended. Loading the sign-in page…');
}

function isAbort(e) {
  return e && (e.name === 'AbortError' || e.name === 'TimeoutError');
}

async function request(method, url, { body, signal } = {}) {
  const init = {
    method,
    credentials: 'same-origin',
    cache: 'no-store',
    headers: { Accept: 'application/json' },
    signal,
  };
  if (method !== 'GET') {
    init.headers['Content-Type'] = 'application/json';
    init.headers['X-CSRF-Token'] = csrfToken;
    init.body = JSON.stringify(body ?? {});
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    if (isAbort(e)) throw e;
    throw new ApiError(0, 'The server did not answer. Is trustlog serve still running?');
  }
  if (res.status === 401) throw sessionGone();
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const serverMessage = data && typeof data.error === 'string' ? data.error : '';
    if (res.status === 403) {
      throw new ApiError(403, serverMessage ? `${FORBIDDEN_MESSAGE} (${serverMessage})` : FORBIDDEN_MESSAGE);
    }
    const message = serverMessage || `The server answered ${res.status} ${res.statusText}`.trim();
    throw new ApiError(res.status, message, data && data.field ? data.field : null);
  }
  return data;
}

export function getJSON(url, opts) {
  return request('GET', url, opts);
}

export function postJSON(url, body, opts = {}) {
  return request('POST', url, { ...opts, body });
}

export { isAbort };

/** GET /ui/api/session; remembers the CSRF token for every POST. */
export async function loadSession() {
  const session = await getJSON('/ui/api/session');
  csrfToken = session.csrf || '';
  return session;
}

export function csrf() {
  return csrfToken;
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined || v === '') continue;
    q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** The API paths of one tenant. */
export function tenantApi(tenant) {
  const base = `/v1/tenants/${encodeURIComponent(tenant)}`;
  const op = (opId) => `${base}/operations/${encodeURIComponent(opId)}`;
  return {
    status: (opts) => getJSON(`${base}/status`, opts),
    history: (opts) => getJSON(`${base}/history`, opts),
    operations: (params, opts) => getJSON(`${base}/operations${query(params)}`, opts),
    operation: (opId, opts) => getJSON(op(opId), opts),
    verify: (opId, opts) => getJSON(`${op(opId)}/verify`, opts),
    replay: (body, opts) => postJSON(`${base}/admin/dead-letters/replay`, body, opts),
    purge: (body, opts) => postJSON(`${base}/admin/dead-letters/purge`, body, opts),
    pause: (opts) => postJSON(`${base}/admin/pause`, {}, opts),
    resume: (opts) => postJSON(`${base}/admin/resume`, {}, opts),
  };
}
