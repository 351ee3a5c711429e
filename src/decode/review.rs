//! Decodes an `admission.k8s.io/v1` `AdmissionReview` straight into the lean
//! model in one pass: no `serde_json::Value`, no `DynamicObject`, no typed
//! `Pod`. Strings are borrowed from the request body.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::Captured;
use super::model::{Object, Text};

/// The envelope the apiserver POSTs to the webhook.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview<'a> {
    #[serde(borrow, default)]
    pub api_version: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub request: Option<AdmissionRequest<'a>>,
}

/// `request` of an `AdmissionReview`: only the fields podgate acts on.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest<'a> {
    /// Echoed back in `response.uid`.
    #[serde(borrow, default)]
    pub uid: Option<Text<'a>>,
    /// The kind of the object as it was submitted (after conversion under
    /// `matchPolicy: Equivalent`).
    #[serde(borrow, default)]
    pub kind: Option<GroupVersionKind<'a>>,
    #[serde(borrow, default)]
    pub resource: Option<GroupVersionResource<'a>>,
    /// e.g. `ephemeralcontainers` for `kubectl debug`, `status`, `scale`.
    #[serde(borrow, default)]
    pub sub_resource: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub namespace: Option<Text<'a>>,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    #[serde(borrow, default)]
    pub operation: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub user_info: Option<UserInfo<'a>>,
    /// The new object; `null` for DELETE. With its raw text when the fast
    /// deserializer read it (for comparing an UPDATE's template).
    #[serde(borrow, default)]
    pub object: Option<Captured<'a, Object<'a>>>,
    /// The stored object for UPDATE, kept raw: it is only compared, and only
    /// on UPDATE, so it is not decoded on the hot path.
    #[serde(borrow, default)]
    pub old_object: Option<&'a RawValue>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// `request.kind`.
#[derive(Debug, Default, Deserialize)]
pub struct GroupVersionKind<'a> {
    #[serde(borrow, default)]
    pub group: Text<'a>,
    #[serde(borrow, default)]
    pub version: Text<'a>,
    #[serde(borrow, default)]
    pub kind: Text<'a>,
}

/// `request.resource`.
#[derive(Debug, Default, Deserialize)]
pub struct GroupVersionResource<'a> {
    #[serde(borrow, default)]
    pub group: Text<'a>,
    #[serde(borrow, default)]
    pub version: Text<'a>,
    #[serde(borrow, default)]
    pub resource: Text<'a>,
}

/// `request.userInfo`: who sent the request, for exemptions.
#[derive(Debug, Default, Deserialize)]
pub struct UserInfo<'a> {
    #[serde(borrow, default)]
    pub username: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "super::model::nullable_vec")]
    pub groups: Vec<Text<'a>>,
}

/// Decodes a request body. The error says where the JSON is wrong.
pub fn decode(body: &[u8]) -> Result<AdmissionReview<'_>, serde_json::Error> {
    serde_json::from_slice(body)
}

/// Decodes a request body already checked to be UTF-8 (the webhook checks
/// the whole body once): the same result and errors as [`decode`], faster.
/// The strict fast deserializer of [`super::json`] reads it; what that one
/// refuses (malformed JSON, or something it leaves to serde_json) is decoded
/// by serde_json, whose value or exact error is then the answer.
pub fn decode_str(body: &str) -> Result<AdmissionReview<'_>, serde_json::Error> {
    match super::json::from_str(body) {
        Ok(review) => Ok(review),
        Err(super::json::Refused) => serde_json::from_str(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REVIEW: &str = include_str!("../../tests/fixtures/reviews/pod-create.json");

    #[test]
    fn decodes_the_fields_podgate_uses_and_borrows_strings() {
        let review = decode(REVIEW.as_bytes()).unwrap();
        assert_eq!(review.api_version.as_deref(), Some("admission.k8s.io/v1"));
        let request = review.request.unwrap();
        assert!(request.uid.as_ref().is_some_and(|uid| matches!(uid.0, std::borrow::Cow::Borrowed(_))));
        assert_eq!(request.kind.unwrap().kind.0, "Pod");
        assert_eq!(request.operation.as_deref(), Some("CREATE"));
        let object = request.object.unwrap().value;
        let spec = object.spec.unwrap();
        assert_eq!(spec.pod.containers.len(), 2);
        assert_eq!(spec.pod.init_containers.len(), 1);
        assert!(request.old_object.is_none());
    }

    #[test]
    fn rejects_duplicated_fields_anywhere_in_the_pod_spec() {
        let review =
            |spec: &str| format!(r#"{{"request":{{"uid":"u","object":{{"kind":"Deployment","spec":{spec}}}}}}}"#);
        for (spec, field) in [
            (r#"{"containers":[],"containers":[{"name":"c"}]}"#, "containers"),
            (r#"{"restartPolicy":"Never","restartPolicy":"Always"}"#, "restartPolicy"),
            (r#"{"template":{},"template":{}}"#, "template"),
            (r#"{"hostUsers":false,"hostUsers":true}"#, "hostUsers"),
            (r#"{"template":{"spec":{"initContainers":[],"initContainers":[]}}}"#, "initContainers"),
            (r#"{"securityContext":{"runAsNonRoot":true,"runAsNonRoot":false}}"#, "runAsNonRoot"),
        ] {
            let err = decode(review(spec).as_bytes()).unwrap_err().to_string();
            assert!(err.contains(&format!("duplicate field `{field}`")), "{spec}: {err}");
        }
        // Distinct fields in any order are fine.
        assert!(decode(review(r#"{"containers":[],"template":{},"initContainers":[]}"#).as_bytes()).is_ok());
    }

    #[test]
    fn rejects_malformed_json_with_position() {
        let err = decode(br#"{"request": {"uid": "#).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
