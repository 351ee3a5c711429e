//! Pod creation latency through the kube-apiserver with no policy, with
//! podgate's webhook and with the exported ValidatingAdmissionPolicy, side
//! by side in one run, as the apiserver measures it (its own histograms from
//! `/metrics`) and as the client sees it. Its own test binary, so that no
//! other test's admission calls are in the apiserver's histograms.
//!
//! In `cargo test` it makes 60 creations of each and checks that the
//! webhook was called once per creation in its namespace only (the policy
//! is known to apply in its namespace: it denies a non-compliant Pod there
//! before the run). The figures in BENCHMARKS.md:
//!
//! ```sh
//! PODGATE_E2E_CREATIONS=300 cargo test --release --test vap_latency -- --nocapture
//! ```

mod common;

use std::time::Duration;

use common::apiserver::*;
use common::histogram::{buckets, count, exact, quantile, timed_pod_creations};
use podgate::config::Policy;
use serde_json::{json, Value};

const WEBHOOK: &str = "apiserver_admission_webhook_admission_duration_seconds";
const POLICY: &str = "apiserver_validating_admission_policy_check_duration_seconds";
const STEP: &str = "apiserver_admission_step_admission_duration_seconds";
const REQUEST: &str = "apiserver_request_duration_seconds";

/// The policy name the exported deny policy gets in this test.
const DENY_POLICY: &str = "podgate-latency-vap-deny";

async fn snapshot(cluster: &Cluster) -> [Vec<(f64, f64)>; 4] {
    let metrics = cluster.metrics().await;
    [
        buckets(&metrics, WEBHOOK, &[r#"name="validate.podgate.dev""#, r#"operation="CREATE""#]),
        buckets(&metrics, POLICY, &[&format!(r#"policy="{DENY_POLICY}""#)]),
        buckets(&metrics, STEP, &[r#"operation="CREATE""#, r#"type="validate""#]),
        buckets(&metrics, REQUEST, &[r#"verb="POST""#, r#"resource="pods""#, r#"subresource="""#]),
    ]
}

/// Creates `n` compliant Pods in `namespace` one after the other.
async fn run(cluster: &Cluster, namespace: &str, n: usize) -> ([Vec<(f64, f64)>; 4], Vec<Duration>) {
    timed_pod_creations(cluster, namespace, n, || snapshot(cluster)).await
}

/// Installs the export of `policy` for the namespaces of `scope` and waits
/// until it denies there.
async fn install_export(cluster: &Cluster, policy: &Policy, scope: &str, namespace: &str) {
    let client = cluster.admin();
    for mut object in podgate::export::vap::objects(policy).unwrap() {
        let name = object["metadata"]["name"].as_str().unwrap().replace("podgate-", &format!("podgate-{scope}-"));
        object["metadata"]["name"] = json!(name);
        let plural = if object["kind"] == "ValidatingAdmissionPolicy" {
            "validatingadmissionpolicies"
        } else {
            object["spec"]["policyName"] = json!(name);
            object["spec"]["matchResources"] = json!({"namespaceSelector": {"matchLabels": {SCOPE_LABEL: scope}}});
            "validatingadmissionpolicybindings"
        };
        let path = format!("/apis/admissionregistration.k8s.io/v1/{plural}");
        let answer = send(&client, "POST", &path, "application/json", Some(&object)).await;
        assert_eq!(answer.status, 201, "{answer:?}");
    }
    let pod: Value = named(manifest("pod-noncompliant.yaml"), "vap-probe");
    common::eventually("the exported policy to deny", || async {
        create_dry_run(&client, namespace, &pod).await.message().contains("ValidatingAdmissionPolicy")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_creation_latency_no_policy_webhook_vap() {
    let Some(cluster) = cluster().await else { return };
    let n: usize = std::env::var("PODGATE_E2E_CREATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let plain = cluster.namespace("latency-none").await;
    let webhook_ns = cluster.namespace("latency-webhook").await;
    let vap_ns = cluster.namespace("latency-vap").await;
    let podgate = Podgate::register(cluster, "latency-webhook", &[]).await;
    let policy = Policy::load(&podgate.policy).unwrap();
    install_export(cluster, &policy, "latency-vap", &vap_ns).await;

    // A warm-up round of each, unmeasured; then the three measured in turn.
    for ns in [&plain, &webhook_ns, &vap_ns] {
        run(cluster, ns, 10).await;
    }
    let (none, client_none) = run(cluster, &plain, n).await;
    let (webhook, client_webhook) = run(cluster, &webhook_ns, n).await;
    let (vap, client_vap) = run(cluster, &vap_ns, n).await;

    let n_f = n as f64;
    assert_eq!((count(&none[0]), count(&none[1])), (0.0, 0.0), "no policy in the plain namespace");
    assert_eq!((count(&webhook[0]), count(&webhook[1])), (n_f, 0.0), "one webhook call per creation");
    // The apiserver 1.36 records `..._policy_check_duration_seconds` only for
    // denials (`enforcement_action="deny"`): none for these compliant Pods.
    // That the policy applies there is checked by `install_export`.
    assert_eq!(count(&vap[0]), 0.0, "no webhook call in the VAP's namespace");

    let ms = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{:.2} ms", s * 1000.0));
    let row = |what: &str, h: &[(f64, f64)]| {
        format!("| {what} | {} | {} | {} |\n", count(h), ms(quantile(0.5, h)), ms(quantile(0.99, h)))
    };
    let client = |what: &str, l: &[Duration]| {
        let p = |q| Some(exact(q, l).as_secs_f64());
        format!("| {what} | {} | {} | {} |\n", l.len(), ms(p(0.5)), ms(p(0.99)))
    };
    let mut table = String::from("| | count | p50 | p99 |\n| --- | --- | --- | --- |\n");
    table += &row("`apiserver_admission_webhook_admission_duration_seconds` (podgate's webhook)", &webhook[0]);
    for (what, h) in [("no policy", &none), ("webhook", &webhook), ("VAP", &vap)] {
        table += &row(&format!("validating admission step, {what}"), &h[2]);
    }
    for (what, h) in [("no policy", &none), ("webhook", &webhook), ("VAP", &vap)] {
        table += &row(&format!("`apiserver_request_duration_seconds` POST pods, {what}"), &h[3]);
    }
    for (what, l) in [("no policy", &client_none), ("webhook", &client_webhook), ("VAP", &client_vap)] {
        table += &client(&format!("client-side creation, {what}"), l);
    }
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("\n{n} creations each\n{table}").as_bytes());
    podgate.unregister(cluster).await;
}
