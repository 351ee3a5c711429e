//! Shutdown, slow clients, and the real binary (the overload caps: serve_slow.rs).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use podgate::server::Shutdown;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_every_review_in_flight() {
    let h = start(&["--shutdown-grace", "60s"]).await;
    let addr = h.server.webhook_addr();

    // An idle keep-alive connection, which shutdown must close, not wait for.
    assert_eq!(h.review(&fixture("pod-create.json")).await["allowed"], true);

    // Three reviews in flight: headers and half of the body sent.
    let mut in_flight = Vec::new();
    for i in 0..3 {
        let body = with_uid(fixture("pod-create.json"), &format!("in-flight-{i}")).to_string();
        in_flight.push(PartialRequest::start(addr, &h.ca.pem, body.as_bytes()).await);
    }
    eventually("3 reviews in flight", || async { h.server.inflight() == 3 }).await;

    h.server.begin_shutdown();
    assert_eq!(h.get("/readyz").await.status(), 503);
    eventually("the listener to close", || async { TcpStream::connect(addr).await.is_err() }).await;

    // Every review in flight is answered, correctly.
    for (i, request) in in_flight.into_iter().enumerate() {
        let (status, answer) = request.finish().await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["response"]["uid"], format!("in-flight-{i}"));
        assert_eq!(answer["response"]["allowed"], true);
    }
    let started = Instant::now();
    let outcome = tokio::time::timeout(PATIENCE, h.server.wait()).await.expect("shutdown within the grace period");
    assert_eq!(outcome, Shutdown::Drained);
    // Idle keep-alive connections were closed rather than waited for.
    assert!(started.elapsed() < Duration::from_secs(50), "shutdown waited for idle connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_within_the_grace_period() {
    let h = start(&["--shutdown-grace", "500ms", "--request-timeout", "10m"]).await;
    let stuck = PartialRequest::start(h.server.webhook_addr(), &h.ca.pem, &fixture_bytes("pod-create.json")).await;
    eventually("a review in flight", || async { h.server.inflight() == 1 }).await;
    let outcome = tokio::time::timeout(PATIENCE, h.server.shutdown()).await.expect("shutdown ends");
    assert_eq!(outcome, Shutdown::GraceExpired { connections: 1 });
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_while_others_are_served() {
    // Short enough for a quick test, long enough for a legitimate client on
    // a loaded machine.
    let h = start(&["--tls-handshake-timeout", "1s", "--header-read-timeout", "1s", "--request-timeout", "1s"]).await;
    let addr = h.server.webhook_addr();

    // No TLS handshake at all.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // A garbage handshake.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    // Headers that never end (slowloris).
    let mut slow_headers = tls_connect(addr, &h.ca.pem).await;
    slow_headers.write_all(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await.unwrap();
    slow_headers.flush().await.unwrap();
    // A body that never ends.
    let mut slow_body = tls_connect(addr, &h.ca.pem).await;
    slow_body.write_all(format!("{}{{\"kind\":", post_head(1000)).as_bytes()).await.unwrap();
    slow_body.flush().await.unwrap();

    // Meanwhile others are served, each on a fresh connection that passes
    // the 1 s handshake and head timeouts.
    let others = fresh_connection_client(&h.ca.pem);
    let (status, answer) = post_with(&others, &h.url, fixture_bytes("pod-create.json")).await;
    assert_eq!((status, answer["response"]["allowed"].clone()), (200, Value::Bool(true)));

    read_until_closed(&mut silent).await;
    read_until_closed(&mut garbage).await;
    read_until_closed(&mut slow_headers).await;
    let (status, answer) = read_response(&mut slow_body).await;
    assert_eq!(status, 408, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("--request-timeout"));
    assert_eq!(h.metric(r#"podgate_invalid_requests_total{reason="timeout"}"#).await, 1.0);
    let (status, answer) = post_with(&others, &h.url, fixture_bytes("pod-create.json")).await;
    assert_eq!((status, answer["response"]["allowed"].clone()), (200, Value::Bool(true)));
}

/// The real binary with a self-signed certificate on free ports, its JSON
/// log lines, addresses and CA.
struct Binary {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
    webhook: SocketAddr,
    metrics: SocketAddr,
    ca: String,
    _dir: tempfile::TempDir,
}

fn spawn_binary(extra: &[&str]) -> Binary {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_podgate"))
        .args(["serve", "--self-signed", "--dns-name", "podgate.podgate.svc", "--write-ca"])
        .arg(&ca_path)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--log-format", "json"])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line.clone());
        }
    });
    let (webhook, metrics) = wait_for_addresses(&lines);
    let ca = std::fs::read_to_string(&ca_path).unwrap();
    Binary { child, lines, reader, webhook, metrics, ca, _dir: dir }
}

impl Binary {
    fn signal(&self, name: &str) {
        let sent = Command::new("kill").args([name, &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success());
    }

    async fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "podgate did not exit after the signal");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delay_keeps_serving_while_not_ready() {
    let mut binary = spawn_binary(&["--shutdown-delay", "3s"]);
    let client = client(&binary.ca, false);
    let url = format!("https://127.0.0.1:{}/validate", binary.webhook.port());
    let readyz = format!("http://{}/readyz", binary.metrics);
    assert_eq!(client.get(&readyz).send().await.unwrap().status(), 200);
    let before = client.post(&url).body(fixture_bytes("pod-create.json")).send().await.unwrap();
    assert_eq!(before.status(), 200);
    assert!(before.headers().get("connection").is_none(), "keep-alive while ready");

    binary.signal("-TERM");
    eventually("readyz reports 503 after SIGTERM", || async {
        client.get(&readyz).send().await.is_ok_and(|r| r.status() == 503)
    })
    .await;
    // Not ready, yet still answering reviews, on the open connection and on a
    // new one, asking HTTP/1.1 clients to reconnect (elsewhere) afterwards.
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body(fixture_bytes("pod-create.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("connection").map(|v| v.to_str().unwrap()), Some("close"));
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    let fresh = fresh_connection_client(&binary.ca);
    let (status, _) = post_with(&fresh, &url, fixture_bytes("pod-create.json")).await;
    assert_eq!(status, 200);

    let status = binary.wait_for_exit().await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    // After the delay, new connections are refused.
    assert!(fresh_connection_client(&binary.ca).post(&url).body("{}").send().await.is_err());
    let logged: Vec<Value> = binary.lines.try_iter().filter_map(|line| serde_json::from_str(&line).ok()).collect();
    assert!(logged.iter().any(|e| e["message"] == "shutting down: not ready, still serving during the delay"));
    assert!(logged.iter().any(|e| e["message"] == "stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_cuts_the_shutdown_delay_short() {
    let mut binary = spawn_binary(&["--shutdown-delay", "1h"]);
    let readyz = format!("http://{}/readyz", binary.metrics);
    let client = client(&binary.ca, false);
    binary.signal("-TERM");
    eventually("readyz reports 503 after SIGTERM", || async {
        client.get(&readyz).send().await.is_ok_and(|r| r.status() == 503)
    })
    .await;
    binary.signal("-INT");
    let status = binary.wait_for_exit().await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_a_self_signed_certificate_and_exits_0_on_sigterm() {
    let mut binary = spawn_binary(&[]);
    let (webhook, metrics) = (binary.webhook, binary.metrics);

    let client = client(&binary.ca, true);
    let url = format!("https://127.0.0.1:{}/validate", webhook.port());
    let (status, answer) = post_with(&client, &url, fixture_bytes("pod-create.json")).await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], true);
    let (status, answer) = post_with(&client, &url, fixture_bytes("pod-create-noncompliant.json")).await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], false);
    let ready = client.get(format!("http://{metrics}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    binary.signal("-TERM");
    let status = binary.wait_for_exit().await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    binary.reader.join().unwrap();

    // One log event per review, with identity and verdict but never the object.
    let logged: Vec<Value> = binary.lines.try_iter().filter_map(|line| serde_json::from_str(&line).ok()).collect();
    let reviews: Vec<&Value> = logged.iter().filter(|e| e["message"] == "admission review").collect();
    assert_eq!(reviews.len(), 2, "{logged:#?}");
    let denied = reviews.iter().find(|e| e["decision"] == "denied").unwrap();
    assert_eq!(denied["uid"], "11111111-0000-0000-0000-000000000001");
    assert_eq!(denied["namespace"], "team-a");
    assert_eq!(denied["name"], "legacy-app");
    assert_eq!(denied["kind"], "Pod");
    assert_eq!(denied["operation"], "CREATE");
    assert_eq!(denied["checks"], "runAsNonRoot,allowPrivilegeEscalation,livenessProbe,readinessProbe");
    assert!(denied["latency_us"].is_u64());
    let all = logged.iter().map(Value::to_string).collect::<String>();
    assert!(!all.contains("s3cr3t-do-not-log"), "an env value from the object was logged");
    assert!(!all.contains("registry.example.com"), "an image from the object was logged");
    assert!(logged.iter().any(|e| e["message"] == "stopped"));
}

/// Durations in flags and environment variables are Go's; a wrong one stops
/// the binary at once with exit code 2 and the reason, before it listens.
#[test]
fn a_wrong_duration_is_refused_with_the_reason() {
    // (flags, environment variable, expected in stderr)
    type Case<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 5] = [
        (&["--shutdown-grace", "10"], None, r#"missing unit in duration "10""#),
        (&[], Some(("PODGATE_SHUTDOWN_GRACE", "1d")), r#"unknown unit "d" in duration "1d""#),
        (&[], Some(("PODGATE_REQUEST_TIMEOUT", "-1.5h")), r#"duration "-1.5h" is negative"#),
        (&[], Some(("PODGATE_CERT_RELOAD_INTERVAL", "0")), r#"duration "0" must be more than zero"#),
        (&["--header-read-timeout=1 m"], None, r#"unknown unit " m" in duration "1 m""#),
    ];
    for (flags, env, expect) in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_podgate"));
        command.args(["serve", "--self-signed", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]);
        command.args(flags).stdin(Stdio::null());
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?} {env:?}: {stderr}");
        assert!(stderr.contains(expect), "{flags:?} {env:?}: expected {expect:?} in {stderr}");
    }
}
