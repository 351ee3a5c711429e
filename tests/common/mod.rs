//! Shared by the `serve_*` integration tests: a test CA (rcgen), Kubernetes
//! style volume mounts updated by atomic symlink swap, an in-process server
//! on ephemeral ports, an HTTPS client that verifies the test CA, raw TLS
//! connections for slow and partial requests, and metric lookups.
//!
//! Nothing here sleeps and hopes: waits poll a condition with a generous
//! deadline, so the tests hold on a loaded 2-core machine.

#![allow(dead_code)] // each test binary uses a different part

pub mod apiserver;
pub mod histogram;
pub mod reports;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use podgate::server::{self, RunningServer, ServeArgs};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How long any awaited condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A CA made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem: String,
}

/// A serving certificate and its key.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "podgate test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = issuer.pem();
        TestCa { issuer, pem }
    }

    /// A certificate for `127.0.0.1` and `localhost`, expiring at the start
    /// of `expiry_year` (so tests can tell certificates apart by expiry).
    pub fn leaf(&self, common_name: &str, expiry_year: i32) -> Leaf {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(expiry_year, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }
}

impl TestCa {
    /// Like [`TestCa::leaf`], but valid only from `days` days from now (a
    /// certificate issued by a CA whose clock is ahead of this node's).
    pub fn leaf_valid_in(&self, common_name: &str, days: u64) -> Leaf {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(1970, 1, 1) + now + Duration::from_secs(days * 86_400);
        params.not_after = rcgen::date_time_ymd(2090, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }
}

/// A rustls client clock `ahead` of the real one (a node whose clock is
/// ahead, or one that checks a certificate later).
#[derive(Debug)]
pub struct ClockAhead(pub Duration);

impl rustls::time_provider::TimeProvider for ClockAhead {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(rustls::pki_types::UnixTime::since_unix_epoch(now + self.0))
    }
}

/// An HTTPS client (HTTP/1.1) that trusts `ca_pem` and whose clock is `ahead`.
pub fn client_with_clock_ahead(ca_pem: &str, ahead: Duration) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_details(provider, Arc::new(ClockAhead(ahead)))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder().use_preconfigured_tls(config).timeout(PATIENCE).no_proxy().build().unwrap()
}

/// Unix time of `year`-01-01T00:00:00Z.
pub fn new_year(year: i32) -> i64 {
    rcgen::date_time_ymd(year, 1, 1).unix_timestamp()
}

/// A directory laid out like a Kubernetes Secret or ConfigMap volume:
/// `NAME -> ..data/NAME`, `..data -> ..<generation>/`. [`Mount::write`]
/// swaps the whole set at once by renaming a new `..data` symlink over the
/// old one, as the kubelet does.
pub struct Mount {
    dir: tempfile::TempDir,
    generation: u32,
}

