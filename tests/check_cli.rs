//! `podgate check` as a user runs it: the real binary on fixture files,
//! asserting exit codes, the JSON contract and error locations.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(relative)
}

fn podgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podgate")).args(args).env_remove("PODGATE_CONFIG").output().expect("podgate runs")
}

fn path(relative: &str) -> String {
    fixture(relative).display().to_string()
}

fn json_report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&output.stdout));
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn accepts_valid_directory_recursively() {
    let output = podgate(&["check", &path("manifests/good")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "stdout: {stdout}\nstderr: {}", stderr(&output));
    assert!(stdout.contains("PASS  Deployment shop/web"), "{stdout}");
    assert!(stdout.contains("PASS  CronJob shop/nightly-report"), "{stdout}");
    // Windows workloads without Linux-only fields (the API refuses them there).
    assert!(stdout.contains("PASS  Pod shop/iis"), "{stdout}");
    assert!(stdout.contains("PASS  Deployment shop/win-web"), "{stdout}");
    // A user-namespaced Deployment running as UID 0 (hostUsers: false), as
    // Pod Security Admission allows it.
    assert!(stdout.contains("PASS  Deployment shop/userns-web"), "{stdout}");
    // The ConfigMap beside the CronJob is not a workload.
    assert!(stdout.contains("1 document skipped"), "{stdout}");
}

#[test]
fn rejects_user_namespaced_root_when_policy_enforces_in_user_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    let manifest = path("manifests/good/deployment-user-namespace.yaml");
    std::fs::write(&policy, "checks:\n  runAsUser:\n    userNamespaces: enforce\n").unwrap();
    let output = podgate(&["check", "--format", "json", "--config", &policy.display().to_string(), &manifest]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let report = json_report(&output);
    let findings: Vec<(&str, &str)> = report["results"][0]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["check"].as_str().unwrap(), f["field"].as_str().unwrap()))
        .collect();
    // Only runAsUser enforces; runAsNonRoot stays relaxed (its default).
    assert_eq!(findings, [("runAsUser", "spec.template.spec.securityContext.runAsUser")]);

    std::fs::write(&policy, "checks:\n  runAsNonRoot:\n    userNamespaces: enforce\n").unwrap();
    let output = podgate(&["check", "--format", "json", "--config", &policy.display().to_string(), &manifest]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let report = json_report(&output);
    assert_eq!(report["results"][0]["violations"][0]["check"], "runAsNonRoot");
    assert_eq!(report["results"][0]["violations"].as_array().unwrap().len(), 1);

    // A misspelt value is refused with the choices named.
    std::fs::write(&policy, "checks:\n  runAsUser:\n    userNamespaces: strict\n").unwrap();
    let output = podgate(&["check", "--config", &policy.display().to_string(), &manifest]);
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr(&output));
    assert!(stderr(&output).contains("relaxed") && stderr(&output).contains("enforce"), "{}", stderr(&output));
}

