//! The shape of the source, as `gateway/lib.rs` promises it: no module imports one that imports
//! it back (neither between the top-level modules nor between the files of one directory), and
//! no file under `gateway/` over about 600 lines but the JSON tape. Read from the source text:
//! `crate::` and `super::` paths outside comments and test modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files allowed past the size limit, and why.
const LONG_FILES: &[&str] = &[
    // The JSON reader the validator walks in place: one state machine, kept whole.
    "schema/tape.rs",
];
const MAX_LINES: usize = 620;

fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("gateway");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    out
}

/// The code of a file: no comment lines, nothing from its test module on.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first name of every path that starts with `prefix` (`crate::`, `super::`), including
/// each name of a `prefix{a, b::c}` group.
fn heads(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The names at the group's top level (`{a::{x, y}, b}`: a and b).
            let (mut depth, mut start) = (0usize, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => {
                        let name: String = group[i..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        found.insert(name);
                        start = false;
                    }
                    c if c.is_whitespace() => {}
                    _ => start = false,
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// A cycle in `edges`, if there is one, as the path around it.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut around = path[start..].to_vec();
            around.push(node.to_owned());
            return Some(around);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let files = sources();
    let modules: BTreeSet<String> = files
        .iter()
        .map(|(rel, _)| {
            rel.split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in &files {
        let module = rel.split('/').next().unwrap().trim_end_matches(".rs");
        // The crate root and the binary are above every module.
        if ["lib", "main", "build", "cli"].contains(&module) {
            continue;
        }
        for used in heads(&code(text), "crate::") {
            if used != module && modules.contains(&used) {
                edges.entry(module.to_owned()).or_default().insert(used);
            }
        }
    }
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 40,
        "the scan found too few imports to mean anything: {edges:?}"
    );
    assert_eq!(cycle(&edges), None, "modules importing each other");
}

#[test]
fn no_file_imports_a_sibling_that_imports_it_back() {
    let files = sources();
    let known: BTreeSet<&str> = files.iter().map(|(rel, _)| rel.as_str()).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in &files {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        // `super::` of a mod.rs is the directory above: parent and child, not siblings.
        if name == "mod.rs" || dir.is_empty() {
            continue;
        }
        for used in heads(&code(text), "super::") {
            let sibling = [format!("{dir}/{used}.rs"), format!("{dir}/{used}/mod.rs")]
                .into_iter()
                .find(|candidate| known.contains(candidate.as_str()));
            if let Some(sibling) = sibling {
                edges.entry(rel.clone()).or_default().insert(sibling);
            }
        }
    }
    assert!(
        edges.len() > 10,
        "the scan found too few sibling imports to mean anything: {edges:?}"
    );
    assert_eq!(
        cycle(&edges),
        None,
        "files of one directory importing each other"
    );
}

#[test]
fn no_file_under_gateway_is_longer_than_about_600_lines() {
    let long: Vec<(String, usize)> = sources()
        .into_iter()
        .map(|(rel, text)| (rel, text.lines().count()))
        .filter(|(rel, lines)| *lines > MAX_LINES && !LONG_FILES.contains(&rel.as_str()))
        .collect();
    assert!(long.is_empty(), "split these files: {long:?}");
}

#[test]
fn the_scan_sees_a_cycle_when_there_is_one() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in [("body", "budget"), ("budget", "reject"), ("reject", "body")] {
        edges.entry(from.into()).or_default().insert(to.into());
    }
    assert_eq!(
        cycle(&edges),
        Some(vec![
            "body".into(),
            "budget".into(),
            "reject".into(),
            "body".into()
        ])
    );
    let code =
        code("use crate::{audit::{self, X}, config};\n// crate::report\nlet a = crate::sla::f();");
    assert_eq!(
        heads(&code, "crate::"),
        ["audit", "config", "sla"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}
