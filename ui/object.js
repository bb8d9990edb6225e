// One object's page: its document as YAML (and, for a container, its
// effective view with the space defaults applied), its state, finalizers
// and children from the live model, and its recent changes read from the
// retained event history (a watch narrowed to the object's kind and place,
// from where that history starts), which then keeps following it.

import * as api from './api.js';
import {
  apiPath, kindAt, pageHref, revisionOf, rvLess, scopeOf, stateOf, terminating,
} from './model.js';
import { badge, countChips, el } from './tree.js';

const MAX_CHANGES = 50;
// Probes for where the retained history starts, when its beginning was
// compacted: the start found is within 1/2^PROBES of the revisions between
// 0 and the object's own.
const PROBES = 24;

function section(title, id) {
  const s = el('section', 'panel');
  s.setAttribute('aria-labelledby', id);
  const h = el('h2', '', title);
  h.id = id;
  s.append(h);
  return s;
}

// Leaf paths of a JSON value: 'spec.containers[0].image' -> value.
function flatten(v, prefix, out) {
  if (v !== null && typeof v === 'object') {
    const entries = Array.isArray(v) ? v.map((x, i) => [`[${i}]`, x]) : Object.entries(v);
    if (!entries.length) out.set(prefix, Array.isArray(v) ? '[]' : '{}');
    for (const [k, x] of entries) {
      const p = k.startsWith('[') ? `${prefix}${k}` : prefix ? `${prefix}.${k}` : k;
      flatten(x, p, out);
    }
  } else {
    out.set(prefix, v);
  }
  return out;
}

const IGNORED = new Set(['metadata.resourceVersion', 'metadata.generation']);

/** What changed between two versions of a document, path by path. */
export function changes(before, after) {
  const a = flatten(before, '', new Map());
  const b = flatten(after, '', new Map());
  const out = [];
  for (const [k, v] of b) {
    if (IGNORED.has(k)) continue;
    if (!a.has(k)) out.push(`${k}: ${JSON.stringify(v)} (added)`);
    else if (a.get(k) !== v) out.push(`${k}: ${JSON.stringify(a.get(k))} → ${JSON.stringify(v)}`);
  }
  for (const [k, v] of a) {
    if (!IGNORED.has(k) && !b.has(k)) out.push(`${k}: ${JSON.stringify(v)} (removed)`);
  }
  return out;
}

export class ObjectPage {
  constructor(model, path, container) {
    this.model = model;
    this.path = path;
    this.kind = kindAt(path.length);
    this.container = container;
    this.abort = new AbortController();
    this.history = [];
    this.last = null; // the last version seen in the history
    this.shownRv = null;
    this.render();
    this.load();
    this.followHistory();
  }

  close() {
    this.abort.abort();
  }

  render() {
    const c = this.container;
    const head = el('div', 'obj-head');
    const crumbs = el('nav', 'crumbs');
    crumbs.setAttribute('aria-label', 'Breadcrumb');
    const ol = el('ol');
    const home = el('li');
    const a = el('a', '', 'All realms');
    a.href = '#/';
    home.append(a);
    ol.append(home);
    this.path.forEach((name, i) => {
      const li = el('li');
      const p = this.path.slice(0, i + 1);
      if (i === this.path.length - 1) {
        li.append(el('span', '', name));
        li.setAttribute('aria-current', 'page');
      } else {
        const l = el('a', '', name);
        l.href = pageHref(p);
        li.append(l);
      }
      ol.append(li);
    });
    crumbs.append(ol);
    const h1 = el('h1', 'obj-title', `${this.kind} ${this.path[this.path.length - 1]}`);
    h1.tabIndex = -1;
    this.statusEl = el('div', 'obj-status');
    this.statusEl.setAttribute('aria-live', 'polite');
    head.append(crumbs, h1, this.statusEl);

    this.docs = el('div', 'docs');
    this.storedPre = el('pre', 'yaml', 'Loading…');
    this.storedPre.tabIndex = 0;
    this.storedPre.setAttribute('aria-label', 'Stored document, YAML');
    this.effectivePre = el('pre', 'yaml');
    this.effectivePre.tabIndex = 0;
    this.effectivePre.setAttribute('aria-label', 'Effective view, YAML');
    const stored = section('Stored', 'h-stored');
    stored.append(this.storedPre);
    const effective = section('Effective (space defaults applied)', 'h-effective');
    effective.append(this.effectivePre);
    this.docs.append(stored, effective);

    this.childrenSec = section('Children', 'h-children');
    this.childrenList = el('ul', 'children');
    this.childrenSec.append(this.childrenList);

    this.historySec = section('Recent changes', 'h-history');
    this.historyNote = el('p', 'note');
    this.historyTable = el('table', 'history');
    const cap = el('caption', 'visually-hidden', 'Changes to this object, newest first');
    const thead = el('thead');
    const tr = el('tr');
    for (const t of ['Revision', 'Event', 'What changed']) {
      const th = el('th', '', t);
      th.scope = 'col';
      tr.append(th);
    }
    thead.append(tr);
    this.historyBody = el('tbody');
    this.historyTable.append(cap, thead, this.historyBody);
    this.historySec.append(this.historyNote, this.historyTable);

    c.replaceChildren(head, this.docs, this.childrenSec, this.historySec);
    h1.focus();
    this.onModel();
  }

