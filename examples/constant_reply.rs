//! The reference for `bench/load.sh`: the limit of podgate's own TLS + HTTP
//! stack. It serves `POST /validate` exactly as `podgate serve` does — the
//! same rustls configuration (`podgate::server::tls::server_config`, a
//! `--self-signed` certificate from `podgate::server::tls::self_signed`), the
//! same axum router shape, hyper-util connection builder settings, TCP_NODELAY
//! and multi-threaded tokio runtime — but answers every request with a fixed
//! `allowed` AdmissionReview after reading the body, without parsing it,
//! counting it or logging it.
//!
//! ```sh
//! cargo run --release --example constant_reply -- 127.0.0.1:8444
//! ```
//!
//! Keep the connection settings in step with `serve`/`connection` in
//! `src/server/mod.rs`, or the ratio in BENCHMARKS.md stops meaning anything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use podgate::server::tls::{self, CertResolver};

const ANSWER: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","allowed":true}}"#;

async fn validate(body: Bytes) -> Response {
    std::hint::black_box(body);
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], ANSWER).into_response()
}

fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:8444").parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let generated = tls::self_signed(&[])?;
        let resolver = Arc::new(CertResolver::new(&generated.pair));
        let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(resolver)?));
        let mut h1 = auto::Builder::new(TokioExecutor::new());
        h1.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(120)).keep_alive(true);
        let h1 = Arc::new(h1.http1_only());
        let router = Router::new().route("/validate", post(validate));
        let listener = TcpListener::bind(addr).await?;
        eprintln!("constant_reply: listening on https://{}/validate", listener.local_addr()?);
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            let (acceptor, router, h1) = (acceptor.clone(), router.clone(), h1.clone());
            tokio::spawn(async move {
                let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                    return;
                };
                let service = TowerToHyperService::new(router);
                let _ = h1.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}
