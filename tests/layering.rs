//! Architecture invariants, checked on the source tree:
//! - nothing outside `src/store` names the storage engine (`redb::...`, or
//!   the store's `redb` backend module): the store's callers see only the
//!   storage contract;
//! - the modules inside `src/store` import each other without a cycle
//!   (a submodule imports what it needs from the module that defines it,
//!   never through the store's re-exports).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments and without its trailing
/// `#[cfg(test)] mod tests` (tests may reach anywhere).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let tests = text.match_indices("#[cfg(test)]\n").find(|(i, m)| {
        let next = text[i + m.len()..].lines().next().unwrap_or("");
        next.trim_start_matches("pub(super) ")
            .starts_with("mod tests")
    });
    let text = match tests {
        Some((i, _)) => &text[..i],
        None => &text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn nothing_above_the_store_names_the_engine() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let store = src().join("store");
    let mut offenders = Vec::new();
    for f in files.iter().filter(|f| !f.starts_with(&store)) {
        let code = code(f);
        for needle in ["redb::", "store::redb", "use redb"] {
            if code.contains(needle) {
                offenders.push(format!("{}: {needle}", f.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "engine types above the store: {offenders:#?}"
    );
}

/// The module a file under `src/store` is (`store`, `store::redb::wal`).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// Whether module `parent` has a child module `name` in the tree.
fn is_module(parent: &str, name: &str) -> bool {
    let dir = src().join(parent.replace("::", "/"));
    dir.join(format!("{name}.rs")).exists() || dir.join(name).join("mod.rs").exists()
}

/// The first names of every path in `code` that starts with `prefix`
/// (`prefix::a::..`, `prefix::{a, b::c}`).
fn imported(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices(prefix) {
        // `super::super::x` is matched again by its second `super::`;
        // only take whole paths.
        let before = &code[..i];
        if before.ends_with("::") || before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// The module `name` refers to when imported from `base`: the child module
/// if there is one, else `base` itself (an item defined there).
fn target(base: &str, name: &str) -> String {
    if name == "super" || name == "self" {
        return base.to_string();
    }
    if is_module(base, name) {
        format!("{base}::{name}")
    } else {
        base.to_string()
    }
}

fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map(|(p, _)| p.to_string())
        .unwrap_or_default()
}

#[test]
fn the_store_has_no_import_cycle() {
    let mut files = Vec::new();
    rust_files(&src().join("store"), &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let module = module_of(f);
        let is_mod_rs = f.file_name().is_some_and(|n| n == "mod.rs");
        // `super` of a file `a/b.rs` is `a`; of `a/b/mod.rs`, also `a`.
        let sup = parent(&module);
        let code = code(f);
        let mut to = BTreeSet::new();
        for name in imported(&code, "crate::store::") {
            to.insert(target("store", &name));
        }
        for name in imported(&code, "super::super::") {
            to.insert(target(&parent(&sup), &name));
        }
        for name in imported(&code, "super::") {
            if name != "super" {
                to.insert(target(&sup, &name));
            }
        }
        if is_mod_rs {
            for name in imported(&code, "self::") {
                to.insert(target(&module, &name));
            }
            // A module uses its children by their bare names.
            let dir = f.parent().unwrap();
            for child in std::fs::read_dir(dir).unwrap() {
                let child = child.unwrap().path();
                let name = match (child.is_dir(), child.file_stem()) {
                    (true, _) => child.file_name().unwrap().to_string_lossy().into_owned(),
                    (false, Some(stem)) if stem != "mod" => stem.to_string_lossy().into_owned(),
                    _ => continue,
                };
                if !imported(&code, &format!("{name}::")).is_empty() {
                    to.insert(format!("{module}::{name}"));
                }
            }
        }
        to.remove(&module);
        edges.insert(module, to);
    }
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let from = stack.iter().position(|s| s == m).unwrap();
                let mut cycle = stack[from..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if let Some(cycle) = visit(m, &edges, &mut state, &mut Vec::new()) {
            panic!(
                "import cycle in src/store: {}\nedges: {edges:#?}",
                cycle.join(" -> ")
            );
        }
    }
    // The check sees the edges it should.
    assert!(
        edges["store::redb::writer"].contains("store::plan"),
        "{edges:#?}"
    );
    assert!(
        edges["store::redb"].contains("store::redb::writer"),
        "{edges:#?}"
    );
}

#[test]
fn the_cycle_check_finds_a_cycle_through_reexports() {
    // `super::StoreError` from a submodule is an edge to the store's root
    // module, which imports every submodule: that is a cycle.
    let code = "use super::{StoreError, codec};\nuse crate::store::change::Change;";
    let names = imported(code, "super::");
    assert_eq!(names, ["StoreError", "codec"]);
    assert_eq!(target("store", "StoreError"), "store");
    assert_eq!(target("store", "codec"), "store::codec");
    assert_eq!(imported(code, "crate::store::"), ["change"]);
}
