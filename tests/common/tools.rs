//! The external tools some tests run (helm, kubectl, the SARIF multitool,
//! cargo-auditable, ...): looked up as `.ci/run` sets PATH, with
//! `$PODGATE_TOOLS/bin` (default `~/.cache/podgate-tools/bin`) and
//! `~/.cargo/bin` first. A test whose tools are missing is skipped with a
//! loud message, or fails under `PODGATE_REQUIRE_TOOLS=1` (as in CI), so CI
//! cannot pass by not running it.
//!
//! Included with `#[path = "common/tools.rs"] mod tools;` by tests that need
//! nothing else of `common` (which would build the whole server harness).

#![allow(dead_code)] // each test binary uses a different part

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// What to run when tools are missing.
pub const INSTALL_HINT: &str = "install them with `for f in .ci/install.d/*.sh; do bash \"$f\"; done`";

/// `$PODGATE_TOOLS/bin`, where `.ci/install.d` puts helm, kubectl and the rest.
pub fn tools_bin() -> PathBuf {
    match std::env::var_os("PODGATE_TOOLS") {
        Some(dir) => PathBuf::from(dir).join("bin"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/podgate-tools/bin"),
    }
}

/// PATH with `$PODGATE_TOOLS/bin` and `~/.cargo/bin` first, as `.ci/run` sets it.
pub fn path_with_tools() -> OsString {
    let cargo_bin = PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo/bin");
    let mut dirs = vec![tools_bin(), cargo_bin];
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(dirs).unwrap()
}

/// The tools not found on [`path_with_tools`].
pub fn missing(tools: &[&str]) -> Vec<String> {
    let path = path_with_tools();
    tools
        .iter()
        .filter(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .map(|tool| tool.to_string())
        .collect()
}

/// Whether `test` can run given what is `missing` (tools or other
/// prerequisites): if something is, it is skipped loudly, or fails under
/// `PODGATE_REQUIRE_TOOLS=1`; `hint` says how to get it.
pub fn require(test: &str, missing: Vec<String>, hint: &str) -> bool {
    if missing.is_empty() {
        return true;
    }
    if std::env::var("PODGATE_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{test}: {missing:?} not available and PODGATE_REQUIRE_TOOLS=1; {hint}");
    }
    eprintln!("\n!!! {test} SKIPPED: {missing:?} not available; {hint}\n");
    false
}

/// Whether every tool is installed (see [`require`]).
pub fn have(test: &str, tools: &[&str]) -> bool {
    require(test, missing(tools), INSTALL_HINT)
}

/// The errors and warnings `sarif-multitool validate` reports on `logs`.
/// (Its exit code is 0 even for an invalid log, so the findings are read
/// from its own SARIF output.)
pub fn multitool_validate(logs: &[&Path]) -> Vec<String> {
    let out = logs[0].with_extension("validation.sarif");
    let status = Command::new(tools_bin().join("sarif-multitool"))
        .arg("validate")
        .args(logs)
        .arg("--output")
        .arg(&out)
        .args(["--log", "ForceOverwrite"])
        .env("PATH", path_with_tools())
        .output()
        .expect("sarif-multitool runs");
    assert!(status.status.success(), "sarif-multitool failed: {}", String::from_utf8_lossy(&status.stdout));
    let validation: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(validation["runs"][0]["invocations"][0]["executionSuccessful"], true);
    validation["runs"][0]["results"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .map(|r| {
                    let level = r["level"].as_str().unwrap_or("warning");
                    format!("{level} {}: {}", r["ruleId"].as_str().unwrap_or("?"), r["message"])
                })
                .collect()
        })
        .unwrap_or_default()
}
