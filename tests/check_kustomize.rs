//! `podgate check --kustomize` on a GitOps layout (`tests/fixtures/kustomize`:
//! a base with a generator, overlays that only relabel, renamespace or
//! rename, one whose patch fixes a finding and one whose patches add
//! findings; a missing and a remote base), rendered by the real `kubectl
//! kustomize`: one result per source object and verdict, located in the
//! source file, `renderedBy` in every format, SARIF checked by Microsoft's
//! SARIF Multitool.
//!
//! kubectl and sarif-multitool come from `.ci/install.d/`; a test that needs
//! a missing one is skipped loudly, or fails with `PODGATE_REQUIRE_TOOLS=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[path = "common/tools.rs"]
mod tools;

use tools::{have, multitool_validate, path_with_tools};

use serde_json::{json, Value};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kustomize")
}

/// `podgate check ARGS` in `dir`, as CI runs it.
fn podgate_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podgate"))
        .arg("check")
        .args(args)
        .current_dir(dir)
        .env("PATH", path_with_tools())
        .env_remove("PODGATE_CONFIG")
        .output()
        .expect("podgate runs")
}

fn podgate(args: &[&str]) -> Output {
    podgate_in(&fixture(), args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\nstderr: {}", stdout(output), stderr(output)))
}

/// (check, file or None, line) of a list of violations.
fn places(violations: &Value) -> Vec<(String, Option<String>, u64)> {
    violations
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["check"].as_str().unwrap().to_owned(),
                v["file"].as_str().map(str::to_owned),
                v["line"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn place(check: &str, file: Option<&str>, line: u64) -> (String, Option<String>, u64) {
    (check.to_owned(), file.map(str::to_owned), line)
}

/// Every file under `dir`, to show a run leaves the user's tree alone.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn overlays_that_only_relabel_or_renamespace_merge_into_the_base_result() {
    if !have("overlays_that_only_relabel_or_renamespace_merge_into_the_base_result", &["kubectl"]) {
        return;
    }
    let before = files_under(&fixture());
    let output = podgate(&["--format", "json", "--kustomize", "apps"]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
    assert_eq!(files_under(&fixture()), before, "the wrapper kustomization lives outside the user's tree");
    let report = json_of(&output);
    let results = report["results"].as_array().unwrap();
    // Five renderings of one Deployment, three verdicts: three results.
    assert_eq!(results.len(), 3, "{results:#?}");
    let base = &results[0];
    assert_eq!(base["source"], "apps/base/app.yaml#1", "the second document of the base file");
    assert_eq!(base["file"], "apps/base/app.yaml");
    assert_eq!(base["line"], 10, "the object's first line");
    assert_eq!(base["renderedBy"], json!(["apps/base", "apps/overlays/dev", "apps/overlays/staging"]));
    assert_eq!(base["name"], "web", "named as the base renders it alone");
    assert_eq!(base["namespace"], Value::Null);
    assert!(base.get("differsFrom").is_none());
    // The fields' lines in the base file: pod runAsUser 500, and the
    // container that lacks a readinessProbe.
    assert_eq!(places(&base["violations"]), [place("runAsUser", None, 25), place("readinessProbe", None, 27)]);

    // The Service once (not once per rendering), and the generator's
    // ConfigMap under the kustomization that generates it.
    let mut skipped: Vec<(String, String)> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["source"].as_str().unwrap().to_owned(), s["reason"].as_str().unwrap().to_owned()))
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            ("apps/base/app.yaml#0".to_owned(), "not-workload".to_owned()),
            ("apps/base/kustomization.yaml#0".to_owned(), "not-workload".to_owned()),
            ("apps/overlays/production/patches/probes.yaml".to_owned(), "kustomize-patch".to_owned()),
            ("apps/overlays/production/patches/replicas.yaml".to_owned(), "kustomize-patch".to_owned()),
        ]
    );

    // Without the base rendered alone, the main result is the one most
    // overlays share, still located in the base file.
    let output = podgate(&["--format", "json", "--kustomize", "apps/overlays"]);
    let report = json_of(&output);
    let main = &report["results"][0];
    assert_eq!(main["renderedBy"], json!(["apps/overlays/dev", "apps/overlays/staging"]));
    assert_eq!((&main["file"], &main["line"]), (&json!("apps/base/app.yaml"), &json!(10)));
    assert_eq!(main["namespace"], "dev", "the first rendering's");
    assert_eq!(report["results"].as_array().unwrap().len(), 3);

    // Run from elsewhere, paths stay relative to where `check` runs.
    let output = podgate_in(&fixture().join("apps"), &["--format", "json", "--kustomize", "."]);
    assert_eq!(json_of(&output)["results"][0]["file"], "./base/app.yaml");
    assert_eq!(json_of(&output)["results"][0]["renderedBy"][1], "./overlays/dev");
}

