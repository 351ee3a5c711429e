//! `podgate serve`: the HTTPS admission webhook.
//!
//! Transport only: what to evaluate and how to answer is
//! [`crate::admission`]'s. One module per concern: [`args`] (flags), [`tls`]
//! (certificates, hot reload, self-signed), [`reload`] (policy hot reload,
//! polling), [`handlers`] (HTTP: read the body, admit, write the answer),
//! [`metrics`], [`error`], `connection` (idle and
//! request-head timeouts, closing quiet connections on shutdown). This
//! module binds the listeners, runs the accept loops and shuts down
//! gracefully. Log set-up and metric exposition are [`crate::telemetry`]'s.
//!
//! [`start`] returns a [`RunningServer`] so that tests can run the real
//! server in-process; [`run`] is the command, with logging and signals.

pub mod args;
mod connection;
pub mod error;
pub mod handlers;
pub mod metrics;
pub mod reload;
pub mod swap;
pub mod tls;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::telemetry;

pub use args::ServeArgs;

use connection::{Activity, End, Expiry, Timeouts, Tracked};
use handlers::{AppState, BodyBudget, Inflight};
use metrics::Metrics;
use swap::Swap;
use tls::{CertFiles, CertReloader, CertResolver};

/// How long the metrics listener gets to finish its own requests once the
/// webhook listener has drained.
const OPS_GRACE: Duration = Duration::from_secs(2);

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Every connection finished within the grace period.
    Drained,
    /// The grace period ran out; this many connections were cut.
    GraceExpired { connections: usize },
}

/// A started server: its addresses, and the handle to stop it.
pub struct RunningServer {
    webhook_addr: SocketAddr,
    metrics_addr: SocketAddr,
    state: Arc<AppState>,
    resolver: Arc<CertResolver>,
    self_signed_ca: Option<String>,
    nudge: Arc<Notify>,
    stop_webhook: watch::Sender<bool>,
    stop_ops: watch::Sender<bool>,
    webhook: JoinHandle<Shutdown>,
    ops: JoinHandle<Shutdown>,
    reloaders: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// The bound address of the HTTPS webhook listener.
    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook_addr
    }

    /// The bound address of the metrics/health listener.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The CA of a `--self-signed` certificate, PEM.
    pub fn self_signed_ca(&self) -> Option<&str> {
        self.self_signed_ca.as_deref()
    }

    /// Reviews being handled right now: from their head until their answer
    /// (body being received included).
    pub fn inflight(&self) -> usize {
        self.state.reviews.load(Ordering::Acquire)
    }

    /// The DER of the certificate served to new connections.
    pub fn current_certificate(&self) -> Vec<u8> {
        self.resolver.current().cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }

    /// Checks the certificate and policy files now (what SIGHUP does).
    pub fn reload_now(&self) {
        self.nudge.notify_waiters();
    }

    /// Reports not ready on `/readyz` while still serving: the first step of
    /// a shutdown with `--shutdown-delay`.
    pub fn mark_not_ready(&self) {
        self.state.ready.store(false, Ordering::Release);
    }

    /// Starts the shutdown: not ready, no new connections, in-flight reviews
    /// finish, connections without one (idle, or a head still arriving)
    /// close.
    pub fn begin_shutdown(&self) {
        self.state.ready.store(false, Ordering::Release);
        self.stop_webhook.send_replace(true);
    }

    /// Waits until the shutdown begun by [`begin_shutdown`](Self::begin_shutdown)
    /// is over (within `--shutdown-grace`), then stops the metrics listener.
    pub async fn wait(self) -> Shutdown {
        let outcome = self.webhook.await.unwrap_or(Shutdown::GraceExpired { connections: 0 });
        self.stop_ops.send_replace(true);
        let _ = self.ops.await;
        for reloader in self.reloaders {
            reloader.abort();
        }
        outcome
    }

    /// [`begin_shutdown`](Self::begin_shutdown) and [`wait`](Self::wait).
    pub async fn shutdown(self) -> Shutdown {
        self.begin_shutdown();
        self.wait().await
    }
}

/// HTTP settings shared by every connection.
struct Http {
    /// HTTP/1.1 only (ALPN `http/1.1`, or none).
    h1: auto::Builder<TokioExecutor>,
    /// HTTP/2 only (ALPN `h2`).
    h2: auto::Builder<TokioExecutor>,
    handshake_timeout: Duration,
    /// HTTP/1.1: idle and request-head timeouts.
    h1_timeouts: Timeouts,
    /// HTTP/2: the idle timeout only (frames arrive between requests).
    h2_timeouts: Timeouts,
}

