//! Slow and half-finished clients over real TLS (issue 14): request heads
//! trickled a byte at a time are cut by the head timeout while keep-alive
//! clients idle between reviews are not; shutdown does not wait for
//! connections without a complete request; slow bodies hold no overload
//! slot, and the memory of bodies being received is bounded.
//!
//! Timeouts are shortened (head 1 s, idle 4 s) with the ratio of the
//! defaults to the apiserver's habits kept: the keep-alive client idles 79%
//! of the idle timeout, as the apiserver idles at most 95 s against 120 s.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const HEAD_TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// How much later than its timeout a connection may be closed on a loaded
/// 2-core machine running the debug build; still well below the idle
/// timeout, so a head cut by the idle timeout fails the test.
const SLACK: Duration = Duration::from_millis(1500);

/// A request head that never ends.
const ENDLESS_HEAD: &[u8] = b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Slow: ";

/// Sends one byte of [`ENDLESS_HEAD`] (then `a`s) every `every` until the
/// server closes the connection. Returns what the server sent and how long
/// after the first byte it closed.
async fn trickle_head(addr: SocketAddr, ca_pem: String, every: Duration) -> (Vec<u8>, Duration) {
    let stream = tls_connect(addr, &ca_pem).await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let first_byte = Instant::now();
    let drip = tokio::spawn(async move {
        for byte in ENDLESS_HEAD.iter().copied().chain(std::iter::repeat(b'a')) {
            if writer.write_all(&[byte]).await.is_err() || writer.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    let received = read_until_closed(&mut reader).await;
    let closed_after = first_byte.elapsed();
    drip.abort();
    (received, closed_after)
}

/// Sends a review on `stream` (HTTP/1.1, kept alive) and reads the answer.
async fn review_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    body: &[u8],
) -> (u16, Value) {
    stream.write_all(post_head(body.len()).as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream.flush().await.unwrap();
    read_response(stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_cut_by_the_head_timeout_while_idle_keep_alive_clients_stay() {
    let h = start(&["--header-read-timeout", "1s", "--idle-timeout", "4s"]).await;
    let addr = h.server.webhook_addr();
    let review = fixture_bytes("pod-create.json");

    // The well-behaved client: one keep-alive connection, idle between reviews.
    let mut keep_alive = tls_connect(addr, &h.ca.pem).await;
    let (status, answer) = review_on(&mut keep_alive, &review).await;
    assert_eq!((status, &answer["response"]["allowed"]), (200, &Value::Bool(true)), "{answer}");

    // 50 slowloris connections, one header byte every 100 ms: a head that
    // would never end.
    let attack = async {
        let attackers = (0..50).map(|_| trickle_head(addr, h.ca.pem.clone(), Duration::from_millis(100)));
        futures_join_all(attackers).await
    };
    // Meanwhile the keep-alive client idles 79% of the idle timeout twice
    // and sends a review on the same connection each time.
    let idle = IDLE_TIMEOUT.mul_f64(95.0 / 120.0);
    let well_behaved = async {
        let mut answers = Vec::new();
        for _ in 0..2 {
            tokio::time::sleep(idle).await;
            answers.push(review_on(&mut keep_alive, &review).await);
        }
        answers
    };
    let (cut, answers) = tokio::join!(attack, well_behaved);

    for (i, (received, closed_after)) in cut.iter().enumerate() {
        assert!(received.is_empty(), "slowloris {i} got an answer: {}", String::from_utf8_lossy(received));
        // The head clock starts when the TLS handshake ends, just before the first byte.
        assert!(
            *closed_after >= HEAD_TIMEOUT - Duration::from_millis(100),
            "slowloris {i} cut after {closed_after:?}, before the head timeout"
        );
        assert!(*closed_after < HEAD_TIMEOUT + SLACK, "slowloris {i} cut only after {closed_after:?}");
    }
    for (status, answer) in answers {
        assert_eq!((status, &answer["response"]["allowed"]), (200, &Value::Bool(true)), "{answer}");
    }
    // The same connection is still open: a third review after another idle spell.
    tokio::time::sleep(idle).await;
    let (status, _) = review_on(&mut keep_alive, &review).await;
    assert_eq!(status, 200);

    // Idle beyond the idle timeout, it is closed, without a word.
    let idle_since = Instant::now();
    let received = read_until_closed(&mut keep_alive).await;
    let closed_after = idle_since.elapsed();
    assert!(received.is_empty(), "{}", String::from_utf8_lossy(&received));
    assert!(closed_after >= IDLE_TIMEOUT - Duration::from_millis(200), "idle connection cut after {closed_after:?}");
    assert!(closed_after < IDLE_TIMEOUT + SLACK, "idle connection cut only after {closed_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_record_trickled_a_byte_at_a_time_is_cut_by_the_head_timeout() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let h = start(&["--header-read-timeout", "1s", "--idle-timeout", "4s"]).await;
    // The client's TLS runs over an in-memory pipe; a pump copies it to the
    // server, at full speed, or (once `slow`) one encrypted byte every 100 ms.
    let (client_side, pump_side) = tokio::io::duplex(64 * 1024);
    let (mut from_client, mut to_client) = tokio::io::split(pump_side);
    let (mut from_server, mut to_server) = TcpStream::connect(h.server.webhook_addr()).await.unwrap().into_split();
    let slow = Arc::new(AtomicBool::new(false));
    let pump = tokio::spawn({
        let slow = slow.clone();
        async move {
            let mut buffer = [0u8; 4096];
            while let Ok(read @ 1..) = from_client.read(&mut buffer).await {
                for chunk in buffer[..read].chunks(if slow.load(Ordering::Acquire) { 1 } else { read }) {
                    if to_server.write_all(chunk).await.is_err() {
                        return;
                    }
                    if slow.load(Ordering::Acquire) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    });
    let closed = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        Instant::now()
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(&h.ca.pem, &[b"http/1.1"])));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, client_side).await.unwrap();
    // A first review at full speed; then the next head, one TLS record
    // whose bytes arrive one at a time: no plaintext byte reaches hyper.
    assert_eq!(review_on(&mut tls, &fixture_bytes("pod-create.json")).await.0, 200);
    slow.store(true, Ordering::Release);
    let first_byte = Instant::now();
    tls.write_all(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    tls.flush().await.unwrap();
    let closed_after = tokio::time::timeout(PATIENCE, closed).await.unwrap().unwrap() - first_byte;
    pump.abort();
    assert!(closed_after >= HEAD_TIMEOUT - Duration::from_millis(100), "cut after {closed_after:?}");
    assert!(closed_after < HEAD_TIMEOUT + SLACK, "cut only after {closed_after:?}, by the idle timeout?");
}

/// `join_all` without the futures crate: polls every future on its own task.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_half_sent_heads_exits_0_at_once() {
    let ca = TestCa::new();
    let leaf = ca.leaf("podgate-1", 2090);
    let certs = Mount::new(&[("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem)]);
    let (cert, key) = (certs.path("tls.crt").display().to_string(), certs.path("tls.key").display().to_string());
    // The chart's timeouts and grace period (the defaults), no delay.
    let mut server = ServerProcess::spawn(&["--tls-cert", &cert, "--tls-key", &key, "--shutdown-grace", "10s"]);
    let addr = server.webhook;

    // Idle keep-alive connections after a review, over HTTP/1.1 and HTTP/2.
    let mut idle = tls_connect(addr, &ca.pem).await;
    assert_eq!(review_on(&mut idle, &fixture_bytes("pod-create.json")).await.0, 200);
    let mut half_second = tls_connect(addr, &ca.pem).await;
    assert_eq!(review_on(&mut half_second, &fixture_bytes("pod-create.json")).await.0, 200);
    let h2 = client(&ca.pem, true);
    assert_eq!(post_with(&h2, &server.url(), fixture_bytes("pod-create.json")).await.0, 200);
    // Five half-sent request heads.
    let mut heads = Vec::new();
    for _ in 0..5 {
        let mut stream = tls_connect(addr, &ca.pem).await;
        stream.write_all(b"POST /validate HTTP/1.1\r\nHo").await.unwrap();
        stream.flush().await.unwrap();
        heads.push(stream);
    }
    // A TCP connection that never starts its TLS handshake, and a
    // keep-alive connection with half of its second head sent.
    let mut no_handshake = TcpStream::connect(addr).await.unwrap();
    half_second.write_all(b"POST /validate HTTP/1.1\r\nHo").await.unwrap();
    half_second.flush().await.unwrap();
    // Let the server read them.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(PATIENCE).await;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(took < Duration::from_secs(1), "exited {took:?} after SIGTERM");
    for mut stream in heads.into_iter().chain([idle, half_second]) {
        assert!(read_until_closed(&mut stream).await.is_empty());
    }
    let mut byte = [0u8; 1];
    assert!(matches!(no_handshake.read(&mut byte).await, Ok(0) | Err(_)));
    let logs = server.logs();
    assert!(logs.iter().any(|e| e["message"] == "stopped"), "{logs:#?}");
    assert!(!logs.iter().any(|e| e["level"] == "ERROR"), "{logs:#?}");
}

/// A request whose head and the first `sent` bytes of `body` are sent; the
/// rest follows one byte every `every` until [`SlowBody::finish`].
struct SlowBody {
    drip: tokio::task::JoinHandle<TlsStream<TcpStream>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl SlowBody {
    async fn start(addr: SocketAddr, ca_pem: &str, body: Vec<u8>, sent: usize, every: Duration) -> Self {
        let mut stream = tls_connect(addr, ca_pem).await;
        stream.write_all(post_head(body.len()).as_bytes()).await.unwrap();
        stream.write_all(&body[..sent]).await.unwrap();
        stream.flush().await.unwrap();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let drip = tokio::spawn(async move {
            let mut at = sent;
            // Leaves the last byte for finish().
            while at + 1 < body.len() && !*stopped.borrow() {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => break,
                }
                stream.write_all(&body[at..=at]).await.unwrap();
                stream.flush().await.unwrap();
                at += 1;
            }
            stream.write_all(&body[at..]).await.unwrap();
            stream.flush().await.unwrap();
            stream
        });
        SlowBody { drip, stop }
    }

    /// Sends the rest of the body at once and reads the answer.
    async fn finish(self) -> (u16, Value) {
        self.stop.send_replace(true);
        let mut stream = self.drip.await.unwrap();
        read_response(&mut stream).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_inflight_slow_bodies_cause_no_503_for_others() {
    let h = start(&["--max-inflight", "4", "--request-timeout", "60s"]).await;
    let addr = h.server.webhook_addr();
    let body = fixture_bytes("pod-create.json");

    // Twice --max-inflight clients sending their bodies a byte every 200 ms.
    let mut slow = Vec::new();
    for i in 0..8 {
        let body = with_uid(fixture("pod-create.json"), &format!("slow-{i}")).to_string().into_bytes();
        slow.push(SlowBody::start(addr, &h.ca.pem, body, 100, Duration::from_millis(200)).await);
    }
    eventually("8 reviews being received", || async { h.server.inflight() == 8 }).await;

    // A normal client, over HTTP/1.1 and HTTP/2, is answered every time.
    for client in [&h.client, &client(&h.ca.pem, true)] {
        for _ in 0..20 {
            let (status, answer) = post_with(client, &h.url, body.clone()).await;
            assert_eq!((status, &answer["response"]["allowed"]), (200, &Value::Bool(true)), "{answer}");
        }
    }
    assert_eq!(h.server.inflight(), 8, "the slow bodies are still arriving");
    assert_eq!(h.metric("podgate_overload_rejections_total").await, 0.0);

    // The slow ones get their answers too.
    for (i, request) in slow.into_iter().enumerate() {
        let (status, answer) = request.finish().await;
        assert_eq!((status, &answer["response"]["uid"]), (200, &Value::from(format!("slow-{i}"))), "{answer}");
    }
    assert_eq!(h.metric("podgate_overload_rejections_total").await, 0.0);
}

/// `review` padded with spaces to `len` bytes (still the same JSON).
fn padded(review: &str, len: usize) -> Vec<u8> {
    let mut bytes = review.as_bytes().to_vec();
    assert!(bytes.len() <= len);
    bytes.resize(len, b' ');
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_being_received_are_bounded_by_max_buffered_bytes() {
    let h = start(&["--max-body-bytes", "65536", "--max-buffered-bytes", "131072", "--request-timeout", "60s"]).await;
    let addr = h.server.webhook_addr();
    let review = fixture("pod-create.json");

    // Two bodies of 60,000 bytes, all but 1,000 sent: about 120,000 bytes held.
    let mut slow = Vec::new();
    for i in 0..2 {
        let body = padded(&with_uid(review.clone(), &format!("big-{i}")).to_string(), 60_000);
        slow.push(SlowBody::start(addr, &h.ca.pem, body, 59_000, Duration::from_secs(3600)).await);
    }
    eventually("2 reviews being received", || async { h.server.inflight() == 2 }).await;
    // Give the server time to buffer what was sent.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A 20,000-byte review does not fit in what is left: 503 at once, over
    // HTTP/1.1 and HTTP/2, and counted.
    let big = padded(&review.to_string(), 20_000);
    for client in [&h.client, &client(&h.ca.pem, true)] {
        let response =
            client.post(&h.url).header("content-type", "application/json").body(big.clone()).send().await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["error"].as_str().unwrap().contains("--max-buffered-bytes"), "{answer}");
    }
    // A small review still fits.
    assert_eq!(h.review(&review).await["allowed"], true);
    assert_eq!(h.metric("podgate_overload_rejections_total").await, 2.0);
    assert_eq!(h.metric(r#"podgate_invalid_requests_total{reason="timeout"}"#).await, 0.0);

    // The big ones complete, their memory comes back, and the 20,000 bytes fit.
    for (i, request) in slow.into_iter().enumerate() {
        let (status, answer) = request.finish().await;
        assert_eq!((status, &answer["response"]["uid"]), (200, &Value::from(format!("big-{i}"))), "{answer}");
    }
    let (status, answer) = h.post(big).await;
    assert_eq!((status, &answer["response"]["allowed"]), (200, &Value::Bool(true)), "{answer}");
    assert_eq!(h.metric("podgate_overload_rejections_total").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_budget_must_hold_a_body_of_the_largest_size() {
    let args = ["--self-signed", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
    let mut args = args.to_vec();
    args.extend(["--max-body-bytes", "2000", "--max-buffered-bytes", "1000"]);
    let parsed = podgate::server::ServeArgs::try_parse_from(args).unwrap();
    let error = podgate::server::start(&parsed).await.err().expect("refused");
    assert!(error.to_string().contains("--max-buffered-bytes (1000) is below --max-body-bytes (2000)"), "{error}");
}
