//! Waivers (exemption rules with objects, containers, effect and expiry):
//! one table of cases, `tests/fixtures/waivers/cases.yaml` under
//! `policy.yaml`, run through every path that decides, with the time set
//! through the injectable clock:
//!
//! - the webhook: the real server in-process over real TLS, one per instant
//!   (`ServeArgs::clock` fixed at it), each case POSTed as an AdmissionReview;
//! - `podgate check --now INSTANT`, the real binary, on the same review files
//!   (judged as the webhook would, with their user) and on the bare objects
//!   as stored manifests (judged as stored);
//! - `podgate audit --now INSTANT`, the real binary, on the same objects
//!   stored in a real kube-apiserver (judged as stored).
//!
//! Every path must give every case the answer the table expects. Then the
//! metrics of the waivers (promtool-checked), the lints of `check --config`,
//! and the expiry warning within the apiserver's limits.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use podgate::exemption::Clock;
use serde::Deserialize;
use serde_json::{json, Value};

use common::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    at: String,
    user: String,
    object: Value,
    expect: Outcome,
    /// The answer for the bare object judged as stored, when it differs.
    #[serde(default)]
    stored: Option<Outcome>,
}

/// What a path answered about one case, in the table's terms.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Outcome {
    allowed: bool,
    /// Names of the exemption rules that applied, in policy order.
    rules: Vec<String>,
    /// The expiry warning, exactly.
    #[serde(default)]
    notice: Option<String>,
    /// Whether would-be denials came back as audit warnings.
    #[serde(default)]
    audit: bool,
}

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/waivers").join(name)
}

/// The pod specs the table refers to by name: `root` breaks four checks,
/// `good` none, `meshed` is `good` with an injected istio-proxy, and
/// `root-meshed` is `root` with one.
fn pod_spec(name: &str) -> Value {
    let good_app = json!({
        "name": "app", "image": "registry.example/app:1",
        "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "allowPrivilegeEscalation": false},
        "ports": [{"name": "http", "containerPort": 8080}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}}
    });
    let root_app = json!({"name": "app", "image": "registry.example/billing:1"});
    // What Istio's injector adds: a readiness probe, no liveness probe.
    let istio_proxy = json!({
        "name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0",
        "securityContext": {"runAsNonRoot": true, "runAsUser": 1337, "allowPrivilegeEscalation": false},
        "ports": [{"name": "http-envoy-prom", "containerPort": 15090}],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "periodSeconds": 15, "timeoutSeconds": 3}
    });
    match name {
        "root" => json!({"containers": [root_app]}),
        "good" => json!({"containers": [good_app]}),
        "meshed" => json!({"containers": [good_app, istio_proxy]}),
        "root-meshed" => json!({"containers": [root_app, istio_proxy]}),
        other => panic!("unknown pod spec {other:?} in cases.yaml"),
    }
}

/// The cases, with each `spec: NAME` expanded where the kind keeps its pod spec.
fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixture_path("cases.yaml")).unwrap();
    let mut cases: Vec<Case> = serde_yaml_ng::from_str(&text).unwrap();
    for case in &mut cases {
        let spec = pod_spec(case.object["spec"].as_str().expect("spec: a pod spec name"));
        case.object["spec"] = match case.object["kind"].as_str().unwrap() {
            "Pod" => spec,
            "CronJob" => json!({"schedule": "0 2 * * *", "jobTemplate": {"spec": {"template": {"spec": spec}}}}),
            _ => {
                json!({"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": spec}})
            }
        };
    }
    cases
}

/// The AdmissionReview the apiserver would send for a CREATE of the case's object.
fn review(case: &Case, uid: &str) -> Value {
    let object = &case.object;
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap();
    let resource = format!("{}s", kind.to_lowercase());
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "namespace": object["metadata"]["namespace"],
            "name": object["metadata"]["name"],
            "operation": "CREATE",
            "userInfo": {"username": case.user, "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false
        }
    })
}

