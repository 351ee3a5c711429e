//! Closes HTTP/2 connections that carry no request for too long.
//!
//! HTTP/1.1 connections have hyper's header-read timeout, which is also
//! their idle timeout. hyper has none for HTTP/2: a client that negotiates
//! `h2` and then sends nothing (not even the connection preface), or only
//! pings, would hold its socket and task forever, and enough of them
//! exhaust the file descriptors. Here each HTTP/2 connection counts its
//! requests in flight; once it has had none for the timeout, it is dropped.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use tokio::time::Instant;
use tower::ServiceExt;

/// Requests in flight on one connection, and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    inflight: AtomicUsize,
    /// Milliseconds from `opened` to the end of the last request.
    last_end_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity { opened: Instant::now(), inflight: AtomicUsize::new(0), last_end_ms: AtomicU64::new(0) })
    }

    /// Counts a request in flight until the guard is dropped.
    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    /// When the connection will have been idle for `timeout`; `None` while a
    /// request is in flight.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.inflight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.opened + Duration::from_millis(self.last_end_ms.load(Ordering::Acquire)) + timeout)
    }
}

struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_end_ms.fetch_max(now, Ordering::AcqRel);
        activity.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `router`, counting each request on `activity` while it is handled.
pub fn tracked(
    router: Router,
    activity: Arc<Activity>,
) -> impl tower::Service<
    Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    tower::service_fn(move |request: Request<hyper::body::Incoming>| {
        let guard = activity.begin();
        let call = router.clone().oneshot(request);
        async move {
            let response = call.await;
            drop(guard);
            response
        }
    })
}

/// Runs `serving` (a connection) until it ends, or until it has carried no
/// request for `timeout`: then it is dropped, which closes the socket, and
/// the answer is `None`.
pub async fn until_idle<F: Future>(serving: F, activity: &Activity, timeout: Duration) -> Option<F::Output> {
    tokio::pin!(serving);
    loop {
        let deadline = activity.idle_deadline(timeout).unwrap_or_else(|| Instant::now() + timeout);
        tokio::select! {
            // A connection that has ended wins over the idle check.
            biased;
            output = &mut serving => return Some(output),
            () = tokio::time::sleep_until(deadline) => {
                if activity.idle_deadline(timeout).is_some_and(|idle| idle <= Instant::now()) {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_means_no_request_in_flight_for_the_timeout() {
        let activity = Activity::new();
        let timeout = Duration::from_millis(50);
        assert_eq!(activity.idle_deadline(timeout), Some(activity.opened + timeout));

        let guard = activity.begin();
        assert_eq!(activity.idle_deadline(timeout), None, "a request in flight is never idle");
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(guard);
        let deadline = activity.idle_deadline(timeout).unwrap();
        assert!(deadline >= activity.opened + Duration::from_millis(20) + timeout);

        // A connection that never ends is dropped once idle, not before ...
        assert!(until_idle(std::future::pending::<()>(), &activity, timeout).await.is_none());
        assert!(Instant::now() >= deadline);
        // ... and one that ends first is not.
        assert_eq!(until_idle(async { 7 }, &activity, timeout).await, Some(7));
    }
}
