//! `podgate check` on a whole repository (`tests/fixtures/repo`: a Helm
//! chart, a kustomization with an overlay and patches, CI files, a values
//! file, plain manifests, a Go template, a broken object), as CI runs it:
//! exit codes, skips by reason, charts rendered by the real `helm`,
//! kustomizations by the real `kubectl kustomize`, SARIF checked by
//! Microsoft's SARIF Multitool, GitHub annotations.
//!
//! helm, kubectl and sarif-multitool come from `.ci/install.d/` (into
//! `$PODGATE_TOOLS/bin`); a test that needs a missing one is skipped with a
//! loud message, or fails with `PODGATE_REQUIRE_TOOLS=1` (as `.ci/run` sets).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/tools.rs"]
mod tools;

use tools::{have, multitool_validate, path_with_tools};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo")
}

/// Runs the real binary in the fixture repository, as CI would (`podgate
/// check ...` at the repository root, relative paths).
fn podgate(args: &[&str]) -> Output {
    podgate_with_path(args, &path_with_tools())
}

fn podgate_with_path(args: &[&str], path: &OsString) -> Output {
    podgate_in(&repo(), args, path)
}

/// Runs the real binary in `dir`.
fn podgate_in(dir: &Path, args: &[&str], path: &OsString) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podgate"))
        .arg("check")
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("PODGATE_CONFIG")
        .output()
        .expect("podgate runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\nstderr: {}", stdout(output), stderr(output)))
}

/// `reason -> count` of a JSON report's `skipped`.
fn skip_counts(report: &Value) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for skipped in report["skipped"].as_array().unwrap() {
        *counts.entry(skipped["reason"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(reason, count)| (reason.to_string(), *count)).collect()
}

/// (kind, name, allowed) of every result.
fn verdicts(report: &Value) -> Vec<(String, String, bool)> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["kind"].as_str().unwrap().into(), r["name"].as_str().unwrap().into(), r["allowed"] == true))
        .collect()
}

/// (check, line) of every violation of the result named `name`.
fn violation_lines(report: &Value, name: &str) -> Vec<(String, u64)> {
    let result = report["results"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap();
    result["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["check"].as_str().unwrap().to_owned(), v["line"].as_u64().unwrap()))
        .collect()
}

#[test]
fn only_kubernetes_objects_fail_a_run_the_rest_is_skipped_by_reason() {
    let output = podgate(&["--format", "json", "."]);
    assert_eq!(output.status.code(), Some(2), "the broken object is an error; stderr: {}", stderr(&output));
    let report = json(&output);
    assert_eq!(
        verdicts(&report),
        [("Deployment".into(), "frontend".into(), true), ("Deployment".into(), "worker".into(), false)]
    );
    assert_eq!(
        skip_counts(&report),
        counts(&[
            ("not-workload", 2),          // the Service beside the frontend, the ConfigMap with "{{ ... }}" data
            ("not-kubernetes-object", 2), // azure-pipelines.yml, web-prod-values.yaml
            ("not-a-mapping", 1),         // manifests/hotfix.json, a JSON patch
            ("go-template", 1),           // templated/legacy-deployment.yaml
            ("helm-chart", 1),            // charts/web, its templates not parsed one by one
            ("kustomization", 2),         // base and overlays/prod
            ("kustomize-patch", 2),       // the overlay's two patches
        ])
    );
    // The one error: the broken Deployment, in a person's terms, with its line.
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["source"], "./broken/deployment.yaml#0");
    assert_eq!(errors[0]["line"], 15);
    let message = errors[0]["message"].as_str().unwrap();
    assert_eq!(
        message,
        "spec.template.spec.containers[0].securityContext.runAsUser: expected an integer, found a string \
         (line 15, column 24)"
    );
    assert!(stderr(&output).contains(&format!("./broken/deployment.yaml#0: {message}")), "{}", stderr(&output));

    // For people: the chart, the kustomizations and the template get one
    // line each with the command to use; the summary counts by reason.
    let output = podgate(&["."]);
    let text = stdout(&output);
    for line in [
        "SKIP  ./charts/web: Helm chart, not rendered; check what it renders with `podgate check --helm ./charts/web`",
        "SKIP  ./deploy/kustomize/overlays/prod: kustomization, not rendered; check what it renders with \
         `podgate check --kustomize ./deploy/kustomize/overlays/prod`",
        "SKIP  ./templated/legacy-deployment.yaml: Go template syntax outside a Helm chart",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains("1 chart skipped (Helm chart: use --helm); 2 kustomizations skipped"), "{text}");
    assert!(text
        .contains("field: spec.template.spec.containers[0].securityContext.runAsUser  (./manifests/worker.yaml:17)"));
}

#[test]
fn exit_codes_follow_the_objects_not_the_other_files() {
    // CI workflows (also the hidden one, named explicitly), values files,
    // patches, a chart and kustomizations left unrendered: nothing to deny.
    let quiet = [".github/workflows/ci.yaml", "azure-pipelines.yml", "web-prod-values.yaml", "charts", "deploy"];
    let output = podgate(&quiet);
    assert_eq!(output.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("0 objects checked"), "{}", stdout(&output));
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));

    let output = podgate(&["templated", "manifests"]);
    assert_eq!(output.status.code(), Some(1), "the worker runs as root; stderr: {}", stderr(&output));
}

