//! Why a request gets no verdict, as one error type: each variant has its
//! HTTP status, its `podgate_invalid_requests_total` reason and a JSON body
//! `{"error": "..."}` that says what is wrong. A 500 only if the engine
//! panicked, which is a bug: the panic is caught, answered and counted.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::metrics::InvalidReason;
use crate::admission::ReviewError;

/// A request podgate cannot answer with a verdict.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not a review podgate can answer (see [`ReviewError`]).
    #[error(transparent)]
    Review(#[from] ReviewError),
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
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Review(_) | ApiError::Body(_) => StatusCode::BAD_REQUEST,
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
            ApiError::Review(ReviewError::NotJson(_)) => InvalidReason::NotJson,
            ApiError::Review(ReviewError::NotAdmissionReview(_)) => InvalidReason::NotAdmissionReview,
            ApiError::Review(ReviewError::UnsupportedApiVersion(_)) => InvalidReason::UnsupportedApiVersion,
            ApiError::Review(ReviewError::MissingUid) => InvalidReason::MissingUid,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_but_overload_has_a_reason_and_a_4xx() {
        for error in [
            ApiError::Review(ReviewError::NotJson(String::new())),
            ApiError::Review(ReviewError::MissingUid),
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
}
