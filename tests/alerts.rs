//! The chart's alerts, unit-tested with Prometheus' own `promtool test
//! rules`: the PrometheusRule is rendered by the real `helm` (release
//! `podgate` in namespace `podgate`, default thresholds, the auditor on),
//! its groups written as a rules file, and every file of
//! `tests/fixtures/alerts/` (one per alert, named after it) run against it.
//! Each fixture feeds series that fire its alert (after its `for`, with
//! the labels and every annotation as rendered) and series that must not.
//!
//! Also checked here: every alert has such a fixture, with a firing and a
//! quiet expectation (and, for an alert with a `for`, a quiet one before
//! the `for` has passed on the series that then fire it), and every alert's
//! `runbook_url` is a section of docs/alerts.md.
//!
//! A missing `helm` or `promtool` skips with a loud message, unless
//! `PODGATE_REQUIRE_TOOLS=1` (CI): then it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const NAMESPACE: &str = "podgate";
/// The default of `prometheusRule.runbookBaseUrl`.
const RUNBOOK_BASE: &str = "https://github.com/podgate/podgate/blob/main/docs/alerts.md";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `name` from `$PODGATE_TOOLS/bin`, else from `PATH`; `None` after a loud
/// skip message, or a panic under `PODGATE_REQUIRE_TOOLS=1`.
fn tool(name: &str, test: &str) -> Option<PathBuf> {
    let tools = std::env::var_os("PODGATE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/podgate-tools"));
    let local = tools.join("bin").join(name);
    let found = if local.is_file() {
        Some(local)
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
        })
    };
    if found.is_none() {
        let hint = "install the tools with `for f in .ci/install.d/*.sh; do bash \"$f\"; done`";
        if std::env::var("PODGATE_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{test}: `{name}` not found and PODGATE_REQUIRE_TOOLS=1; {hint}");
        }
        // To the stderr handle: libtest captures eprintln! of passing tests.
        let bang = "!".repeat(76);
        let message = format!("\n{bang}\n!!! SKIPPED {test}: `{name}` not found; {hint}\n{bang}\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
    }
    found
}

/// The PrometheusRule's `spec` as `helm template` renders it with `set`.
fn rendered_rules(helm: &Path, set: &[&str]) -> Value {
    let scratch = tempfile::tempdir().unwrap();
    let mut command = Command::new(helm);
    command
        .env("HELM_CACHE_HOME", scratch.path().join("cache"))
        .env("HELM_CONFIG_HOME", scratch.path().join("config"))
        .env("HELM_DATA_HOME", scratch.path().join("data"))
        .env_remove("HELM_NAMESPACE")
        .env_remove("KUBECONFIG")
        .arg("template")
        .arg("podgate")
        .arg(root().join("charts/podgate"))
        .args(["--namespace", NAMESPACE, "--set", "prometheusRule.enabled=true", "--set", "audit.enabled=true"]);
    for item in set {
        command.args(["--set", item]);
    }
    let output = command.output().expect("run helm");
    assert!(output.status.success(), "helm template failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let rules: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("helm output is YAML"))
        .filter(|doc: &Value| doc["kind"] == "PrometheusRule")
        .collect();
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    rules[0]["spec"].clone()
}

/// Every alerting rule of the groups, by name.
fn alerts_of(spec: &Value) -> BTreeMap<String, Value> {
    let mut alerts = BTreeMap::new();
    for group in spec["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("an alerting rule").to_owned();
            assert!(alerts.insert(name.clone(), rule.clone()).is_none(), "alert {name} defined twice");
        }
    }
    alerts
}

fn fixtures() -> BTreeMap<String, PathBuf> {
    let dir = root().join("tests/fixtures/alerts");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| (path.file_stem().unwrap().to_string_lossy().into_owned(), path))
        .collect()
}

/// Seconds of a Prometheus duration (`90s`, `5m`, `1h30m`, `1d`).
fn seconds(what: &str, text: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match (c, chars.peek()) {
            ('m', Some('s')) => panic!("{what}: milliseconds in {text:?}"),
            ('s', _) => 1,
            ('m', _) => 60,
            ('h', _) => 3600,
            ('d', _) => 86400,
            _ => panic!("{what}: not a duration: {text:?}"),
        };
        total += number.parse::<u64>().unwrap_or_else(|_| panic!("{what}: not a duration: {text:?}")) * unit;
        number.clear();
    }
    assert!(number.is_empty() && !text.is_empty(), "{what}: not a duration: {text:?}");
    total
}

