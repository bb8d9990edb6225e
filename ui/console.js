// The console's entry point: sign-in, the live feed that keeps the model
// current (one watch over everything, resumed from its last revision after
// a disconnect or a server restart, relisted on 410), the filters, and the
// two pages (#/ the tree, #/o/<path> one object).

import * as api from './api.js';
import { KINDS, Model, pathOf } from './model.js';
import { TreeView, countChips } from './tree.js';
import { ObjectPage } from './object.js';

const $ = (id) => document.getElementById(id);

const model = new Model();
const stats = { relists: 0, resumes: 0, events: 0, connected: false, rv: null, error: '' };
// For tests and the benchmark: the console's own counters.
window.modelhubConsole = { stats, model };

function setConn(text, cls) {
  const c = $('conn');
  c.textContent = text;
  c.className = `conn ${cls}`;
}

// ---- sign-in -------------------------------------------------------------

function showSignedIn() {
  const has = Boolean(api.token());
  $('signed-in').hidden = !has;
  $('token-form').hidden = has;
  const r = realms();
  $('realms').value = r.join(',');
  $('realms-row').hidden = !r.length;
  $('signed-in-realms').textContent = r.length ? ` (realms ${r.join(', ')})` : '';
}

function initLogin() {
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('token').value.trim();
    $('token').value = '';
    api.setToken(t);
    showSignedIn();
    restartFeeds();
  });
  $('realms-row').addEventListener('submit', (e) => {
    e.preventDefault();
    const r = $('realms').value.trim();
    if (r) sessionStorage.setItem(REALMS_KEY, r);
    else sessionStorage.removeItem(REALMS_KEY);
    showSignedIn();
    restartFeeds();
  });
  $('sign-out').addEventListener('click', () => {
    api.setToken('');
    sessionStorage.removeItem(REALMS_KEY);
    showSignedIn();
    restartFeeds();
  });
  // A token the server does not know (revoked, mistyped) is dropped, and
  // the sign-in form comes back.
  api.onUnauthorized(() => {
    if (api.token()) api.setToken('');
    showSignedIn();
  });
  showSignedIn();
}

// ---- the feed --------------------------------------------------------------

/**
 * Follows a watch for as long as `alive()`: from `from()` when it has a
 * revision (a resume), else from a fresh snapshot; on 410 it relists.
 * `handlers` get each event, each end of a snapshot, and each chunk.
 */
async function follow(name, params, handlers, signal) {
  let delay = 500;
  let inSnapshot = false;
  while (!signal.aborted) {
    const rv = handlers.from();
    inSnapshot = !rv;
    if (inSnapshot) handlers.beginSnapshot();
    try {
      const q = { ...params };
      if (rv) q.resourceVersion = rv;
      if (rv) stats.resumes += 1;
      await api.watch(
        q,
        signal,
        (ev) => {
          if (inSnapshot && ev.type === 'BOOKMARK') {
            inSnapshot = false;
            handlers.endSnapshot(ev);
          }
          handlers.event(ev, inSnapshot);
          delay = 500;
        },
        handlers.batch,
      );
      // The server ended the stream (e.g. shutting down): resume.
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof api.ApiError && e.status === 410) {
        stats.relists += 1;
        handlers.gone();
        continue;
      }
      if (e instanceof api.ApiError && e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429) {
        handlers.failed(e);
        return;
      }
      handlers.retrying(e, delay);
    }
    if (signal.aborted) return;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 5000);
  }
  void name;
}

let feedAbort = null;
let selectionAbort = null;
let view = null;
let treeView = null;
// The realms a token limited to realms names (empty: every realm, one
// watch). Such a token may not watch every realm, so the console follows
// one watch per realm.
const REALMS_KEY = 'modelhub.realms';

function realms() {
  return (sessionStorage.getItem(REALMS_KEY) || '').split(',').map((r) => r.trim()).filter(Boolean);
}

function scopes() {
  const r = realms();
  return r.length ? r.map((realm) => ({ realm })) : [{}];
}

function renderTotals() {
  const t = $('totals');
  const parts = [];
  for (const k of KINDS) {
    const counts = model.totals.get(k);
    let n = 0;
    for (const [st, c] of counts) if (st !== 'Terminating') n += c;
    const li = document.createElement('li');
    const label = document.createElement('span');
    label.className = 'total-kind';
    label.textContent = `${n} ${k}${n === 1 ? '' : 's'}`;
    li.append(label, countChips(counts));
    parts.push(li);
  }
  t.replaceChildren(...parts);
}

let totalsQueued = false;
function queueTotals() {
  if (totalsQueued) return;
  totalsQueued = true;
  requestAnimationFrame(() => {
    totalsQueued = false;
    renderTotals();
    $('rev').textContent = model.rv ? `revision ${model.rv}` : '';
  });
}