#[test]
fn an_overlay_whose_patch_fixes_a_finding_has_its_own_result_at_the_patch() {
    if !have("an_overlay_whose_patch_fixes_a_finding_has_its_own_result_at_the_patch", &["kubectl"]) {
        return;
    }
    let output = podgate(&["--format", "json", "--kustomize", "apps"]);
    let report = json_of(&output);
    let production = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["renderedBy"] == json!(["apps/overlays/production"]))
        .expect("production's own result");
    assert_eq!(production["source"], "apps/base/app.yaml#1");
    assert_eq!(production["namespace"], "production");
    // Located where the fix is: the readinessProbe in the patch file.
    assert_eq!(production["file"], "apps/overlays/production/patches/probes.yaml");
    assert_eq!(production["line"], 10);
    let differs = &production["differsFrom"];
    assert_eq!(differs["renderedBy"], json!(["apps/base", "apps/overlays/dev", "apps/overlays/staging"]));
    assert_eq!((&differs["file"], &differs["line"]), (&json!("apps/base/app.yaml"), &json!(10)));
    assert_eq!(differs["added"], json!([]));
    assert_eq!(
        places(&differs["removed"]),
        [place("readinessProbe", Some("apps/overlays/production/patches/probes.yaml"), 10)]
    );
    // What it still has is the base's, at the base's line.
    assert_eq!(places(&production["violations"]), [place("runAsUser", Some("apps/base/app.yaml"), 25)]);
}

#[test]
fn an_overlay_whose_patches_add_findings_has_its_own_result_at_the_patches() {
    if !have("an_overlay_whose_patches_add_findings_has_its_own_result_at_the_patches", &["kubectl"]) {
        return;
    }
    let output = podgate(&["--format", "json", "--kustomize", "apps"]);
    let report = json_of(&output);
    let debug = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["renderedBy"] == json!(["apps/overlays/debug"]))
        .expect("debug's own result");
    // Inline patches: their entries in the overlay's kustomization.
    let kustomization = "apps/overlays/debug/kustomization.yaml";
    assert_eq!(debug["file"], kustomization);
    assert_eq!(debug["line"], 9, "the JSON patch's `patch:` line");
    assert_eq!(
        places(&debug["violations"]),
        [
            place("runAsUser", None, 9),
            place("allowPrivilegeEscalation", None, 13),
            place("readinessProbe", Some("apps/base/app.yaml"), 27)
        ]
    );
    let differs = &debug["differsFrom"];
    // A changed value a message quotes is a finding removed and one added.
    assert_eq!(
        places(&differs["added"]),
        [place("runAsUser", Some(kustomization), 9), place("allowPrivilegeEscalation", Some(kustomization), 13)]
    );
    assert!(differs["added"][0]["message"].as_str().unwrap().starts_with("runAsUser=999"), "{differs}");
    assert_eq!(places(&differs["removed"]), [place("runAsUser", Some(kustomization), 9)]);
    assert!(differs["removed"][0]["message"].as_str().unwrap().starts_with("runAsUser=500"), "{differs}");
}

