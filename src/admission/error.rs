//! Why a request body is not a review podgate can answer. The webhook
//! answers each with a 400 and counts it (`server::error`).

/// Longest detail (e.g. a JSON parser message) echoed back to the client.
const MAX_DETAIL: usize = 512;

/// A body that is not an `admission.k8s.io/v1` `AdmissionReview` with a
/// request to answer; the message says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("request body is not an admission.k8s.io/v1 AdmissionReview: {0}")]
    NotAdmissionReview(String),
    #[error("unsupported AdmissionReview apiVersion {0:?}: podgate answers admission.k8s.io/v1 only (set admissionReviewVersions: [\"v1\"])")]
    UnsupportedApiVersion(String),
    #[error("request.uid is missing or empty: it is needed to answer the review")]
    MissingUid,
}

impl ReviewError {
    /// Classifies a decoding error: broken JSON, or JSON of the wrong shape.
    pub fn from_json(error: &serde_json::Error) -> Self {
        let detail = truncate(error.to_string());
        match error.classify() {
            serde_json::error::Category::Data => ReviewError::NotAdmissionReview(detail),
            _ => ReviewError::NotJson(detail),
        }
    }
}

/// Caps a detail message at [`MAX_DETAIL`] bytes on a character boundary:
/// details can quote the request, which can be megabytes.
pub(crate) fn truncate(mut text: String) -> String {
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
        assert!(matches!(ReviewError::from_json(&syntax), ReviewError::NotJson(_)));
        let data = serde_json::from_str::<Vec<u8>>("{}").unwrap_err();
        assert!(matches!(ReviewError::from_json(&data), ReviewError::NotAdmissionReview(_)));
    }

    #[test]
    fn truncates_long_details_on_a_char_boundary() {
        let long = "é".repeat(600);
        let cut = truncate(long);
        assert!(cut.len() <= MAX_DETAIL + 3);
        assert!(cut.ends_with("..."));
    }
}
