//! Hostile input over real TLS against the real server: broken and
//! malicious bodies, absurd sizes, wrong methods and content types, garbage
//! instead of TLS, and clients that stall. Each case asserts the exact
//! outcome (status and error, or verdict), that it is over within [`BOUND`],
//! and that a well-behaved client on another connection got correct answers
//! meanwhile.
//!
//! Static bodies are in `tests/fixtures/hostile/`; the big ones are made here.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long one hostile request may take to be answered or cut off: no
/// speed claim, only "not hung", generous for a loaded 2-core machine
/// running the debug build.
const BOUND: Duration = Duration::from_secs(20);

/// Tests that allocate a lot in this process (the server is in-process)
/// take turns, so that the 50 MB test measures its own memory only.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `attack` while a well-behaved client sends mixed reviews on its own
/// keep-alive connection. Fails the test if the attack is not over within
/// [`BOUND`] or if any of the client's reviews got a wrong answer or none.
/// Returns the attack's result and how many reviews the client had answered
/// correctly while the attack ran.
async fn meanwhile<T>(h: &Harness, what: &str, attack: impl Future<Output = T>) -> (T, usize) {
    meanwhile_sending(h, mixed_reviews(), what, attack).await
}

/// [`meanwhile`] with the well-behaved client sending `reviews` (for a
/// server whose policy is not the default, only compliant ones).
async fn meanwhile_sending<T>(
    h: &Harness,
    reviews: std::sync::Arc<[ReviewTemplate]>,
    what: &str,
    attack: impl Future<Output = T>,
) -> (T, usize) {
    let bystander =
        Traffic::start_sending(client(&h.ca.pem, false), h.url.clone(), "bystander", TrafficLog::new(), reviews);
    bystander.wait_for_more(1).await;
    let before = bystander.ok();
    let started = Instant::now();
    let result =
        tokio::time::timeout(BOUND, attack).await.unwrap_or_else(|_| panic!("{what}: not over within {BOUND:?}"));
    let elapsed = started.elapsed();
    let during = bystander.ok() - before;
    bystander.wait_for_more(1).await;
    bystander.stop_and_check(what).await;
    eprintln!("{what}: over in {elapsed:.2?}, {during} reviews answered meanwhile");
    (result, during)
}