impl Mount {
    pub fn new(files: &[(&str, &str)]) -> Self {
        let mut mount = Mount { dir: tempfile::tempdir().unwrap(), generation: 0 };
        mount.write(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(Path::new("..data").join(name), mount.dir.path().join(name)).unwrap();
        }
        mount
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces every file at once.
    pub fn write(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let version = format!("..2026_11_28_10_00_{:02}.{}", self.generation, std::process::id());
        let version_dir = self.dir.path().join(&version);
        std::fs::create_dir(&version_dir).unwrap();
        for (name, content) in files {
            std::fs::write(version_dir.join(name), content).unwrap();
        }
        let tmp = self.dir.path().join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
    }
}

/// A server started in-process, with what a test needs to talk to it.
pub struct Harness {
    pub server: RunningServer,
    pub ca: TestCa,
    pub leaf: Leaf,
    pub certs: Mount,
    pub client: reqwest::Client,
    pub url: String,
}

/// Starts a server with a certificate from a fresh test CA, on ephemeral
/// loopback ports, with `extra` flags.
pub async fn start(extra: &[&str]) -> Harness {
    start_with(extra, |_| {}).await
}

/// [`start`], with `customize` applied to the parsed arguments (settings
/// that are not flags, such as the clock).
pub async fn start_with(extra: &[&str], customize: impl FnOnce(&mut ServeArgs)) -> Harness {
    let ca = TestCa::new();
    let leaf = ca.leaf("podgate-1", 2090);
    let certs = Mount::new(&[("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem)]);
    let cert = certs.path("tls.crt").display().to_string();
    let key = certs.path("tls.key").display().to_string();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.as_str(),
        "--tls-key",
        key.as_str(),
    ];
    args.extend_from_slice(extra);
    let mut args = ServeArgs::try_parse_from(args).unwrap();
    customize(&mut args);
    let server = server::start(&args).await.unwrap();
    let client = client(&ca.pem, false);
    let url = format!("https://127.0.0.1:{}/validate", server.webhook_addr().port());
    Harness { server, ca, leaf, certs, client, url }
}

impl Harness {
    /// POSTs `body` as JSON to /validate; the status and the body as JSON.
    pub async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        post_with(&self.client, &self.url, body).await
    }

    /// POSTs a review and returns its `response`, checking the envelope.
    pub async fn review(&self, review: &Value) -> Value {
        let (status, answer) = self.post(review.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
        answer["response"].clone()
    }

    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.metrics_addr())
    }

    /// GETs `path` from the plain-HTTP metrics/health listener.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.ops_url(path)).send().await.unwrap()
    }

    /// `/metrics` in the Prometheus text format.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    /// The value of one series, e.g. `podgate_overload_rejections_total` or
    /// `podgate_invalid_requests_total{reason="not_json"}`; 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series).unwrap_or(0.0)
    }

    /// Waits until `series` has the value `expected`.
    pub async fn wait_for_metric(&self, series: &str, expected: f64) {
        eventually(&format!("{series} == {expected}"), || async { self.metric(series).await == expected }).await;
    }
}

/// POSTs `body` with `Content-Type: application/json`.
pub async fn post_with(client: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e:?}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} answer is not JSON ({e}): {text}"));
    (status, json)
}

/// The value of `series` in a metrics text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .map(|(_, value)| value.parse().unwrap())
}

/// A rustls client configuration that trusts only `ca_pem`.
pub fn tls_config(ca_pem: &str, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// An HTTPS client that verifies the server against `ca_pem`; HTTP/2 via
/// ALPN when `h2`, else HTTP/1.1 with keep-alive.
pub fn client(ca_pem: &str, h2: bool) -> reqwest::Client {
    let alpn: &[&[u8]] = if h2 { &[b"h2", b"http/1.1"] } else { &[b"http/1.1"] };
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(ca_pem, alpn))
        .timeout(PATIENCE)
        .no_proxy()
        .build()
        .unwrap()
}

/// Like [`client`], but every request opens a new connection (and so a new
/// TLS handshake).
pub fn fresh_connection_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(ca_pem, &[b"http/1.1"]))
        .pool_max_idle_per_host(0)
        .timeout(PATIENCE)
        .no_proxy()
        .build()
        .unwrap()
}

/// A fixture under `tests/fixtures/reviews/`.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reviews").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A fixture's raw bytes.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reviews").join(name)).unwrap()
}

/// A fixture with a distinct uid (so answers can be matched to requests).
pub fn with_uid(mut review: Value, uid: &str) -> Value {
    review["request"]["uid"] = Value::from(uid);
    review
}

/// Polls `condition` until it holds, failing the test after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if condition().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TLS connection to `addr` verified against `ca_pem`, with ALPN http/1.1.
pub async fn tls_connect(addr: SocketAddr, ca_pem: &str) -> TlsStream<TcpStream> {
    let connector = TlsConnector::from(Arc::new(tls_config(ca_pem, &[b"http/1.1"])));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap()
}