/// The webhook's answer in the table's terms.
fn from_response(response: &Value) -> Outcome {
    let warnings: Vec<&str> =
        response["warnings"].as_array().map(|w| w.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let rules = response["auditAnnotations"]["exemptionRules"]
        .as_str()
        .map(|rules| rules.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    Outcome {
        allowed: response["allowed"].as_bool().unwrap(),
        rules,
        notice: warnings.iter().find(|w| w.starts_with("exemption \"")).map(|w| (*w).to_owned()),
        audit: warnings.iter().any(|w| w.starts_with("would deny (audit mode): ")),
    }
}

/// One result of `podgate check --format json` in the table's terms.
fn from_check(result: &Value) -> Outcome {
    let notices = result["notices"].as_array().unwrap();
    assert!(notices.len() <= 1, "{result}");
    Outcome {
        allowed: result["allowed"].as_bool().unwrap(),
        rules: result["exemptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["rule"].as_str().unwrap().to_owned())
            .collect(),
        notice: notices.first().map(|n| n.as_str().unwrap().to_owned()),
        audit: result["violations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["message"].as_str().unwrap().starts_with("would deny (audit mode): ")),
    }
}

fn podgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podgate")).args(args).env_remove("PODGATE_CONFIG").output().expect("podgate runs")
}

/// `podgate check --now at` on every file of `dir`: the outcome per file name.
fn check_dir(dir: &Path, at: &str) -> BTreeMap<String, Outcome> {
    let policy = fixture_path("policy.yaml").display().to_string();
    let dir_arg = dir.display().to_string();
    let output = podgate(&["check", "--config", &policy, "--now", at, "--format", "json", &dir_arg]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(matches!(output.status.code(), Some(0 | 1)), "exit {:?}: {stderr}", output.status.code());
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| {
            let source = result["source"].as_str().unwrap();
            let file = Path::new(source.rsplit_once('#').unwrap().0).file_name().unwrap().to_string_lossy();
            (file.into_owned(), from_check(result))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_table_of_cases_gets_the_same_answers_on_every_path() {
    let cases = cases();
    let mut instants: Vec<&str> = cases.iter().map(|c| c.at.as_str()).collect();
    instants.sort_unstable();
    instants.dedup();
    let policy = fixture_path("policy.yaml").display().to_string();
    let mut failures = Vec::new();
    let mut last_metrics = String::new();

    for at in instants {
        let now: jiff::Timestamp = at.parse().unwrap();
        let harness = start_with(&["--config", &policy], |args| args.clock = Clock::Fixed(now)).await;
        let dir = tempfile::tempdir().unwrap();
        for (i, case) in cases.iter().enumerate().filter(|(_, c)| c.at == at) {
            let review = review(case, &format!("case-{i}"));
            // The webhook, over real TLS.
            let got = from_response(&harness.review(&review).await);
            if got != case.expect {
                failures.push(format!("serve at {at}: {}: expected {:?}, got {got:?}", case.name, case.expect));
            }
            std::fs::write(dir.path().join(format!("{i:02}-review.json")), review.to_string()).unwrap();
            std::fs::write(dir.path().join(format!("{i:02}-stored.json")), case.object.to_string()).unwrap();
        }
        // podgate check, at the same instant, on the same reviews and on the objects as stored.
        let checked = check_dir(dir.path(), at);
        for (i, case) in cases.iter().enumerate().filter(|(_, c)| c.at == at) {
            for (file, expected) in [
                (format!("{i:02}-review.json"), &case.expect),
                (format!("{i:02}-stored.json"), case.stored.as_ref().unwrap_or(&case.expect)),
            ] {
                match checked.get(&file) {
                    Some(got) if got == expected => {}
                    got => failures
                        .push(format!("check at {at}: {} ({file}): expected {expected:?}, got {got:?}", case.name)),
                }
            }
        }
        last_metrics = harness.metrics().await;
        harness.server.shutdown().await;
    }
    assert!(failures.is_empty(), "{} of {} cases disagree:\n{}", failures.len(), cases.len(), failures.join("\n"));

    // The last server's metrics: named rules' expiry, and exemptions by rule.
    for expected in [
        r#"podgate_exemption_expiry_timestamp_seconds{rule="legacy-billing"} 1806451200"#,
        r#"podgate_exemption_expiry_timestamp_seconds{rule="db"} 1814356800"#,
    ] {
        assert!(last_metrics.contains(expected), "missing {expected} in\n{last_metrics}");
    }
    assert!(!last_metrics.contains(r#"podgate_exemption_expiry_timestamp_seconds{rule="reports"}"#));
    if promtool_available() {
        promtool_check(&last_metrics);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemptions_are_counted_by_rule_and_effect() {
    let policy = fixture_path("policy.yaml").display().to_string();
    let now: jiff::Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
    let harness = start_with(&["--config", &policy], |args| args.clock = Clock::Fixed(now)).await;
    let cases = cases();
    let by_name = |name: &str| cases.iter().find(|c| c.name == name).unwrap();
    let exempt = by_name("a Deployment named in a rule is admitted");
    let audit = by_name("an audit-only rule warns and admits");
    for i in 0..3 {
        harness.review(&review(exempt, &format!("e{i}"))).await;
    }
    harness.review(&review(audit, "a0")).await;
    let text = harness.metrics().await;
    for expected in [
        r#"podgate_exemptions_total{rule="legacy-billing",effect="exempt",reason="legacy billing runs as root until its rewrite"} 3"#,
        r#"podgate_exemptions_total{rule="payments-rollout",effect="audit",reason="payments still sees warnings only"} 1"#,
        r#"podgate_admission_requests_total{kind="Deployment",operation="CREATE",decision="exempt",mode="enforce",dry_run="false"} 3"#,
        r#"podgate_policy_violations_total{check="runAsNonRoot",action="audit"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    if promtool_available() {
        promtool_check(&text);
    }
    harness.server.shutdown().await;
}

#[test]
fn check_config_lints_the_waivers() {
    let policy = fixture_path("policy.yaml").display().to_string();
    let lint = |at: &str| {
        let output = podgate(&["check", "--config", &policy, "--now", at]);
        assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let quiet = lint("2027-01-01");
    assert!(!quiet.contains("expire"), "{quiet}");
    // The mesh rule only skips a probe check: no warning about it.
    assert!(!quiet.contains("mesh-probes"), "{quiet}");

    let soon = lint("2027-03-20");
    assert!(
        soon.contains(r#"warning: exemption "legacy-billing" expires on 2027-03-31 (SEC-123): renew it"#),
        "{soon}"
    );
    let late = lint("2027-04-01");
    assert!(
        late.contains(r#"warning: exemption "legacy-billing": expired on 2027-03-31; it no longer applies anywhere"#),
        "{late}"
    );

    // A container rule that waives a security check for everyone is flagged.
    let dir = tempfile::tempdir().unwrap();
    let risky = dir.path().join("risky.yaml");
    std::fs::write(
        &risky,
        "exemptions:\n- name: mesh\n  containers: [istio-proxy]\n  reason: sidecar\n- name: a\n  objects: [{namespace: shop, name: web-*}]\n  reason: a\n- name: b\n  objects: [{namespace: shop, kind: Deployment, name: web-frontend}]\n  reason: b\n",
    )
    .unwrap();
    let output = podgate(&["check", "--config", &risky.display().to_string()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(r#"exemption "mesh": skips runAsNonRoot, runAsUser, allowPrivilegeEscalation for containers named istio-proxy in every namespace"#), "{stderr}");
    assert!(stderr.contains(r#"exemptions "a" and "b" overlap"#), "{stderr}");

    // With objects to check: a rule naming objects that match none of them.
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifests/good").display().to_string();
    let output = podgate(&["check", "--config", &policy, "--now", "2027-01-01", &manifests]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(r#"exemption "legacy-billing": names objects, but matched none of the"#), "{stderr}");
}

#[test]
fn check_shows_rule_ticket_and_expiry_of_every_exempt_result() {
    let policy = fixture_path("policy.yaml").display().to_string();
    let case = cases().into_iter().find(|c| c.name == "within warnBeforeExpiry the waiver warns").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("legacy.json");
    std::fs::write(&file, case.object.to_string()).unwrap();
    let output = podgate(&["check", "--config", &policy, "--now", &case.at, &file.display().to_string()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("WARN  Deployment shop/legacy-billing"), "{stdout}");
    assert!(
        stdout.contains("exempt: legacy billing runs as root until its rewrite (rule legacy-billing, ticket SEC-123, owner team-billing, expires 2027-03-31)"),
        "{stdout}"
    );
    assert!(stdout.contains(r#"note  exemption "legacy-billing" expires on 2027-03-31 (SEC-123)"#), "{stdout}");

    let output =
        podgate(&["check", "--config", &policy, "--now", &case.at, "--format", "json", &file.display().to_string()]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["results"][0]["exemptions"],
        json!([{"rule": "legacy-billing", "effect": "exempt", "reason": "legacy billing runs as root until its rewrite",
                "ticket": "SEC-123", "owner": "team-billing", "expires": "2027-03-31"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_expiry_warning_stays_within_the_apiserver_limits() {
    // The longest name, ticket and expiry text validation allows.
    let name = "n".repeat(63);
    let ticket = "T".repeat(128);
    let policy = format!(
        "exemptions:\n- name: {name}\n  namespaces: [shop]\n  expires: '2027-03-31T12:00:00.123456789+05:30'\n  ticket: '{ticket}'\n  reason: long\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, policy).unwrap();
    let now: jiff::Timestamp = "2027-03-30T00:00:00Z".parse().unwrap();
    let harness = start_with(&["--config", &path.display().to_string()], |args| args.clock = Clock::Fixed(now)).await;
    let case = Case {
        name: "long".into(),
        at: String::new(),
        user: "alice".into(),
        object: json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"}, "spec": pod_spec("root")}),
        expect: Outcome { allowed: true, rules: vec![], notice: None, audit: false },
        stored: None,
    };
    let response = harness.review(&review(&case, "long")).await;
    let warnings = response["warnings"].as_array().unwrap();
    let notice = warnings[0].as_str().unwrap();
    assert_eq!(notice, format!("exemption \"{name}\" expires on 2027-03-31T12:00:00.123456789+05:30 ({ticket})"));
    assert!(notice.chars().count() < 256, "{}", notice.len());
    harness.server.shutdown().await;
}

/// The third path that decides: `podgate audit`. Every case's object is
/// stored in a real kube-apiserver (podgate not registered, so nothing
/// refuses it), and `podgate audit --now INSTANT` over its namespace must
/// give the answer the table expects for the object as stored, as
/// `podgate check` does on the bare object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_table_through_podgate_audit() {
    let Some(cluster) = apiserver::cluster().await else { return };
    let cases = cases();
    let admin = cluster.admin();
    let mut namespaces: Vec<&str> = cases.iter().map(|c| c.object["metadata"]["namespace"].as_str().unwrap()).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for namespace in &namespaces {
        cluster.create_namespace(namespace, "waivers-audit").await;
    }
    let kubeconfig = cluster.kubeconfig(None);
    let policy = fixture_path("policy.yaml").display().to_string();

    let mut instants: Vec<&str> = cases.iter().map(|c| c.at.as_str()).collect();
    instants.sort_unstable();
    instants.dedup();
    let mut failures = Vec::new();
    for at in instants {
        let here: Vec<&Case> = cases.iter().filter(|c| c.at == at).collect();
        let mut paths = Vec::new();
        for case in &here {
            let namespace = case.object["metadata"]["namespace"].as_str().unwrap();
            let answer = apiserver::create(&admin, namespace, &case.object).await;
            assert_eq!(answer.status, 201, "{}: {answer:?}", case.name);
            let name = answer.body["metadata"]["name"].as_str().unwrap();
            paths.push(format!("{}/{name}", apiserver::collection_path(&case.object, namespace)));
        }
        // The instant as RFC 3339 for --now (the table writes it as YAML's timestamp).
        let now: jiff::Timestamp = at.parse().unwrap();
        let now = now.to_string();
        let mut answers: BTreeMap<(String, String, String), Outcome> = BTreeMap::new();
        for namespace in &namespaces {
            let output = Command::new(env!("CARGO_BIN_EXE_podgate"))
                .args(["audit", "--kubeconfig", kubeconfig.to_str().unwrap(), "-n", namespace])
                .args(["--config", &policy, "--now", &now, "--format", "json"])
                .env_remove("PODGATE_CONFIG")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(matches!(output.status.code(), Some(0 | 1)), "exit {:?}: {stderr}", output.status.code());
            let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
            for result in report["results"].as_array().unwrap() {
                let key = |field: &str| result[field].as_str().unwrap().to_owned();
                answers.insert((key("kind"), key("namespace"), key("name")), from_check(result));
            }
        }
        for case in &here {
            let metadata = &case.object["metadata"];
            let key = (
                case.object["kind"].as_str().unwrap().to_owned(),
                metadata["namespace"].as_str().unwrap().to_owned(),
                metadata["name"].as_str().unwrap().to_owned(),
            );
            let expected = case.stored.as_ref().unwrap_or(&case.expect);
            match answers.get(&key) {
                Some(got) if got == expected => {}
                got => failures.push(format!("audit at {at}: {}: expected {expected:?}, got {got:?}", case.name)),
            }
        }
        // The next instant stores objects of the same names anew.
        for path in paths {
            let delete = format!("{path}?gracePeriodSeconds=0");
            let gone = apiserver::send(&admin, "DELETE", &delete, "application/json", None).await;
            assert!(matches!(gone.status, 200 | 202), "DELETE {path}: {gone:?}");
            common::eventually(&format!("{path} deleted"), || async {
                apiserver::send(&admin, "GET", &path, "application/json", None).await.status == 404
            })
            .await;
        }
    }
    assert!(failures.is_empty(), "{} cases disagree:\n{}", failures.len(), failures.join("\n"));
}