  // Reads both documents; a load that an earlier one overtakes is dropped.
  async load() {
    this.loads = (this.loads || 0) + 1;
    const seq = this.loads;
    const p = apiPath(this.path);
    const signal = this.abort.signal;
    try {
      const yaml = await api.getYaml(p, {}, signal);
      if (seq !== this.loads) return;
      this.storedPre.textContent = yaml;
    } catch (e) {
      if (signal.aborted || seq !== this.loads) return;
      this.storedPre.textContent = e.status === 404 ? 'This object does not exist (any more).' : `Could not load: ${e.message}`;
    }
    if (this.kind === 'Container' || this.kind === 'Cell') {
      try {
        const yaml = await api.getYaml(p, { view: 'effective' }, signal);
        if (seq === this.loads) this.effectivePre.textContent = yaml;
      } catch (e) {
        if (!signal.aborted && seq === this.loads) this.effectivePre.textContent = `Could not load: ${e.message}`;
      }
    } else {
      this.effectivePre.textContent = 'Space defaults apply to containers (and the containers of cells) only: this view is the stored one.';
    }
  }

  // Live: the model has changed; refresh the header and children, and the
  // documents when this object's revision moved.
  onModel() {
    const node = this.model.get(this.path);
    const space = this.path.length > 2 ? this.model.get(this.path.slice(0, 2)) : null;
    // What this page shows moved only if its node, a child or the space
    // (whose defaults make the effective view) changed.
    const ticks = [node ? node.tick : -1, node ? node.childTick : -1, space ? space.tick : -1, this.model.rv ? 1 : 0];
    if (this.ticks && ticks.every((t, i) => t === this.ticks[i])) return;
    const [selfMoved, kidsMoved, spaceMoved] = this.ticks ? ticks.map((t, i) => t !== this.ticks[i]) : [true, true, false];
    this.ticks = ticks;
    const obj = node && node.obj;
    if (selfMoved || !obj) this.showStatus(obj);
    if (obj) {
      const rv = revisionOf(obj);
      if ((this.shownRv && rv !== this.shownRv) || spaceMoved) this.load();
      this.shownRv = rv;
    }
    if (kidsMoved) this.showChildren(node);
  }

  showStatus(obj) {
    const parts = [];
    if (obj) {
      parts.push(el('span', 'label', 'State'), badge(stateOf(obj)));
      if (terminating(obj)) {
        parts.push(el('span', 'badge terminating', `Terminating since ${obj.metadata.deletionTimestamp}`));
      }
      const fins = obj.metadata.finalizers || [];
      const f = el('span', 'finalizers');
      f.append(el('span', 'label', 'Finalizers'));
      if (fins.length) for (const x of fins) f.append(el('code', 'finalizer', x));
      else f.append(el('span', 'none', 'none'));
      parts.push(f);
      parts.push(el('span', 'meta', `revision ${revisionOf(obj)} · generation ${obj.metadata.generation} · created ${obj.metadata.creationTimestamp}`));
    } else if (this.model.rv) {
      parts.push(el('span', 'badge st-Unknown', 'Gone: not in the store'));
    }
    this.statusEl.replaceChildren(...parts);
  }

