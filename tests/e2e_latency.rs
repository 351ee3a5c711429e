//! What the kube-apiserver itself measures of podgate: Pods created through
//! the apiserver with no webhook and with podgate registered by the chart,
//! then the apiserver's own histograms read from its `/metrics`:
//! `apiserver_admission_webhook_admission_duration_seconds` for podgate's
//! webhook, the whole validating admission step, and the whole request;
//! next to the latency the client saw. Its own test binary, so that no
//! other test's webhook calls are in the apiserver's histograms.
//!
//! In `cargo test` it makes 100 creations of each and checks that the
//! apiserver called the webhook exactly once per creation under podgate and
//! never without it. The figures in BENCHMARKS.md:
//!
//! ```sh
//! PODGATE_E2E_CREATIONS=500 CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
//!   cargo test --release --test e2e_latency -- --nocapture
//! ```

mod common;

use std::time::Duration;

use common::apiserver::*;
use common::histogram::{buckets, count, delta, exact, quantile, timed_pod_creations};

fn ms(seconds: Option<f64>) -> String {
    seconds.map_or("-".to_owned(), |s| format!("{:.2} ms", s * 1000.0))
}

const WEBHOOK: &str = "apiserver_admission_webhook_admission_duration_seconds";
const STEP: &str = "apiserver_admission_step_admission_duration_seconds";
const REQUEST: &str = "apiserver_request_duration_seconds";

/// The apiserver's histograms of the Pod creations, as (webhook, validating step, request).
async fn snapshot(cluster: &Cluster) -> [Vec<(f64, f64)>; 3] {
    let metrics = cluster.metrics().await;
    [
        buckets(&metrics, WEBHOOK, &[r#"name="validate.podgate.dev""#, r#"operation="CREATE""#]),
        // No resource label here: only the Pod creations are admitted between two snapshots.
        buckets(&metrics, STEP, &[r#"operation="CREATE""#, r#"type="validate""#]),
        buckets(&metrics, REQUEST, &[r#"verb="POST""#, r#"resource="pods""#, r#"subresource="""#]),
    ]
}

/// Creates `n` compliant Pods in `namespace` one after the other; the
/// apiserver's histograms of them and the latencies the client saw.
async fn run(cluster: &Cluster, namespace: &str, n: usize) -> ([Vec<(f64, f64)>; 3], Vec<Duration>) {
    timed_pod_creations(cluster, namespace, n, || snapshot(cluster)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_measures_podgates_webhook() {
    let Some(cluster) = cluster().await else { return };
    let n: usize = std::env::var("PODGATE_E2E_CREATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let plain = cluster.namespace("no-webhook").await;
    let checked = cluster.namespace("latency").await;
    let podgate = Podgate::register(cluster, "latency", &[]).await;
    let own = |text: String| buckets(&text, "podgate_admission_request_duration_seconds", &[r#"kind="Pod""#]);

    // A warm-up round of each, unmeasured (connections, caches).
    run(cluster, &plain, 10).await;
    let (without, client_without) = run(cluster, &plain, n).await;
    let own_before = own(podgate.harness.metrics().await);
    let (with, client_with) = run(cluster, &checked, n).await;
    let podgates_own = delta(&own(podgate.harness.metrics().await), &own_before);

    assert_eq!(count(&without[0]), 0.0, "no webhook call without podgate's scope");
    assert_eq!(count(&with[0]), n as f64, "one webhook call per creation");
    assert_eq!(count(&podgates_own), n as f64, "podgate answered each");
    assert_eq!(count(&without[2]), n as f64);
    assert_eq!(count(&with[2]), n as f64);

    // The apiserver's buckets are coarse (the first ends at 5 ms), so the
    // share of calls within 5 ms says more than a quantile interpolated in it.
    let row = |what: &str, h: &[(f64, f64)]| {
        let within = h.iter().rev().find(|(le, _)| *le <= 0.005).map_or(0.0, |(_, c)| *c) / count(h).max(1.0);
        let (p50, p99) = (ms(quantile(0.5, h)), ms(quantile(0.99, h)));
        format!("| {what} | {} | {p50} | {p99} | {:.0}% |\n", count(h), within * 100.0)
    };
    let client = |what: &str, l: &[Duration]| {
        let fmt = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        let within = l.iter().filter(|d| **d <= Duration::from_millis(5)).count() as f64 / l.len() as f64;
        format!(
            "| {what} | {} | {} | {} | {:.0}% |\n",
            l.len(),
            fmt(exact(0.5, l)),
            fmt(exact(0.99, l)),
            within * 100.0
        )
    };
    let mut table = String::from("| | count | p50 | p99 | within 5 ms |\n| --- | --- | --- | --- | --- |\n");
    table += &row("`apiserver_admission_webhook_admission_duration_seconds` (podgate's webhook)", &with[0]);
    table += &row("`podgate_admission_request_duration_seconds` (podgate's own, same calls)", &podgates_own);
    table += &row("validating admission step, with podgate", &with[1]);
    table += &row("validating admission step, no webhook", &without[1]);
    table += &row("`apiserver_request_duration_seconds` POST pods, with podgate", &with[2]);
    table += &row("`apiserver_request_duration_seconds` POST pods, no webhook", &without[2]);
    table += &client("client-side creation, with podgate", &client_with);
    table += &client("client-side creation, no webhook", &client_without);
    let buckets: Vec<String> = with[0].iter().map(|(le, _)| le.to_string()).collect();
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("\n{n} creations each; webhook histogram buckets (s): {}\n{table}", buckets.join(", ")).as_bytes(),
    );
}