#[test]
fn helm_charts_are_rendered_and_findings_name_the_template_line() {
    if !have("helm_charts_are_rendered_and_findings_name_the_template_line", &["helm"]) {
        return;
    }
    let output = podgate(&["--format", "json", "--helm", "-n", "shop", "charts"]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let report = json(&output);
    assert_eq!(
        verdicts(&report),
        [("Deployment".into(), "release-web".into(), false), ("Job".into(), "release-web-migrate".into(), true)]
    );
    let deployment = &report["results"][0];
    assert_eq!(deployment["source"], "charts/web/templates/deployment.yaml#0");
    assert_eq!(deployment["namespace"], "shop", "-n is the release namespace");
    // `runAsUser: {{ .Values.runAsUser }}` and the `readinessProbe:` behind
    // an `if` are the template lines to change.
    assert_eq!(violation_lines(&report, "release-web"), [("runAsUser".into(), 25), ("readinessProbe".into(), 32)]);
    assert_eq!(report["results"][1]["source"], "charts/web/templates/migrate-job.yaml#0");
    assert_eq!(skip_counts(&report), counts(&[("not-workload", 1)]), "the Service");

    // --values and --set reach helm; --release-name names the release.
    let output = podgate(&[
        "--format",
        "json",
        "--helm",
        "--values",
        "web-prod-values.yaml",
        "--release-name",
        "demo",
        "charts/web",
    ]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(json(&output)["results"][0]["name"], "demo-web");
    let output = podgate(&["--helm", "--set", "runAsUser=10001", "--set", "readinessProbe.enabled=true", "charts/web"]);
    assert_eq!(output.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(&output), stderr(&output));

    // A render failure is an error that says what helm said.
    let output = podgate(&["--helm", "--set", "image=null,image.tag={{", "charts/web"]);
    assert_eq!(output.status.code(), Some(2), "stdout: {}", stdout(&output));
    assert!(stderr(&output).starts_with("charts/web: helm failed"), "{}", stderr(&output));

    // --helm without helm on PATH: an error naming what is missing.
    let empty = tempfile::tempdir().unwrap();
    let output = podgate_with_path(&["--helm", "charts"], &empty.path().as_os_str().to_owned());
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("charts/web: --helm needs `helm` on PATH"), "{}", stderr(&output));
}

#[test]
fn kustomizations_are_rendered_with_their_patches() {
    if !have("kustomizations_are_rendered_with_their_patches", &["kubectl"]) {
        return;
    }
    let output = podgate(&["--format", "json", "--kustomize", "deploy"]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let report = json(&output);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    // The base passes, located in its own file (not at `kustomization.yaml#1`).
    assert_eq!(results[0]["source"], "deploy/kustomize/base/deployment.yaml#0");
    assert_eq!(results[0]["file"], "deploy/kustomize/base/deployment.yaml");
    assert_eq!(results[0]["line"], 1);
    assert_eq!(results[0]["renderedBy"], serde_json::json!(["deploy/kustomize/base"]));
    assert_eq!(results[0]["allowed"], true);
    // The overlay's strategic-merge patch makes it privileged: a result of
    // its own, at the patch's line.
    assert_eq!(results[1]["source"], "deploy/kustomize/base/deployment.yaml#0");
    assert_eq!(results[1]["namespace"], "prod");
    assert_eq!(results[1]["allowed"], false);
    assert_eq!(results[1]["file"], "deploy/kustomize/overlays/prod/patches/debug.yaml");
    assert_eq!(results[1]["renderedBy"], serde_json::json!(["deploy/kustomize/overlays/prod"]));
    assert_eq!(results[1]["violations"][0]["field"], "spec.template.spec.containers[0].securityContext.privileged");
    assert_eq!(results[1]["violations"][0]["line"], 11);
    // The base's Service once, not once per rendering.
    assert_eq!(skip_counts(&report), counts(&[("not-workload", 1), ("kustomize-patch", 2)]));
}

#[test]
fn sarif_passes_the_sarif_multitool_and_points_at_fields() {
    if !have("sarif_passes_the_sarif_multitool_and_points_at_fields", &["helm", "kubectl", "sarif-multitool"]) {
        return;
    }
    let output = podgate(&["--format", "sarif", "--helm", "--kustomize", "manifests", "charts", "deploy"]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("podgate.sarif");
    std::fs::write(&log, &output.stdout).unwrap();
    // And a run with an input that cannot be checked: an error notification.
    let failed = podgate(&["--format", "sarif", "broken"]);
    assert_eq!(failed.status.code(), Some(2));
    let failed_sarif: Value = serde_json::from_slice(&failed.stdout).unwrap();
    let invocation = &failed_sarif["runs"][0]["invocations"][0];
    assert_eq!(invocation["executionSuccessful"], false);
    let notification = &invocation["toolExecutionNotifications"][0];
    assert_eq!(notification["level"], "error");
    assert_eq!(notification["locations"][0]["physicalLocation"]["region"]["startLine"], 15);
    let failed_log = dir.path().join("failed.sarif");
    std::fs::write(&failed_log, &failed.stdout).unwrap();

    let problems = multitool_validate(&[&log, &failed_log]);
    // The one remark left on each: the driver has no `informationUri`, as
    // podgate has no public home page to point at (SARIF2005 is advice).
    assert_eq!(problems.len(), 2, "SARIF Multitool: {problems:#?}");
    for problem in &problems {
        assert!(problem.starts_with("warning SARIF2005") && problem.contains("ToolnformationUri"), "{problems:?}");
    }

    // The validator is not a formality: a log it must reject is rejected.
    let mut broken: Value = serde_json::from_slice(&output.stdout).unwrap();
    broken["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] = 0.into();
    broken["runs"][0]["tool"]["driver"].as_object_mut().unwrap().remove("name");
    let broken_log = dir.path().join("broken.sarif");
    std::fs::write(&broken_log, serde_json::to_vec(&broken).unwrap()).unwrap();
    let problems = multitool_validate(&[&broken_log]);
    assert!(problems.iter().any(|p| p.starts_with("error JSON1008") && p.contains("startLine")), "{problems:#?}");
    assert!(problems.iter().any(|p| p.starts_with("error JSON1002") && p.contains("driver")), "{problems:#?}");

    let sarif: Value = serde_json::from_slice(&output.stdout).unwrap();
    let run = &sarif["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["runAsNonRoot", "runAsUser", "allowPrivilegeEscalation", "livenessProbe", "readinessProbe", "probeSettings"]
    );
    for rule in rules {
        assert!(rule["fullDescription"]["text"].as_str().unwrap().len() > 40, "{rule}");
        assert!(rule["help"]["text"].as_str().is_some(), "{rule}");
    }
    let results: Vec<(String, String, String, u64)> = run["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let location = &r["locations"][0]["physicalLocation"];
            (
                r["ruleId"].as_str().unwrap().to_owned(),
                r["level"].as_str().unwrap().to_owned(),
                location["artifactLocation"]["uri"].as_str().unwrap().to_owned(),
                location["region"]["startLine"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("runAsNonRoot", "error", "manifests/worker.yaml", 16),
        ("runAsUser", "error", "manifests/worker.yaml", 17),
        ("runAsUser", "error", "charts/web/templates/deployment.yaml", 25),
        ("readinessProbe", "error", "charts/web/templates/deployment.yaml", 32),
        ("allowPrivilegeEscalation", "error", "deploy/kustomize/overlays/prod/patches/debug.yaml", 11),
    ];
    let expected: Vec<(String, String, String, u64)> =
        expected.iter().map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), *d)).collect();
    let mut sorted = results.clone();
    sorted.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(sorted, expected_sorted);
    assert_eq!(run["invocations"][0]["executionSuccessful"], true);
}

/// Every `artifactLocation` of a SARIF log: (uri, uriBaseId).
fn artifact_locations(sarif: &Value) -> Vec<(String, Option<String>)> {
    let run = &sarif["runs"][0];
    let results = run["results"].as_array().unwrap().iter();
    let notifications = run["invocations"][0]["toolExecutionNotifications"].as_array().into_iter().flatten();
    results
        .chain(notifications)
        .flat_map(|r| r["locations"].as_array().unwrap())
        .map(|l| {
            let artifact = &l["physicalLocation"]["artifactLocation"];
            (artifact["uri"].as_str().unwrap().to_owned(), artifact["uriBaseId"].as_str().map(str::to_owned))
        })
        .collect()
}

/// The path of a `file://` URI, `%XX` escapes decoded.
fn file_uri_path(uri: &str) -> PathBuf {
    let encoded = uri.strip_prefix("file://").unwrap_or_else(|| panic!("{uri} is not a file URI"));
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            decoded.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(String::from_utf8(decoded).unwrap())
}

#[test]
fn sarif_uris_have_no_dot_segments_for_parent_and_absolute_paths() {
    if !have("sarif_uris_have_no_dot_segments_for_parent_and_absolute_paths", &["sarif-multitool"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The working directory as the process sees it: no symbolic links.
    let root = std::fs::canonicalize(repo()).unwrap();
    let worker = root.join("manifests").join("worker.yaml");

    // `../manifests` from a subdirectory: outside the working directory,
    // so absolute `file://` URIs, without the `..`.
    let subdirectory = root.join("deploy");
    let outside = podgate_in(&subdirectory, &["--format", "sarif", "../manifests"], &path_with_tools());
    assert_eq!(outside.status.code(), Some(1), "stderr: {}", stderr(&outside));
    let outside_sarif: Value = serde_json::from_slice(&outside.stdout).unwrap();
    let locations = artifact_locations(&outside_sarif);
    assert!(!locations.is_empty());
    for (uri, base) in &locations {
        assert!(uri.starts_with("file:///") && !uri.contains("/../") && !uri.contains("/./"), "{uri}");
        assert_eq!(base, &None, "{uri}");
        let path = file_uri_path(uri);
        assert!(path.is_file() && path.starts_with(root.join("manifests")), "{uri}");
    }
    assert!(locations.iter().any(|(uri, _)| file_uri_path(uri) == worker), "{locations:?}");
    let srcroot = outside_sarif["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"].as_str().unwrap();
    assert!(srcroot.ends_with('/'), "{srcroot}");
    assert_eq!(file_uri_path(srcroot.trim_end_matches('/')), subdirectory);

    // An absolute path through `..` that ends under the working directory:
    // relative references against %SRCROOT%, as for a plain relative path.
    let through = root.join("deploy").join("..").join("manifests");
    let inside = podgate(&["--format", "sarif", through.to_str().unwrap()]);
    assert_eq!(inside.status.code(), Some(1), "stderr: {}", stderr(&inside));
    let inside_sarif: Value = serde_json::from_slice(&inside.stdout).unwrap();
    let plain: Value = serde_json::from_slice(&podgate(&["--format", "sarif", "manifests"]).stdout).unwrap();
    let locations = artifact_locations(&inside_sarif);
    assert_eq!(locations, artifact_locations(&plain));
    let srcroot = file_uri_path(inside_sarif["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"].as_str().unwrap());
    for (uri, base) in &locations {
        assert!(uri.starts_with("manifests/"), "{uri}");
        assert_eq!(base.as_deref(), Some("%SRCROOT%"), "{uri}");
        assert!(srcroot.join(uri).is_file(), "{uri} does not resolve against {}", srcroot.display());
    }
    assert!(locations.contains(&("manifests/worker.yaml".to_owned(), Some("%SRCROOT%".to_owned()))));

    let outside_log = dir.path().join("outside.sarif");
    std::fs::write(&outside_log, &outside.stdout).unwrap();
    let inside_log = dir.path().join("inside.sarif");
    std::fs::write(&inside_log, &inside.stdout).unwrap();
    let problems = multitool_validate(&[&outside_log, &inside_log]);
    assert_eq!(problems.len(), 2, "SARIF Multitool: {problems:#?}");
    assert!(problems.iter().all(|p| p.starts_with("warning SARIF2005")), "{problems:#?}");

    // What podgate wrote before: the `..` kept in a file URI. The multitool
    // refuses it, so the check above is not a formality.
    let mut dotted = outside_sarif.clone();
    let location = &mut dotted["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"];
    let uri = location["uri"].as_str().unwrap().replace("/manifests/", "/deploy/../manifests/");
    location["uri"] = uri.into();
    let dotted_log = dir.path().join("dotted.sarif");
    std::fs::write(&dotted_log, serde_json::to_vec(&dotted).unwrap()).unwrap();
    let problems = multitool_validate(&[&dotted_log]);
    assert!(problems.iter().any(|p| p.starts_with("error SARIF1002")), "{problems:#?}");
}

#[test]
fn github_format_annotates_the_offending_lines() {
    let output = podgate(&["--format", "github", "manifests", "broken", "charts"]);
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "::error file=manifests/worker.yaml,line=16,title=podgate runAsNonRoot%3A Deployment shop/worker::\
             runAsNonRoot != true (pod or container \"worker\" must set securityContext.runAsNonRoot=true) \
             (field spec.template.spec.containers[0].securityContext.runAsNonRoot)",
            "::error file=manifests/worker.yaml,line=17,title=podgate runAsUser%3A Deployment shop/worker::\
             runAsUser=0 (container \"worker\" must not set securityContext.runAsUser=0) \
             (field spec.template.spec.containers[0].securityContext.runAsUser)",
            "::error file=broken/deployment.yaml,line=15,title=podgate%3A cannot check::\
             spec.template.spec.containers[0].securityContext.runAsUser: expected an integer, found a string \
             (line 15, column 24)",
            "::notice file=charts/web,title=podgate%3A skipped::Helm chart, not rendered; check what it renders \
             with `podgate check --helm charts/web`",
            "2 objects checked: 1 denied, 0 allowed with warnings, 1 passed; 2 documents skipped (not a Pod or \
             workload); 1 document skipped (a top-level list or scalar, e.g. a JSON patch); 1 chart skipped \
             (Helm chart: use --helm); 1 error (see above)",
        ]
    );
}
