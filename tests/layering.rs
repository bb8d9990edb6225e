//! Architecture invariants, checked on the source tree:
//! - nothing outside `src/store` names the storage engine (`redb::...`, or
//!   the store's `redb` backend module): the store's callers see only the
//!   storage contract (the compiler enforces the second half too: the
//!   backend module is private);
//! - the client and the command line build on `api` and `model` only;
//! - the modules inside `src/store` (and the migrations compiled into its
//!   redb backend) import each other without a cycle: a submodule imports
//!   what it needs from the module that defines it, never through the
//!   store's re-exports.

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

/// `text` without comments and string literals (each replaced by a
/// space), so that neither can add or hide an import.
fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let (mut depth, mut last) = (1, ' ');
                for c in chars.by_ref() {
                    match (last, c) {
                        ('*', '/') => depth -= 1,
                        ('/', '*') => depth += 1,
                        _ => {}
                    }
                    if depth == 0 {
                        break;
                    }
                    // A closing `*/` must not also open a `/*`.
                    last = if matches!((last, c), ('*', '/') | ('/', '*')) {
                        ' '
                    } else {
                        c
                    };
                }
                out.push(' ');
            }
            // A raw string: `r"..."`, `r#"..."#` (also after `b`).
            'r' if !out.ends_with(|p: char| p.is_alphanumeric() || p == '_')
                || out.ends_with('b') =>
            {
                let mut ahead = chars.clone();
                let mut hashes = 0;
                while ahead.peek() == Some(&'#') {
                    ahead.next();
                    hashes += 1;
                }
                if ahead.peek() != Some(&'"') {
                    out.push(c);
                    continue;
                }
                ahead.next();
                let close: String = std::iter::once('"')
                    .chain("#".repeat(hashes).chars())
                    .collect();
                let mut body = String::new();
                for c in ahead.by_ref() {
                    body.push(c);
                    if body.ends_with(&close) {
                        break;
                    }
                }
                chars = ahead;
                out.push(' ');
            }
            // A char literal (`'x'`, `'\''`); a lifetime (`'a`) is code.
            '\'' => {
                let mut ahead = chars.clone();
                match (ahead.next(), ahead.next()) {
                    (Some('\\'), _) => {
                        chars.next();
                        chars.next();
                        for c in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                        }
                        out.push(' ');
                    }
                    (Some(_), Some('\'')) => {
                        chars.next();
                        chars.next();
                        out.push(' ');
                    }
                    _ => out.push(c),
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push(' ');
            }
            c => out.push(c),
        }
    }
    out
}

/// The code of a file without comments, strings and its trailing
/// `#[cfg(test)] mod tests` (tests may reach anywhere).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let tests = text.match_indices("#[cfg(test)]\n").find(|(i, m)| {
        let next = text[i + m.len()..].lines().next().unwrap_or("");
        next.trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .starts_with("mod tests {")
    });
    strip(match tests {
        Some((i, _)) => &text[..i],
        None => &text,
    })
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn src() -> PathBuf {
    root().join("src")
}

/// The files under `dir` whose code contains any of `needles`.
fn offenders(dir: &Path, skip: Option<&Path>, needles: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    let mut out = Vec::new();
    for f in files
        .iter()
        .filter(|f| skip.is_none_or(|s| !f.starts_with(s)))
    {
        let code = code(f);
        for needle in needles {
            if code.contains(needle) {
                out.push(format!("{}: {needle}", f.display()));
            }
        }
    }
    out
}

#[test]
fn nothing_above_the_store_names_the_engine() {
    let found = offenders(
        &src(),
        Some(&src().join("store")),
        &["redb::", "store::redb", "use redb"],
    );
    assert!(found.is_empty(), "engine types above the store: {found:#?}");
}

#[test]
fn the_client_and_the_cli_build_on_api_and_model_only() {
    let allowed = ["api", "model", "client", "cli"];
    for dir in ["client", "cli"] {
        let mut files = Vec::new();
        rust_files(&src().join(dir), &mut files);
        for f in &files {
            let code = code(f);
            let mut used = imported(&code, "crate::");
            used.retain(|m| !allowed.contains(&m.as_str()));
            assert!(used.is_empty(), "{} uses crate::{used:?}", f.display());
        }
    }
}

