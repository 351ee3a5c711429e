//! The life of one connection: how long it may sit idle, how long a request
//! head may take to arrive, and when shutdown may close it.
//!
//! hyper 1.x has a single HTTP/1.1 timer, `header_read_timeout`, and it
//! starts as soon as the connection waits for a request (hyper 1.12's
//! `Conn::poll_read_head` arms it right after the previous response), not
//! when the request's first byte arrives. It is the idle timeout and the head
//! timeout at once: kept above the apiserver's 90 s idle timeout, it also
//! gives a half-sent head that long. hyper has no idle timeout for HTTP/2,
//! and its graceful shutdown waits for an HTTP/1.1 request whose head has
//! started to arrive. So hyper's timer is off, and each connection has an
//! [`Activity`], updated by its socket ([`Tracked`]) and its service
//! ([`tracked`]), that [`supervise`] runs the connection against, like Go's
//! `net/http` (`IdleTimeout` apart from `ReadHeaderTimeout`):
//!
//! - **idle**: no request for the idle timeout since the last one ended (or
//!   since the TLS handshake): closed.
//! - **head** (HTTP/1.1 only): from the first byte received after the last
//!   request ended (on a new connection: from the end of the TLS handshake)
//!   until the head is complete, at most the head timeout. Over HTTP/2 bytes
//!   arrive between requests (PING, SETTINGS, WINDOW_UPDATE), so only the
//!   idle timeout applies there.
//! - **shutdown**: a connection with no request in flight and nothing left
//!   to flush is closed (after [`LINGER`], for hyper to close an idle one
//!   cleanly); one with a request in flight finishes it first.
//!
//! A request is in flight from the moment hyper hands it to the service
//! (its head is complete) until hyper has taken the whole response body;
//! what is written is then flushed before the connection counts as quiet.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::Router;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tower::ServiceExt;

/// On shutdown, how long a quiet connection is left to hyper (which closes
/// an idle HTTP/1.1 connection at once and sends HTTP/2 GOAWAY) before it is
/// dropped; a connection with a half-sent head is dropped after it.
pub const LINGER: Duration = Duration::from_millis(100);

/// The two timeouts of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// No request in flight and no byte received for this long: closed.
    pub idle: Duration,
    /// A request head must be complete this long after its first byte;
    /// `None` for HTTP/2.
    pub head: Option<Duration>,
    /// HTTP/1.1: answers on a connection open this long carry
    /// `Connection: close` (`--max-connection-age`); `None`: never.
    pub max_age: Option<Duration>,
}

/// Which timeout closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Idle,
    Head,
}