impl Http {
    fn new(args: &ServeArgs) -> Self {
        let mut h1 = auto::Builder::new(TokioExecutor::new());
        // hyper's header_read_timeout (30 s by default once a timer is set)
        // also runs while the connection is idle; `connection` keeps the
        // two apart instead.
        h1.http1().timer(TokioTimer::new()).header_read_timeout(None).keep_alive(true);
        let mut h2 = auto::Builder::new(TokioExecutor::new());
        h2.http2().timer(TokioTimer::new()).max_concurrent_streams(1024);
        Http {
            h1: h1.http1_only(),
            h2: h2.http2_only(),
            handshake_timeout: args.tls_handshake_timeout,
            h1_timeouts: Timeouts { idle: args.idle_timeout, head: Some(args.header_read_timeout) },
            h2_timeouts: Timeouts { idle: args.idle_timeout, head: None },
        }
    }
}

/// Loads policy and certificate, binds both listeners and starts serving.
/// Fails on an invalid policy or certificate, or a port that cannot be bound.
pub async fn start(args: &ServeArgs) -> anyhow::Result<RunningServer> {
    args.validate().map_err(anyhow::Error::msg)?;
    let metrics = Arc::new(Metrics::new());
    let mode = args.mode_override();
    let policy = reload::load_policy(args.config.as_deref(), mode).map_err(|e| anyhow::anyhow!("policy: {e}"))?;
    tracing::info!(
        config = args.config.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<built-in default>".into()),
        mode = policy.mode.as_str(),
        exemptions = policy.exemptions.len(),
        "loaded the policy"
    );
    metrics.set_exemption_expiries(&policy);
    let policy = Arc::new(Swap::new(Arc::new(policy)));

    let (pair, files, self_signed_ca) = match args.certificate_source().map_err(anyhow::Error::msg)? {
        Some((cert, key)) => {
            let files = CertFiles { cert: cert.clone(), key };
            let pair = files.load().context("TLS certificate")?;
            tracing::info!(
                cert = %cert.display(),
                not_after = %crate::time::format_unix_seconds(pair.not_after),
                "loaded the TLS certificate"
            );
            pair.warn_if_not_yet_valid(tls::unix_now(), &cert);
            (pair, Some(files), None)
        }
        None => {
            let generated = tls::self_signed(&args.dns_names).context("self-signed certificate")?;
            match &args.write_ca {
                Some(path) => {
                    std::fs::write(path, &generated.ca_pem)
                        .with_context(|| format!("cannot write the CA certificate to {}", path.display()))?;
                    tracing::info!(
                        ca = %path.display(),
                        "generated a self-signed certificate; clients trust it with the CA written to this file"
                    );
                }
                None => tracing::info!("generated a self-signed certificate; pass --write-ca FILE to save its CA"),
            }
            (generated.pair, None, Some(generated.ca_pem))
        }
    };
    metrics.set_certificate_expiry(pair.not_after);
    let resolver = Arc::new(CertResolver::new(&pair));
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(resolver.clone())?));

    let webhook_listener =
        TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let ops_listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_listen))?;
    let webhook_addr = webhook_listener.local_addr()?;
    let metrics_addr = ops_listener.local_addr()?;

    let state = Arc::new(AppState {
        policy: policy.clone(),
        metrics: metrics.clone(),
        inflight: Inflight::new(args.max_inflight),
        reviews: 0.into(),
        body_budget: BodyBudget::new(args.max_buffered_bytes),
        max_body_bytes: args.max_body_bytes,
        request_timeout: args.request_timeout,
        ready: true.into(),
        clock: args.clock,
    });

    let nudge = Arc::new(Notify::new());
    let mut reloaders = Vec::new();
    if let Some(files) = files {
        let reloader = CertReloader::new(files, resolver.clone(), metrics.clone());
        reloaders.push(reload::spawn_cert(reloader, args.cert_reload_interval, nudge.clone()));
    }
    if let Some(path) = &args.config {
        let reloader = reload::ConfigReloader::new(path.clone(), mode, policy, metrics.clone());
        reloaders.push(reload::spawn_config(reloader, args.config_reload_interval, nudge.clone()));
    }

    let http = Arc::new(Http::new(args));
    let (stop_webhook, webhook_stopped) = watch::channel(false);
    let (stop_ops, ops_stopped) = watch::channel(false);
    let webhook = tokio::spawn(serve(
        webhook_listener,
        Some(acceptor),
        handlers::webhook_router(state.clone()),
        http.clone(),
        webhook_stopped,
        args.shutdown_grace,
    ));
    let ops =
        tokio::spawn(serve(ops_listener, None, handlers::ops_router(state.clone()), http, ops_stopped, OPS_GRACE));
    tracing::info!(address = %webhook_addr, endpoint = "webhook", "listening on https://{webhook_addr}/validate");
    tracing::info!(address = %metrics_addr, endpoint = "metrics", "listening on http://{metrics_addr}/metrics");

    Ok(RunningServer {
        webhook_addr,
        metrics_addr,
        state,
        resolver,
        self_signed_ca,
        nudge,
        stop_webhook,
        stop_ops,
        webhook,
        ops,
        reloaders,
    })
}