#[test]
fn an_exemption_for_an_overlays_namespace_gives_it_a_result_of_its_own() {
    if !have("an_exemption_for_an_overlays_namespace_gives_it_a_result_of_its_own", &["kubectl"]) {
        return;
    }
    let args = ["--format", "json", "--kustomize", "--config", "policy.yaml", "apps/base", "apps/overlays/dev"];
    let output = podgate(&[&args[..], &["apps/overlays/staging"]].concat());
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let report = json_of(&output);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{results:#?}");
    assert_eq!(results[0]["renderedBy"], json!(["apps/base", "apps/overlays/dev"]));
    let staging = &results[1];
    assert_eq!(staging["renderedBy"], json!(["apps/overlays/staging"]));
    assert_eq!(staging["allowed"], true);
    assert_eq!(staging["exempt"], "staging runs the old UID until the migration");
    // No patch makes the difference: the overlay's `namespace:` line.
    assert_eq!((&staging["file"], &staging["line"]), (&json!("apps/overlays/staging/kustomization.yaml"), &json!(3)));
    assert_eq!(staging["differsFrom"]["removed"].as_array().unwrap().len(), 2);
}

#[test]
fn text_and_github_annotations_name_each_source_line_once() {
    if !have("text_and_github_annotations_name_each_source_line_once", &["kubectl"]) {
        return;
    }
    let output = podgate(&["--kustomize", "apps"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    for line in [
        "DENY  Deployment web  (apps/base/app.yaml#1)\n      rendered by: apps/base, apps/overlays/dev, apps/overlays/staging\n",
        "            field: spec.template.spec.securityContext.runAsUser  (apps/base/app.yaml:25)\n",
        "DENY  Deployment production/web  (apps/base/app.yaml#1)\n      rendered by: apps/overlays/production\n      \
         differs from the result rendered by apps/base, apps/overlays/dev, apps/overlays/staging: 0 findings added, 1 removed\n",
        "      removed  readinessProbe: readinessProbe missing (container \"web\" must set readinessProbe)\n            \
         field: spec.template.spec.containers[0].readinessProbe  (apps/overlays/production/patches/probes.yaml:10)\n",
        "3 objects checked (5 kustomize renderings grouped by source): 3 denied, 0 allowed with warnings, 0 passed; \
         2 documents skipped (not a Pod or workload); 2 documents skipped (kustomize patch)\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }

    let output = podgate(&["--format", "github", "--kustomize", "apps"]);
    let text = stdout(&output);
    let annotations: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| l.starts_with("::"))
        .map(|l| {
            let (head, message) = l.split_once("::").unwrap().1.split_once("::").unwrap();
            (head.split(",title=").next().unwrap(), message.rsplit_once("; rendered by ").unwrap().1)
        })
        .collect();
    // Four annotations, not one per finding per rendering (that was 10).
    assert_eq!(
        annotations,
        [
            (
                "error file=apps/base/app.yaml,line=25",
                "apps/base, apps/overlays/dev, apps/overlays/staging, apps/overlays/production"
            ),
            (
                "error file=apps/base/app.yaml,line=27",
                "apps/base, apps/overlays/dev, apps/overlays/staging, apps/overlays/debug"
            ),
            ("error file=apps/overlays/debug/kustomization.yaml,line=9", "apps/overlays/debug"),
            ("error file=apps/overlays/debug/kustomization.yaml,line=13", "apps/overlays/debug"),
        ]
    );
}

#[test]
fn sarif_locates_findings_in_source_files_with_the_overlays_and_passes_the_multitool() {
    let test = "sarif_locates_findings_in_source_files_with_the_overlays_and_passes_the_multitool";
    if !have(test, &["kubectl", "sarif-multitool"]) {
        return;
    }
    let output = podgate(&["--format", "sarif", "--kustomize", "apps"]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("kustomize.sarif");
    std::fs::write(&log, &output.stdout).unwrap();
    let problems = multitool_validate(&[&log]);
    // The one remark: no `informationUri` (podgate has no public home page).
    assert_eq!(problems.len(), 1, "SARIF Multitool: {problems:#?}");
    assert!(problems[0].starts_with("warning SARIF2005"), "{problems:?}");

    let sarif: Value = serde_json::from_slice(&output.stdout).unwrap();
    let run = &sarif["runs"][0];
    let results = run["results"].as_array().unwrap();
    let summary: Vec<(&str, &str, u64, usize)> = results
        .iter()
        .map(|r| {
            let location = &r["locations"][0]["physicalLocation"];
            (
                r["ruleId"].as_str().unwrap(),
                location["artifactLocation"]["uri"].as_str().unwrap(),
                location["region"]["startLine"].as_u64().unwrap(),
                r["properties"]["renderedBy"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("runAsUser", "apps/base/app.yaml", 25, 4),
            ("readinessProbe", "apps/base/app.yaml", 27, 4),
            ("runAsUser", "apps/overlays/debug/kustomization.yaml", 9, 1),
            ("allowPrivilegeEscalation", "apps/overlays/debug/kustomization.yaml", 13, 1),
        ]
    );
    // An overlay's finding points back at the object it patches.
    let related = &results[2]["relatedLocations"][0]["physicalLocation"];
    assert_eq!(related["artifactLocation"]["uri"], "apps/base/app.yaml");
    assert_eq!(related["region"]["startLine"], 10);
    assert_eq!(
        results[2]["properties"]["differsFrom"],
        json!(["apps/base", "apps/overlays/dev", "apps/overlays/staging"])
    );
    assert_eq!(run["properties"]["objectsChecked"], 3);
}

#[test]
fn rejects_a_missing_or_remote_base_with_a_clear_error_at_its_entry() {
    if !have("rejects_a_missing_or_remote_base_with_a_clear_error_at_its_entry", &["kubectl"]) {
        return;
    }
    let started = Instant::now();
    let output = podgate(&["--format", "json", "--kustomize", "bad"]);
    // Refused before kustomize runs: no clone, no wait for the network.
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    assert_eq!(output.status.code(), Some(2), "stdout: {}", stdout(&output));
    let report = json_of(&output);
    let errors: BTreeMap<String, (String, u64, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_owned(),
                (
                    e["file"].as_str().unwrap().to_owned(),
                    e["line"].as_u64().unwrap(),
                    e["message"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let (file, line, message) = &errors["bad/missing"];
    assert_eq!((file.as_str(), *line), ("bad/missing/kustomization.yaml", 5));
    assert_eq!(
        message,
        "missing base `../../apps/bases/web` (resources in bad/missing/kustomization.yaml): apps/bases/web does not exist"
    );
    let (file, line, message) = &errors["bad/remote"];
    assert_eq!((file.as_str(), *line), ("bad/remote/kustomization.yaml", 5));
    assert!(
        message.starts_with(
            "remote base `https://github.com/stefanprodan/podinfo//kustomize?ref=6.7.0` (resources in \
             bad/remote/kustomization.yaml): podgate check does not fetch over the network"
        ),
        "{message}"
    );
    for source in ["bad/missing", "bad/remote"] {
        assert!(stderr(&output).contains(&format!("{source}: ")), "{}", stderr(&output));
    }
    // The base both use is still checked, once.
    assert_eq!(report["results"].as_array().unwrap().len(), 1);
    assert_eq!(report["results"][0]["renderedBy"], json!(["bad/base"]));
}

#[test]
fn rejects_a_rendering_that_hangs_after_the_render_timeout() {
    if !have("rejects_a_rendering_that_hangs_after_the_render_timeout", &["kubectl", "mkfifo"]) {
        return;
    }
    // A resource that is a named pipe nobody writes: kustomize blocks
    // reading it, as it would on a network fetch that never answers.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kustomization.yaml"), "resources: [stuck.yaml]\n").unwrap();
    let status = Command::new("mkfifo").arg(dir.path().join("stuck.yaml")).env("PATH", path_with_tools()).status();
    assert!(status.unwrap().success());
    let started = Instant::now();
    let output = podgate_in(dir.path(), &["--kustomize", "--render-timeout", "2s", "."]);
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(2), "stdout: {}", stdout(&output));
    assert!(
        stderr(&output).contains(".: kubectl did not finish within 2s (--render-timeout) and was stopped"),
        "{}",
        stderr(&output)
    );
    assert!(elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(60), "took {elapsed:?}");
}