/// The DER of the certificate a new connection to `addr` is served.
pub async fn served_certificate(addr: SocketAddr, ca_pem: &str) -> Vec<u8> {
    let stream = tls_connect(addr, ca_pem).await;
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The head of an HTTP/1.1 POST to /validate with a JSON body of `length` bytes.
pub fn post_head(length: usize) -> String {
    format!(
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// A request sent by hand, in parts: headers and the first part of the
/// body now, the rest later. While its body is incomplete, it is a review
/// in flight on the server.
pub struct PartialRequest {
    stream: TlsStream<TcpStream>,
    rest: Vec<u8>,
}

impl PartialRequest {
    /// Sends the head and the first half of `body`.
    pub async fn start(addr: SocketAddr, ca_pem: &str, body: &[u8]) -> Self {
        let mut stream = tls_connect(addr, ca_pem).await;
        let half = body.len() / 2;
        stream.write_all(post_head(body.len()).as_bytes()).await.unwrap();
        stream.write_all(&body[..half]).await.unwrap();
        stream.flush().await.unwrap();
        PartialRequest { stream, rest: body[half..].to_vec() }
    }

    /// Sends the rest of the body and reads the answer.
    pub async fn finish(mut self) -> (u16, Value) {
        self.stream.write_all(&self.rest).await.unwrap();
        self.stream.flush().await.unwrap();
        read_response(&mut self.stream).await
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> (u16, Value) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await.expect("response in time").unwrap();
        assert!(read > 0, "connection closed before a response: {:?}", String::from_utf8_lossy(&buffer));
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    while buffer.len() < head_end + length {
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await.expect("body in time").unwrap();
        assert!(read > 0, "connection closed inside the body");
        buffer.extend_from_slice(&chunk[..read]);
    }
    (status, serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap())
}

/// Reads until the peer closes the connection (or errors); fails the test
/// if that takes longer than [`PATIENCE`]. Returns what was read.
pub async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await.expect("the server closes the connection") {
            Ok(0) | Err(_) => return received,
            Ok(read) => received.extend_from_slice(&chunk[..read]),
        }
    }
}

/// Whether `promtool` is on PATH; with `PODGATE_REQUIRE_TOOLS=1` its
/// absence fails the test instead of skipping the check.
pub fn promtool_available() -> bool {
    let found = std::process::Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("PODGATE_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "PODGATE_REQUIRE_TOOLS=1 but promtool is not on PATH (apt-get install prometheus)"
        );
        eprintln!("promtool not on PATH: skipping `promtool check metrics`");
    }
    found
}

/// Runs `promtool check metrics` on `text` and fails the test on any problem.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The denial of `pod-create-noncompliant.json` under the default policy.
pub const ROOT_POD_DENIAL: &str = "runAsNonRoot != true (pod or container \"app\" must set securityContext.runAsNonRoot=true); allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false); livenessProbe missing (container \"app\" must set livenessProbe); readinessProbe missing (container \"app\" must set readinessProbe)";

/// A review fixture with its `request.uid` cut out, so that bodies with
/// fresh uids are made without re-encoding the JSON.
#[derive(Clone)]
pub struct ReviewTemplate {
    head: String,
    tail: String,
    /// Whether the default policy allows it.
    pub compliant: bool,
}

impl ReviewTemplate {
    pub fn new(fixture_name: &str, compliant: bool) -> Self {
        let text = String::from_utf8(fixture_bytes(fixture_name)).unwrap();
        let uid = fixture(fixture_name)["request"]["uid"].as_str().unwrap().to_owned();
        let quoted = format!("\"{uid}\"");
        assert_eq!(text.matches(&quoted).count(), 1, "{fixture_name}: the uid must occur once");
        let (head, tail) = text.split_once(&quoted).unwrap();
        ReviewTemplate { head: format!("{head}\""), tail: format!("\"{tail}"), compliant }
    }

    /// The review with `uid` (plain characters only: it is not escaped).
    pub fn body(&self, uid: &str) -> String {
        format!("{}{uid}{}", self.head, self.tail)
    }

    /// Checks an answer to [`body`](Self::body)`(uid)` under the default
    /// policy: HTTP 200, the envelope, `response.uid == uid`, the verdict.
    pub fn check_answer(&self, uid: &str, status: u16, body: &[u8]) -> Result<(), String> {
        let text = || String::from_utf8_lossy(body).chars().take(2000).collect::<String>();
        if status != 200 {
            return Err(format!("{uid}: status {status}: {}", text()));
        }
        let answer: Value = serde_json::from_slice(body).map_err(|e| format!("{uid}: not JSON ({e}): {}", text()))?;
        let expected = if self.compliant {
            serde_json::json!({"uid": uid, "allowed": true})
        } else {
            let mut denial = answer["response"].clone();
            denial["uid"] = Value::from(uid);
            denial["allowed"] = Value::Bool(false);
            denial["status"] = serde_json::json!({"code": 403, "reason": "Forbidden", "message": ROOT_POD_DENIAL});
            denial
        };
        if answer["apiVersion"] != "admission.k8s.io/v1"
            || answer["kind"] != "AdmissionReview"
            || answer["response"] != expected
        {
            return Err(format!("{uid}: wrong answer {}", text()));
        }
        Ok(())
    }
}

/// A compliant and a non-compliant Pod review, which mixed traffic alternates.
pub fn mixed_reviews() -> Arc<[ReviewTemplate]> {
    Arc::new([ReviewTemplate::new("pod-create.json", true), ReviewTemplate::new("pod-create-noncompliant.json", false)])
}

/// Only the compliant review: its answer is the same under any policy.
pub fn compliant_reviews() -> Arc<[ReviewTemplate]> {
    Arc::new([ReviewTemplate::new("pod-create.json", true)])
}

/// A request of [`Traffic`] that got no correct answer.
#[derive(Debug, Clone)]
pub struct Failure {
    pub uid: String,
    pub error: String,
    /// An answer came, but a wrong one: always a bug.
    pub wrong_answer: bool,
    /// The failure was seen after the test began the shutdown.
    pub after_shutdown: bool,
}

/// What [`Traffic`] clients share: counters, the answered uids, the
/// failures, and when to stop.
#[derive(Default)]
pub struct TrafficLog {
    sent: AtomicUsize,
    ok: AtomicUsize,
    stop: AtomicBool,
    /// Reviews still to send, when bounded; shared by several clients.
    budget: Option<AtomicUsize>,
    /// Set by the test when it begins the shutdown: failures seen after it
    /// are told apart.
    pub shutdown: AtomicBool,
    answered: Mutex<Vec<String>>,
    failures: Mutex<Vec<Failure>>,
}

impl TrafficLog {
    pub fn new() -> Arc<Self> {
        Arc::new(TrafficLog::default())
    }

    /// Clients sharing it stop after `reviews` reviews in all.
    pub fn bounded(reviews: usize) -> Arc<Self> {
        Arc::new(TrafficLog { budget: Some(AtomicUsize::new(reviews)), ..TrafficLog::default() })
    }

    /// Reviews answered correctly so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::Acquire)
    }

    /// Reviews sent so far (each ends as an answer or a failure).
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Acquire)
    }

    /// Waits until `more` further reviews were answered correctly.
    pub async fn wait_for_more(&self, more: usize) {
        let target = self.ok() + more;
        eventually(&format!("{target} correct answers"), || async { self.ok() >= target }).await;
    }

    /// Tells the clients sharing it to stop after their current review.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub fn answered(&self) -> Vec<String> {
        self.answered.lock().unwrap().clone()
    }

    pub fn failures(&self) -> Vec<Failure> {
        self.failures.lock().unwrap().clone()
    }

    /// Takes the next review off the budget; false when it is spent or the
    /// clients were told to stop.
    fn take(&self) -> bool {
        if self.stop.load(Ordering::Acquire) {
            return false;
        }
        let take = match &self.budget {
            None => true,
            Some(left) => left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok(),
        };
        if take {
            self.sent.fetch_add(1, Ordering::AcqRel);
        }
        take
    }

    fn record(&self, uid: String, outcome: Result<(), (String, bool)>) {
        match outcome {
            Ok(()) => {
                self.answered.lock().unwrap().push(uid);
                self.ok.fetch_add(1, Ordering::AcqRel);
            }
            Err((error, wrong_answer)) => {
                let after_shutdown = self.shutdown.load(Ordering::Acquire);
                self.failures.lock().unwrap().push(Failure { uid, error, wrong_answer, after_shutdown });
            }
        }
    }
}