  showChildren(node) {
    const kids = node ? [...node.children.values()].sort((a, b) => (a.name < b.name ? -1 : 1)) : [];
    const items = kids.slice(0, 500).map((k) => {
      const li = el('li');
      const a = el('a', '', `${k.kind} ${k.name}`);
      a.href = pageHref(k.path);
      li.append(a);
      if (k.obj) li.append(badge(stateOf(k.obj)));
      if (k.obj && terminating(k.obj)) li.append(el('span', 'badge terminating', 'Terminating'));
      if (k.counts.size) {
        const c = el('span', 'counts');
        c.append(countChips(k.counts));
        li.append(c);
      }
      return li;
    });
    if (!items.length) items.push(el('li', 'none', this.kind === 'Container' ? 'Containers have no children.' : 'None.'));
    if (kids.length > 500) items.push(el('li', 'note', `and ${kids.length - 500} more`));
    this.childrenList.replaceChildren(...items);
  }

  // Reads this object's changes from the event history, then follows them.
  async followHistory() {
    const signal = this.abort.signal;
    let obj;
    try {
      obj = await api.getJson(apiPath(this.path), {}, signal);
    } catch (e) {
      if (!signal.aborted) this.historyNote.textContent = `No history: ${e.message}`;
      return;
    }
    const params = scopeOf(this.path);
    const name = this.path[this.path.length - 1];
    this.historyNote.textContent = 'Reading the event history…';
    let from;
    try {
      from = await this.historyStart(params, revisionOf(obj), signal);
    } catch (e) {
      if (!signal.aborted) this.historyNote.textContent = `No history: ${e.message}`;
      return;
    }
    const floor = from;
    for (let attempt = 0; attempt < 100 && !signal.aborted; attempt += 1) {
      try {
        await api.watch(
          { ...params, resourceVersion: from },
          signal,
          (ev) => {
            const o = ev.object;
            if (!o || !o.metadata) return;
            from = o.metadata.resourceVersion;
            if (ev.type === 'BOOKMARK') return;
            if (o.kind !== this.kind || o.metadata.name !== name) return;
            this.record(ev, floor);
          },
          () => this.showHistory(floor),
        );
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof api.ApiError && e.status === 410) {
          this.historyNote.textContent = 'The history moved past this page (compacted): reload to read it again.';
          return;
        }
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  // The earliest position the history can be read from: 0 while nothing
  // was compacted, else (revisions being positions a watch may start
  // from) the boundary between 410 and a stream, found by bisection.
  async historyStart(params, own, signal) {
    if (await api.watchStarts({ ...params, resourceVersion: '0' }, signal)) return '0';
    let lo = 0n;
    let hi = BigInt(own);
    for (let i = 0; i < PROBES && hi - lo > 1n; i += 1) {
      const mid = (lo + hi) / 2n;
      if (await api.watchStarts({ ...params, resourceVersion: mid.toString() }, signal)) hi = mid;
      else lo = mid;
    }
    return hi.toString();
  }

  record(ev, floor) {
    const o = ev.object;
    const rv = revisionOf(o);
    if (this.history.length && !rvLess(this.history[0].rv, rv)) return;
    let what;
    if (ev.type === 'ADDED') what = ['created'];
    else if (ev.type === 'DELETED') what = ['deleted'];
    else if (this.last) what = changes(this.last, o);
    else what = [`first change after revision ${floor} (earlier versions are not in the retained history)`];
    this.last = o;
    this.history.unshift({ rv, type: ev.type, what });
    if (this.history.length > MAX_CHANGES) this.history.length = MAX_CHANGES;
    this.dirtyHistory = true;
  }

  showHistory(floor) {
    if (!this.dirtyHistory && this.historyBody.children.length) {
      if (this.historyNote.textContent === 'Reading the event history…') this.historyNote.textContent = '';
      return;
    }
    this.dirtyHistory = false;
    this.historyNote.textContent = this.history.length
      ? `Changes after revision ${floor}, newest first (events carry no time).`
      : `No change to this object after revision ${floor} is in the retained history.`;
    const rows = this.history.map((h) => {
      const tr = el('tr');
      tr.append(el('td', 'rv', h.rv), el('td', '', h.type));
      const td = el('td');
      const ul = el('ul', 'diff');
      for (const w of h.what.slice(0, 12)) ul.append(el('li', '', w));
      if (h.what.length > 12) ul.append(el('li', 'note', `and ${h.what.length - 12} more`));
      if (!h.what.length) ul.append(el('li', 'note', 'no field changed (a write of the same content)'));
      td.append(ul);
      tr.append(td);
      return tr;
    });
    this.historyBody.replaceChildren(...rows);
  }
}
