// The hierarchy as the console knows it: one node per object, keyed by its
// path (realm/space/stack/cell/container), with per-state counts of every
// node's descendants kept up to date by deltas, so one event touches one
// node and its ancestors, never the whole tree.

export const KINDS = ['Realm', 'Space', 'Stack', 'Cell', 'Container'];
const SEGMENTS = ['realms', 'spaces', 'stacks', 'cells', 'containers'];
const SCOPE = ['realm', 'space', 'stack', 'cell'];

/** The object's path: its ancestors' names, then its own. */
export function pathOf(obj) {
  const s = obj.spec || {};
  const n = obj.metadata.name;
  switch (obj.kind) {
    case 'Realm':
      return [n];
    case 'Space':
      return [s.realmId, n];
    case 'Stack':
      return [s.realmId, s.spaceId, n];
    case 'Cell':
      return [s.realmId, s.spaceId, s.stackId, n];
    case 'Container':
      return [s.realmId, s.spaceId, s.stackId, s.cellId, n];
    default:
      return null;
  }
}

export function kindAt(depth) {
  return KINDS[depth - 1];
}

/** The object's API path, e.g. /realms/r/spaces/s. */
export function apiPath(path) {
  return path.map((p, i) => `/${SEGMENTS[i]}/${encodeURIComponent(p)}`).join('');
}

/** The console's own link to an object's page. */
export function pageHref(path) {
  return `#/o/${path.map(encodeURIComponent).join('/')}`;
}

/** Watch parameters narrowing a stream to one object's kind and place. */
export function scopeOf(path) {
  const p = { kind: kindAt(path.length) };
  path.slice(0, 4).forEach((name, i) => {
    p[SCOPE[i]] = name;
  });
  return p;
}

export function stateOf(obj) {
  return (obj.status && obj.status.state) || 'Pending';
}

export function terminating(obj) {
  return Boolean(obj.metadata && obj.metadata.deletionTimestamp);
}

export function revisionOf(obj) {
  return obj && obj.metadata ? obj.metadata.resourceVersion : undefined;
}

/** Compares revisions (decimal strings of any length). */
export function rvLess(a, b) {
  if (a.length !== b.length) return a.length < b.length;
  return a < b;
}

const COORDINATES = ['realmId', 'spaceId', 'stackId', 'cellId'];

// What the tree needs of an object: the whole document stays on the
// server (an object's page reads it), so 10,000 cells cost little memory.
function slim(obj) {
  const m = obj.metadata || {};
  const spec = {};
  for (const k of COORDINATES) if (obj.spec && obj.spec[k]) spec[k] = obj.spec[k];
  const out = {
    kind: obj.kind,
    metadata: {
      name: m.name,
      resourceVersion: m.resourceVersion,
      generation: m.generation,
      creationTimestamp: m.creationTimestamp,
    },
    spec,
    status: { state: stateOf(obj) },
  };
  if (m.deletionTimestamp) out.metadata.deletionTimestamp = m.deletionTimestamp;
  if (m.finalizers && m.finalizers.length) out.metadata.finalizers = m.finalizers;
  return out;
}

class Node {
  constructor(path, parent) {
    this.path = path;
    this.key = path.join('/');
    this.name = path.length ? path[path.length - 1] : '';
    this.parent = parent;
    this.obj = null;
    this.children = new Map();
    // State (and 'Terminating') -> number of descendants in it.
    this.counts = new Map();
    // Objects matching the filter in this subtree, this node included.
    this.matches = 0;
    this.selfMatch = false;
    this.seen = 0;
    this.tick = 0;
    this.childTick = 0;
  }

  get kind() {
    return kindAt(this.path.length);
  }
}

function bump(map, k, d) {
  const n = (map.get(k) || 0) + d;
  if (n) map.set(k, n);
  else map.delete(k);
}

export class Model {
  constructor() {
    this.root = new Node([], null);
    this.nodes = new Map();
    // Kind -> state -> count, over the whole store.
    this.totals = new Map(KINDS.map((k) => [k, new Map()]));
    this.rv = null;
    this.generation = 0;
    this.filter = { text: '', selected: null };
    // Called with (node, what): what is 'self', 'counts' or 'children'.
    this.onChange = () => {};
    // Counts changes: a node's `tick` is the clock at its last change, its
    // `childTick` at its children's last, so a page can tell in O(1)
    // whether anything it shows moved.
    this.clock = 0;
  }

