//! `podgate fix` as a user runs it: the real binary on copies of the
//! fixtures in `tests/fixtures/fix/`, the edited files compared with the
//! expected ones in `tests/fixtures/fix/expected/`, then judged by the real
//! `podgate check`. The real kube-apiserver's verdict on the same files is
//! in `tests/fix_apiserver.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/tools.rs"]
mod tools;

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fix").join(relative)
}

fn podgate_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podgate"))
        .args(args)
        .current_dir(dir)
        .env_remove("PODGATE_CONFIG")
        .output()
        .expect("podgate runs")
}

fn text(output: &[u8]) -> String {
    String::from_utf8_lossy(output).into_owned()
}

fn describe(output: &Output) -> String {
    format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", output.status.code(), text(&output.stdout), text(&output.stderr))
}

/// A temporary directory holding copies of the named fixtures.
fn workspace(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in files {
        let to = dir.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixture(file), &to).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    dir
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap()
}

/// Every line of `original`, in order, is a line of `edited`: edits only insert.
fn assert_only_inserted(original: &str, edited: &str) {
    let mut edited_lines = edited.split_inclusive('\n');
    for line in original.split_inclusive('\n') {
        assert!(edited_lines.any(|l| l == line), "original line {line:?} is missing or changed in:\n{edited}");
    }
}

/// The file as fixed, compared with `expected/NAME`.
fn assert_expected(dir: &Path, file: &str) {
    let expected_path = fixture(&format!("expected/{}", Path::new(file).file_name().unwrap().to_str().unwrap()));
    let expected =
        std::fs::read_to_string(&expected_path).unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
    let edited = read(dir, file);
    assert_eq!(edited, expected, "{file} as fixed differs from {}", expected_path.display());
    assert_only_inserted(&std::fs::read_to_string(fixture(file)).unwrap(), &edited);
}