/// The `podgate_invalid_requests_total` counters, by reason.
async fn invalid_counts(h: &Harness) -> BTreeMap<String, f64> {
    let text = h.metrics().await;
    text.lines()
        .filter_map(|line| line.strip_prefix(r#"podgate_invalid_requests_total{reason=""#))
        .filter_map(|rest| rest.split_once("\"} "))
        .map(|(reason, value)| (reason.to_owned(), value.parse().unwrap()))
        .collect()
}

/// Asserts that the counters grew by exactly `expected` since `before`.
async fn assert_counted(h: &Harness, before: &BTreeMap<String, f64>, expected: &[(&str, f64)]) {
    let after = invalid_counts(h).await;
    for (reason, count) in &after {
        let grew = count - before.get(reason).copied().unwrap_or(0.0);
        let want = expected.iter().filter(|(r, _)| r == reason).map(|(_, n)| n).sum::<f64>();
        assert_eq!(grew, want, "podgate_invalid_requests_total{{reason=\"{reason}\"}}");
    }
}

enum Expect {
    /// HTTP status, metric reason, the exact `error`.
    Error(u16, &'static str, &'static str),
    /// The exact `response` of an HTTP 200 answer.
    Verdict(Value),
}

fn allowed() -> Expect {
    Expect::Verdict(json!({"uid": "hostile", "allowed": true}))
}

fn denied(message: &str, violations: &str) -> Expect {
    Expect::Verdict(json!({
        "uid": "hostile",
        "allowed": false,
        "status": {"code": 403, "reason": "Forbidden", "message": message},
        "auditAnnotations": {"violations": violations},
    }))
}

/// What each file in `tests/fixtures/hostile/` must get.
fn fixture_expectations() -> BTreeMap<&'static str, Expect> {
    use Expect::Error;
    let not_review = "not_admission_review";
    BTreeMap::from([
        // Not JSON at all.
        ("empty-body.json", Error(400, "not_json", "request body is not valid JSON: EOF while parsing a value at line 1 column 0")),
        ("truncated.json", Error(400, "not_json", "request body is not valid JSON: EOF while parsing a string at line 1 column 370")),
        ("truncated-in-string.json", Error(400, "not_json", "request body is not valid JSON: EOF while parsing a string at line 1 column 438")),
        ("invalid-utf8.json", Error(400, "not_json", "request body is not valid JSON: invalid UTF-8 at byte 420")),
        // Also in a field podgate does not read: the body is not JSON.
        ("invalid-utf8-in-ignored-field.json", Error(400, "not_json", "request body is not valid JSON: invalid UTF-8 at byte 434")),
        // runAsUser out of range: a denial that says so. Not a whole number,
        // or beyond int64 (not a Kubernetes object at all): a 400.
        ("run-as-user-negative.json", denied(
            "runAsUser=-1 (container \"app\" must set securityContext.runAsUser to a UID >= 1000)",
            "runAsUser/deny spec.containers[0].securityContext.runAsUser",
        )),
        ("run-as-user-above-2-pow-31.json", denied(
            "runAsUser=2147483648 (container \"app\" must set securityContext.runAsUser to a UID from 1000 to 2147483647)",
            "runAsUser/deny spec.containers[0].securityContext.runAsUser",
        )),
        ("run-as-user-above-i64.json", Error(400, not_review, "request body is not an admission.k8s.io/v1 AdmissionReview: invalid type: floating point `1.8446744073709552e+19`, expected i64 at line 1 column 683")),
        ("run-as-user-float.json", Error(400, not_review, "request body is not an admission.k8s.io/v1 AdmissionReview: invalid type: floating point `1000.5`, expected i64 at line 1 column 669")),
        ("run-as-user-exponent.json", Error(400, not_review, "request body is not an admission.k8s.io/v1 AdmissionReview: invalid type: floating point `10000.0`, expected i64 at line 1 column 666")),
        ("run-as-user-string.json", Error(400, not_review, "request body is not an admission.k8s.io/v1 AdmissionReview: invalid type: string \"10001\", expected i64 at line 1 column 670")),
        ("run-as-user-bool.json", Error(400, not_review, "request body is not an admission.k8s.io/v1 AdmissionReview: invalid type: boolean `true`, expected i64 at line 1 column 667")),
        // A key twice in anything podgate reads has no single meaning.
        ("duplicate-request.json", Error(400, not_review, "request body is not an admission.k8s.io/v1 AdmissionReview: duplicate field `request` at line 1 column 749")),
        ("duplicate-uid.json", Error(400, not_review, "request body is not an admission.k8s.io/v1 AdmissionReview: duplicate field `uid` at line 1 column 93")),
        ("duplicate-object.json", Error(400, not_review, "request body is not an admission.k8s.io/v1 AdmissionReview: duplicate field `object` at line 1 column 715")),
        ("duplicate-containers.json", Error(400, not_review, "request body is not an admission.k8s.io/v1 AdmissionReview: duplicate field `containers` at line 1 column 425")),
        ("duplicate-run-as-non-root.json", Error(400, not_review, "request body is not an admission.k8s.io/v1 AdmissionReview: duplicate field `runAsNonRoot` at line 1 column 665")),
        // null where an object is expected: as if absent, and judged.
        ("null-spec.json", allowed()),
        ("null-object.json", allowed()),
        ("null-containers.json", allowed()),
        ("null-metadata-and-user.json", allowed()),
        ("null-security-context.json", denied(
            "runAsNonRoot != true (pod or container \"app\" must set securityContext.runAsNonRoot=true); allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false)",
            "runAsNonRoot/deny spec.containers[0].securityContext.runAsNonRoot, allowPrivilegeEscalation/deny spec.containers[0].securityContext.allowPrivilegeEscalation",
        )),
        ("null-probes.json", denied(
            "livenessProbe missing (container \"app\" must set livenessProbe); readinessProbe missing (container \"app\" must set readinessProbe)",
            "livenessProbe/deny spec.containers[0].livenessProbe, readinessProbe/deny spec.containers[0].readinessProbe",
        )),
        // The envelope.
        ("wrong-api-version.json", Error(400, "unsupported_api_version", "unsupported AdmissionReview apiVersion \"admission.k8s.io/v2\": podgate answers admission.k8s.io/v1 only (set admissionReviewVersions: [\"v1\"])")),
        ("missing-api-version.json", Error(400, "unsupported_api_version", "unsupported AdmissionReview apiVersion \"\": podgate answers admission.k8s.io/v1 only (set admissionReviewVersions: [\"v1\"])")),
        ("numeric-api-version.json", Error(400, not_review, "request body is not an admission.k8s.io/v1 AdmissionReview: invalid type: integer `1`, expected a string at line 1 column 15")),
        ("missing-request.json", Error(400, not_review, "request body is not an admission.k8s.io/v1 AdmissionReview: request is missing")),
        ("null-request.json", Error(400, not_review, "request body is not an admission.k8s.io/v1 AdmissionReview: request is missing")),
        ("request-is-an-array.json", Error(400, "missing_uid", "request.uid is missing or empty: it is needed to answer the review")),
        ("empty-object.json", Error(400, not_review, "request body is not an admission.k8s.io/v1 AdmissionReview: kind is missing")),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_fixture_gets_its_exact_answer() {
    let h = start(&[]).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    let expectations = fixture_expectations();
    let mut files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    let expected_files: Vec<String> = expectations.keys().map(|name| name.to_string()).collect();
    assert_eq!(files, expected_files, "every fixture needs an expectation, every expectation a fixture");

    let before = invalid_counts(&h).await;
    let mut reasons = Vec::new();
    for (name, expect) in &expectations {
        let body = std::fs::read(dir.join(name)).unwrap();
        let ((status, answer), _) = meanwhile(&h, name, h.post(body)).await;
        match expect {
            Expect::Error(code, reason, error) => {
                assert_eq!((status, &answer), (*code, &json!({ "error": error })), "{name}");
                reasons.push((*reason, 1.0));
            }
            Expect::Verdict(response) => {
                assert_eq!(status, 200, "{name}: {answer}");
                assert_eq!(answer["response"], *response, "{name}");
            }
        }
    }
    assert_counted(&h, &before, &reasons).await;
}

/// `depth` nested values: arrays (`[[...]]`) or objects (`{"a":{"a":...}}`).
fn nested(depth: usize, objects: bool) -> String {
    if objects {
        format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
    } else {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }
}

/// A minimal compliant Pod review with `object`, as JSON text.
fn pod_review(uid: &str, object: &str) -> String {
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"{uid}","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},"namespace":"team-a","operation":"CREATE","userInfo":{{"username":"alice"}},"object":{object}}}}}"#
    )
}

/// A container that passes every check, as JSON text.
fn good_container(name: &str) -> String {
    format!(
        r#"{{"name":{},"securityContext":{{"runAsNonRoot":true,"runAsUser":10001,"allowPrivilegeEscalation":false}},"livenessProbe":{{"tcpSocket":{{"port":8080}}}},"readinessProbe":{{"tcpSocket":{{"port":8080}}}}}}"#,
        Value::from(name)
    )
}

/// serde_json refuses more than 128 levels where it decodes, but skips
/// unknown fields with a loop and a byte per level: nesting there costs no
/// stack, so it is judged like any other content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_nested_10000_deep_is_answered_without_recursion() {
    let _heavy = HEAVY.lock().await;
    let h = start(&[]).await;
    let deep_arrays = nested(10_000, false);
    let deep_objects = nested(10_000, true);
    let pod =
        |metadata: &str| format!(r#"{{"metadata":{metadata},"spec":{{"containers":[{}]}}}}"#, good_container("app"));
    let not_review = "request body is not an admission.k8s.io/v1 AdmissionReview: ";
    let cases = [
        (
            "the whole body, objects",
            deep_objects.clone(),
            Err(("not_admission_review", format!("{not_review}kind is missing"))),
        ),
        (
            "never closed",
            r#"{"a":"#.repeat(10_000),
            Err((
                "not_json",
                "request body is not valid JSON: EOF while parsing a value at line 1 column 50000".to_owned(),
            )),
        ),
        // An AdmissionReview is no array: refused at the first element.
        (
            "the whole body, arrays",
            deep_arrays.clone(),
            Err((
                "not_admission_review",
                format!("{not_review}invalid type: sequence, expected a string at line 1 column 1"),
            )),
        ),
        (
            "in a field podgate reads",
            pod_review("deep", &pod(&format!(r#"{{"name":{deep_arrays}}}"#))),
            Err((
                "not_admission_review",
                format!("{not_review}invalid type: sequence, expected a string at line 1 column 293"),
            )),
        ),
        ("in a field podgate skips", pod_review("deep", &pod(&format!(r#"{{"labels":{deep_objects}}}"#))), Ok(())),
        (
            "in oldObject",
            pod_review("deep", &pod("{}")).replace(r#""object":"#, &format!(r#""oldObject":{deep_objects},"object":"#)),
            Ok(()),
        ),
        // Deeper still, within the body limit: no stack to overflow.
        (
            "1,000,000 deep in a skipped field",
            pod_review("deep", &pod(&format!(r#"{{"labels":{}}}"#, nested(1_000_000, false)))),
            Ok(()),
        ),
    ];
    let before = invalid_counts(&h).await;
    let mut reasons = Vec::new();
    for (what, body, expected) in cases {
        let ((status, answer), _) = meanwhile(&h, what, h.post(body)).await;
        match expected {
            Ok(()) => {
                assert_eq!((status, &answer["response"]), (200, &json!({"uid": "deep", "allowed": true})), "{what}")
            }
            Err((reason, error)) => {
                assert_eq!((status, &answer), (400, &json!({ "error": error })), "{what}");
                reasons.push((reason, 1.0));
            }
        }
    }
    assert_counted(&h, &before, &reasons).await;
}

/// The current resident set of this process, in KiB.
fn rss_kib() -> u64 {
    proc_status_kib("self", "VmRSS")
}

/// Sends a POST with a body of `total` bytes of spaces, 64 KiB at a time,
/// with a Content-Length or chunked, and reads the answer while sending.
/// Nothing here holds more than one block: whatever memory grows is the
/// server's.
async fn post_huge(addr: SocketAddr, ca_pem: &str, total: usize, chunked: bool) -> (u16, Value) {
    let stream = tls_connect(addr, ca_pem).await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let head = if chunked {
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_owned()
    } else {
        post_head(total)
    };
    let sender = tokio::spawn(async move {
        let block = vec![b' '; 64 * 1024];
        let chunk_head = format!("{:x}\r\n", block.len());
        writer.write_all(head.as_bytes()).await?;
        let mut sent = 0;
        while sent < total {
            if chunked {
                writer.write_all(chunk_head.as_bytes()).await?;
            }
            writer.write_all(&block).await?;
            if chunked {
                writer.write_all(b"\r\n").await?;
            }
            sent += block.len();
        }
        if chunked {
            writer.write_all(b"0\r\n\r\n").await?;
        }
        writer.flush().await?;
        Ok::<usize, std::io::Error>(sent)
    });
    let answer = read_response(&mut reader).await;
    // The server stops reading once it has answered: the sender ends with
    // an error (the connection closed) or stays blocked; either way it is done.
    sender.abort();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_body_gets_413_without_being_buffered() {
    let _heavy = HEAVY.lock().await;
    let h = start(&[]).await;
    let addr = h.server.webhook_addr();
    const FIFTY_MB: usize = 50 * 1000 * 1000;
    let before = invalid_counts(&h).await;
    for chunked in [false, true] {
        let what = if chunked { "50 MB chunked" } else { "50 MB with Content-Length" };
        let baseline = rss_kib();
        // Samples this process's RSS while the body streams in.
        let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = tokio::spawn({
            let sampling = sampling.clone();
            async move {
                let mut peak = 0;
                while sampling.load(std::sync::atomic::Ordering::Acquire) {
                    peak = peak.max(rss_kib());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                peak
            }
        });
        let ((status, answer), _) = meanwhile(&h, what, post_huge(addr, &h.ca.pem, FIFTY_MB, chunked)).await;
        sampling.store(false, std::sync::atomic::Ordering::Release);
        let peak = sampler.await.unwrap();
        assert_eq!(status, 413, "{what}: {answer}");
        assert_eq!(
            answer,
            json!({"error": "request body is larger than the limit of 3670016 bytes (--max-body-bytes)"})
        );
        let grew_mib = peak.saturating_sub(baseline) as f64 / 1024.0;
        eprintln!("{what}: RSS {baseline} KiB before, peak {peak} KiB while sending (+{grew_mib:.1} MiB)");
        assert!(grew_mib < 25.0, "{what}: RSS grew by {grew_mib:.1} MiB: the body was buffered");
    }
    assert_counted(&h, &before, &[("too_large", 2.0)]).await;
}

/// `... and N more WHAT` at the end of a capped list: the shown items and N.
fn capped_list<'a>(text: &'a str, separator: &str, what: &str) -> (Vec<&'a str>, usize) {
    let mut items: Vec<&str> = text.split(separator).collect();
    let summary = items.pop().unwrap();
    let more = summary
        .strip_prefix("... and ")
        .and_then(|rest| rest.strip_suffix(&format!(" more {what}")))
        .unwrap_or_else(|| panic!("no summary at the end: {summary}"));
    (items, more.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_containers_get_a_verdict_within_the_caps() {
    let _heavy = HEAVY.lock().await;
    let config = Mount::new(&[("policy.yaml", "checks:\n  readinessProbe:\n    action: warn\n")]);
    let path = config.path("policy.yaml").display().to_string();
    let h = start(&["--config", &path]).await;
    // Every container misses everything: 4 findings each.
    const N: usize = 10_000;
    let containers: Vec<String> = (0..N).map(|i| format!(r#"{{"name":"c{i}","image":"app:1"}}"#)).collect();
    let object = format!(r#"{{"metadata":{{"name":"many"}},"spec":{{"containers":[{}]}}}}"#, containers.join(","));
    let body = pod_review("many", &object);
    eprintln!("10,000 containers: a {} KiB review", body.len() / 1024);

    let ((status, answer), _) = meanwhile_sending(&h, compliant_reviews(), "10,000 containers", async {
        let response =
            h.client.post(&h.url).header("content-type", "application/json").body(body).send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        assert!(bytes.len() < 40 * 1024, "a {} byte answer", bytes.len());
        (status, serde_json::from_slice::<Value>(&bytes).unwrap())
    })
    .await;
    assert_eq!(status, 200);
    let response = &answer["response"];
    assert_eq!((&response["uid"], &response["allowed"]), (&json!("many"), &json!(false)));
    assert_eq!((&response["status"]["code"], &response["status"]["reason"]), (&json!(403), &json!("Forbidden")));

    // The denial: capped at 16 KiB, check by check, counting the rest.
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.len() <= 16 * 1024, "{}", message.len());
    let (shown, more) = capped_list(message, "; ", "findings");
    assert_eq!(shown.len() + more, 3 * N, "runAsNonRoot, allowPrivilegeEscalation, livenessProbe per container");
    assert_eq!(shown[0], "runAsNonRoot != true (pod or container \"c0\" must set securityContext.runAsNonRoot=true)");
    assert_eq!(shown[1], "runAsNonRoot != true (pod or container \"c1\" must set securityContext.runAsNonRoot=true)");

    // The warnings: each under 256 characters, all under 4 KiB.
    let warnings: Vec<&str> = response["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert!(warnings.iter().all(|w| w.chars().count() < 256));
    assert!(warnings.iter().map(|w| w.len()).sum::<usize>() < 4096);
    assert_eq!(warnings[0], "readinessProbe missing (container \"c0\" must set readinessProbe)");
    let summary = warnings.last().unwrap();
    let more: usize = summary
        .strip_prefix("podgate: ")
        .and_then(|s| s.strip_suffix(" more findings not shown (see the audit annotations)"))
        .unwrap_or_else(|| panic!("{summary}"))
        .parse()
        .unwrap();
    assert_eq!(warnings.len() - 1 + more, N);

    // The audit annotation: capped at 8 KiB.
    let violations = response["auditAnnotations"]["violations"].as_str().unwrap();
    assert!(violations.len() <= 8 * 1024);
    let (shown, more) = capped_list(violations, ", ", "violations");
    assert_eq!(shown.len() + more, 4 * N);
    assert_eq!(shown[0], "runAsNonRoot/deny spec.containers[0].securityContext.runAsNonRoot");

    // Every finding counted.
    let metrics = h.metrics().await;
    for (check, action) in [
        ("runAsNonRoot", "deny"),
        ("allowPrivilegeEscalation", "deny"),
        ("livenessProbe", "deny"),
        ("readinessProbe", "warn"),
    ] {
        let series = format!(r#"podgate_policy_violations_total{{check="{check}",action="{action}"}}"#);
        assert_eq!(metric_value(&metrics, &series), Some(N as f64), "{series}");
    }
}

const MB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabyte_strings_get_bounded_answers() {
    let _heavy = HEAVY.lock().await;
    let h = start(&[]).await;
    let huge = "x".repeat(MB);
    let pod = |containers: &str| format!(r#"{{"metadata":{{"name":"web"}},"spec":{{"containers":[{containers}]}}}}"#);
    let compliant = pod(&good_container("app"));

    // A 1 MB container name: the denial quotes it, cut to fit the 16 KiB cap.
    let bad_container = format!(r#"{{"name":"{huge}"}}"#);
    let ((status, answer), _) =
        meanwhile(&h, "1 MB container name", h.post(pod_review("long-name", &pod(&bad_container)))).await;
    assert_eq!(status, 200);
    let response = &answer["response"];
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.len() <= 16 * 1024, "{}", message.len());
    assert!(message.starts_with("runAsNonRoot != true (pod or container \"xxxxxxxx"), "{}", &message[..80]);
    assert!(message.ends_with("xxx...; ... and 3 more findings"), "{}", &message[message.len() - 80..]);
    assert_eq!(
        response["auditAnnotations"]["violations"],
        "runAsNonRoot/deny spec.containers[0].securityContext.runAsNonRoot, allowPrivilegeEscalation/deny spec.containers[0].securityContext.allowPrivilegeEscalation, livenessProbe/deny spec.containers[0].livenessProbe, readinessProbe/deny spec.containers[0].readinessProbe"
    );

    // A name made of escapes, which the decoder must unescape into a copy.
    let escaped = format!(r#"{{"name":"{}"}}"#, r"\u0041".repeat(MB / 6));
    let ((status, answer), _) =
        meanwhile(&h, "1 MB of escapes in a name", h.post(pod_review("escapes", &pod(&escaped)))).await;
    assert_eq!(status, 200);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("runAsNonRoot != true (pod or container \"AAAAAAAA") && message.len() <= 16 * 1024);

    // Names, namespace, user and an unknown key of 1 MB change nothing.
    let cases = [
        ("1 MB pod name", compliant.replace(r#""name":"web""#, &format!(r#""name":"{huge}""#))),
        ("1 MB namespace", compliant.replace(r#""name":"web""#, &format!(r#""name":"web","namespace":"{huge}""#))),
        ("1 MB unknown key", compliant.replace(r#""name":"web""#, &format!(r#""name":"web","{huge}":1"#))),
    ];
    for (what, object) in cases {
        let ((status, answer), _) = meanwhile(&h, what, h.post(pod_review(what, &object))).await;
        assert_eq!((status, &answer["response"]), (200, &json!({"uid": what, "allowed": true})), "{what}");
    }
    let user = pod_review("user", &compliant).replace(r#""username":"alice""#, &format!(r#""username":"{huge}""#));
    let ((status, answer), _) = meanwhile(&h, "1 MB username", h.post(user)).await;
    assert_eq!((status, &answer["response"]), (200, &json!({"uid": "user", "allowed": true})));

    // The uid is echoed whole: the apiserver matches the answer by it.
    let ((status, answer), _) = meanwhile(&h, "1 MB uid", h.post(pod_review(&huge, &compliant))).await;
    assert_eq!(status, 200);
    assert!(answer["response"]["uid"] == huge.as_str() && answer["response"]["allowed"] == true);

    // Errors quote the request, cut short.
    let before = invalid_counts(&h).await;
    let version = pod_review("v", &compliant).replacen("admission.k8s.io/v1", &format!("admission.k8s.io/v1{huge}"), 1);
    let kind = pod_review("k", &compliant).replacen(r#""AdmissionReview""#, &format!(r#""{huge}""#), 1);
    for (what, body, starts) in [
        ("1 MB apiVersion", version, "unsupported AdmissionReview apiVersion \"admission.k8s.io/v1xxx"),
        ("1 MB kind", kind, "request body is not an admission.k8s.io/v1 AdmissionReview: kind is \"xxx"),
    ] {
        let ((status, answer), _) = meanwhile(&h, what, h.post(body)).await;
        assert_eq!(status, 400, "{what}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.starts_with(starts) && error.len() < 1024, "{what}: {error}");
    }
    assert_counted(&h, &before, &[("unsupported_api_version", 1.0), ("not_admission_review", 1.0)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_paths_and_content_types() {
    let h = start(&[]).await;
    let review = fixture_bytes("pod-create.json");
    let before = invalid_counts(&h).await;
    let method_error = json!({"error": "method not allowed: send the AdmissionReview with POST"});
    for method in ["GET", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let request = h.client.request(method.parse().unwrap(), &h.url).body(review.clone());
        let (response, _) = meanwhile(&h, method, request.send()).await;
        let response = response.unwrap();
        assert_eq!(
            (response.status().as_u16(), &response.headers()["allow"]),
            (405, &"POST".parse().unwrap()),
            "{method}"
        );
        assert_eq!(response.json::<Value>().await.unwrap(), method_error, "{method}");
    }
    // HEAD: the same status, no body.
    let response = h.client.head(&h.url).send().await.unwrap();
    assert_eq!(response.status(), 405);

    for path in ["/", "/validate/", "/mutate", "/validate/../metrics", "/VALIDATE"] {
        let url = h.url.replace("/validate", path);
        let (status, answer) = meanwhile(&h, path, post_with(&h.client, &url, review.clone())).await.0;
        assert_eq!(status, 404, "{path}");
        assert_eq!(answer, json!({"error": "not found: the admission webhook is served at POST /validate"}), "{path}");
    }

    for content_type in [
        "text/plain",
        "application/yaml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ] {
        let request = h.client.post(&h.url).header("content-type", content_type).body(review.clone());
        let response = meanwhile(&h, content_type, request.send()).await.0.unwrap();
        assert_eq!(response.status(), 415, "{content_type}");
        let expected = format!("unsupported content type {content_type:?}: send application/json");
        assert_eq!(response.json::<Value>().await.unwrap(), json!({ "error": expected }), "{content_type}");
    }
    // A content type that is not even text.
    let binary = reqwest::header::HeaderValue::from_bytes(b"application/\xffjson").unwrap();
    let response = h.client.post(&h.url).header("content-type", binary).body(review.clone()).send().await.unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "unsupported content type \"\": send application/json"})
    );
    // JSON by another name, or no content type at all, is judged.
    for content_type in [Some("application/json; charset=utf-8"), Some("application/merge-patch+json"), None] {
        let mut request = h.client.post(&h.url).body(review.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{content_type:?}");
        assert_eq!(response.json::<Value>().await.unwrap()["response"]["allowed"], true);
    }
    assert_counted(&h, &before, &[("method_not_allowed", 6.0), ("not_found", 5.0), ("unsupported_media_type", 6.0)])
        .await;
}

/// Sends `bytes` over TLS and reads until the server closes the connection:
/// the HTTP status it answered, if any, and everything it sent.
async fn raw_http(addr: SocketAddr, ca_pem: &str, bytes: Vec<u8>) -> (Option<u16>, String) {
    let stream = tls_connect(addr, ca_pem).await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let sender = tokio::spawn(async move {
        let _ = writer.write_all(&bytes).await;
        let _ = writer.flush().await;
        writer
    });
    let received = String::from_utf8_lossy(&read_until_closed(&mut reader).await).to_string();
    sender.abort();
    let status = received.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).and_then(|code| code.parse().ok());
    (status, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_http_is_refused_and_closed() {
    let h = start(&[]).await;
    let addr = h.server.webhook_addr();
    let huge_header = format!("POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n", "b".repeat(MB));
    let many_headers = format!(
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\n{}\r\n",
        (0..10_000).map(|i| format!("X-{i}: v\r\n")).collect::<String>()
    );
    let cases = [
        ("not HTTP", b"HELLO THERE\r\n\r\n".to_vec(), 400),
        ("binary junk", (0..=255u8).cycle().take(4096).collect(), 400),
        ("a 1 MB header", huge_header.into_bytes(), 431),
        ("10,000 headers", many_headers.into_bytes(), 431),
        ("bad Content-Length", b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n{}".to_vec(), 400),
        (
            "bad chunk size",
            b"POST /validate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (what, bytes, expected) in cases {
        let ((status, received), _) = meanwhile(&h, what, raw_http(addr, &h.ca.pem, bytes)).await;
        assert_eq!(status, Some(expected), "{what}: {received}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_tls_handshake_is_closed() {
    let h = start(&["--tls-handshake-timeout", "2s"]).await;
    let addr = h.server.webhook_addr();
    let cases: [(&str, Vec<u8>); 6] = [
        ("random bytes", noise(4096)),
        ("plain HTTP", fixture_bytes("pod-create.json").into_iter().chain(*b"\r\n\r\n").collect()),
        ("64 KiB of zeros", vec![0; 64 * 1024]),
        ("an SSLv2 hello", b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10".to_vec()),
        // A TLS handshake record that announces 16 KiB and sends 5 bytes:
        // the server waits for the rest until the handshake timeout.
        ("a TLS record cut short", b"\x16\x03\x01\x40\x00\x01\x00\x3f\xfc".to_vec()),
        ("a TLS record of noise", [b"\x16\x03\x03\x10\x00".as_slice(), &noise(4096)].concat()),
    ];
    for (what, bytes) in cases {
        let (received, _) = meanwhile(&h, what, garbage_connection(addr, &bytes)).await;
        // Nothing, or a TLS alert record, then the close.
        assert!(received.is_empty() || received[0] == 0x15, "{what}: {received:?}");
    }
    // The server is fine: a new connection does a handshake and is served.
    assert_eq!(served_certificate(addr, &h.ca.pem).await, h.leaf.der);
}

/// A TLS connection to `addr` that negotiated HTTP/2 (ALPN `h2`).
async fn h2_connect(addr: SocketAddr, ca_pem: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls_config(ca_pem, &[b"h2"])));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    stream
}

/// Reads until the server closes `stream`; how long that took from `since`.
async fn closed_after<S: tokio::io::AsyncRead + Unpin>(mut stream: S, since: Instant) -> (Vec<u8>, Duration) {
    let received = read_until_closed(&mut stream).await;
    (received, since.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_by_the_timeouts() {
    let h = start(&["--tls-handshake-timeout", "2s", "--header-read-timeout", "2s", "--idle-timeout", "2s"]).await;
    let addr = h.server.webhook_addr();
    // Busy HTTP/2 traffic is never idle.
    let h2_traffic = Traffic::start(client(&h.ca.pem, true), h.url.clone(), "h2");
    let attack = async {
        // Each clock starts before the server's timer does.
        let opened = Instant::now();
        // Connects and never starts the TLS handshake.
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tcp = closed_after(tcp, opened);
        // HTTP/1.1: completes the handshake and never sends a request.
        let opened = Instant::now();
        let h1 = closed_after(tls_connect(addr, &h.ca.pem).await, opened);
        // HTTP/2: completes the handshake and never sends the preface.
        let opened = Instant::now();
        let h2_mute = closed_after(h2_connect(addr, &h.ca.pem).await, opened);
        // HTTP/2: sends the preface and its SETTINGS, then no request.
        let opened = Instant::now();
        let mut h2 = h2_connect(addr, &h.ca.pem).await;
        h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
        h2.flush().await.unwrap();
        let h2_idle = closed_after(h2, opened);
        tokio::join!(tcp, h1, h2_mute, h2_idle)
    };
    let ((tcp, h1, h2_mute, h2_idle), during) = meanwhile(&h, "silent connections", attack).await;
    // Nothing from the HTTP/1.1 side; HTTP/2 sends its own SETTINGS first.
    assert!(tcp.0.is_empty() && h1.0.is_empty(), "{tcp:?} {h1:?}");
    for (what, (received, after)) in
        [("TCP", &tcp), ("HTTP/1.1", &h1), ("HTTP/2 mute", &h2_mute), ("HTTP/2 idle", &h2_idle)]
    {
        assert!(*after >= Duration::from_millis(1900), "{what}: closed after {after:?}, before the timeout");
        if what.starts_with("HTTP/2") {
            assert_eq!(received.get(3), Some(&4), "{what}: a SETTINGS frame first: {received:?}");
        }
    }
    assert!(during > 0, "no review was answered while the silent connections were open");
    h2_traffic.stop_and_check("HTTP/2 traffic next to idle connections").await;

    // A well-behaved HTTP/2 client idle beyond the timeout reconnects.
    let h2_client = client(&h.ca.pem, true);
    let review = fixture_bytes("pod-create.json");
    assert_eq!(post_with(&h2_client, &h.url, review.clone()).await.0, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(post_with(&h2_client, &h.url, review).await.0, 200);
}

/// An HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

const H2_HEADERS: u8 = 1;
const H2_RST_STREAM: u8 = 3;
const H2_SETTINGS: u8 = 4;
const H2_GOAWAY: u8 = 7;
const H2_CONTINUATION: u8 = 9;
const END_HEADERS: u8 = 4;

/// Sends the HTTP/2 preface, empty SETTINGS and `frames`, reads until the
/// server closes the connection, and returns the frames it sent as
/// `(type, payload)`.
async fn h2_exchange(addr: SocketAddr, ca_pem: &str, frames: Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let stream = h2_connect(addr, ca_pem).await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(h2_frame(H2_SETTINGS, 0, 0, &[]));
    bytes.extend(frames);
    let sender = tokio::spawn(async move {
        // The server may close before it has read everything.
        let _ = writer.write_all(&bytes).await;
        let _ = writer.flush().await;
        writer
    });
    let received = read_until_closed(&mut reader).await;
    sender.abort();
    let mut frames = Vec::new();
    let mut rest = received.as_slice();
    while rest.len() >= 9 {
        let length = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let end = (9 + length).min(rest.len());
        frames.push((rest[3], rest[9..end].to_vec()));
        rest = &rest[end..];
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_floods_get_a_goaway() {
    let h = start(&[]).await;
    let addr = h.server.webhook_addr();
    // HPACK: :method POST, :scheme https, :path /validate, :authority 127.0.0.1.
    let mut request = vec![0x83, 0x87, 0x04, 9];
    request.extend_from_slice(b"/validate");
    request.extend_from_slice(&[0x01, 9]);
    request.extend_from_slice(b"127.0.0.1");

    // Rapid reset (CVE-2023-44487): open a stream and cancel it, 20,000 times.
    let mut rapid_reset = Vec::new();
    for stream in (1..40_000).step_by(2) {
        rapid_reset.extend(h2_frame(H2_HEADERS, END_HEADERS, stream, &request));
        rapid_reset.extend(h2_frame(H2_RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    // CONTINUATION flood: a header block that never ends, 12 MB of it.
    let mut junk = Vec::new();
    for i in 0..60 {
        let name = format!("x-junk-{i:02}");
        junk.extend_from_slice(&[0x00, u8::try_from(name.len()).unwrap()]);
        junk.extend_from_slice(name.as_bytes());
        junk.push(100);
        junk.extend_from_slice(&[b'v'; 100]);
    }
    let mut continuation_flood = h2_frame(H2_HEADERS, 0, 1, &request);
    for _ in 0..2_000 {
        continuation_flood.extend(h2_frame(H2_CONTINUATION, 0, 1, &junk));
    }

    for (what, frames, reason) in [
        ("rapid reset", rapid_reset, "too_many_resets"),
        ("CONTINUATION flood", continuation_flood, "too_many_continuations"),
    ] {
        let (received, _) = meanwhile(&h, what, h2_exchange(addr, &h.ca.pem, frames)).await;
        // The server's SETTINGS, then GOAWAY(ENHANCE_YOUR_CALM) saying why, then the close.
        let (kind, payload) = received.last().unwrap_or_else(|| panic!("{what}: nothing received"));
        assert_eq!(*kind, H2_GOAWAY, "{what}: {received:?}");
        assert_eq!(payload[4..8], 11u32.to_be_bytes(), "{what}: error code ENHANCE_YOUR_CALM");
        assert_eq!(String::from_utf8_lossy(&payload[8..]), reason, "{what}");
        assert!(received.iter().all(|(kind, _)| [H2_SETTINGS, H2_GOAWAY].contains(kind)), "{what}: {received:?}");
    }
    // The server is fine.
    assert_eq!(h.review(&fixture("pod-create.json")).await["allowed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off_by_the_header_timeout() {
    let h = start(&["--header-read-timeout", "3s"]).await;
    let addr = h.server.webhook_addr();
    let head =
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    let attack = async {
        let stream = tls_connect(addr, &h.ca.pem).await;
        let started = Instant::now();
        let (mut reader, mut writer) = tokio::io::split(stream);
        // One byte per second; the request would take over a minute.
        let drip = tokio::spawn(async move {
            let mut sent = 0;
            for byte in head.bytes() {
                if writer.write_all(&[byte]).await.is_err() || writer.flush().await.is_err() {
                    break;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            sent
        });
        let received = read_until_closed(&mut reader).await;
        let closed_after = started.elapsed();
        drip.abort();
        (received, closed_after)
    };
    let ((received, closed_after), during) = meanwhile(&h, "slowloris", attack).await;
    // Closed without an answer once the header timeout ran out, long
    // before the request was complete.
    assert!(received.is_empty(), "{}", String::from_utf8_lossy(&received));
    assert!(closed_after >= Duration::from_millis(2900), "cut off after {closed_after:?}");
    assert!(closed_after < Duration::from_secs(head.len() as u64), "not cut off: {closed_after:?}");
    assert!(during > 0, "no review was answered while the slow client was connected");
}

/// The real binary's log lines stay short whatever the request holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_strings_never_make_huge_log_lines() {
    let ca = TestCa::new();
    let leaf = ca.leaf("podgate-1", 2090);
    let certs = Mount::new(&[("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem)]);
    let (cert, key) = (certs.path("tls.crt").display().to_string(), certs.path("tls.key").display().to_string());
    let mut server = ServerProcess::spawn(&["--tls-cert", &cert, "--tls-key", &key, "--max-body-bytes", "8388608"]);
    let client = client(&ca.pem, false);
    let huge = "y".repeat(MB);
    let object = format!(
        r#"{{"metadata":{{"name":"{huge}","namespace":"{huge}"}},"spec":{{"containers":[{{"name":"{huge}"}}]}}}}"#
    );
    let review = pod_review(&huge, &object).replace(r#""namespace":"team-a""#, &format!(r#""namespace":"{huge}""#));
    let (status, answer) = post_with(&client, &server.url(), review).await;
    assert_eq!((status, &answer["response"]["allowed"]), (200, &json!(false)));
    let (status, _) =
        post_with(&client, &server.url(), pod_review("v", "{}").replacen("admission.k8s.io/v1", &huge, 1)).await;
    assert_eq!(status, 400);

    server.signal("TERM");
    assert_eq!(server.wait_exit(PATIENCE).await.code(), Some(0));
    let lines = server.log_lines();
    let review = lines.iter().find(|line| line.contains(r#""message":"admission review""#)).expect("a review event");
    let rejected =
        lines.iter().find(|line| line.contains("rejected a request without a verdict")).expect("a warn event");
    for line in [review, rejected] {
        assert!(line.len() < 4096, "a {} byte log line", line.len());
    }
    assert!(lines.iter().all(|line| line.len() < 4096));
}
