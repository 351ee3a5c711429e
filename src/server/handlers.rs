//! The HTTP handlers: read the body, call the service, encode, count, log.
//! Nothing here decides anything about a pod.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use jiff::Timestamp;

use crate::admission::{self, Admission, Outcome};
use crate::config::Policy;
use crate::exemption::Clock;
use crate::telemetry;

use super::error::ApiError;
use super::metrics::{Metrics, ReviewRecord};
use super::swap::Swap;

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub policy: Arc<Swap<Policy>>,
    pub metrics: Arc<Metrics>,
    /// Reviews being evaluated and answered (body complete).
    pub inflight: Inflight,
    /// Reviews being handled, from their head to their answer (body being
    /// received included): what shutdown waits for.
    pub reviews: AtomicUsize,
    /// Bytes of bodies being received, all connections together.
    pub body_budget: BodyBudget,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// `/readyz`: true from start-up until shutdown begins.
    pub ready: AtomicBool,
    /// The time exemptions are judged at (the system clock but in tests).
    pub clock: Clock,
}

/// Counts reviews in flight and refuses one beyond the cap.
#[derive(Debug)]
pub struct Inflight {
    current: AtomicUsize,
    max: usize,
}

impl Inflight {
    pub fn new(max: usize) -> Self {
        Inflight { current: AtomicUsize::new(0), max }
    }

    /// A slot, or `None` when `max` reviews are already in flight.
    pub fn try_acquire(&self) -> Option<InflightGuard<'_>> {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| InflightGuard(self))
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// Frees its slot when dropped, whatever way the handler ends.
#[derive(Debug)]
pub struct InflightGuard<'a>(&'a Inflight);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bounds the memory of request bodies being received, all connections
/// together (`--max-buffered-bytes`). A body is charged for the buffer it
/// occupies as it arrives, not for its declared length, so a client sending
/// slowly holds only about what it has sent.
#[derive(Debug)]
pub struct BodyBudget {
    used: AtomicUsize,
    max: usize,
}

impl BodyBudget {
    pub fn new(max: usize) -> Self {
        BodyBudget { used: AtomicUsize::new(0), max }
    }

    /// Bytes charged right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Nothing charged yet; [`Held::grow_to`] charges.
    fn hold(&self) -> Held<'_> {
        Held { budget: self, bytes: 0 }
    }
}

/// The part of the [`BodyBudget`] one body holds; given back when dropped.
#[derive(Debug)]
struct Held<'a> {
    budget: &'a BodyBudget,
    bytes: usize,
}

impl Held<'_> {
    /// Holds `bytes` in total, or `false` (holding as before) if the budget
    /// has not that much left.
    fn grow_to(&mut self, bytes: usize) -> bool {
        let Some(more) = bytes.checked_sub(self.bytes).filter(|&more| more > 0) else { return true };
        let max = self.budget.max;
        let taken = self.budget.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(more).filter(|&total| total <= max)
        });
        if taken.is_ok() {
            self.bytes = bytes;
        }
        taken.is_ok()
    }

    fn release(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.bytes = 0;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Counts a review being handled until dropped.
struct Handling<'a>(&'a AtomicUsize);

impl<'a> Handling<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Handling(count)
    }
}

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The HTTPS listener: `POST /validate`.
pub fn webhook_router(state: Arc<AppState>) -> Router {
    Router::new().route("/validate", post(validate).fallback(method_not_allowed)).fallback(not_found).with_state(state)
}

