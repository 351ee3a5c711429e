//! `--max-connection-age`: an HTTP/1.1 connection open longer than it gets
//! `Connection: close` on its next answer and is closed after it, so that
//! the apiserver opens a new one (and the webhook Service may route it to
//! another replica); a younger one stays open. See docs/real-node.md for
//! why: on a real node every connection stayed on one replica.

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one review on `stream` and returns the response head (lowercase).
async fn review_head<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S, body: &[u8]) -> String {
    stream.write_all(common::post_head(body.len()).as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream.flush().await.unwrap();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = tokio::time::timeout(common::PATIENCE, stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(read > 0, "closed before an answer");
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("a content-length");
    while buffer.len() < head_end + length {
        let read = tokio::time::timeout(common::PATIENCE, stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(read > 0, "closed inside the body");
        buffer.extend_from_slice(&chunk[..read]);
    }
    assert!(head.starts_with("http/1.1 200"), "{head}");
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_a_connection_after_its_age_not_before() {
    let harness = common::start(&["--max-connection-age", "1s"]).await;
    let body = common::fixture_bytes("pod-create.json");
    let mut stream = common::tls_connect(harness.server.webhook_addr(), &harness.ca.pem).await;
    for _ in 0..3 {
        let head = review_head(&mut stream, &body).await;
        assert!(!head.contains("connection: close"), "a young connection is kept: {head}");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let head = review_head(&mut stream, &body).await;
    assert!(head.contains("connection: close"), "{head}");
    // Closed after that answer, without waiting for any timeout.
    let rest = tokio::time::timeout(Duration::from_secs(5), common::read_until_closed(&mut stream))
        .await
        .expect("closed at once");
    assert!(rest.is_empty(), "nothing after the last answer: {:?}", String::from_utf8_lossy(&rest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_keeps_connections() {
    let harness = common::start(&["--max-connection-age", "0s"]).await;
    let body = common::fixture_bytes("pod-create.json");
    let mut stream = common::tls_connect(harness.server.webhook_addr(), &harness.ca.pem).await;
    review_head(&mut stream, &body).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let head = review_head(&mut stream, &body).await;
    assert!(!head.contains("connection: close"), "{head}");
}