#[test]
fn rejects_pod_with_every_deny_finding_listed() {
    let output = podgate(&["check", "--format", "json", &path("manifests/bad/pod-root.yaml")]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let report = json_report(&output);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    let pod = &results[0];
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["apiVersion"], "v1");
    assert_eq!(pod["namespace"], "shop");
    assert_eq!(pod["name"], "legacy");
    assert_eq!(pod["allowed"], false);
    assert_eq!(pod["exempt"], Value::Null);
    assert!(pod["source"].as_str().unwrap().ends_with("pod-root.yaml#0"));

    let violations: Vec<(String, String, String)> = pod["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert_eq!(v["action"], "deny");
            (
                v["check"].as_str().unwrap().to_owned(),
                v["field"].as_str().unwrap().to_owned(),
                v["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let fields: Vec<&str> = violations.iter().map(|(_, field, _)| field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.containers[0].securityContext.runAsNonRoot",
            "spec.containers[0].securityContext.runAsUser",
            "spec.initContainers[0].securityContext.runAsUser",
            "spec.containers[0].securityContext.allowPrivilegeEscalation",
            "spec.containers[0].livenessProbe",
            "spec.containers[0].readinessProbe.tcpSocket.port",
            "spec.containers[0].readinessProbe.timeoutSeconds",
        ]
    );
    assert_eq!(violations[0].0, "runAsNonRoot");
    assert_eq!(
        violations[3].2,
        r#"allowPrivilegeEscalation != false (container "app" must set securityContext.allowPrivilegeEscalation=false)"#
    );
    assert_eq!(violations[2].2, r#"runAsUser=0 (init container "migrate" must not set securityContext.runAsUser=0)"#);
}

#[test]
fn rejects_cronjob_with_job_template_paths() {
    let output = podgate(&["check", "--format", "json", &path("manifests/bad/cronjob.yaml")]);
    assert_eq!(output.status.code(), Some(1));
    let report = json_report(&output);
    let fields: Vec<&str> =
        report["results"][0]["violations"].as_array().unwrap().iter().map(|v| v["field"].as_str().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "spec.jobTemplate.spec.template.spec.containers[0].securityContext.runAsNonRoot",
            "spec.jobTemplate.spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation",
            "spec.jobTemplate.spec.template.spec.containers[0].securityContext.privileged",
        ],
        "a restartPolicy: Never pod needs no probes"
    );
}

#[test]
fn rejects_windows_host_process_and_administrator() {
    let output = podgate(&["check", "--format", "json", &path("manifests/bad/windows-hostprocess.yaml")]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let report = json_report(&output);
    let violations: Vec<(&str, &str, &str)> = report["results"][0]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["check"].as_str().unwrap(), v["field"].as_str().unwrap(), v["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        violations,
        [
            (
                "runAsUser",
                "spec.template.spec.containers[0].securityContext.windowsOptions.runAsUserName",
                r#"runAsUserName="containeradministrator" (container "agent" must not set securityContext.windowsOptions.runAsUserName=ContainerAdministrator)"#
            ),
            (
                "allowPrivilegeEscalation",
                "spec.template.spec.securityContext.windowsOptions.hostProcess",
                "hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)"
            ),
            (
                "allowPrivilegeEscalation",
                "spec.template.spec.containers[0].securityContext.windowsOptions.hostProcess",
                r#"hostProcess (container "agent" must not set securityContext.windowsOptions.hostProcess=true)"#
            ),
        ]
    );
}

#[test]
fn accepts_valid_list_and_reports_exemption_reason() {
    let output = podgate(&["check", "--format", "json", &path("manifests/list.json")]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let report = json_report(&output);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["kind"], "StatefulSet");
    assert_eq!(results[0]["exempt"], Value::Null);
    assert_eq!(results[1]["kind"], "DaemonSet");
    assert_eq!(results[1]["exempt"], "kube-system is managed by the cluster operator");
    assert_eq!(results[1]["violations"], Value::Array(vec![]));
}

#[test]
fn rejects_broken_document_but_still_evaluates_the_others() {
    let output = podgate(&["check", "--format", "json", &path("manifests/broken/multi.yaml")]);
    assert_eq!(output.status.code(), Some(2), "a parse error wins over a denial");
    let err = stderr(&output);
    assert!(err.contains("multi.yaml#1: "), "stderr names file and document index: {err}");
    assert!(err.contains("line 20"), "stderr gives the absolute line: {err}");
    let report = json_report(&output);
    let names: Vec<&str> = report["results"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["first", "third"]);
    assert_eq!(report["results"][1]["allowed"], false);
}

#[test]
fn rejects_missing_file_and_still_checks_the_rest() {
    let output = podgate(&["check", "/nonexistent/podgate.yaml", &path("manifests/good/deployment.yaml")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("/nonexistent/podgate.yaml: cannot read"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("PASS  Deployment shop/web"));
}

#[test]
fn audit_mode_turns_denials_into_warnings_except_enforced_checks() {
    let output = podgate(&[
        "check",
        "--format",
        "json",
        "--config",
        &path("config/audit.yaml"),
        &path("manifests/bad/pod-root.yaml"),
    ]);
    // allowPrivilegeEscalation is enforced by its own `mode` even in audit.
    assert_eq!(output.status.code(), Some(1));
    let report = json_report(&output);
    for violation in report["results"][0]["violations"].as_array().unwrap() {
        let expected = if violation["check"] == "allowPrivilegeEscalation" { "deny" } else { "warn" };
        assert_eq!(violation["action"], expected, "{violation}");
    }

    // --mode audit on the command line overrides the file: nothing denied.
    let output = podgate(&[
        "check",
        "--mode",
        "audit",
        "--format",
        "json",
        "--config",
        &path("config/strict.yaml"),
        &path("manifests/bad/pod-root.yaml"),
    ]);
    assert_eq!(output.status.code(), Some(0));
    let report = json_report(&output);
    let first = &report["results"][0]["violations"][0];
    assert_eq!(first["action"], "warn");
    assert!(first["message"].as_str().unwrap().starts_with("would deny (audit mode): "));
}

#[test]
fn strict_config_applies_min_uid() {
    let output = podgate(&[
        "check",
        "--format",
        "json",
        "--config",
        &path("config/strict.yaml"),
        &path("manifests/good/deployment.yaml"),
    ]);
    // UID 10001 is within 10000..65535, so the Deployment still passes.
    assert_eq!(output.status.code(), Some(0), "stdout: {}", String::from_utf8_lossy(&output.stdout));

    let output =
        podgate(&["check", "--format", "json", "--config", &path("config/strict.yaml"), &path("manifests/list.json")]);
    // UID 70000 is above maxUid 65535.
    assert_eq!(output.status.code(), Some(1));
    let report = json_report(&output);
    assert_eq!(report["results"][0]["violations"][0]["field"], "spec.template.spec.securityContext.runAsUser");
}

#[test]
fn lints_configuration_files() {
    let ok = podgate(&["check", "--config", &path("config/strict.yaml")]);
    assert_eq!(ok.status.code(), Some(0), "stderr: {}", stderr(&ok));

    let bad = podgate(&["check", "--config", &path("config/unknown-key.yaml")]);
    assert_eq!(bad.status.code(), Some(2));
    let err = stderr(&bad);
    assert!(err.contains("unknown field `minUID`"), "{err}");
    assert!(err.contains("line 4"), "{err}");
}

#[test]
fn reads_admission_review_from_stdin() {
    let review = std::fs::read(fixture("reviews/pod-create.json")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_podgate"))
        .args(["check", "--format", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&review).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let report = json_report(&output);
    assert_eq!(report["results"][0]["kind"], "Pod");
    assert!(report["results"][0]["source"].as_str().unwrap().starts_with("<stdin>#0"));
}

#[test]
fn rejects_usage_without_paths() {
    let output = podgate(&["check"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("no PATH given"));
}