/// Accepts connections until `stop` turns true, then shuts down gracefully:
/// every open connection finishes its in-flight requests and closes, within
/// `grace`; one without a request in flight (idle, a head still arriving, a
/// TLS handshake) closes at once (idle HTTP/2 ones with GOAWAY).
async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    http: Arc<Http>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> Shutdown {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let watcher = graceful.watcher();
                    let stop = stop.clone();
                    connections.spawn(connection(tcp, tls.clone(), router.clone(), http.clone(), watcher, stop));
                }
                Err(error) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => Shutdown::Drained,
        Err(_) => {
            let open = connections.len();
            connections.abort_all();
            Shutdown::GraceExpired { connections: open }
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// One connection: the TLS handshake (bounded by its timeout and by
/// shutdown), then HTTP/2 if ALPN chose it, else HTTP/1.1, under
/// [`connection::supervise`].
async fn connection(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    router: Router,
    http: Arc<Http>,
    watcher: Watcher,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Activity::new();
    let Some(acceptor) = tls else {
        activity.ready();
        let io = Tracked::both(tcp, activity.clone());
        return serve_http(io, &http.h1, http.h1_timeouts, router, activity, watcher, &mut stop).await;
    };
    // Encrypted bytes count as received: a TLS record trickled a byte at a
    // time starts the head clock as plain bytes would.
    let handshake =
        tokio::time::timeout(http.handshake_timeout, acceptor.accept(Tracked::reads(tcp, activity.clone())));
    let stream = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return;
            }
        },
        // A handshake is no request in flight: shutdown does not wait for it.
        () = stopped(&mut stop) => return,
    };
    activity.ready();
    let (builder, timeouts) = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        (&http.h2, http.h2_timeouts)
    } else {
        (&http.h1, http.h1_timeouts)
    };
    let io = Tracked::writes(stream, activity.clone());
    serve_http(io, builder, timeouts, router, activity, watcher, &mut stop).await;
}

/// Serves HTTP on `io` until the connection ends, times out, or is quiet
/// during shutdown.
async fn serve_http<I>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    timeouts: Timeouts,
    router: Router,
    activity: Arc<Activity>,
    watcher: Watcher,
    stop: &mut watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(connection::tracked(router, activity.clone()));
    let serving = watcher.watch(builder.serve_connection(TokioIo::new(io), service));
    match connection::supervise(serving, &activity, timeouts, stop).await {
        End::Finished(Err(error)) => tracing::debug!(%error, "connection ended with an error"),
        End::Finished(Ok(())) => {}
        End::TimedOut(Expiry::Idle) => tracing::debug!("closed a connection idle for the idle timeout"),
        End::TimedOut(Expiry::Head) => {
            tracing::debug!("closed a connection whose request head was not complete within the header-read timeout");
        }
        End::Shutdown => tracing::debug!("shutdown: closed a connection without a request in flight"),
    }
}

/// `podgate serve`: logs, starts, waits for SIGTERM/SIGINT, shuts down.
/// Exit code 0 after a clean shutdown, 1 when start-up failed or the grace
/// period ran out with connections still open.
pub fn run(args: &ServeArgs) -> ExitCode {
    // Flushes the log lines still queued when it is dropped, at exit.
    let _log_guard = telemetry::init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match start(args).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let signal = match wait_for_signal(&server).await {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for signals");
                "none"
            }
        };
        if !args.shutdown_delay.is_zero() {
            // Endpoints controllers and kube-proxy need a moment to stop
            // sending new connections here; refusing them at once would fail
            // reviews the apiserver still routes to this pod.
            server.mark_not_ready();
            tracing::info!(signal, delay = ?args.shutdown_delay, "shutting down: not ready, still serving during the delay");
            tokio::select! {
                () = tokio::time::sleep(args.shutdown_delay) => {}
                second = wait_for_signal(&server) => {
                    tracing::info!(signal = second.unwrap_or("none"), "second signal: delay cut short");
                }
            }
        }
        tracing::info!(
            signal,
            grace = ?args.shutdown_grace,
            "shutting down: not ready, no new connections, finishing in-flight reviews"
        );
        match server.shutdown().await {
            Shutdown::Drained => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Shutdown::GraceExpired { connections } => {
                tracing::error!(connections, "shutdown grace period ran out; cut the connections still open");
                ExitCode::FAILURE
            }
        }
    })
}

/// Waits for SIGTERM or SIGINT; SIGHUP re-reads certificate and policy now.
#[cfg(unix)]
async fn wait_for_signal(server: &RunningServer) -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok("SIGTERM"),
            _ = interrupt.recv() => return Ok("SIGINT"),
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: checking the certificate and policy files now");
                server.reload_now();
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal(_server: &RunningServer) -> std::io::Result<&'static str> {
    tokio::signal::ctrl_c().await.map(|()| "Ctrl-C")
}