/// The plain-HTTP listener: `/metrics`, `/healthz`, `/readyz`.
pub fn ops_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn validate(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let _handling = Handling::new(&state.reviews);
    let http1 = request.version() <= Version::HTTP_11;
    let mut response = answer_review(&state, request).await;
    if http1 && !state.ready.load(Ordering::Acquire) {
        // Shutting down (the --shutdown-delay): ask keep-alive clients to
        // reconnect, which lands them on a pod that stays, instead of reusing
        // a connection that is about to be closed as idle.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn answer_review(state: &AppState, request: Request) -> Response {
    let started = Instant::now();
    // The body first, bounded by --request-timeout, --max-body-bytes and
    // --max-buffered-bytes; the slot only once it is complete, so that
    // clients sending slowly never hold the slots real reviews need.
    let (body, _held) = match read_body(state, request).await {
        Ok(body) => body,
        Err(error) => return reject(state, error),
    };
    let Some(_slot) = state.inflight.try_acquire() else {
        return reject(state, ApiError::Overloaded(state.inflight.max()));
    };
    let policy = state.policy.load();
    match admit_catching_panics(&policy, &body, state.clock.now()) {
        Ok(admission) => {
            let answer = admission.response();
            record(state, &admission, policy.mode.as_str(), started);
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], answer).into_response()
        }
        Err(error) => reject(state, error),
    }
}

/// [`admission::admit_at`], with a panic (a bug) turned into a 500 for this
/// one request instead of a reset connection: the apiserver then applies the
/// webhook's `failurePolicy`, and the error is counted and logged.
fn admit_catching_panics<'b, 'p>(
    policy: &'p Policy,
    body: &'b [u8],
    now: Timestamp,
) -> Result<Admission<'b, 'p>, ApiError> {
    catch_panic(|| admission::admit_at(policy, body, now).map_err(ApiError::from))
}

fn catch_panic<T>(f: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
    // The engine holds no state across requests, so nothing is left broken.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| Err(ApiError::Internal))
}

/// Reads the body: JSON (or no content type), within `--max-body-bytes`
/// (413), `--request-timeout` (408) and `--max-buffered-bytes` (503). The
/// body holds its part of the budget until the [`Held`] is dropped.
async fn read_body<'s>(state: &'s AppState, request: Request) -> Result<(Bytes, Held<'s>), ApiError> {
    let (parts, body) = request.into_parts();
    check_content_type(&parts.headers)?;
    let limit = state.max_body_bytes;
    let drain_limit = limit.saturating_mul(4).max(16 * 1024 * 1024);
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > drain_limit as u64) {
        // Not worth reading: answer now; the connection closes.
        return Err(ApiError::TooLarge { limit });
    }
    let declared = declared.map_or(0, |len| usize::try_from(len).unwrap_or(limit).min(limit));
    let mut held = state.body_budget.hold();
    let collected = collect(body, limit, drain_limit, declared, &mut held);
    match tokio::time::timeout(state.request_timeout, collected).await {
        Err(_) => Err(ApiError::Timeout(state.request_timeout)),
        Ok(Err(Refused::TooLarge)) => Err(ApiError::TooLarge { limit }),
        Ok(Err(Refused::BuffersFull)) => Err(ApiError::BuffersFull(state.body_budget.max())),
        Ok(Err(Refused::Body(error))) => Err(error),
        Ok(Ok(body)) => Ok((body, held)),
    }
}

/// Up to this declared length a body's buffer is allocated whole when its
/// second frame arrives (most reviews: one allocation); a larger one grows
/// by doubling, so that a body is never charged more than twice what it has
/// sent, or this.
const ALLOCATE_WHOLE_UP_TO: usize = 64 * 1024;

/// Why [`collect`] kept no body.
#[derive(Debug)]
enum Refused {
    TooLarge,
    BuffersFull,
    Body(ApiError),
}