/// One client sending mixed reviews (compliant and not, each with a unique
/// uid `NAME-N`) in a loop and checking every answer, until told to stop
/// or its [`TrafficLog`]'s budget is spent.
pub struct Traffic {
    pub log: Arc<TrafficLog>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    /// A client with a log of its own.
    pub fn start(client: reqwest::Client, url: String, name: impl Into<String>) -> Self {
        Self::start_with(client, url, name, TrafficLog::new())
    }

    /// A client writing to a shared log.
    pub fn start_with(client: reqwest::Client, url: String, name: impl Into<String>, log: Arc<TrafficLog>) -> Self {
        Self::start_sending(client, url, name, log, mixed_reviews())
    }

    /// A client sending `reviews` in turn (under the default policy unless
    /// they are all compliant).
    pub fn start_sending(
        client: reqwest::Client,
        url: String,
        name: impl Into<String>,
        log: Arc<TrafficLog>,
        reviews: Arc<[ReviewTemplate]>,
    ) -> Self {
        let name = name.into();
        let task = tokio::spawn({
            let log = log.clone();
            async move {
                let mut i = 0usize;
                while log.take() {
                    let review = &reviews[i % reviews.len()];
                    let uid = format!("{name}-{i}");
                    i += 1;
                    let sent =
                        client.post(&url).header("content-type", "application/json").body(review.body(&uid)).send();
                    let outcome = match sent.await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            match response.bytes().await {
                                Ok(body) => review.check_answer(&uid, status, &body).map_err(|e| (e, true)),
                                Err(e) => Err((format!("{uid}: body: {e:?}"), false)),
                            }
                        }
                        Err(e) => Err((format!("{uid}: {e:?}"), false)),
                    };
                    log.record(uid, outcome);
                }
            }
        });
        Traffic { log, task }
    }

    pub fn ok(&self) -> usize {
        self.log.ok()
    }

    /// Waits until `more` further reviews were answered correctly.
    pub async fn wait_for_more(&self, more: usize) {
        self.log.wait_for_more(more).await;
    }

    /// Stops the client (its current request finishes first).
    pub async fn stop(self) -> (usize, Vec<String>) {
        self.log.stop();
        self.task.await.unwrap();
        (self.log.ok(), self.log.failures().into_iter().map(|f| f.error).collect())
    }

    /// Waits until the budget of its log is spent.
    pub async fn finish(self) {
        self.task.await.unwrap();
    }

    /// Stops the client and fails the test if any review went wrong.
    pub async fn stop_and_check(self, what: &str) -> usize {
        let (ok, failures) = self.stop().await;
        assert!(
            failures.is_empty(),
            "{what}: {} of {} reviews failed: {failures:#?}",
            failures.len(),
            ok + failures.len()
        );
        ok
    }
}

