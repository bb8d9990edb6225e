// The tree view. Rows exist only for nodes whose parent is expanded; the
// model's changes mark rows dirty and one animation frame applies them, so
// an event updates its own row and its ancestors' counts, never the whole
// tree. Expanded nodes are remembered for the session.

import { pageHref, stateOf, terminating } from './model.js';

const EXPANDED_KEY = 'modelhub.expanded';
// Filtered views open every branch with a match when there are at most
// this many matches.
const AUTO_EXPAND = 200;
const STATE_ORDER = [
  'Failed', 'Unknown', 'Pending', 'Creating', 'Pausing', 'Paused',
  'Stopped', 'Deleting', 'Ready',
];

/** A new element with a class and text, both optional. */
export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function bisect(names, name) {
  let lo = 0;
  let hi = names.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (names[mid] < name) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** A state badge: the state's name on its colour. */
export function badge(state) {
  return el('span', `badge st-${state}`, state);
}

/** Count chips for a state -> count map, most urgent first. */
export function countChips(counts) {
  const frag = document.createDocumentFragment();
  const keys = [...counts.keys()].sort((a, b) => {
    const ia = STATE_ORDER.indexOf(a);
    const ib = STATE_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
  });
  for (const k of keys) {
    const chip = el('span', `chip st-${k}`, `${counts.get(k)} ${k}`);
    frag.append(chip);
  }
  return frag;
}

export class TreeView {
  constructor(model, container) {
    this.model = model;
    this.container = container;
    this.rows = new Map(); // node key -> { li, row, ul, names }
    this.expanded = new Set(JSON.parse(sessionStorage.getItem(EXPANDED_KEY) || '[]'));
    this.dirty = new Map(); // node -> Set of what
    this.scheduled = false;
    this.flushes = 0;
    this.rootUl = el('ul', 'tree');
    this.rootUl.setAttribute('aria-label', 'Realms');
    this.rootEntry = { ul: this.rootUl, names: [] };
    this.empty = el('p', 'empty', 'No realms yet.');
    container.replaceChildren(this.rootUl, this.empty);
    model.onChange = (node, what) => this.mark(node, what);
  }

  mark(node, what) {
    let set = this.dirty.get(node);
    if (!set) {
      set = new Set();
      this.dirty.set(node, set);
    }
    set.add(what);
    if (!this.scheduled) {
      this.scheduled = true;
      requestAnimationFrame(() => this.flush());
    }
  }

  entryOf(node) {
    return node === this.model.root ? this.rootEntry : this.rows.get(node.key);
  }

  isOpen(node) {
    return node === this.model.root || this.expanded.has(node.key);
  }

  /** Applies every pending change to the rows that exist. */
  flush() {
    this.scheduled = false;
    const dirty = this.dirty;
    this.dirty = new Map();
    for (const [node, what] of dirty) {
      if (what.has('removed')) {
        this.dropRow(node);
        continue;
      }
      const entry = this.entryOf(node);
      if (!entry) continue;
      if (what.has('children') && this.isOpen(node)) this.syncChildren(node, entry);
      if (node !== this.model.root) {
        this.fillRow(node, entry);
      }
    }
    const none = this.model.root.children.size === 0;
    if (this.empty.hidden === none) this.empty.hidden = !none;
    this.flushes += 1;
    if (this.afterFlush) this.afterFlush();
  }

  /** Re-renders the visible rows (after a filter change). */
  refreshAll() {
    this.syncChildren(this.model.root, this.rootEntry);
    for (const [key, entry] of this.rows) {
      const node = this.model.nodes.get(key);
      if (node) this.fillRow(node, entry);
    }
    if (this.model.filtering && this.model.root.matches <= AUTO_EXPAND) {
      for (const node of this.model.nodes.values()) {
        if (node.matches > (node.selfMatch ? 1 : 0) && !this.expanded.has(node.key)) {
          this.expandPath(node);
        }
      }
    }
  }

  expandPath(node) {
    const chain = [];
    for (let n = node; n && n !== this.model.root; n = n.parent) chain.unshift(n);
    for (const n of chain) if (!this.expanded.has(n.key)) this.toggle(n, true);
  }

  saveExpanded() {
    sessionStorage.setItem(EXPANDED_KEY, JSON.stringify([...this.expanded]));
  }

  toggle(node, open) {
    const entry = this.rows.get(node.key);
    if (open) this.expanded.add(node.key);
    else this.expanded.delete(node.key);
    this.saveExpanded();
    if (!entry) return;
    entry.twisty.setAttribute('aria-expanded', String(open));
    entry.ul.hidden = !open;
    if (open) this.syncChildren(node, entry);
    else {
      for (const name of entry.names) this.forget(`${node.key}/${name}`);
      entry.ul.replaceChildren();
      entry.names = [];
    }
  }

  // Makes the rendered children of an open node match the model's,
  // in name order, creating and removing only what changed.
  syncChildren(node, entry) {
    const want = node.children;
    const names = entry.names;
    const keep = [];
    for (const name of names) {
      if (want.has(name)) keep.push(name);
      else this.forget(node.key ? `${node.key}/${name}` : name);
    }
    entry.names = keep;
    const added = [];
    for (const name of want.keys()) {
      if (!this.rows.has(want.get(name).key)) added.push(name);
    }
    if (added.length > 32) {
      added.sort();
      const merged = [];
      let i = 0;
      let j = 0;
      while (i < keep.length || j < added.length) {
        if (j >= added.length || (i < keep.length && keep[i] < added[j])) merged.push(keep[i++]);
        else merged.push(added[j++]);
      }
      const frag = document.createDocumentFragment();
      for (const name of merged) {
        const child = want.get(name);
        const row = this.rows.get(child.key) || this.makeRow(child);
        frag.append(row.li);
      }
      entry.ul.replaceChildren(frag);
      entry.names = merged;
    } else {
      for (const name of added) {
        const idx = bisect(entry.names, name);
        const row = this.makeRow(want.get(name));
        entry.ul.insertBefore(row.li, entry.ul.children[idx] || null);
        entry.names.splice(idx, 0, name);
      }
    }
  }

  // Removes the row of `key` and every row below it.
  forget(key) {
    const row = this.rows.get(key);
    if (!row) return;
    for (const name of row.names) this.forget(`${key}/${name}`);
    row.li.remove();
    this.rows.delete(key);
  }

  dropRow(node) {
    if (!this.rows.has(node.key)) return;
    this.forget(node.key);
    const parent = node.parent && this.entryOf(node.parent);
    if (parent) {
      const idx = bisect(parent.names, node.name);
      if (parent.names[idx] === node.name) parent.names.splice(idx, 1);
    }
    // Deleted and created again within one frame: the row just dropped
    // stood for the new node too, which gets its own on the next frame.
    if (this.model.nodes.has(node.key) && node.parent) this.mark(node.parent, 'children');
  }

  makeRow(node) {
    const li = el('li');
    li.dataset.key = node.key;
    const row = el('div', 'row');
    const twisty = el('button', 'twisty');
    twisty.type = 'button';
    const open = this.expanded.has(node.key);
    twisty.setAttribute('aria-expanded', String(open));
    twisty.setAttribute('aria-label', `${node.kind} ${node.name}: show children`);
    twisty.addEventListener('click', () => this.toggle(node, !this.expanded.has(node.key)));
    const kind = el('span', 'kind', node.kind);
    const link = el('a', 'name', node.name);
    link.href = pageHref(node.path);
    const status = el('span', 'status');
    const counts = el('span', 'counts');
    row.append(twisty, kind, link, status, counts);
    const ul = el('ul');
    ul.setAttribute('aria-label', `Children of ${node.kind.toLowerCase()} ${node.name}`);
    ul.hidden = !open;
    li.append(row, ul);
    const entry = { key: node.key, li, row, ul, twisty, status, counts, names: [] };
    this.rows.set(node.key, entry);
    this.fillRow(node, entry);
    if (open) this.syncChildren(node, entry);
    return entry;
  }

  fillRow(node, entry) {
    const obj = node.obj;
    const m = this.model;
    entry.li.hidden = m.filtering && node.matches === 0;
    entry.row.classList.toggle('match', m.filtering && node.selfMatch);
    // Containers have no children; an empty node may be opened, so that
    // what is created under it shows at once.
    entry.twisty.disabled = node.kind === 'Container';
    entry.twisty.classList.toggle('leaf', node.children.size === 0);
    if (obj) {
      const st = stateOf(obj);
      const term = terminating(obj);
      const cur = entry.status.dataset.v;
      const want = `${st}|${term}`;
      if (cur !== want) {
        entry.status.dataset.v = want;
        const parts = [badge(st)];
        if (term) {
          const t = el('span', 'badge terminating', 'Terminating');
          t.title = `deletion requested ${obj.metadata.deletionTimestamp}`;
          parts.push(t);
        }
        entry.status.replaceChildren(...parts);
        entry.li.classList.toggle('is-terminating', term);
      }
    } else if (entry.status.dataset.v !== 'none') {
      entry.status.dataset.v = 'none';
      entry.status.replaceChildren(el('span', 'badge st-Unknown', 'not visible'));
    }
    const chips = countChips(node.counts);
    const below = node.matches - (node.selfMatch ? 1 : 0);
    if (m.filtering && below) {
      chips.prepend(el('span', 'chip matches', `${below} match${below === 1 ? '' : 'es'}`));
    }
    if (node.counts.size) chips.prepend(el('span', 'below', 'below:'));
    entry.counts.replaceChildren(chips);
  }
}