#[test]
fn fixes_the_hardened_service_end_to_end() {
    let dir = workspace(&["hardened/Dockerfile", "hardened/deployment.yaml"]);
    let before = podgate_in(dir.path(), &["check", "hardened/deployment.yaml"]);
    assert_eq!(before.status.code(), Some(1), "denied for the two missing probes: {}", describe(&before));

    let output = podgate_in(dir.path(), &["fix", "--healthcheck", "hardened/Dockerfile", "hardened/deployment.yaml"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("hardened/deployment.yaml#0 Deployment shop/orders"), "{stdout}");
    assert!(stdout.contains("from the HEALTHCHECK in hardened/Dockerfile line 14"), "{stdout}");
    assert!(stdout.ends_with("podgate fix: 3 fixes written to 1 file; nothing left for a person\n"), "{stdout}");
    // The HEALTHCHECK's path and port (by the name the container declares
    // it under), its interval, timeout and retries, and the start period
    // as a startup probe.
    assert_expected(dir.path(), "hardened/deployment.yaml");

    let after = podgate_in(dir.path(), &["check", "hardened/deployment.yaml"]);
    assert_eq!(after.status.code(), Some(0), "{}", describe(&after));
}

#[test]
fn fixes_every_workload_kind_with_init_containers_and_sidecars() {
    let files = ["kinds.yaml", "sidecars.yaml", "windows.yaml"];
    let dir = workspace(&files);
    let output = podgate_in(dir.path(), &["fix", "--tcp-probes", "."]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    for file in files {
        assert_expected(dir.path(), file);
    }
    let stdout = text(&output.stdout);
    // The CronJob's and the Job's pods run to completion: no probes.
    assert!(!stdout.contains("jobTemplate.spec.template.spec.containers[0].livenessProbe"), "{stdout}");
    // A plain init container gets no probes; the sidecar does.
    assert!(!stdout.contains("initContainers[0].livenessProbe"), "{stdout}");
    assert!(stdout.contains("initContainers[1].livenessProbe: {tcpSocket: {port: 9901}}"), "{stdout}");
    // Windows: runAsNonRoot, never allowPrivilegeEscalation.
    assert!(stdout.contains("./windows.yaml#0 Pod shop/iis"), "{stdout}");
    assert!(!read(dir.path(), "windows.yaml").contains("allowPrivilegeEscalation: false"));

    let check = podgate_in(dir.path(), &["check", "."]);
    assert_eq!(check.status.code(), Some(0), "{}", describe(&check));
}

#[test]
fn keeps_comments_documents_and_styles_and_reports_what_is_left() {
    let dir = workspace(&["multi.yaml"]);
    let output = podgate_in(dir.path(), &["fix", "--tcp-probes", "multi.yaml"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_expected(dir.path(), "multi.yaml");
    let stdout = text(&output.stdout);
    // Left: the log shipper declares no port; postgres runs as UID 999.
    assert!(
        stdout.contains("  left   line 23: spec.template.spec.containers[1].livenessProbe: livenessProbe missing"),
        "{stdout}"
    );
    assert!(stdout.contains("--tcp-probes needs exactly one declared TCP port; the container declares 0"), "{stdout}");
    assert!(
        stdout.contains("  left   line 65: spec.template.spec.containers[0].securityContext.runAsUser: runAsUser=999")
    );
    assert!(stdout.ends_with("3 findings in 2 objects left for a person\n"), "{stdout}");

    // What check still denies is exactly what fix left.
    let check = podgate_in(dir.path(), &["check", "--format", "json", "multi.yaml"]);
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let mut left: Vec<String> = Vec::new();
    for result in report["results"].as_array().unwrap() {
        for violation in result["violations"].as_array().unwrap() {
            left.push(violation["field"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        left,
        [
            "spec.template.spec.containers[1].livenessProbe",
            "spec.template.spec.containers[1].readinessProbe",
            "spec.template.spec.containers[0].securityContext.runAsUser"
        ]
    );
}

#[test]
fn leaves_values_someone_wrote_to_a_person() {
    let dir = workspace(&["person.yaml"]);
    let output = podgate_in(dir.path(), &["fix", "person.yaml"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(read(dir.path(), "person.yaml"), std::fs::read_to_string(fixture("person.yaml")).unwrap());
    let stdout = text(&output.stdout);
    for expected in [
        "  left   line 15: spec.containers[0].securityContext.runAsNonRoot: runAsNonRoot != true (container \"root\" must not set securityContext.runAsNonRoot=false)\n         set to false: fix never changes a value someone wrote",
        "  left   line 9: spec.securityContext.runAsUser: runAsUser=0",
        "  left   line 14: spec.containers[0].securityContext.privileged: privileged",
        "not added: the container is privileged, and the API refuses allowPrivilegeEscalation=false with privileged=true",
        "  left   line 19: spec.containers[1].securityContext.allowPrivilegeEscalation: allowPrivilegeEscalation != false (container \"escalates\" must set securityContext.allowPrivilegeEscalation=false)\n         set to true: fix never changes a value someone wrote",
        "not edited: spec.containers[2].securityContext (line 22) is a flow-style collection ({...} or [...]), which fix does not rewrite; add allowPrivilegeEscalation: false there by hand",
        "pod-level runAsNonRoot not added: container \"root\" sets it false",
        "no probe to derive: give --healthcheck [CONTAINER=]Dockerfile, or --tcp-probes",
        "podgate fix: nothing to change; 12 findings in 1 object left for a person\n",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
}

#[test]
fn a_second_run_changes_nothing() {
    let files = ["multi.yaml", "kinds.yaml", "sidecars.yaml", "hardened/deployment.yaml", "hardened/Dockerfile"];
    let dir = workspace(&files);
    let args = ["fix", "--tcp-probes", "--healthcheck", "orders=hardened/Dockerfile", "."];
    let first = podgate_in(dir.path(), &args);
    assert_eq!(first.status.code(), Some(1), "{}", describe(&first));
    let fixed: Vec<String> = files.iter().map(|f| read(dir.path(), f)).collect();
    let second = podgate_in(dir.path(), &args);
    assert_eq!(second.status.code(), Some(1), "the same findings are left: {}", describe(&second));
    assert!(text(&second.stdout).contains("podgate fix: nothing to change; 3 findings in 2 objects left"));
    let again: Vec<String> = files.iter().map(|f| read(dir.path(), f)).collect();
    assert_eq!(fixed, again);
}

#[test]
fn diff_writes_nothing_and_applies_as_a_patch() {
    let dir = workspace(&["multi.yaml", "hardened/deployment.yaml", "hardened/Dockerfile"]);
    let output =
        podgate_in(dir.path(), &["fix", "--diff", "--tcp-probes", "--healthcheck", "orders=hardened/Dockerfile", "."]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(read(dir.path(), "multi.yaml"), std::fs::read_to_string(fixture("multi.yaml")).unwrap());
    let diff = text(&output.stdout);
    assert!(
        diff.starts_with("--- hardened/deployment.yaml\n+++ hardened/deployment.yaml\n@@ -31,3 +31,24 @@\n"),
        "{diff}"
    );
    // The report goes to stderr, so the diff can be piped.
    assert!(
        text(&output.stderr).contains("podgate fix: 12 fixes in 2 files (--diff: nothing written)"),
        "{}",
        describe(&output)
    );

    // `git apply` (no repository needed) makes exactly the fixed files.
    std::fs::write(dir.path().join("fix.patch"), &diff).unwrap();
    let apply = Command::new("git").args(["apply", "-p0", "fix.patch"]).current_dir(dir.path()).output();
    let apply = apply.expect("git runs");
    assert!(apply.status.success(), "git apply: {}", text(&apply.stderr));
    assert_expected(dir.path(), "multi.yaml");
    assert_expected(dir.path(), "hardened/deployment.yaml");
}

#[test]
fn keeps_crlf_line_endings() {
    let dir = tempfile::tempdir().unwrap();
    let lf = std::fs::read_to_string(fixture("sidecars.yaml")).unwrap();
    std::fs::write(dir.path().join("crlf.yaml"), lf.replace('\n', "\r\n")).unwrap();
    let output = podgate_in(dir.path(), &["fix", "--tcp-probes", "crlf.yaml"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let expected = std::fs::read_to_string(fixture("expected/sidecars.yaml")).unwrap();
    assert_eq!(read(dir.path(), "crlf.yaml"), expected.replace('\n', "\r\n"));
}

#[test]
fn reports_json_charts_and_kustomizations_without_editing_them() {
    let dir = tempfile::tempdir().unwrap();
    let json = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"},
 "spec": {"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "app", "image": "app:1",
  "livenessProbe": {"tcpSocket": {"port": 80}}, "readinessProbe": {"tcpSocket": {"port": 80}}}]}}
"#;
    std::fs::write(dir.path().join("pod.json"), json).unwrap();
    let chart = dir.path().join("charts/web");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: web\nversion: 0.1.0\n").unwrap();
    let output = podgate_in(dir.path(), &["fix", "."]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(read(dir.path(), "pod.json"), json);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("JSON manifests are not edited; in this file: set allowPrivilegeEscalation: false"),
        "{stdout}"
    );
    assert!(stdout.contains("./charts/web: a Helm chart, not edited (use --helm"), "{stdout}");
}

#[test]
fn refuses_an_unnamed_healthcheck_for_several_workloads() {
    let dir = workspace(&["kinds.yaml", "hardened/Dockerfile"]);
    let output = podgate_in(dir.path(), &["fix", "--healthcheck", "hardened/Dockerfile", "kinds.yaml"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(text(&output.stderr).contains("write CONTAINER=Dockerfile"), "{}", describe(&output));
    assert_eq!(read(dir.path(), "kinds.yaml"), std::fs::read_to_string(fixture("kinds.yaml")).unwrap());
}

#[test]
fn reports_a_healthcheck_it_cannot_translate() {
    let dir = workspace(&["hardened/deployment.yaml", "hardened/untranslatable.Dockerfile"]);
    let output = podgate_in(
        dir.path(),
        &["fix", "--healthcheck", "orders=hardened/untranslatable.Dockerfile", "hardened/deployment.yaml"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(
        read(dir.path(), "hardened/deployment.yaml"),
        std::fs::read_to_string(fixture("hardened/deployment.yaml")).unwrap()
    );
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("the HEALTHCHECK in hardened/untranslatable.Dockerfile line 2 cannot be translated: --interval=1500ms is not a whole number of seconds"),
        "{stdout}"
    );

    // Docker's default timeout (30s) does not fit in a 10s interval.
    std::fs::write(dir.path().join("short.Dockerfile"), "FROM a\nHEALTHCHECK --interval=10s CMD [\"/health\"]\n")
        .unwrap();
    let output =
        podgate_in(dir.path(), &["fix", "--healthcheck", "orders=short.Dockerfile", "hardened/deployment.yaml"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        text(&output.stdout).contains("the HEALTHCHECK in short.Dockerfile line 2 cannot be translated: --timeout gives timeoutSeconds 30 > periodSeconds 10 (--interval); a probe's timeout must fit in its period"),
        "{}",
        describe(&output)
    );
    // A container name that matches nothing is a warning.
    let output =
        podgate_in(dir.path(), &["fix", "--healthcheck", "order=short.Dockerfile", "hardened/deployment.yaml"]);
    assert!(
        text(&output.stderr).contains("warning: --healthcheck order=short.Dockerfile: no container is named \"order\""),
        "{}",
        describe(&output)
    );

    let missing = podgate_in(dir.path(), &["fix", "--healthcheck", "nope/Dockerfile", "hardened/deployment.yaml"]);
    assert_eq!(missing.status.code(), Some(2), "{}", describe(&missing));
    assert!(text(&missing.stderr).contains("nope/Dockerfile: cannot read"), "{}", describe(&missing));
}

/// `$PODGATE_TOOLS/bin` (where `.ci/install.d` puts helm and kubectl) first on PATH.
#[test]
fn reports_what_to_change_in_charts_and_kustomizations() {
    if !tools::have("reports_what_to_change_in_charts_and_kustomizations", &["helm", "kubectl"]) {
        return;
    }
    let path = tools::path_with_tools();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo");
    let output = Command::new(env!("CARGO_BIN_EXE_podgate"))
        .args(["fix", "--helm", "--kustomize", "--tcp-probes", "charts", "deploy"])
        .current_dir(&repo)
        .env("PATH", &path)
        .env_remove("PODGATE_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stdout = text(&output.stdout);
    for expected in [
        // The chart's line numbers are its template's.
        "charts/web/templates/deployment.yaml Deployment default/release-web\n",
        "  left   line 32: spec.template.spec.containers[0].readinessProbe: readinessProbe missing",
        "a Helm chart is not edited: change its values or the template charts/web/templates/deployment.yaml: set readinessProbe: {tcpSocket: {port: http}}",
        // A kustomize rendering maps back to no line.
        "deploy/kustomize/overlays/prod/kustomization.yaml Deployment prod/api\n  left   spec.template.spec.containers[0].securityContext.privileged",
        "deploy/kustomize/overlays/prod/patches/debug.yaml: a kustomize patch, not edited",
        "podgate fix: nothing to change; 3 findings in 2 objects left for a person\n",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
}

#[test]
fn refuses_an_edit_that_does_not_read_back_as_intended() {
    // The container ends in a block scalar that keeps its trailing blank
    // line (`|+`): a key inserted after its last line would take that
    // blank line from the scalar. The read-back catches it.
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: shop\nspec:\n  securityContext:\n    runAsNonRoot: true\n  containers:\n  - name: app\n    image: app:1\n    livenessProbe: {tcpSocket: {port: 80}}\n    readinessProbe: {tcpSocket: {port: 80}}\n    args:\n    - |+\n      keep\n\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pod.yaml"), manifest).unwrap();
    let output = podgate_in(dir.path(), &["fix", "pod.yaml"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(read(dir.path(), "pod.yaml"), manifest);
    assert!(
        text(&output.stdout).contains("not edited: the document did not read back as intended with it"),
        "{}",
        describe(&output)
    );
}

#[test]
fn keeps_the_edits_that_read_back_and_refuses_the_rest() {
    // Container a's securityContext is anchored and container b's is its
    // alias: a key added to a's would change b's too. The pod-level
    // runAsNonRoot is still written, under a key with no value.
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: shop\nspec:\n  securityContext:\n  containers:\n  - name: a\n    image: a\n    securityContext: &sc\n      runAsUser: 1000\n  - name: b\n    image: b\n    securityContext: *sc";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pod.yaml"), manifest).unwrap();
    let output = podgate_in(dir.path(), &["fix", "pod.yaml"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let fixed = manifest.replacen("  securityContext:\n", "  securityContext:\n    runAsNonRoot: true\n", 1);
    assert_eq!(read(dir.path(), "pod.yaml"), fixed);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("  left   line 11: spec.containers[0].securityContext.allowPrivilegeEscalation: allowPrivilegeEscalation != false (container \"a\" must set securityContext.allowPrivilegeEscalation=false)\n         not edited: the document did not read back as intended with it"), "{stdout}");
    assert!(stdout.contains("spec.containers[1].securityContext (line 15) is an alias (*name), which fix does not follow; add allowPrivilegeEscalation: false there by hand"), "{stdout}");
}

#[test]
fn follows_the_policy_on_identical_probes() {
    let dir = workspace(&["sidecars.yaml"]);
    std::fs::write(
        dir.path().join("policy.yaml"),
        "checks:\n  probeSettings:\n    forbidIdenticalLivenessReadiness: true\n",
    )
    .unwrap();
    let output = podgate_in(dir.path(), &["fix", "--config", "policy.yaml", "--tcp-probes", "sidecars.yaml"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let fixed = read(dir.path(), "sidecars.yaml");
    assert!(fixed.contains("readinessProbe:") && !fixed.contains("livenessProbe:"), "{fixed}");
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("  left   line 25: spec.template.spec.containers[0].livenessProbe: livenessProbe missing (container \"api\" must set livenessProbe)\n         not added: the policy forbids a liveness probe identical to the readiness probe"),
        "{stdout}"
    );
    let check = podgate_in(dir.path(), &["check", "--config", "policy.yaml", "sidecars.yaml"]);
    assert_eq!(check.status.code(), Some(1), "only the liveness probes are missing: {}", describe(&check));
    assert!(!text(&check.stdout).contains("probeSettings"), "{}", describe(&check));
}

#[test]
fn leaves_run_as_non_root_alone_for_user_namespaces_and_uid_zero() {
    let dir = workspace(&["root-uid.yaml"]);
    let output = podgate_in(dir.path(), &["fix", "root-uid.yaml"]);
    assert_eq!(output.status.code(), Some(1), "the host-root Pod is left for a person: {}", describe(&output));
    let stdout = text(&output.stdout);
    // The user-namespaced Pod passes as it is (PSA's relaxation, podgate's
    // default): nothing added, nothing reported.
    assert!(!stdout.contains("Pod shop/userns-root"), "{stdout}");
    // UID 0 on the host: runAsNonRoot=true would stop the kubelet from
    // starting the container, so it is not added.
    assert!(stdout.contains("Pod shop/host-root"), "{stdout}");
    assert!(stdout.contains("container \"app\" runs as UID 0 (runAsUser=0)"), "{stdout}");
    assert_eq!(read(dir.path(), "root-uid.yaml"), std::fs::read_to_string(fixture("root-uid.yaml")).unwrap());

    // With userNamespaces: enforce the user-namespaced Pod is judged too,
    // and its UID 0 is left to a person the same way.
    std::fs::write(dir.path().join("policy.yaml"), "checks:\n  runAsNonRoot:\n    userNamespaces: enforce\n").unwrap();
    let output = podgate_in(dir.path(), &["fix", "--config", "policy.yaml", "root-uid.yaml"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("Pod shop/userns-root"), "{stdout}");
    assert_eq!(stdout.matches("runs as UID 0 (runAsUser=0)").count(), 2, "{stdout}");
    assert_eq!(read(dir.path(), "root-uid.yaml"), std::fs::read_to_string(fixture("root-uid.yaml")).unwrap());
}