/// A field of `/proc/PID/status` in KiB, e.g. `VmRSS` or `VmHWM`.
pub fn proc_status_kib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Whether `/proc/self/status` can be read (Linux), for memory checks.
pub fn proc_status_available() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.contains("VmRSS:"))
}

/// The addresses a `podgate serve --log-format json` process logs at start-up.
pub fn wait_for_addresses(lines: &std::sync::mpsc::Receiver<String>) -> (SocketAddr, SocketAddr) {
    wait_for_addresses_keeping(lines, &mut Vec::new())
}

/// [`wait_for_addresses`], keeping the lines read meanwhile in `seen`.
pub fn wait_for_addresses_keeping(
    lines: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
) -> (SocketAddr, SocketAddr) {
    let (mut webhook, mut metrics) = (None, None);
    let deadline = std::time::Instant::now() + PATIENCE;
    while webhook.is_none() || metrics.is_none() {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("podgate logs its listening addresses");
        seen.push(line);
        let Ok(event) = serde_json::from_str::<Value>(&seen[seen.len() - 1]) else { continue };
        let address = event["address"].as_str().and_then(|a| a.parse().ok());
        match event["endpoint"].as_str() {
            Some("webhook") => webhook = address,
            Some("metrics") => metrics = address,
            _ => {}
        }
    }
    (webhook.unwrap(), metrics.unwrap())
}