/// Requests in flight on one connection, and the times the timeouts count from.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    /// Requests handed to the service whose response hyper has not taken yet.
    inflight: AtomicUsize,
    /// Milliseconds from `opened` to the end of the last request (or to the
    /// end of the TLS handshake).
    last_end_ms: AtomicU64,
    /// 1 + milliseconds from `opened` to the first byte received since the
    /// last request ended; 0: none.
    head_start: AtomicU64,
    /// Bytes were written and not flushed yet.
    unflushed: AtomicBool,
    /// The head timeout in milliseconds, set by [`supervise`]; 0: none.
    head_timeout_ms: AtomicU64,
    /// Milliseconds from `opened` to when [`supervise`] looks next;
    /// `u64::MAX` while it works that out.
    wake_ms: AtomicU64,
    /// Wakes [`supervise`] when a head starts and its deadline is sooner than
    /// the next look (so about once per head timeout under steady traffic,
    /// not once per request).
    changed: Notify,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            opened: Instant::now(),
            inflight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            head_start: AtomicU64::new(0),
            unflushed: AtomicBool::new(false),
            head_timeout_ms: AtomicU64::new(0),
            wake_ms: AtomicU64::new(u64::MAX),
            changed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// The connection is ready for HTTP (TLS handshake done): both clocks
    /// start now, the head clock too, as the first request is due (Go and
    /// nginx count a new connection's first head from the start as well).
    pub fn ready(&self) {
        let now = self.now_ms();
        self.last_end_ms.store(now, Ordering::Release);
        self.head_start.store(now + 1, Ordering::SeqCst);
    }

    /// Counts a request in flight until the guard (moved into the response
    /// body) is dropped.
    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        // The head is complete.
        self.head_start.store(0, Ordering::Release);
        RequestGuard(self.clone())
    }

    /// `bytes` were received. Bytes received while a request is in flight
    /// are its body (or, pipelined, part of the next head: that head's clock
    /// then starts with the next byte after the request, and a head sent in
    /// part and then left alone is an idle connection).
    fn received(&self, bytes: usize) {
        let head_timeout = self.head_timeout_ms.load(Ordering::Relaxed);
        if bytes == 0 || head_timeout == 0 || self.inflight.load(Ordering::Acquire) > 0 {
            return;
        }
        let now = self.now_ms();
        let started = self.head_start.compare_exchange(0, now + 1, Ordering::SeqCst, Ordering::Relaxed);
        if started.is_ok() && now.saturating_add(head_timeout) < self.wake_ms.load(Ordering::SeqCst) {
            self.changed.notify_one();
        }
    }

    /// No request in flight and nothing written left to flush.
    fn quiet(&self) -> bool {
        self.inflight.load(Ordering::Acquire) == 0 && !self.unflushed.load(Ordering::Acquire)
    }

    /// When the connection times out, and why; `None` while a request is in flight.
    fn deadline(&self, timeouts: Timeouts) -> Option<(Instant, Expiry)> {
        if self.inflight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64| self.opened + Duration::from_millis(ms);
        let idle = at(self.last_end_ms.load(Ordering::Acquire)) + timeouts.idle;
        let head = match (timeouts.head, self.head_start.load(Ordering::SeqCst)) {
            (Some(timeout), started) if started > 0 => Some(at(started - 1) + timeout),
            _ => None,
        };
        Some(match head {
            Some(head) if head < idle => (head, Expiry::Head),
            _ => (idle, Expiry::Idle),
        })
    }
}

/// Ends its request when dropped: when hyper has taken the whole response
/// body, or when the request is abandoned.
#[derive(Debug)]
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.head_start.store(0, Ordering::Release);
        activity.last_end_ms.fetch_max(activity.now_ms(), Ordering::AcqRel);
        // No wake-up: the deadline only moves later (shutdown looks again
        // every LINGER).
        activity.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it is dropped.
/// Frames, end and size hint are the inner body's (hyper sets
/// `Content-Length` from the size hint).
#[derive(Debug)]
pub struct Guarded {
    body: Body,
    _request: RequestGuard,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// `router`, counting each request on `activity` from the call until its
/// response body is dropped; on an HTTP/1.1 connection older than
/// `max_age`, the answer carries `Connection: close` (hyper then closes the
/// connection once it is written, and the client does not reuse it: no
/// request can be lost to the close).
pub fn tracked(
    router: Router,
    activity: Arc<Activity>,
    max_age: Option<Duration>,
) -> impl tower::Service<
    Request<hyper::body::Incoming>,
    Response = axum::http::Response<Guarded>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::http::Response<Guarded>, std::convert::Infallible>> + Send,
> + Clone {
    tower::service_fn(move |request: Request<hyper::body::Incoming>| {
        let guard = activity.begin();
        let old = request.version() <= axum::http::Version::HTTP_11
            && max_age.is_some_and(|age| activity.opened.elapsed() >= age);
        let call = router.clone().oneshot(request);
        async move {
            let mut response = call.await?;
            if old {
                response
                    .headers_mut()
                    .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
            }
            Ok(response.map(|body| Guarded { body, _request: guard }))
        }
    })
}

/// A socket that reports to an [`Activity`]: bytes received (under TLS: the
/// encrypted ones, so that a TLS record sent a byte at a time starts the
/// head clock too) and/or writes not yet flushed (above TLS: what hyper
/// wrote and rustls still holds).
#[derive(Debug)]
pub struct Tracked<I> {
    io: I,
    activity: Arc<Activity>,
    reads: bool,
    writes: bool,
}

impl<I> Tracked<I> {
    /// Reports bytes received.
    pub fn reads(io: I, activity: Arc<Activity>) -> Self {
        Tracked { io, activity, reads: true, writes: false }
    }

