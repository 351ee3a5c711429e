//! Why a request gets no verdict, as one error type: each variant has its
//! HTTP status, its `podgate_invalid_requests_total` reason and a JSON body
//! `{"error": "..."}` that says what is wrong. A 500 only if the engine
//! panicked, which is a bug: the panic is caught, answered and counted.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::metrics::InvalidReason;

/// Longest detail (e.g. a JSON parser message) echoed back to the client.
const MAX_DETAIL: usize = 512;

/// A request podgate cannot answer with a verdict.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("request body is not an admission.k8s.io/v1 AdmissionReview: {0}")]
    NotAdmissionReview(String),
    #[error("unsupported AdmissionReview apiVersion {0:?}: podgate answers admission.k8s.io/v1 only (set admissionReviewVersions: [\"v1\"])")]
    UnsupportedApiVersion(String),
    #[error("request.uid is missing or empty: it is needed to answer the review")]
    MissingUid,
    #[error("request body is larger than the limit of {limit} bytes (--max-body-bytes)")]
    TooLarge { limit: usize },
    #[error("request body not received within {0:?} (--request-timeout)")]
    Timeout(Duration),
    #[error("cannot read the request body: {0}")]
    Body(String),
    #[error("unsupported content type {0:?}: send application/json")]
    UnsupportedMediaType(String),
    #[error("method not allowed: send the AdmissionReview with POST")]
    MethodNotAllowed,
    #[error("not found: the admission webhook is served at POST /validate")]
    NotFound,
    #[error("{0} reviews are already in flight (--max-inflight); try again")]
    Overloaded(usize),
    #[error("request bodies of {0} bytes in total are already being received (--max-buffered-bytes); try again")]
    BuffersFull(usize),
    #[error("internal error while evaluating the review (a podgate bug; the webhook's failurePolicy applies)")]
    Internal,
}

impl ApiError {
    /// Classifies a decoding error: broken JSON, or JSON of the wrong shape.
    pub fn from_json(error: &serde_json::Error) -> Self {
        let detail = truncate(error.to_string());
        match error.classify() {
            serde_json::error::Category::Data => ApiError::NotAdmissionReview(detail),
            _ => ApiError::NotJson(detail),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotJson(_)
            | ApiError::NotAdmissionReview(_)
            | ApiError::UnsupportedApiVersion(_)
            | ApiError::MissingUid
            | ApiError::Body(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Overloaded(_) | ApiError::BuffersFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `podgate_invalid_requests_total` reason; `None` for overload,
    /// which has a counter of its own (the request itself was fine).
    pub fn reason(&self) -> Option<InvalidReason> {
        Some(match self {
            ApiError::NotJson(_) => InvalidReason::NotJson,
            ApiError::NotAdmissionReview(_) => InvalidReason::NotAdmissionReview,
            ApiError::UnsupportedApiVersion(_) => InvalidReason::UnsupportedApiVersion,
            ApiError::MissingUid => InvalidReason::MissingUid,
            ApiError::TooLarge { .. } => InvalidReason::TooLarge,
            ApiError::Timeout(_) => InvalidReason::Timeout,
            ApiError::Body(_) => InvalidReason::BodyError,
            ApiError::UnsupportedMediaType(_) => InvalidReason::UnsupportedMediaType,
            ApiError::MethodNotAllowed => InvalidReason::MethodNotAllowed,
            ApiError::NotFound => InvalidReason::NotFound,
            ApiError::Internal => InvalidReason::InternalError,
            ApiError::Overloaded(_) | ApiError::BuffersFull(_) => return None,
        })
    }
}

/// The JSON body of an error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let body = serde_json::to_vec(&ErrorBody { error: &message }).unwrap_or_else(|_| b"{}".to_vec());
        let mut response =
            (self.status(), [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body)
                .into_response();
        match self {
            ApiError::MethodNotAllowed => {
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            ApiError::Overloaded(_) | ApiError::BuffersFull(_) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// Caps a detail message at [`MAX_DETAIL`] bytes on a character boundary:
/// details can quote the request, which can be megabytes.
pub fn truncate(mut text: String) -> String {
    if text.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_json_errors() {
        let syntax = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert!(matches!(ApiError::from_json(&syntax), ApiError::NotJson(_)));
        let data = serde_json::from_str::<Vec<u8>>("{}").unwrap_err();
        assert!(matches!(ApiError::from_json(&data), ApiError::NotAdmissionReview(_)));
    }

    #[test]
    fn every_error_but_overload_has_a_reason_and_a_4xx() {
        for error in [
            ApiError::NotJson(String::new()),
            ApiError::MissingUid,
            ApiError::TooLarge { limit: 1 },
            ApiError::MethodNotAllowed,
            ApiError::Timeout(Duration::from_secs(1)),
        ] {
            assert!(error.status().is_client_error());
            assert!(error.reason().is_some());
        }
        assert_eq!(ApiError::Overloaded(1).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(ApiError::Overloaded(1).reason().is_none());
        assert_eq!(ApiError::BuffersFull(1).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(ApiError::BuffersFull(1).reason().is_none());
    }

    #[test]
    fn truncates_long_details_on_a_char_boundary() {
        let long = "é".repeat(600);
        let cut = truncate(long);
        assert!(cut.len() <= MAX_DETAIL + 3);
        assert!(cut.ends_with("..."));
    }
}