/// The real binary (`CARGO_BIN_EXE_podgate`, the debug build under `cargo
/// test`) running `podgate serve` with JSON logs on ephemeral loopback
/// ports. Its log lines are read on a thread; review lines past the first
/// thousand are only counted, so that a long run does not pile them up.
pub struct ServerProcess {
    child: std::process::Child,
    pub webhook: SocketAddr,
    pub metrics: SocketAddr,
    lines: std::sync::mpsc::Receiver<String>,
    collected: Vec<String>,
    reviews_logged: Arc<AtomicUsize>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts `podgate serve` with `args` (a certificate source at least).
    pub fn spawn(args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_podgate"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        let reviews_logged = Arc::new(AtomicUsize::new(0));
        let reader = std::thread::spawn({
            let reviews_logged = reviews_logged.clone();
            move || {
                for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                    let review = line.contains(r#""message":"admission review""#);
                    if !review || reviews_logged.fetch_add(1, Ordering::AcqRel) < 1000 {
                        let _ = sender.send(line);
                    }
                }
            }
        });
        let mut collected = Vec::new();
        let (webhook, metrics) = wait_for_addresses_keeping(&lines, &mut collected);
        ServerProcess { child, webhook, metrics, lines, collected, reviews_logged, reader: Some(reader) }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/validate", self.webhook.port())
    }

    /// A field of its `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> u64 {
        proc_status_kib(&self.pid(), field)
    }

    /// Sends `signal` (`HUP`, `TERM`, ...) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(self.pid()).status().unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit, failing the test after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "podgate did not exit within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The log lines so far; after [`wait_exit`](Self::wait_exit), all of
    /// them (review events past the first thousand only counted).
    pub fn log_lines(&mut self) -> Vec<String> {
        if self.child.try_wait().unwrap().is_some() {
            if let Some(reader) = self.reader.take() {
                reader.join().unwrap();
            }
        }
        self.collected.extend(self.lines.try_iter());
        self.collected.clone()
    }

    /// [`log_lines`](Self::log_lines) as JSON events.
    pub fn logs(&mut self) -> Vec<Value> {
        self.log_lines().iter().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// How many `admission review` events it logged so far.
    pub fn reviews_logged(&self) -> usize {
        self.reviews_logged.load(Ordering::Acquire)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // A failed test leaves no server behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Opens a TCP connection to `addr`, sends `bytes` (no TLS, or garbage
/// instead of a handshake) and waits until the server closes it. Returns
/// what the server sent back.
pub async fn garbage_connection(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may close before reading everything: a failed write is fine.
    let _ = stream.write_all(bytes).await;
    read_until_closed(&mut stream).await
}

/// A deterministic stream of pseudo-random bytes.
pub fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}
