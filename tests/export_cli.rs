//! `podgate export vap` as a user runs it: output, `-o FILE`, `--config`,
//! exit codes and messages. (That the output decides as the webhook does is
//! `tests/vap_differential.rs`, on a real apiserver.)

use std::path::Path;
use std::process::{Command, Output};

fn podgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podgate")).args(args).env_remove("PODGATE_CONFIG").output().expect("podgate runs")
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).display().to_string()
}

fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|doc: &serde_json::Value| !doc.is_null())
        .collect()
}

#[test]
fn default_policy_is_the_checked_in_deploy_file() {
    let output = podgate(&["export", "vap"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let checked_in = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/podgate-vap.yaml"));
    assert_eq!(String::from_utf8(output.stdout).unwrap(), checked_in.unwrap());
}

#[test]
fn writes_a_policy_file_to_the_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vap.yaml");
    let output = podgate(&["export", "vap", "--config", &fixture("config/audit.yaml"), "-o", out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.is_empty());
    let docs = documents(&std::fs::read_to_string(&out).unwrap());
    let names: Vec<(&str, &str)> =
        docs.iter().map(|d| (d["kind"].as_str().unwrap(), d["metadata"]["name"].as_str().unwrap())).collect();
    // allowPrivilegeEscalation enforced, probeSettings warn, the rest audited.
    assert_eq!(
        names,
        [
            ("ValidatingAdmissionPolicy", "podgate-deny"),
            ("ValidatingAdmissionPolicyBinding", "podgate-deny"),
            ("ValidatingAdmissionPolicy", "podgate-warn"),
            ("ValidatingAdmissionPolicyBinding", "podgate-warn"),
            ("ValidatingAdmissionPolicy", "podgate-audit"),
            ("ValidatingAdmissionPolicyBinding", "podgate-audit"),
        ]
    );
    assert_eq!(docs[0]["metadata"]["annotations"]["podgate.dev/checks"], "allowPrivilegeEscalation");
    assert_eq!(docs[2]["metadata"]["annotations"]["podgate.dev/checks"], "probeSettings");
    assert_eq!(docs[5]["spec"]["validationActions"], serde_json::json!(["Warn", "Audit"]));
}

#[test]
fn bad_configurations_exit_2_with_the_reason() {
    let output = podgate(&["export", "vap", "--config", &fixture("config/unknown-key.yaml")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("podgate export vap: invalid configuration: "), "{stderr}");
    assert!(output.stdout.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "exemptions:\n- serviceAccounts: [\"a:b/c\"]\n  reason: odd\n").unwrap();
    let output = podgate(&["export", "vap", "--config", policy.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("exemptions[0].serviceAccounts: \"a:b/c\""), "{stderr}");

    let output = podgate(&["export", "vap", "-o", dir.path().join("missing/vap.yaml").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot write"));
}