    /// Reports writes not yet flushed.
    pub fn writes(io: I, activity: Arc<Activity>) -> Self {
        Tracked { io, activity, reads: false, writes: true }
    }

    /// Reports both (a plain-TCP connection).
    pub fn both(io: I, activity: Arc<Activity>) -> Self {
        Tracked { io, activity, reads: true, writes: true }
    }

    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        if self.writes && matches!(result, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.unflushed.store(true, Ordering::Release);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.reads && matches!(result, Poll::Ready(Ok(()))) {
            this.activity.received(buf.filled().len() - before);
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(&result);
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        if this.writes && matches!(result, Poll::Ready(Ok(()))) {
            this.activity.unflushed.store(false, Ordering::Release);
        }
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// How a supervised connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End<T> {
    /// hyper ended it (the client closed it, an error, or a graceful close).
    Finished(T),
    /// A timeout ran out with no request in flight; the connection is dropped.
    TimedOut(Expiry),
    /// Shutdown found it quiet; it is dropped.
    Shutdown,
}

/// Runs `serving` (a connection, whose socket and service report to
/// `activity`) until it ends, a timeout runs out, or, once `stop` has been
/// true for [`LINGER`], it is quiet. Dropping `serving` closes the socket.
pub async fn supervise<F: Future>(
    serving: F,
    activity: &Activity,
    timeouts: Timeouts,
    stop: &mut watch::Receiver<bool>,
) -> End<F::Output> {
    tokio::pin!(serving);
    let head_ms = timeouts.head.map_or(0, |head| u64::try_from(head.as_millis()).unwrap_or(u64::MAX).max(1));
    activity.head_timeout_ms.store(head_ms, Ordering::Relaxed);
    let mut linger_until: Option<Instant> = None;
    loop {
        // A head starting from here on wakes us until `wake_ms` is known.
        activity.wake_ms.store(u64::MAX, Ordering::SeqCst);
        let now = Instant::now();
        // While a request is in flight nothing can expire; look again after
        // the shortest timeout (no deadline that starts later can be sooner).
        let shortest = timeouts.head.map_or(timeouts.idle, |head| head.min(timeouts.idle));
        let mut wake = activity.deadline(timeouts).map_or(now + shortest, |(at, _)| at);
        if let Some(linger) = linger_until {
            // Shutting down: drop the connection once it is quiet.
            wake = wake.min(if linger > now { linger } else { now + LINGER });
        }
        let wake_ms = u64::try_from(wake.saturating_duration_since(activity.opened).as_millis()).unwrap_or(u64::MAX);
        activity.wake_ms.store(wake_ms, Ordering::SeqCst);
        tokio::select! {
            // A connection that has ended wins over everything else.
            biased;
            output = &mut serving => return End::Finished(output),
            () = super::stopped(stop), if linger_until.is_none() => linger_until = Some(Instant::now() + LINGER),
            () = activity.changed.notified() => {}
            () = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        if linger_until.is_some_and(|linger| linger <= now) && activity.quiet() {
            return End::Shutdown;
        }
        if let Some((at, expiry)) = activity.deadline(timeouts) {
            if at <= now {
                return End::TimedOut(expiry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_millis(300);
    const HEAD: Duration = Duration::from_millis(60);
    const H1: Timeouts = Timeouts { idle: IDLE, head: Some(HEAD), max_age: None };

    /// A connection past its TLS handshake, its head timeout known (as
    /// [`supervise`] sets it).
    fn h1_activity() -> Arc<Activity> {
        let activity = Activity::new();
        activity.head_timeout_ms.store(HEAD.as_millis() as u64, Ordering::Relaxed);
        activity.ready();
        activity
    }

    #[tokio::test]
    async fn a_new_connection_has_the_head_timeout_then_idle_until_a_byte_arrives() {
        let activity = h1_activity();
        let (at, expiry) = activity.deadline(H1).unwrap();
        assert_eq!(expiry, Expiry::Head);
        assert!(at <= Instant::now() + HEAD);

        let guard = activity.begin();
        assert_eq!(activity.deadline(H1), None, "a request in flight never times out here");
        activity.received(100); // its body
        drop(guard);
        let (at, expiry) = activity.deadline(H1).unwrap();
        assert_eq!(expiry, Expiry::Idle, "after a request: idle, whatever its body did");
        assert!(at >= Instant::now() + IDLE - Duration::from_millis(20));

        // The next request's first byte starts the head clock; more bytes do not restart it.
        activity.received(1);
        let (first, expiry) = activity.deadline(H1).unwrap();
        assert_eq!(expiry, Expiry::Head);
        tokio::time::sleep(Duration::from_millis(20)).await;
        activity.received(1);
        assert_eq!(activity.deadline(H1).unwrap().0, first);
        // HTTP/2: bytes between requests are no head.
        assert_eq!(activity.deadline(Timeouts { idle: IDLE, head: None, max_age: None }).unwrap().1, Expiry::Idle);
    }

    #[tokio::test]
    async fn supervise_cuts_a_trickled_head_but_not_a_request_in_flight() {
        let (_stop_tx, mut stop) = watch::channel(false);
        let activity = h1_activity();
        let started = Instant::now();
        assert_eq!(
            supervise(std::future::pending::<()>(), &activity, H1, &mut stop).await,
            End::TimedOut(Expiry::Head)
        );
        assert!(started.elapsed() >= HEAD);

        let activity = h1_activity();
        let guard = activity.begin();
        let served = async {
            tokio::time::sleep(IDLE + HEAD).await;
            drop(guard);
            7
        };
        assert_eq!(supervise(served, &activity, H1, &mut stop).await, End::Finished(7));
    }

    #[tokio::test]
    async fn a_head_starting_on_an_idle_connection_wakes_the_supervisor() {
        let (_stop_tx, mut stop) = watch::channel(false);
        let activity = h1_activity();
        drop(activity.begin()); // a first request, done: now idle until IDLE
        let idle_since = Instant::now();
        let head_later = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            activity.received(1);
            std::future::pending::<()>().await
        };
        assert_eq!(supervise(head_later, &activity, H1, &mut stop).await, End::TimedOut(Expiry::Head));
        let after = idle_since.elapsed();
        assert!(after >= Duration::from_millis(50) + HEAD && after < IDLE, "{after:?}");
    }

    #[tokio::test]
    async fn shutdown_drops_quiet_connections_and_waits_for_busy_ones() {
        let (stop_tx, mut stop) = watch::channel(false);
        let activity = h1_activity();
        activity.received(10); // a head on its way
        stop_tx.send_replace(true);
        let started = Instant::now();
        let long = Timeouts { idle: Duration::from_secs(60), head: Some(Duration::from_secs(60)), max_age: None };
        assert_eq!(supervise(std::future::pending::<()>(), &activity, long, &mut stop).await, End::Shutdown);
        assert!(started.elapsed() < LINGER + Duration::from_millis(500));

        // Unflushed writes count as busy; a flush makes it quiet.
        let activity = h1_activity();
        activity.unflushed.store(true, Ordering::Release);
        let flush_later = async {
            tokio::time::sleep(LINGER * 3).await;
            activity.unflushed.store(false, Ordering::Release);
            std::future::pending::<()>().await
        };
        let started = Instant::now();
        assert_eq!(supervise(flush_later, &activity, long, &mut stop).await, End::Shutdown);
        assert!(started.elapsed() >= LINGER * 3);
    }
}
