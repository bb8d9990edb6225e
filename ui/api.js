// The console's only door to the server: every request goes to this
// origin's /api/v1beta1, with the token (if any) in the Authorization
// header and nowhere else (never in a URL).

export const BASE = '/api/v1beta1';
const TOKEN_KEY = 'modelhub.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** A refusal: the HTTP status and the problem+json body, when there is one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem || null;
    this.reason = problem && problem.reason ? problem.reason : '';
  }
}

const authListeners = [];

/** Calls `f(error)` on every 401, so the page can ask for a token. */
export function onUnauthorized(f) {
  authListeners.push(f);
}

function headers(accept) {
  const h = { Accept: accept };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

export function url(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const qs = q.toString();
  return BASE + path + (qs ? `?${qs}` : '');
}

async function failure(resp) {
  let problem = null;
  try {
    problem = await resp.json();
  } catch (_) {
    problem = null;
  }
  const e = new ApiError(resp.status, problem);
  if (resp.status === 401) for (const f of authListeners) f(e);
  return e;
}

async function get(path, params, accept, signal) {
  const resp = await fetch(url(path, params), {
    headers: headers(accept),
    cache: 'no-store',
    signal,
  });
  if (!resp.ok) throw await failure(resp);
  return resp;
}

/** GET as JSON. */
export async function getJson(path, params, signal) {
  return (await get(path, params, 'application/json', signal)).json();
}

/** GET as YAML text (the server renders it). */
export async function getYaml(path, params, signal) {
  return (await get(path, params, 'application/yaml', signal)).text();
}

// The server sends a BOOKMARK on an idle stream at least every
// --bookmark-interval (10 s by default): a stream silent for this long is
// dead (a half-open connection) and is given up, to be resumed.
const STALL_MS = 45000;

async function readWithin(reader, ms) {
  let timer;
  const stalled = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the stream sent nothing for ${ms / 1000} s`)), ms);
  });
  try {
    return await Promise.race([reader.read(), stalled]);
  } catch (e) {
    reader.cancel().catch(() => {});
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Whether a watch from `params` would start (false: 410, that revision was
 * compacted or is unknown); the stream is closed at once.
 */
export async function watchStarts(params, signal) {
  const ctl = new AbortController();
  const stop = () => ctl.abort();
  signal.addEventListener('abort', stop);
  try {
    const resp = await fetch(url('/watch', params), {
      headers: headers('application/x-ndjson'),
      cache: 'no-store',
      signal: ctl.signal,
    });
    if (resp.status === 410) return false;
    if (!resp.ok) throw await failure(resp);
    return true;
  } finally {
    ctl.abort();
    signal.removeEventListener('abort', stop);
  }
}

/**
 * Streams the watch at `/watch` with `params`, calling `onEvent(event)`
 * for each event line and `onBatch()` after each chunk of the stream, until
 * the stream ends (returns) or fails (throws; an ERROR event throws an
 * ApiError with its problem, e.g. 410 when the revision was compacted).
 * `signal` aborts it.
 */
export async function watch(params, signal, onEvent, onBatch) {
  const resp = await get('/watch', params, 'application/x-ndjson', signal);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await readWithin(reader, STALL_MS);
    if (done) return;
    buf += value;
    let start = 0;
    for (;;) {
      const nl = buf.indexOf('\n', start);
      if (nl < 0) break;
      const line = buf.slice(start, nl);
      start = nl + 1;
      if (!line.trim()) continue;
      const ev = JSON.parse(line);
      if (ev.type === 'ERROR') {
        const o = ev.object || {};
        throw new ApiError(o.status || 500, o);
      }
      onEvent(ev);
    }
    buf = buf.slice(start);
    if (onBatch) onBatch();
  }
}