function startFeed() {
  feedAbort = new AbortController();
  setConn('Connecting…', 'wait');
  const all = scopes();
  let live = 0;
  for (const scope of all) {
    let rv = null;
    let gen = 0;
    let isLive = false;
    const down = () => {
      if (isLive) live -= 1;
      isLive = false;
      stats.connected = live === all.length;
    };
    const up = () => {
      if (!isLive) live += 1;
      isLive = true;
      stats.connected = live === all.length;
      if (stats.connected) setConn('Live', 'ok');
    };
    follow(
      'feed',
      scope,
      {
        from: () => rv,
        beginSnapshot: () => {
          gen = model.beginSnapshot();
        },
        endSnapshot: () => {
          model.endSnapshot(gen, scope.realm);
          up();
        },
        event: (ev, inSnapshot) => {
          stats.events += 1;
          const o = ev.object;
          // A snapshot's ADDED carry their objects' own revisions, not a
          // position: the stream's position is its closing BOOKMARK's.
          if (!inSnapshot && o && o.metadata && o.metadata.resourceVersion) {
            rv = o.metadata.resourceVersion;
          }
          model.apply(ev);
          stats.rv = model.rv;
          if (!inSnapshot) up();
        },
        batch: () => {
          queueTotals();
          if (view && view.onModel) view.onModel();
        },
        gone: () => {
          rv = null;
          down();
          setConn('History compacted: listing again…', 'wait');
        },
        failed: (e) => {
          down();
          stats.error = e.message;
          if (e.status === 401) {
            setConn(`Not signed in: ${e.message}`, 'bad');
          } else if (e.status === 403 && e.problem && e.problem.field === 'realm') {
            $('realms-row').hidden = false;
            setConn('This token is limited to realms: name them beside the token', 'bad');
          } else {
            setConn(`Stopped: ${e.message}`, 'bad');
          }
        },
        retrying: (e, delay) => {
          down();
          setConn(`Disconnected (${e.message}); retrying in ${Math.round(delay / 100) / 10} s`, 'wait');
        },
      },
      feedAbort.signal,
    );
  }
}

// The label and field selectors run on the server: a second watch (per
// realm, for a token limited to realms) with them keeps the set of
// matching objects; it sends ADDED when an object enters the selection and
// DELETED when it leaves it.
function startSelection(label, field) {
  if (selectionAbort) selectionAbort.abort();
  selectionAbort = null;
  const text = $('f-text').value;
  $('filter-error').textContent = '';
  if (!label && !field) {
    model.setFilter(text, null);
    if (treeView) treeView.refreshAll();
    return;
  }
  selectionAbort = new AbortController();
  const all = scopes();
  const selected = new Set();
  let whole = 0;
  for (const scope of all) {
    let pending = new Set();
    let rv = null;
    let counted = false;
    follow(
      'selection',
      { ...scope, labelSelector: label, fieldSelector: field },
      {
        from: () => rv,
        beginSnapshot: () => {
          pending = new Set();
        },
        endSnapshot: () => {
          for (const k of [...selected]) {
            if (!scope.realm || k === scope.realm || k.startsWith(`${scope.realm}/`)) selected.delete(k);
          }
          for (const k of pending) selected.add(k);
          if (!counted) whole += 1;
          counted = true;
          if (whole === all.length) {
            model.setFilter($('f-text').value, selected);
            if (treeView) treeView.refreshAll();
          }
        },
        event: (ev, inSnapshot) => {
          if (!inSnapshot && ev.object && ev.object.metadata) rv = ev.object.metadata.resourceVersion;
          if (ev.type === 'BOOKMARK') return;
          const path = pathOf(ev.object);
          if (!path) return;
          if (inSnapshot) pending.add(path.join('/'));
          else if (model.filter.selected === selected) model.select(path, ev.type !== 'DELETED');
          else if (ev.type === 'DELETED') selected.delete(path.join('/'));
          else selected.add(path.join('/'));
        },
        batch: () => {},
        gone: () => {
          rv = null;
        },
        failed: (e) => {
          const field = e.problem && e.problem.field ? `${e.problem.field}: ` : '';
          $('filter-error').textContent = `${field}${e.message}`;
          selectionAbort.abort();
          model.setFilter($('f-text').value, null);
          if (treeView) treeView.refreshAll();
        },
        retrying: () => {},
      },
      selectionAbort.signal,
    );
  }
}

function applyFilters() {
  const label = $('f-label').value.trim();
  const field = $('f-field').value.trim();
  startSelection(label, field);
}

function initFilters() {
  $('filters').addEventListener('submit', (e) => {
    e.preventDefault();
    applyFilters();
  });
  $('f-text').addEventListener('input', () => {
    model.setFilter($('f-text').value, model.filter.selected);
    if (treeView) treeView.refreshAll();
  });
  $('f-clear').addEventListener('click', () => {
    $('f-text').value = '';
    $('f-label').value = '';
    $('f-field').value = '';
    applyFilters();
  });
}

// Another identity (sign-in, sign-out, other realms): nothing the previous
// one could read stays on the page.
function restartFeeds() {
  if (feedAbort) feedAbort.abort();
  stats.connected = false;
  model.clear();
  startFeed();
  applyFilters();
  route();
}

// ---- pages -----------------------------------------------------------------

function objectPath(hash) {
  try {
    const path = hash.slice(4).split('/').map(decodeURIComponent).filter(Boolean);
    return path.length >= 1 && path.length <= KINDS.length ? path : null;
  } catch (_) {
    return null;
  }
}

function route() {
  const hash = location.hash || '#/';
  if (view && view.close) view.close();
  view = null;
  const main = $('page');
  const path = hash.startsWith('#/o/') ? objectPath(hash) : null;
  if (path) {
    $('tree-page').hidden = true;
    main.hidden = false;
    view = new ObjectPage(model, path, main);
    document.title = `${path.join('/')} · modelhub`;
  } else {
    $('tree-page').hidden = false;
    main.hidden = true;
    main.replaceChildren();
    document.title = 'modelhub console';
  }
}

function init() {
  initLogin();
  initFilters();
  treeView = new TreeView(model, $('tree'));
  treeView.afterFlush = queueTotals;
  window.modelhubConsole.tree = treeView;
  // Only the console's own links (#/...) change the page.
  window.addEventListener('hashchange', () => {
    if (location.hash.startsWith('#/') || !location.hash) route();
  });
  document.querySelector('.skip').addEventListener('click', (e) => {
    e.preventDefault();
    $('content').focus();
  });
  startFeed();
  route();
}

init();
