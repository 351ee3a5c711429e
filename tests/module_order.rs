//! The house in order: `src/lib.rs` declares the top-level modules in the
//! order of the data flow, and no module uses one declared below it. So
//! there are no cycles between top-level modules, and the module list reads
//! top-down (decode -> extract -> checks -> verdict -> report/server).
//!
//! An edge is a `crate::NAME` in a module's code (comment lines are skipped:
//! a doc link to a later step is not a dependency).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The `pub mod NAME;` lines of `src/lib.rs`, in order.
fn declared_modules() -> Vec<String> {
    let lib = fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs");
    lib.lines().filter_map(|line| line.trim().strip_prefix("pub mod ")?.strip_suffix(';').map(str::to_owned)).collect()
}

/// Every `.rs` file of module `name`: `src/NAME.rs` and everything under `src/NAME/`.
fn files_of(name: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let file = src().join(format!("{name}.rs"));
    if file.is_file() {
        files.push(file);
    }
    let mut dirs = vec![src().join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The other top-level modules that module `name`'s code names as `crate::X`.
fn uses_of(name: &str, modules: &[String]) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for file in files_of(name) {
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for line in text.lines().filter(|line| !line.trim_start().starts_with("//")) {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                let target = &rest[..end];
                if target != name && modules.iter().any(|m| m == target) {
                    used.insert(target.to_owned());
                }
            }
        }
    }
    used
}

#[test]
fn accepts_only_modules_that_use_modules_declared_above_them() {
    let modules = declared_modules();
    assert!(modules.len() > 10, "cannot read the module list of src/lib.rs: {modules:?}");
    let mut upward = Vec::new();
    for (position, name) in modules.iter().enumerate() {
        assert!(!files_of(name).is_empty(), "src/lib.rs declares {name}, but there is no src/{name}.rs or src/{name}/");
        for used in uses_of(name, &modules) {
            let used_at = modules.iter().position(|m| *m == used).expect("a declared module");
            if used_at > position {
                upward.push(format!("{name} uses crate::{used}, declared below it"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "src/lib.rs lists the modules in the order of the data flow, each using only those above it:\n{}\n\
         move what both need into a module declared above both (or reorder the declarations, if the order was wrong)",
        upward.join("\n")
    );
}

#[test]
fn accepts_the_scan_only_when_it_sees_real_edges() {
    // The test above is only as good as the scan: `checks` uses `decode` and
    // `extract` in code, and must not be found using `verdict`.
    let modules = declared_modules();
    let checks = uses_of("checks", &modules);
    assert!(checks.contains("decode") && checks.contains("extract"), "{checks:?}");
    assert!(!checks.contains("verdict"), "{checks:?}");
}