/// Collects a body of at most `limit` bytes, borrowing a single-frame body
/// as it is, and charging the memory it keeps to `held`. A larger body, or
/// one the budget has no room for, is read on and discarded up to
/// `drain_limit` bytes, so that the client, still sending, gets to read the
/// 413 or 503 instead of a broken pipe.
async fn collect(
    mut body: Body,
    limit: usize,
    drain_limit: usize,
    declared: usize,
    held: &mut Held<'_>,
) -> Result<Bytes, Refused> {
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut buffers_full = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Refused::Body(ApiError::Body(e.to_string())))?;
        let Ok(data) = frame.into_data() else { continue }; // trailers
        total = total.saturating_add(data.len());
        if total > limit || buffers_full {
            if total > drain_limit {
                break;
            }
            continue;
        }
        let kept = match first.take() {
            None if joined.is_empty() => {
                let fits = held.grow_to(data.len());
                first = Some(data);
                fits
            }
            earlier => {
                let needed = total;
                let fits = needed <= joined.capacity() || {
                    let capacity = needed
                        .max(joined.capacity().saturating_mul(2))
                        .max(declared.min(ALLOCATE_WHOLE_UP_TO))
                        .min(limit)
                        .max(needed);
                    held.grow_to(capacity) && {
                        joined.reserve_exact(capacity - joined.len());
                        true
                    }
                };
                if fits {
                    if let Some(earlier) = earlier {
                        joined.extend_from_slice(&earlier);
                    }
                    joined.extend_from_slice(&data);
                }
                fits
            }
        };
        if !kept {
            // Nothing is kept from here on: the memory goes back now.
            buffers_full = true;
            first = None;
            joined = Vec::new();
            held.release();
        }
    }
    if total > limit {
        return Err(Refused::TooLarge);
    }
    if buffers_full {
        return Err(Refused::BuffersFull);
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

/// `application/json` or any `+json` type, with any parameters; a missing
/// content type is taken as JSON.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let text = value.to_str().unwrap_or_default();
    let media_type = text.split(';').next().unwrap_or_default().trim().as_bytes();
    let (prefix, suffix) = (b"application/".as_slice(), b"+json".as_slice());
    let structured_json = media_type.len() >= prefix.len() + suffix.len()
        && media_type[..prefix.len()].eq_ignore_ascii_case(prefix)
        && media_type[media_type.len() - suffix.len()..].eq_ignore_ascii_case(suffix);
    if media_type.eq_ignore_ascii_case(b"application/json") || structured_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(text.chars().take(100).collect()))
    }
}

/// Counts and logs a request without a verdict, and answers it.
fn reject(state: &AppState, error: ApiError) -> Response {
    match error.reason() {
        Some(reason) => {
            state.metrics.invalid_request(reason);
            tracing::warn!(reason = reason.as_str(), %error, "rejected a request without a verdict");
        }
        None => {
            state.metrics.overload_rejection();
            tracing::debug!(%error, "overloaded: answered 503");
        }
    }
    error.into_response()
}

/// Counts a review and logs it: identity and verdict, never the object.
fn record(state: &AppState, admission: &Admission<'_, '_>, policy_mode: &'static str, started: Instant) {
    let elapsed = started.elapsed();
    let violations = admission.violations();
    let decision = admission.decision();
    state.metrics.review(&ReviewRecord {
        kind: admission.kind,
        operation: admission.operation,
        decision,
        mode: policy_mode,
        dry_run: admission.dry_run,
        seconds: elapsed.as_secs_f64(),
        violations: &violations,
    });
    let mut checks = String::new();
    let mut exemption = String::new();
    if let Some(verdict) = admission.verdict() {
        for rule in &verdict.exemptions {
            state.metrics.exemption(rule);
        }
        let mut seen = Vec::new();
        for (check, _) in &violations {
            if !seen.contains(check) {
                seen.push(*check);
                if !checks.is_empty() {
                    checks.push(',');
                }
                checks.push_str(check.as_str());
            }
        }
        exemption = verdict.exemption_reason().unwrap_or_default();
    }
    let skipped = match admission.outcome {
        Outcome::Skipped(skip) => skip.as_str(),
        Outcome::Evaluated(_) => "",
    };
    tracing::info!(
        uid = &*cap(&admission.uid),
        kind = admission.kind,
        namespace = &*cap(admission.namespace.as_deref().unwrap_or_default()),
        name = &*cap(admission.name.as_deref().unwrap_or_default()),
        operation = admission.operation,
        decision = decision.as_str(),
        dry_run = admission.dry_run,
        checks = checks.as_str(),
        skipped,
        exemption = exemption.as_str(),
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "admission review"
    );
}

/// A request field as logged: at most 256 bytes. The apiserver validates
/// names before calling, but anyone who can reach the port can send anything.
fn cap(text: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 256;
    if text.len() <= MAX {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}...", &text[..end]))
}

async fn method_not_allowed(State(state): State<Arc<AppState>>) -> Response {
    reject(&state, ApiError::MethodNotAllowed)
}