/// The module a file is (`store`, `store::redb::wal`); the migrations are
/// compiled in as `store::redb::migrate::steps`.
fn module_of(file: &Path) -> String {
    let (base, rel) = match file.strip_prefix(src()) {
        Ok(rel) => (String::new(), rel.to_path_buf()),
        Err(_) => (
            "store::redb::migrate::steps".to_string(),
            file.strip_prefix(root().join("migrations"))
                .unwrap()
                .to_path_buf(),
        ),
    };
    let mut parts: Vec<String> = base
        .split("::")
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    parts.extend(
        rel.with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The directory holding the children of `module`.
fn dir_of(module: &str) -> PathBuf {
    match module.strip_prefix("store::redb::migrate::steps") {
        Some(rest) => root()
            .join("migrations")
            .join(rest.trim_start_matches("::").replace("::", "/")),
        None => src().join(module.replace("::", "/")),
    }
}

/// Whether module `parent` has a child module `name`.
fn is_module(parent: &str, name: &str) -> bool {
    if parent == "store::redb::migrate" && name == "steps" {
        return true;
    }
    let dir = dir_of(parent);
    dir.join(format!("{name}.rs")).exists() || dir.join(name).join("mod.rs").exists()
}

/// The top-level names of a `use` group's body (`a::{b, c}, d` -> `a`, `d`).
fn group_names(body: &str) -> Vec<String> {
    let (mut names, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in body.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => names.push(std::mem::take(&mut current)),
            _ if depth == 0 => current.push(c),
            _ => {}
        }
    }
    names.push(current);
    names
        .iter()
        .map(|n| {
            let n = n.trim();
            let n = n.split(" as ").next().unwrap_or(n);
            n.split("::").next().unwrap_or("").trim().to_string()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// The first names of every path in `code` that starts with `prefix`
/// (`prefix::a::..`, `prefix::{a, b::{c}}`, `prefix::*`).
fn imported(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        // `super::super::x` is matched again by its second `super::`;
        // only take whole paths.
        let before = &code[..i];
        if before.ends_with("::") || before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(j, _)| j);
            out.extend(group_names(&group[..end]));
        } else if rest.starts_with('*') {
            out.push("*".to_string());
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// The module `name` refers to when imported from `base`: the child module
/// if there is one, else `base` itself (an item defined there, or a glob).
fn target(base: &str, name: &str) -> String {
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

/// A cycle in `edges`, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
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
    edges
        .keys()
        .find_map(|m| visit(m, edges, &mut state, &mut Vec::new()))
}

/// Each module of the store and the modules it imports.
fn store_edges() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src().join("store"), &mut files);
    rust_files(&root().join("migrations"), &mut files);
    // Test-only files (`golden_tests.rs`) may reach anywhere.
    files.retain(|f| !f.to_string_lossy().ends_with("_tests.rs"));
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let module = module_of(f);
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
        for name in imported(&code, "self::") {
            to.insert(target(&module, &name));
        }
        // A module uses the children it declares by their bare names.
        for decl in code.split("mod ").skip(1) {
            let name: String = decl
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let declared = decl[name.len()..].trim_start().starts_with(';');
            if declared && !name.is_empty() && !imported(&code, &format!("{name}::")).is_empty() {
                to.insert(format!("{module}::{name}"));
            }
        }
        to.remove(&module);
        edges.entry(module).or_default().extend(to);
    }
    edges
}

#[test]
fn the_store_has_no_import_cycle() {
    let edges = store_edges();
    if let Some(cycle) = find_cycle(&edges) {
        panic!(
            "import cycle in src/store: {}\nedges: {edges:#?}",
            cycle.join(" -> ")
        );
    }
    // The check sees the edges it should.
    for (from, to) in [
        ("store::redb::writer", "store::plan"),
        ("store::redb", "store::redb::writer"),
        ("store::redb::migrate::steps::step", "store::error"),
        ("store::redb::migrate", "store::redb::migrate::steps"),
    ] {
        assert!(edges[from].contains(to), "{from} -> {to}: {edges:#?}");
    }
}

#[test]
fn the_cycle_check_finds_cycles_through_reexports_groups_and_globs() {
    // `super::StoreError` from a submodule is an edge to the store's root
    // module, which imports every submodule: a cycle.
    let code = "use super::{StoreError, codec::{a, b}, feed};\nuse crate::store::change::Change;";
    assert_eq!(imported(code, "super::"), ["StoreError", "codec", "feed"]);
    assert_eq!(target("store", "StoreError"), "store");
    assert_eq!(target("store", "codec"), "store::codec");
    assert_eq!(imported(code, "crate::store::"), ["change"]);
    assert_eq!(imported("use super::*;", "super::"), ["*"]);
    assert_eq!(target("store", "*"), "store");
    // Comments and strings are not code.
    assert_eq!(
        strip("a /* super::x */ b \"super::y // z\" c // super::w\nd"),
        "a   b   c \nd"
    );
    assert_eq!(strip("'\"' x '\\'' y &'a z"), "  x   y &'a z");
    assert_eq!(
        strip("a r#\"x \" super::y\"# b br\"z\" c /* /* */ super::w */ d"),
        "a   b b  c   d"
    );
    assert_eq!(group_names("a::{b, c}, d as e, f::g"), ["a", "d", "f"]);

    let graph = |pairs: &[(&str, &str)]| {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            edges
                .entry(a.to_string())
                .or_default()
                .insert(b.to_string());
            edges.entry(b.to_string()).or_default();
        }
        edges
    };
    let acyclic = graph(&[("store", "store::a"), ("store::a", "store::b")]);
    assert_eq!(find_cycle(&acyclic), None);
    let cyclic = graph(&[
        ("store", "store::a"),
        ("store::a", "store::b"),
        ("store::b", "store"),
    ]);
    let cycle = find_cycle(&cyclic).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
}
