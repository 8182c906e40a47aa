//! Codebase rules checked as a test: every Rust file says what it owns.

use std::path::Path;

fn rust_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_module_opens_with_a_doc_comment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "src",
        "events/src",
        "events/tests",
        "events/benches",
        "projections/src",
        "tests",
        "examples",
    ] {
        if root.join(dir).exists() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    assert!(files.len() > 20, "found only {} files", files.len());
    let missing: Vec<_> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .map(|path| path.strip_prefix(root).unwrap().display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a //! module doc: {missing:?}");
}

/// The top-level modules of `src/` a file's code names (`use crate::x`,
/// `use crate::{x, y::z}`, or a path `crate::x::f` in the code), outside
/// comments and its `#[cfg(test)]` module.
fn named_modules(text: &str) -> std::collections::BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let code = without_test_items(&code);
    let mut named = std::collections::BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `mycrate::`, not `crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first name of each item at
            // the outermost level.
            let mut depth = 0;
            let mut item_start = true;
            for (index, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[index..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        let name: String = group[index..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        named.insert(name);
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String =
                rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            named.insert(name);
        }
    }
    named
}

/// The code without each item marked `#[cfg(test)]` (up to the end of
/// its braces, or its `;`).
fn without_test_items(code: &str) -> String {
    let mut kept = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        kept.push_str(&rest[..at]);
        rest = &rest[at + "#[cfg(test)]".len()..];
        let mut depth = 0usize;
        let mut end = rest.len();
        for (index, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = index + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = index + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    kept.push_str(rest);
    kept
}

/// Which top-level module of `src/` each top-level module imports.
fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: std::collections::BTreeSet<String> = files
        .iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
            first.trim_end_matches(".rs").to_owned()
        })
        .filter(|module| module != "lib" && module != "main")
        .collect();
    let mut graph = std::collections::BTreeMap::new();
    for path in &files {
        let relative = path.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if !modules.contains(&module) {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let imports: &mut std::collections::BTreeSet<String> =
            graph.entry(module.clone()).or_default();
        for named in named_modules(&text) {
            assert!(
                modules.contains(&named),
                "{} names crate::{named}, which is no module of src/",
                relative.display()
            );
            if named != module {
                imports.insert(named);
            }
        }
    }
    graph
}

/// A circle through `start`, if the graph has one, as the path around it.
fn circle_through(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    start: &str,
) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = std::collections::BTreeSet::new();
    while let Some((module, path)) = stack.pop() {
        for next in graph.get(&module).into_iter().flatten() {
            if next == start {
                let mut circle = path.clone();
                circle.push(start.to_owned());
                return Some(circle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn the_modules_of_src_import_downwards_only() {
    let graph = module_graph();
    for expected in ["server", "state", "scim", "admin", "store", "sync", "model", "cli"] {
        assert!(graph.contains_key(expected), "no module {expected} in {graph:?}");
    }
    let mut wrong = Vec::new();
    for module in graph.keys() {
        if let Some(circle) = circle_through(&graph, module) {
            wrong.push(format!("a circle: {}", circle.join(" -> ")));
        }
    }
    // The router assembly imports the routes, never the other way; only
    // the command line (which starts the server) imports it, and nothing
    // imports the command line.
    for (module, imports) in &graph {
        if imports.contains("server") && module != "cli" {
            wrong.push(format!("{module} imports the router assembly (server)"));
        }
        if imports.contains("cli") {
            wrong.push(format!("{module} imports the command line (cli)"));
        }
    }
    // Decision modules know no request, route or page.
    let routes_and_pages = ["scim", "admin", "console", "oauth", "auth", "state", "server", "cli"];
    let decisions = [
        "error", "model", "reads", "store", "tenancy", "sync", "audit", "webhooks", "requests",
        "stop", "metrics", "backup", "cache",
    ];
    for module in decisions {
        for import in graph.get(module).into_iter().flatten() {
            if routes_and_pages.contains(&import.as_str()) {
                wrong.push(format!("decision module {module} imports {import}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_import_reader_sees_every_form() {
    let named = named_modules(
        "//! [`crate::console`] in a doc is not an import\n\
         use crate::store::Store;\n\
         use crate::{error::Error, reads::{blocking, in_heavy_lane}, sync};\n\
         fn f() { crate::audit::report::x(); mycrate::nope(); } // crate::admin\n\
         #[cfg(test)]\nmod tests { use crate::scim; fn g() { crate::cli::x(); } }\n\
         #[cfg(test)]\nuse crate::console;\n\
         fn after() { crate::model::y(); }\n",
    );
    let expected: std::collections::BTreeSet<String> =
        ["store", "error", "reads", "sync", "audit", "model"]
            .into_iter()
            .map(String::from)
            .collect();
    assert_eq!(named, expected);
}