async fn not_found(State(state): State<Arc<AppState>>) -> Response {
    reject(&state, ApiError::NotFound)
}

/// OpenMetrics for clients that accept it (Prometheus does), else the
/// Prometheus text format.
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    telemetry::metrics::scrape_response(&headers, || state.metrics.render())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: shutting down\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_the_engine_becomes_a_500_for_that_request_only() {
        let panicking = catch_panic::<()>(|| panic!("a bug"));
        let error = panicking.unwrap_err();
        assert!(matches!(error, ApiError::Internal));
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error.reason().map(|r| r.as_str()), Some("internal_error"));
        assert_eq!(catch_panic(|| Ok(7)).unwrap(), 7);
    }

    #[test]
    fn inflight_cap_is_exact() {
        let inflight = Inflight::new(2);
        let a = inflight.try_acquire().unwrap();
        let _b = inflight.try_acquire().unwrap();
        assert!(inflight.try_acquire().is_none());
        drop(a);
        assert_eq!(inflight.current(), 1);
        assert!(inflight.try_acquire().is_some());
    }

    /// A body that yields the given frames, then ends.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.get_mut().0.pop_front().map(|data| Ok(hyper::body::Frame::data(data))))
        }
    }

    fn body(frames: &[&[u8]]) -> Body {
        Body::new(Frames(frames.iter().map(|frame| Bytes::copy_from_slice(frame)).collect()))
    }

    #[tokio::test]
    async fn bodies_are_charged_what_they_keep_and_refused_beyond_the_budget() {
        let budget = BodyBudget::new(100);
        let mut held = budget.hold();
        // One frame is borrowed as it is and charged its length.
        let one = collect(body(&[b"0123456789"]), 50, 1000, 10, &mut held).await.unwrap();
        assert_eq!((&one[..], budget.used()), (&b"0123456789"[..], 10));
        drop(held);
        assert_eq!(budget.used(), 0);

        // Several frames: charged the buffer, at most the declared length or twice what was sent.
        let mut held = budget.hold();
        let joined = collect(body(&[b"abc", b"def", b"gh"]), 50, 1000, 8, &mut held).await.unwrap();
        assert_eq!(&joined[..], b"abcdefgh");
        assert_eq!(budget.used(), 8);
        // Another body meanwhile gets what is left, and no more: read on, kept nothing, given back.
        let mut other = budget.hold();
        let refused = collect(body(&[&[b'x'; 50], &[b'y'; 50]]), 100, 1000, 100, &mut other).await;
        assert!(matches!(refused, Err(Refused::BuffersFull)), "{refused:?}");
        assert_eq!(budget.used(), 8);
        drop(held);
        let mut other = budget.hold();
        let fits = collect(body(&[&[b'x'; 50], &[b'y'; 50]]), 100, 1000, 100, &mut other).await.unwrap();
        assert_eq!((fits.len(), budget.used()), (100, 100));
        drop(other);
        assert_eq!(budget.used(), 0);

        // Too large stays a 413, and keeps nothing.
        let mut held = budget.hold();
        assert!(matches!(collect(body(&[&[b'z'; 60]]), 50, 1000, 0, &mut held).await, Err(Refused::TooLarge)));
    }

    #[test]
    fn logged_fields_are_capped() {
        assert_eq!(cap("web-0"), "web-0");
        let long = "é".repeat(1000);
        let capped = cap(&long);
        assert!(capped.len() <= 259 && capped.ends_with("..."), "{}", capped.len());
    }

    #[test]
    fn accepts_json_content_types_only() {
        let mut headers = HeaderMap::new();
        assert!(check_content_type(&headers).is_ok());
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge+json",
            "APPLICATION/MERGE+JSON ; x=y",
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ok));
            assert!(check_content_type(&headers).is_ok(), "{ok}");
        }
        for bad in ["text/plain", "application/yaml", "multipart/form-data", "text/x+json"] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(bad));
            assert!(matches!(check_content_type(&headers), Err(ApiError::UnsupportedMediaType(_))), "{bad}");
        }
    }
}