  changed(node, what) {
    this.clock += 1;
    node.tick = this.clock;
    if (node.parent) node.parent.childTick = this.clock;
    this.onChange(node, what);
  }

  /** Forgets everything (a sign-out, another token). */
  clear() {
    this.endSnapshot(this.beginSnapshot(), '');
    this.rv = null;
  }

  get filtering() {
    return Boolean(this.filter.text) || this.filter.selected !== null;
  }

  get(path) {
    return this.nodes.get(path.join('/'));
  }

  ensure(path) {
    const key = path.join('/');
    let node = this.nodes.get(key);
    if (node) return node;
    const parent = path.length > 1 ? this.ensure(path.slice(0, -1)) : this.root;
    node = new Node(path, parent);
    parent.children.set(node.name, node);
    this.nodes.set(key, node);
    this.changed(parent, 'children');
    return node;
  }

  // Adds (d = 1) or removes (d = -1) the object's contribution to the
  // counts of its ancestors and to the totals.
  contribute(node, obj, d) {
    const st = stateOf(obj);
    const term = terminating(obj);
    bump(this.totals.get(node.kind), st, d);
    if (term) bump(this.totals.get(node.kind), 'Terminating', d);
    for (let a = node.parent; a; a = a.parent) {
      bump(a.counts, st, d);
      if (term) bump(a.counts, 'Terminating', d);
      this.changed(a, 'counts');
    }
  }

  matchesFilter(node) {
    if (!node.obj) return false;
    const f = this.filter;
    if (f.text && !node.key.toLowerCase().includes(f.text)) return false;
    if (f.selected && !f.selected.has(node.key)) return false;
    return true;
  }

  refreshMatch(node) {
    const m = this.matchesFilter(node);
    if (m === node.selfMatch) return;
    node.selfMatch = m;
    const d = m ? 1 : -1;
    for (let a = node; a; a = a.parent) {
      a.matches += d;
      if (a !== node) this.changed(a, 'counts');
    }
    this.changed(node, 'self');
  }

  /** Applies one watch event; answers whether it changed anything. */
  apply(ev) {
    const obj = ev.object;
    const rv = revisionOf(obj);
    if (rv && (!this.rv || rvLess(this.rv, rv))) this.rv = rv;
    if (ev.type === 'BOOKMARK') return false;
    const path = pathOf(obj);
    if (!path || path.some((p) => !p)) return false;
    if (ev.type === 'DELETED') {
      this.remove(path);
    } else {
      this.upsert(path, slim(obj));
    }
    return true;
  }

  upsert(path, obj) {
    const node = this.ensure(path);
    if (node.obj) this.contribute(node, node.obj, -1);
    node.obj = obj;
    node.seen = this.generation;
    this.contribute(node, obj, 1);
    this.refreshMatch(node);
    this.changed(node, 'self');
  }

  remove(path) {
    const node = this.get(path);
    if (!node || !node.obj) return;
    this.contribute(node, node.obj, -1);
    node.obj = null;
    this.refreshMatch(node);
    this.changed(node, 'self');
    this.prune(node);
  }

  // Drops a node without an object or children, and so on upwards.
  prune(node) {
    let n = node;
    while (n !== this.root && !n.obj && n.children.size === 0) {
      n.parent.children.delete(n.name);
      this.nodes.delete(n.key);
      this.changed(n.parent, 'children');
      this.changed(n, 'removed');
      n = n.parent;
    }
  }

  /** A snapshot begins (a list, or a relist after 410): its generation. */
  beginSnapshot() {
    this.generation += 1;
    return this.generation;
  }

  /**
   * The snapshot of generation `g` over `realm` (every realm when empty) is
   * whole: what it did not name is gone.
   */
  endSnapshot(g, realm) {
    const stale = [];
    for (const node of this.nodes.values()) {
      if (!node.obj || node.seen >= g) continue;
      if (realm && node.path[0] !== realm) continue;
      stale.push(node.path);
    }
    for (const p of stale) this.remove(p);
  }

  /** Sets the filter and recomputes every node's match. */
  setFilter(text, selected) {
    this.filter = { text: text.trim().toLowerCase(), selected };
    for (const node of this.nodes.values()) this.refreshMatch(node);
  }

  /** Adds or drops one key of the server-side selection. */
  select(path, inside) {
    const sel = this.filter.selected;
    if (!sel) return;
    const key = path.join('/');
    if (inside) sel.add(key);
    else sel.delete(key);
    const node = this.nodes.get(key);
    if (node) this.refreshMatch(node);
  }
}
