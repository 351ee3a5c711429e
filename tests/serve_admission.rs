//! `podgate serve` over real TLS and real HTTP: verdicts, operation rules,
//! exemptions, bad input, metrics and health.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allows_a_compliant_pod_over_http1_and_http2() {
    let h = start(&[]).await;
    let review = fixture("pod-create.json");
    let response = h.review(&review).await;
    assert_eq!(response, json!({"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": true}));

    let h2 = client(&h.ca.pem, true);
    let answer =
        h2.post(&h.url).header("content-type", "application/json").body(review.to_string()).send().await.unwrap();
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["response"]["allowed"], true);

    // The same connection serves many reviews (keep-alive).
    for i in 0..5 {
        let response = h.review(&with_uid(review.clone(), &format!("keep-alive-{i}"))).await;
        assert_eq!(response["allowed"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denies_with_403_and_every_finding() {
    let h = start(&[]).await;
    let response = h.review(&fixture("pod-create-noncompliant.json")).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"], json!({"code": 403, "reason": "Forbidden", "message": ROOT_POD_DENIAL}));
    assert!(response.get("warnings").is_none(), "{response}");
    assert_eq!(
        response["auditAnnotations"]["violations"],
        "runAsNonRoot/deny spec.containers[0].securityContext.runAsNonRoot, allowPrivilegeEscalation/deny spec.containers[0].securityContext.allowPrivilegeEscalation, livenessProbe/deny spec.containers[0].livenessProbe, readinessProbe/deny spec.containers[0].readinessProbe"
    );

    // Workloads are evaluated at their pod template's path.
    let response = h.review(&fixture("cronjob-create-noncompliant.json")).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("runAsUser=0 (container \"job\" must not set securityContext.runAsUser=0)"), "{message}");
    let annotation = response["auditAnnotations"]["violations"].as_str().unwrap();
    assert!(annotation.contains("spec.jobTemplate.spec.template.spec.containers[0].securityContext.runAsUser"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_windows_host_process_pod_without_asking_for_linux_fields() {
    let h = start(&[]).await;
    let response = h.review(&fixture("pod-create-windows-hostprocess.json")).await;
    assert_eq!(response["allowed"], false);
    // Only the Windows risk: no allowPrivilegeEscalation or runAsUser, which
    // the API refuses on a Windows pod.
    assert_eq!(
        response["status"]["message"],
        "hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)"
    );
    assert_eq!(
        response["auditAnnotations"]["violations"],
        "allowPrivilegeEscalation/deny spec.securityContext.windowsOptions.hostProcess"
    );

    // The same pod without HostProcess is admitted.
    let mut review = fixture("pod-create-windows-hostprocess.json");
    review["request"]["object"]["spec"]["securityContext"]["windowsOptions"]["hostProcess"] = json!(false);
    assert_eq!(h.review(&review).await["allowed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allows_user_namespaced_root_pod_unless_the_policy_enforces_inside_user_namespaces() {
    // hostUsers: false, runAsUser 0 at pod and container level, runAsNonRoot
    // false: admitted, as Pod Security Admission admits it.
    let review = fixture("pod-create-user-namespace.json");
    let root_findings = [
        "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false, or container \"app\" must set securityContext.runAsNonRoot=true)",
        "runAsUser=0 (pod must not set securityContext.runAsUser=0)",
        "runAsUser=0 (container \"app\" must not set securityContext.runAsUser=0)",
    ]
    .join("; ");
    let h = start(&[]).await;
    assert_eq!(h.review(&review).await, json!({"uid": "4f7d2c90-3b1e-4d8a-a6f1-7c2e9b0d5a13", "allowed": true}));
    // hostUsers: true is the host's user namespace: the host's root, denied.
    let mut host = review.clone();
    host["request"]["object"]["spec"]["hostUsers"] = json!(true);
    let response = h.review(&host).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["message"], root_findings.as_str());

    let config = Mount::new(&[(
        "policy.yaml",
        "checks:\n  runAsNonRoot:\n    userNamespaces: enforce\n  runAsUser:\n    userNamespaces: enforce\n",
    )]);
    let path = config.path("policy.yaml").display().to_string();
    let strict = start(&["--config", &path]).await;
    let response = strict.review(&review).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["message"], root_findings.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_allows_with_warnings_and_audit_annotations() {
    let config = Mount::new(&[("policy.yaml", "mode: audit\nchecks:\n  readinessProbe:\n    action: warn\n")]);
    let path = config.path("policy.yaml").display().to_string();
    let h = start(&["--config", &path]).await;
    let response = h.review(&fixture("pod-create-noncompliant.json")).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("status").is_none(), "{response}");
    assert_eq!(
        response["warnings"],
        json!([
            "would deny (audit mode): runAsNonRoot != true (pod or container \"app\" must set securityContext.runAsNonRoot=true)",
            "would deny (audit mode): allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false)",
            "would deny (audit mode): livenessProbe missing (container \"app\" must set livenessProbe)",
            "readinessProbe missing (container \"app\" must set readinessProbe)",
        ])
    );
    assert_eq!(
        response["auditAnnotations"]["violations"],
        "runAsNonRoot/audit spec.containers[0].securityContext.runAsNonRoot, allowPrivilegeEscalation/audit spec.containers[0].securityContext.allowPrivilegeEscalation, livenessProbe/audit spec.containers[0].livenessProbe, readinessProbe/warn spec.containers[0].readinessProbe"
    );
    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"podgate_admission_requests_total{kind="Pod",operation="CREATE",decision="warned",mode="audit",dry_run="false"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, r#"podgate_policy_violations_total{check="runAsNonRoot",action="audit"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, r#"podgate_policy_violations_total{check="readinessProbe",action="warn"}"#),
        Some(1.0)
    );

    // --mode overrides the file.
    let enforced = start(&["--config", &path, "--mode", "enforce"]).await;
    let response = enforced.review(&fixture("pod-create-noncompliant.json")).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["warnings"], json!(["readinessProbe missing (container \"app\" must set readinessProbe)"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_findings_stay_within_the_warning_limits() {
    let h = start(&["--mode", "audit"]).await;
    let mut review = fixture("pod-create-noncompliant.json");
    let containers: Vec<Value> =
        (0..200).map(|i| json!({"name": format!("container-with-a-long-name-{i:03}-{}", "x".repeat(150))})).collect();
    review["request"]["object"]["spec"]["containers"] = Value::from(containers);
    let response = h.review(&review).await;
    assert_eq!(response["allowed"], true);
    let warnings: Vec<&str> = response["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert!(warnings.iter().all(|w| w.chars().count() < 256), "{warnings:?}");
    assert!(warnings.iter().map(|w| w.len()).sum::<usize>() < 4096);
    assert!(warnings.last().unwrap().ends_with("more findings not shown (see the audit annotations)"), "{warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_is_evaluated_only_when_the_pod_template_changed() {
    let h = start(&[]).await;
    // Scaling a non-compliant Deployment: template unchanged, allowed, nothing said.
    let response = h.review(&fixture("deployment-update-scale.json")).await;
    assert_eq!(response, json!({"uid": "22222222-0000-0000-0000-000000000002", "allowed": true}));
    // Relabelling a running non-compliant Pod: allowed.
    assert_eq!(h.review(&fixture("pod-update-labels-noncompliant.json")).await["allowed"], true);
    // Changing the template (a new image) is evaluated.
    let response = h.review(&fixture("deployment-update-template.json")).await;
    assert_eq!(response["allowed"], false);
    assert!(response["status"]["message"].as_str().unwrap().starts_with("runAsNonRoot != true"));

    let metrics = h.metrics().await;
    for (decision, count) in [("allowed", 1.0), ("denied", 1.0)] {
        let series = format!(
            r#"podgate_admission_requests_total{{kind="Deployment",operation="UPDATE",decision="{decision}",mode="enforce",dry_run="false"}}"#
        );
        assert_eq!(metric_value(&metrics, &series), Some(count), "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_connect_and_other_subresources_are_allowed() {
    let h = start(&[]).await;
    for name in ["pod-delete.json", "pod-exec-connect.json", "pod-status-update.json"] {
        let review = fixture(name);
        let response = h.review(&review).await;
        assert_eq!(response, json!({"uid": review["request"]["uid"], "allowed": true}), "{name}");
    }
    let metrics = h.metrics().await;
    for (kind, operation) in [("Pod", "DELETE"), ("other", "CONNECT"), ("Pod", "UPDATE")] {
        let series = format!(
            r#"podgate_admission_requests_total{{kind="{kind}",operation="{operation}",decision="allowed",mode="enforce",dry_run="false"}}"#
        );
        assert_eq!(metric_value(&metrics, &series), Some(1.0), "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_containers_subresource_checks_only_the_ephemeral_containers() {
    let h = start(&[]).await;
    let response = h.review(&fixture("pod-ephemeralcontainers.json")).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(
        response["status"]["message"],
        "runAsNonRoot != true (pod or ephemeral container \"debugger\" must set securityContext.runAsNonRoot=true); allowPrivilegeEscalation != false (ephemeral container \"debugger\" must set securityContext.allowPrivilegeEscalation=false)"
    );
    // A compliant debug container is allowed.
    let mut review = fixture("pod-ephemeralcontainers.json");
    review["request"]["object"]["spec"]["ephemeralContainers"][0]["securityContext"] =
        json!({"runAsNonRoot": true, "runAsUser": 10001, "allowPrivilegeEscalation": false});
    assert_eq!(h.review(&review).await["allowed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_gets_the_same_verdict_and_is_labelled() {
    let h = start(&[]).await;
    let mut review = fixture("pod-create-noncompliant.json");
    review["request"]["dryRun"] = Value::Bool(true);
    let response = h.review(&review).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["message"], ROOT_POD_DENIAL);
    assert_eq!(
        h.metric(
            r#"podgate_admission_requests_total{kind="Pod",operation="CREATE",decision="denied",mode="enforce",dry_run="true"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemptions_allow_and_are_counted_with_their_reason() {
    let config = Mount::new(&[(
        "policy.yaml",
        "exemptions:\n- namespaces: [kube-system]\n  reason: cluster components\n- usernames: [ci-bot]\n  checks: [livenessProbe, readinessProbe]\n  reason: probes come later\n",
    )]);
    let path = config.path("policy.yaml").display().to_string();
    let h = start(&["--config", &path]).await;

    let mut system = fixture("pod-create-noncompliant.json");
    system["request"]["namespace"] = Value::from("kube-system");
    let response = h.review(&system).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(
        response["auditAnnotations"],
        json!({"exemption": "cluster components", "exemptionRules": "exemptions[0]"})
    );

    let mut ci = fixture("pod-create-noncompliant.json");
    ci["request"]["userInfo"]["username"] = Value::from("ci-bot");
    let response = h.review(&ci).await;
    assert_eq!(response["allowed"], false, "a partial exemption leaves the other checks");
    assert!(!response["status"]["message"].as_str().unwrap().contains("Probe"), "{response}");
    assert_eq!(response["auditAnnotations"]["exemption"], "probes come later");

    let metrics = h.metrics().await;
    let series = r#"podgate_exemptions_total{rule="exemptions[0]",effect="exempt",reason="cluster components"}"#;
    assert_eq!(metric_value(&metrics, series), Some(1.0));
    let series = r#"podgate_exemptions_total{rule="exemptions[1]",effect="exempt",reason="probes come later"}"#;
    assert_eq!(metric_value(&metrics, series), Some(1.0));
    assert_eq!(
        metric_value(
            &metrics,
            r#"podgate_admission_requests_total{kind="Pod",operation="CREATE",decision="exempt",mode="enforce",dry_run="false"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_error_and_is_counted() {
    let h = start(&["--max-body-bytes", "65536"]).await;
    let v1 =
        |request: Value| json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("not JSON", b"apiVersion: admission.k8s.io/v1".to_vec(), 400, "not valid JSON"),
        ("truncated JSON", br#"{"apiVersion": "admission.k8s.io/v1", "request": {"#.to_vec(), 400, "not valid JSON"),
        ("invalid UTF-8", b"{\"kind\": \"\xff\xfe\"}".to_vec(), 400, "not valid JSON"),
        ("a JSON array", b"[1, 2]".to_vec(), 400, "not an admission.k8s.io/v1 AdmissionReview"),
        ("another kind", br#"{"apiVersion": "v1", "kind": "Pod"}"#.to_vec(), 400, "expected \\\"AdmissionReview\\\""),
        (
            "v1beta1",
            br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "u"}}"#
                .to_vec(),
            400,
            "admission.k8s.io/v1beta1",
        ),
        (
            "no request",
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#.to_vec(),
            400,
            "request is missing",
        ),
        ("no uid", v1(json!({"operation": "CREATE"})).to_string().into_bytes(), 400, "request.uid"),
        (
            "wrong field type",
            v1(json!({"uid": "u", "object": {"spec": {"containers": 5}}})).to_string().into_bytes(),
            400,
            "invalid type",
        ),
        (
            "duplicated key",
            v1(json!({"uid": "u"}))
                .to_string()
                .replace(r#""uid":"u""#, r#""uid":"u","object":{"spec":{"containers":[],"containers":[]}}"#)
                .into_bytes(),
            400,
            "duplicate field",
        ),
        ("too large", vec![b' '; 70_000], 413, "65536 bytes"),
    ];
    for (what, body, status, detail) in &cases {
        let (got, answer) = h.post(body.clone()).await;
        assert_eq!(got, *status, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_else(|| panic!("{what}: {answer}"));
        assert!(answer.to_string().contains(detail), "{what}: {error}");
    }

    // A chunked body (no Content-Length) over the limit is cut off too.
    let mut stream = tls_connect(h.server.webhook_addr(), &h.ca.pem).await;
    let head = "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunk = format!("{:x}\r\n{}\r\n", 40_000, " ".repeat(40_000));
    tokio::io::AsyncWriteExt::write_all(&mut stream, format!("{head}{chunk}{chunk}0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (status, answer) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{answer}");

    // Wrong method, wrong path, wrong content type.
    let response = h.client.get(&h.url).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    assert!(response.text().await.unwrap().contains("POST"));
    let response = h.client.post(h.url.replace("/validate", "/mutate")).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 404);
    let json: Value = response.json().await.unwrap();
    assert!(json["error"].as_str().unwrap().contains("/validate"));
    let response = h
        .client
        .post(&h.url)
        .header("content-type", "text/plain")
        .body(fixture_bytes("pod-create.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    // Counted by reason, and the server kept serving.
    let metrics = h.metrics().await;
    for (reason, count) in [
        ("not_json", 3.0),
        ("not_admission_review", 5.0),
        ("unsupported_api_version", 1.0),
        ("missing_uid", 1.0),
        ("too_large", 2.0),
        ("method_not_allowed", 1.0),
        ("not_found", 1.0),
        ("unsupported_media_type", 1.0),
        ("timeout", 0.0),
    ] {
        let series = format!(r#"podgate_invalid_requests_total{{reason="{reason}"}}"#);
        assert_eq!(metric_value(&metrics, &series), Some(count), "{series}");
    }
    assert_eq!(h.review(&fixture("pod-create.json")).await["allowed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_traffic_have_exact_values_and_pass_promtool() {
    let h = start(&[]).await;
    for i in 0..3 {
        h.review(&with_uid(fixture("pod-create.json"), &format!("good-{i}"))).await;
    }
    for i in 0..2 {
        h.review(&with_uid(fixture("pod-create-noncompliant.json"), &format!("bad-{i}"))).await;
    }
    let mut dry = fixture("pod-create-noncompliant.json");
    dry["request"]["dryRun"] = Value::Bool(true);
    h.review(&dry).await;
    let mut exempt = fixture("pod-create-noncompliant.json");
    exempt["request"]["namespace"] = Value::from("kube-system");
    h.review(&exempt).await;
    h.review(&fixture("pod-delete.json")).await;
    h.review(&fixture("deployment-update-template.json")).await;
    h.post("{").await;

    let text = h.metrics().await;
    let requests = |kind: &str, operation: &str, decision: &str, dry_run: &str| {
        metric_value(
            &text,
            &format!(
                r#"podgate_admission_requests_total{{kind="{kind}",operation="{operation}",decision="{decision}",mode="enforce",dry_run="{dry_run}"}}"#
            ),
        )
    };
    assert_eq!(requests("Pod", "CREATE", "allowed", "false"), Some(3.0));
    assert_eq!(requests("Pod", "CREATE", "denied", "false"), Some(2.0));
    assert_eq!(requests("Pod", "CREATE", "denied", "true"), Some(1.0));
    assert_eq!(requests("Pod", "CREATE", "exempt", "false"), Some(1.0));
    assert_eq!(requests("Pod", "DELETE", "allowed", "false"), Some(1.0));
    assert_eq!(requests("Deployment", "UPDATE", "denied", "false"), Some(1.0));
    assert_eq!(requests("Pod", "CREATE", "warned", "false"), None);
    for check in ["runAsNonRoot", "allowPrivilegeEscalation", "livenessProbe", "readinessProbe"] {
        let series = format!(r#"podgate_policy_violations_total{{check="{check}",action="deny"}}"#);
        assert_eq!(metric_value(&text, &series), Some(4.0), "{series}");
    }
    assert_eq!(metric_value(&text, r#"podgate_policy_violations_total{check="runAsUser",action="deny"}"#), None);
    assert_eq!(
        metric_value(
            &text,
            r#"podgate_exemptions_total{rule="exemptions[0]",effect="exempt",reason="kube-system is managed by the cluster operator"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric_value(&text, r#"podgate_invalid_requests_total{reason="not_json"}"#), Some(1.0));
    assert_eq!(metric_value(&text, r#"podgate_admission_request_duration_seconds_count{kind="Pod"}"#), Some(8.0));
    assert_eq!(
        metric_value(&text, r#"podgate_admission_request_duration_seconds_bucket{le="+Inf",kind="Pod"}"#),
        Some(8.0)
    );
    assert_eq!(
        metric_value(&text, r#"podgate_admission_request_duration_seconds_count{kind="Deployment"}"#),
        Some(1.0)
    );
    assert_eq!(metric_value(&text, "podgate_overload_rejections_total"), Some(0.0));
    assert_eq!(metric_value(&text, r#"podgate_tls_reloads_total{result="success"}"#), Some(0.0));
    assert_eq!(metric_value(&text, "podgate_tls_certificate_expiry_timestamp_seconds"), Some(new_year(2090) as f64));
    assert_eq!(
        metric_value(&text, &format!(r#"podgate_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"))),
        Some(1.0)
    );
    // Low cardinality: no namespace, name or user ever becomes a label.
    for value in ["team-a", "legacy-app", "alice", "prod", "705ab4f5"] {
        assert!(!text.contains(value), "{value} leaked into the metrics");
    }

    if promtool_available() {
        promtool_check(&text);
    }

    // Prometheus asks for OpenMetrics and gets it.
    let openmetrics = h
        .client
        .get(h.ops_url("/metrics"))
        .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
        .send()
        .await
        .unwrap();
    assert!(openmetrics.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let openmetrics = openmetrics.text().await.unwrap();
    assert!(openmetrics.ends_with("# EOF\n"));
    assert!(openmetrics.contains("# TYPE podgate_admission_requests counter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let h = start(&[]).await;
    let healthz = h.get("/healthz").await;
    assert_eq!(healthz.status(), 200);
    let readyz = h.get("/readyz").await;
    assert_eq!(readyz.status(), 200);
    assert_eq!(h.get("/nope").await.status(), 404);

    h.server.begin_shutdown();
    let readyz = h.get("/readyz").await;
    assert_eq!(readyz.status(), 503);
    assert_eq!(h.get("/healthz").await.status(), 200);
    assert_eq!(h.server.wait().await, podgate::server::Shutdown::Drained);
}
