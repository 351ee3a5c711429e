//! Hot reload while serving: the certificate (a Secret mount rotated by an
//! atomic symlink swap) and the policy file (a ConfigMap mount).

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_traffic_loses_no_request() {
    let mut h = start(&["--cert-reload-interval", "100ms"]).await;
    let addr = h.server.webhook_addr();
    assert_eq!(served_certificate(addr, &h.ca.pem).await, h.leaf.der);

    // One client keeps its connection, one opens a new one per request.
    let kept = Traffic::start(client(&h.ca.pem, false), h.url.clone(), "keep-alive");
    let fresh = Traffic::start(fresh_connection_client(&h.ca.pem), h.url.clone(), "new connections");
    let h2 = Traffic::start(client(&h.ca.pem, true), h.url.clone(), "h2");
    kept.wait_for_more(10).await;
    fresh.wait_for_more(10).await;
    h2.wait_for_more(10).await;

    let next = h.ca.leaf("podgate-2", 2091);
    h.certs.write(&[("tls.crt", &next.cert_pem), ("tls.key", &next.key_pem)]);
    eventually("the new certificate on new connections", || async {
        served_certificate(addr, &h.ca.pem).await == next.der
    })
    .await;
    assert_eq!(h.server.current_certificate(), next.der);
    // Traffic goes on across the swap, on old and new connections.
    kept.wait_for_more(10).await;
    fresh.wait_for_more(10).await;
    h2.wait_for_more(10).await;

    for traffic in [kept, fresh, h2] {
        let (ok, failures) = traffic.stop().await;
        assert!(failures.is_empty(), "{} of {} requests failed: {failures:#?}", failures.len(), ok + failures.len());
    }
    let metrics = h.metrics().await;
    assert_eq!(metric_value(&metrics, r#"podgate_tls_reloads_total{result="success"}"#), Some(1.0));
    assert_eq!(metric_value(&metrics, r#"podgate_tls_reloads_total{result="error"}"#), Some(0.0));
    assert_eq!(metric_value(&metrics, "podgate_tls_certificate_expiry_timestamp_seconds"), Some(new_year(2091) as f64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_new_certificate_keeps_the_old_pair_and_is_counted() {
    let mut h = start(&["--cert-reload-interval", "100ms"]).await;
    let addr = h.server.webhook_addr();
    let other = h.ca.leaf("podgate-2", 2091);

    // A key that does not belong to the certificate.
    h.certs.write(&[("tls.crt", &other.cert_pem), ("tls.key", &h.leaf.key_pem)]);
    h.wait_for_metric(r#"podgate_tls_reloads_total{result="error"}"#, 1.0).await;
    assert_eq!(served_certificate(addr, &h.ca.pem).await, h.leaf.der);
    assert_eq!(h.review(&fixture("pod-create.json")).await["allowed"], true);

    // Not PEM at all; counted once however often it is polled.
    h.certs.write(&[("tls.crt", "not a certificate"), ("tls.key", "not a key")]);
    h.wait_for_metric(r#"podgate_tls_reloads_total{result="error"}"#, 2.0).await;
    h.server.reload_now();
    assert_eq!(served_certificate(addr, &h.ca.pem).await, h.leaf.der);
    assert_eq!(h.metric("podgate_tls_certificate_expiry_timestamp_seconds").await, new_year(2090) as f64);

    // An expired certificate is refused too.
    let expired = h.ca.leaf("podgate-old", 2021);
    h.certs.write(&[("tls.crt", &expired.cert_pem), ("tls.key", &expired.key_pem)]);
    h.wait_for_metric(r#"podgate_tls_reloads_total{result="error"}"#, 3.0).await;
    assert_eq!(served_certificate(addr, &h.ca.pem).await, h.leaf.der);

    // A valid pair afterwards is taken.
    h.certs.write(&[("tls.crt", &other.cert_pem), ("tls.key", &other.key_pem)]);
    h.wait_for_metric(r#"podgate_tls_reloads_total{result="success"}"#, 1.0).await;
    assert_eq!(served_certificate(addr, &h.ca.pem).await, other.der);
    assert_eq!(h.metric(r#"podgate_tls_reloads_total{result="error"}"#).await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_applies_a_valid_policy_and_rejects_an_invalid_one() {
    let mut config = Mount::new(&[("policy.yaml", "mode: enforce\n")]);
    let path = config.path("policy.yaml").display().to_string();
    let h = start(&["--config", &path, "--config-reload-interval", "100ms"]).await;
    let review = fixture("pod-create-noncompliant.json");
    assert_eq!(h.review(&review).await["allowed"], false);

    config.write(&[("policy.yaml", "mode: audit\n")]);
    h.wait_for_metric(r#"podgate_config_reloads_total{result="success"}"#, 1.0).await;
    let response = h.review(&review).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(response["warnings"].as_array().unwrap().len(), 4);

    // Invalid: rejected with a reason in the log, counted, old policy stays.
    config.write(&[("policy.yaml", "mode: audit\nchecks:\n  runAsUser:\n    minUid: 0\n")]);
    h.wait_for_metric(r#"podgate_config_reloads_total{result="error"}"#, 1.0).await;
    let response = h.review(&review).await;
    assert_eq!(response["allowed"], true, "the audit policy stays in force");
    // Not YAML at all.
    config.write(&[("policy.yaml", "mode: [\n")]);
    h.wait_for_metric(r#"podgate_config_reloads_total{result="error"}"#, 2.0).await;
    assert_eq!(h.review(&review).await["allowed"], true);

    // Back to enforce with a stricter UID floor.
    config.write(&[("policy.yaml", "mode: enforce\nchecks:\n  runAsUser:\n    minUid: 20000\n")]);
    h.wait_for_metric(r#"podgate_config_reloads_total{result="success"}"#, 2.0).await;
    let response = h.review(&fixture("pod-create.json")).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(response["status"]["message"].as_str().unwrap().contains("runAsUser"), "{response}");
    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"podgate_admission_requests_total{kind="Pod",operation="CREATE",decision="warned",mode="audit",dry_run="false"}"#
        ),
        Some(3.0)
    );
}

/// A certificate whose `notBefore` is still ahead (clock skew between its
/// issuer and the node) is served, at start-up and on rotation, with a
/// warning in the log; clients whose clock has reached `notBefore` use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_not_valid_yet_is_served_with_a_warning() {
    let ca = TestCa::new();
    let early = ca.leaf_valid_in("podgate-early", 1);
    let mut certs = Mount::new(&[("tls.crt", &early.cert_pem), ("tls.key", &early.key_pem)]);
    let (cert, key) = (certs.path("tls.crt").display().to_string(), certs.path("tls.key").display().to_string());
    let mut server = ServerProcess::spawn(&["--tls-cert", &cert, "--tls-key", &key, "--cert-reload-interval", "1h"]);

    // Not valid yet for a client with the right clock: the test is real.
    let now = client(&ca.pem, false);
    assert!(post_with_result(&now, &server.url(), &fixture("pod-create.json")).await.is_err());
    // A client whose clock is two days ahead gets answers.
    let ahead = client_with_clock_ahead(&ca.pem, Duration::from_secs(2 * 86_400));
    let (status, answer) = post_with(&ahead, &server.url(), fixture("pod-create.json").to_string()).await;
    assert_eq!((status, &answer["response"]["allowed"]), (200, &serde_json::Value::Bool(true)), "{answer}");

    let warnings = |server: &mut ServerProcess| -> Vec<serde_json::Value> {
        server.logs().into_iter().filter(|e| e["level"] == "WARN" && e["not_before"].is_string()).collect()
    };
    let first = warnings(&mut server);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0]["message"].as_str().unwrap().contains("not valid yet"), "{first:?}");
    assert_eq!(first[0]["cert"], cert.as_str());
    let seconds_early = first[0]["seconds_early"].as_i64().unwrap();
    assert!((86_000..=86_400).contains(&seconds_early), "{first:?}");
    let not_before = first[0]["not_before"].as_str().unwrap();
    assert!(not_before.ends_with('Z') && not_before.len() == "2026-12-03T06:00:00Z".len(), "{not_before}");

    // Rotated to another early certificate: taken (counted as a success), and warned about.
    let later = ca.leaf_valid_in("podgate-later", 2);
    certs.write(&[("tls.crt", &later.cert_pem), ("tls.key", &later.key_pem)]);
    server.signal("HUP");
    let ahead = client_with_clock_ahead(&ca.pem, Duration::from_secs(3 * 86_400));
    eventually("the rotated certificate", || {
        let request = now.get(format!("http://{}/metrics", server.metrics));
        async move {
            let text = request.send().await.unwrap().text().await.unwrap();
            metric_value(&text, r#"podgate_tls_reloads_total{result="success"}"#) == Some(1.0)
        }
    })
    .await;
    let (status, _) = post_with(&ahead, &server.url(), fixture("pod-create.json").to_string()).await;
    assert_eq!(status, 200);
    eventually("the second warning", || {
        let count = warnings(&mut server).len();
        async move { count == 2 }
    })
    .await;
}

async fn post_with_result(client: &reqwest::Client, url: &str, review: &serde_json::Value) -> Result<u16, String> {
    match client.post(url).header("content-type", "application/json").body(review.to_string()).send().await {
        Ok(response) => Ok(response.status().as_u16()),
        Err(e) => Err(format!("{e:?}")),
    }
}