/// `promtool test rules` of every fixture against the rendered rules.
#[test]
fn every_alert_fires_after_its_for_and_not_otherwise() {
    let test = "every_alert_fires_after_its_for_and_not_otherwise";
    let (Some(helm), Some(promtool)) = (tool("helm", test), tool("promtool", test)) else { return };
    let spec = rendered_rules(&helm, &[]);
    let alerts = alerts_of(&spec);
    let fixtures = fixtures();
    let names: BTreeSet<&String> = alerts.keys().collect();
    assert_eq!(names, fixtures.keys().collect(), "one fixture per alert, named after it");

    // What each fixture expects, checked before promtool runs it: promtool
    // passes a file whose expectations prove nothing.
    for (alert, path) in &fixtures {
        let what = path.display().to_string();
        let file: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(file["rule_files"], serde_json::json!(["rules.json"]), "{what}");
        let hold = alerts[alert].get("for").map(|d| seconds(&what, d.as_str().unwrap())).unwrap_or(0);
        let (mut fires, mut quiet, mut pending) = (false, false, hold == 0);
        for case in file["tests"].as_array().unwrap_or_else(|| panic!("{what}: no tests")) {
            let mut first_firing = None;
            let mut quiet_times = Vec::new();
            let expectations = case["alert_rule_test"].as_array();
            for expectation in expectations.unwrap_or_else(|| panic!("{what}: no alert_rule_test")) {
                assert_eq!(expectation["alertname"], alert.as_str(), "{what}: only its own alert");
                let at = seconds(&what, expectation["eval_time"].as_str().unwrap());
                let expected = expectation["exp_alerts"].as_array().unwrap_or_else(|| panic!("{what}: exp_alerts"));
                if expected.is_empty() {
                    quiet = true;
                    quiet_times.push(at);
                    continue;
                }
                fires = true;
                first_firing = Some(first_firing.map_or(at, |t: u64| t.min(at)));
                for alert in expected {
                    let annotations = &alert["exp_annotations"];
                    for key in ["summary", "description", "runbook_url"] {
                        assert!(annotations[key].is_string(), "{what}: every firing expectation states {key}");
                    }
                }
            }
            if let Some(firing) = first_firing {
                assert!(firing >= hold, "{what}: fires at {firing}s, before its `for` of {hold}s");
                pending |= quiet_times.iter().any(|&t| t < firing && firing - t <= hold);
            }
        }
        assert!(fires, "{what}: no series that fires {alert}");
        assert!(quiet, "{what}: no series that leaves {alert} quiet");
        assert!(pending, "{what}: no quiet expectation within the `for` before {alert} fires");
    }

    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML: promtool reads the groups as they are.
    std::fs::write(dir.path().join("rules.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let mut command = Command::new(promtool);
    command.args(["test", "rules"]).current_dir(dir.path());
    for (alert, path) in &fixtures {
        let name = format!("{alert}.yaml");
        std::fs::copy(path, dir.path().join(&name)).unwrap();
        command.arg(name);
    }
    let output = command.output().expect("run promtool");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "promtool test rules failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches("SUCCESS").count(), fixtures.len(), "{stdout}");
}

/// The anchors GitHub gives the headings of a Markdown file: lower case,
/// punctuation other than `-` and `_` dropped, spaces as `-`.
fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut anchors = BTreeSet::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let text = line.trim_start_matches('#').trim();
        let anchor: String = text
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        anchors.insert(anchor);
    }
    anchors
}

/// Every alert links its runbook: a section of docs/alerts.md named after
/// it; the base is a value.
#[test]
fn every_alert_has_a_runbook_section() {
    let Some(helm) = tool("helm", "every_alert_has_a_runbook_section") else { return };
    let docs = std::fs::read_to_string(root().join("docs/alerts.md")).unwrap();
    let anchors = heading_anchors(&docs);
    let alerts = alerts_of(&rendered_rules(&helm, &[]));
    assert!(alerts.len() >= 11, "{alerts:?}");
    for (alert, rule) in &alerts {
        let anchor = alert.to_lowercase();
        assert_eq!(rule["annotations"]["runbook_url"], format!("{RUNBOOK_BASE}#{anchor}"), "{alert}");
        assert!(anchors.contains(&anchor), "docs/alerts.md has no heading `## {alert}` (anchors: {anchors:?})");
    }
    // And the value moves them, e.g. to an internal wiki.
    let wiki = "https://wiki.example.com/security/podgate-runbooks";
    let moved = alerts_of(&rendered_rules(&helm, &[&format!("prometheusRule.runbookBaseUrl={wiki}")]));
    for (alert, rule) in &moved {
        assert_eq!(rule["annotations"]["runbook_url"], format!("{wiki}#{}", alert.to_lowercase()), "{alert}");
    }
}
