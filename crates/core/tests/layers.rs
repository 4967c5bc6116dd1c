//! The crate's layers (see the doc comment of `src/lib.rs`): a module uses
//! only the modules before it in [`LAYERS`]. Every `crate::…` path in the
//! crate's source counts, `use` or not; comments do not.
//!
//! Test code is exempt: `tests.rs` files and everything from a file's first
//! `#[cfg(test)] mod` on (the test modules close each file), since a test may
//! build its fixture from a higher layer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top.
const LAYERS: &[&str] = &[
    "error",
    "task",
    "text",
    "log",
    "rules",
    "config",
    "api",
    "auth",
    "store",
    "profile",
    "proxy",
    "detection",
    "rules_edit",
    "control",
    "browser",
    "client",
    "daemon",
];

/// Items `lib.rs` re-exports at the crate root, and the module they come from.
const ROOT_ITEMS: &[(&str, &str)] = &[("AluviaError", "error"), ("Result", "error")];

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("read the source dir").map(|e| e.expect("dir entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`None` for `lib.rs`).
fn module_of(path: &Path) -> Option<String> {
    let relative = path.strip_prefix(source_dir()).expect("under src");
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(stem) => Some(stem.to_string()),
        None => Some(first.to_string()),
    }
}

/// The code of a file that the layers apply to: no comments, no test code.
fn checked_code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).expect("read a source file");
    let lines: Vec<&str> = text.lines().collect();
    let test_module = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].split_whitespace().any(|word| word == "mod"));
    lines[..test_module.unwrap_or(lines.len())]
        .iter()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(text: &str) -> &str {
    let end = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(text.len());
    &text[..end]
}

/// The first segment of every path after `crate::`, braces included
/// (`crate::{api, error::Result}` names `api` and `error`).
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.insert(ident_at(group[start..j].trim_start()).to_string());
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(ident_at(group[start..j].trim_start()).to_string());
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident_at(rest).to_string());
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

fn rank(module: &str) -> Option<usize> {
    let module = ROOT_ITEMS.iter().find(|(item, _)| *item == module).map_or(module, |(_, from)| from);
    LAYERS.iter().position(|m| *m == module)
}

#[test]
fn no_module_uses_a_module_above_it() {
    let mut files = Vec::new();
    rust_files(&source_dir(), &mut files);
    let mut upward = Vec::new();
    let mut checked = 0;
    for path in &files {
        let Some(module) = module_of(path) else { continue };
        let own = rank(&module).unwrap_or_else(|| panic!("module `{module}` is missing from LAYERS"));
        for used in crate_modules(&checked_code(path)) {
            let theirs = rank(&used).unwrap_or_else(|| panic!("{}: `crate::{used}` is not in LAYERS", path.display()));
            checked += 1;
            if used != module && theirs >= own {
                let file = path.strip_prefix(source_dir()).unwrap_or(path);
                upward.push(format!("{}: {module} uses crate::{used}", file.display()));
            }
        }
    }
    assert!(checked > 50, "only {checked} edges found: the scan is broken");
    assert!(upward.is_empty(), "upward or sideways edges:\n{}", upward.join("\n"));
}

#[test]
fn every_module_of_lib_rs_is_layered() {
    let lib = std::fs::read_to_string(source_dir().join("lib.rs")).expect("read lib.rs");
    let declared: BTreeSet<&str> =
        lib.lines().filter_map(|l| l.trim().strip_prefix("pub mod ")?.strip_suffix(';')).collect();
    let layered: BTreeSet<&str> = LAYERS.iter().copied().collect();
    assert_eq!(declared, layered);
}

#[test]
fn the_scan_finds_grouped_and_nested_paths() {
    let code = "use crate::{api::{a, b}, error::Result};\nlet x = crate::store::LockDir::open();\nmacro_crate::no";
    let found: Vec<String> = crate_modules(code).into_iter().collect();
    assert_eq!(found, ["api", "error", "store"]);
}
