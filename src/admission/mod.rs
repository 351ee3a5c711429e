//! Between step 4 and the webhook: the admission semantics, free of HTTP.
//! Decode an `AdmissionReview`, decide whether it is evaluated at all (which
//! operation, subresource and kind), evaluate it with [`crate::verdict`], and
//! say what the answer ([`response`]) and the metrics are. `server` only
//! moves bytes: it reads the body, calls [`admit_at`] and writes the answer.
//!
//! Which requests are evaluated:
//! - CREATE of a Pod or workload: the whole pod spec.
//! - UPDATE of a Pod or workload: only when its pod spec or template changed
//!   against `oldObject` (labels, annotations, status and replicas never
//!   block an object that already runs). The raw JSON of the template is
//!   compared byte for byte; a re-ordered but equal template is evaluated,
//!   which errs on the side of checking.
//! - the `pods/ephemeralcontainers` subresource (`kubectl debug`): only the
//!   ephemeral containers it adds (those not already in `oldObject`).
//! - DELETE, CONNECT, any other subresource, any other kind: allowed.

mod error;
pub mod response;

pub use error::ReviewError;

use std::fmt;

use jiff::Timestamp;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use error::truncate;

use crate::checks::{CheckId, PodView};
use crate::config::Policy;
use crate::decode::json::{self, Captured};
use crate::decode::model::{Object, PodSpec, Text};
use crate::decode::review::{decode_str, AdmissionRequest};
use crate::exemption::Subject;
use crate::extract::{pod_target, WorkloadKind};
use crate::verdict::{evaluate, Effect, Verdict};

/// What became of a review, as `podgate serve` counts it (the `decision`
/// label of `podgate_admission_requests_total`) and logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed with nothing to report (also: not evaluated, e.g. DELETE).
    Allowed,
    /// Denied by at least one finding.
    Denied,
    /// Allowed with warnings (action `warn`, or would-be denials in audit mode).
    Warned,
    /// Allowed because an exemption covered the whole object.
    Exempt,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::Warned => "warned",
            Decision::Exempt => "exempt",
        }
    }
}

/// Why a request was allowed without evaluating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// DELETE, CONNECT, or an operation podgate does not know.
    Operation,
    /// A subresource other than `pods/ephemeralcontainers` (status, scale, ...).
    Subresource,
    /// Not a Pod or a built-in workload.
    Kind,
    /// An UPDATE that left the pod spec or template as it was.
    Unchanged,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Operation => "operation",
            Skip::Subresource => "subresource",
            Skip::Kind => "kind",
            Skip::Unchanged => "unchanged",
        }
    }
}

/// Evaluated or not.
#[derive(Debug)]
pub enum Outcome<'p> {
    Skipped(Skip),
    Evaluated(Verdict<'p>),
}

/// The result of admitting one review: what to answer, log and count.
/// Strings are borrowed from the request body.
#[derive(Debug)]
pub struct Admission<'b, 'p> {
    pub uid: Text<'b>,
    /// Metric label: the workload kind, or `other`.
    pub kind: &'static str,
    /// Metric label: `CREATE`, `UPDATE`, `DELETE`, `CONNECT` or `other`.
    pub operation: &'static str,
    pub dry_run: bool,
    pub namespace: Option<Text<'b>>,
    pub name: Option<Text<'b>>,
    pub outcome: Outcome<'p>,
}

impl Admission<'_, '_> {
    pub fn decision(&self) -> Decision {
        match &self.outcome {
            Outcome::Skipped(_) => Decision::Allowed,
            Outcome::Evaluated(verdict) => {
                if verdict.full_exemption().is_some() {
                    Decision::Exempt
                } else if !verdict.allowed() {
                    Decision::Denied
                } else if verdict.warnings().next().is_some() || !verdict.notices.is_empty() {
                    Decision::Warned
                } else {
                    Decision::Allowed
                }
            }
        }
    }

    pub fn verdict(&self) -> Option<&Verdict<'_>> {
        match &self.outcome {
            Outcome::Evaluated(verdict) => Some(verdict),
            Outcome::Skipped(_) => None,
        }
    }

    /// `(check, action)` of every violation, for metrics.
    pub fn violations(&self) -> Vec<(CheckId, Effect)> {
        self.verdict().map_or_else(Vec::new, |v| v.violations.iter().map(|v| (v.finding.check, v.effect)).collect())
    }

    /// The encoded `AdmissionReview` answer.
    pub fn response(&self) -> Vec<u8> {
        match self.verdict() {
            Some(verdict) if !verdict.violations.is_empty() || !verdict.exemptions.is_empty() => {
                response::from_verdict(&self.uid, verdict)
            }
            _ => response::allowed(&self.uid),
        }
    }
}

/// Decodes `body` and admits the review under `policy`, now.
pub fn admit<'b, 'p>(policy: &'p Policy, body: &'b [u8]) -> Result<Admission<'b, 'p>, ReviewError> {
    admit_at(policy, body, Timestamp::now())
}

/// Decodes `body` and admits the review under `policy` at `now` (the
/// server's [`Clock`](crate::exemption::Clock)).
pub fn admit_at<'b, 'p>(policy: &'p Policy, body: &'b [u8], now: Timestamp) -> Result<Admission<'b, 'p>, ReviewError> {
    // JSON is UTF-8. Checked once for the whole body (a few hundred
    // nanoseconds for 9 KB), so that invalid bytes in a field the decoder
    // skips are refused too, and the decoder need not check each string.
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(error) => return Err(ReviewError::NotJson(format!("invalid UTF-8 at byte {}", error.valid_up_to()))),
    };
    let review = decode_str(text).map_err(|e| ReviewError::from_json(&e))?;
    match review.kind.as_deref() {
        Some(response::KIND) => {}
        Some(other) => {
            return Err(ReviewError::NotAdmissionReview(truncate(format!(
                "kind is {other:?}, expected \"AdmissionReview\""
            ))))
        }
        None => return Err(ReviewError::NotAdmissionReview("kind is missing".to_owned())),
    }
    if review.api_version.as_deref() != Some(response::API_VERSION) {
        let version = review.api_version.map(|v| truncate(v.0.into_owned())).unwrap_or_default();
        return Err(ReviewError::UnsupportedApiVersion(version));
    }
    let Some(request) = review.request else {
        return Err(ReviewError::NotAdmissionReview("request is missing".to_owned()));
    };
    let AdmissionRequest {
        uid,
        kind,
        resource,
        sub_resource,
        name,
        namespace,
        operation,
        user_info,
        object,
        old_object,
        dry_run,
    } = request;
    let uid = uid.filter(|uid| !uid.is_empty()).ok_or(ReviewError::MissingUid)?;

    let operation = match operation.as_deref() {
        Some("CREATE") => "CREATE",
        Some("UPDATE") => "UPDATE",
        Some("DELETE") => "DELETE",
        Some("CONNECT") => "CONNECT",
        _ => "other",
    };
    let workload = kind.as_ref().and_then(|gvk| WorkloadKind::from_group_kind(&gvk.group, &gvk.kind));
    let sub_resource = sub_resource.as_deref().filter(|s| !s.is_empty());
    let pods = resource.as_ref().is_some_and(|r| r.group.is_empty() && &*r.resource == "pods");

    // What to evaluate: `Some((kind, ephemeral containers only))`, or why not.
    let plan = match (operation, sub_resource) {
        ("DELETE" | "CONNECT" | "other", _) => Err(Skip::Operation),
        (_, Some("ephemeralcontainers")) if pods => Ok((WorkloadKind::Pod, true)),
        (_, Some(_)) => Err(Skip::Subresource),
        (_, None) => match workload {
            None => Err(Skip::Kind),
            Some(kind) if operation == "UPDATE" && !template_changed(kind, text, object.as_ref(), old_object) => {
                Err(Skip::Unchanged)
            }
            Some(kind) => Ok((kind, false)),
        },
    };
    let label_kind = match plan {
        Ok((kind, _)) => kind.as_str(),
        Err(_) => workload.map_or("other", WorkloadKind::as_str),
    };

    let metadata = object.as_ref().and_then(|o| o.metadata.as_ref());
    let namespace = namespace.filter(|ns| !ns.is_empty()).or_else(|| metadata.and_then(|m| m.namespace.clone()));
    let name = name
        .filter(|n| !n.is_empty())
        .or_else(|| metadata.and_then(|m| m.name.clone().or_else(|| m.generate_name.clone())));

    let outcome = match plan {
        Err(skip) => Outcome::Skipped(skip),
        Ok((kind, ephemeral_only)) => {
            let empty = Object::default();
            let target = pod_target(kind, object.as_deref().unwrap_or(&empty));
            let existing;
            let view = if ephemeral_only {
                existing = existing_ephemeral_containers(target.spec, old_object);
                PodView::new_ephemeral_containers_of(&target, &existing)
            } else {
                PodView::of(&target)
            };
            let subject = Subject {
                namespace: namespace.as_deref(),
                username: user_info.as_ref().and_then(|u| u.username.as_deref()),
                groups: user_info.as_ref().map_or(&[], |u| u.groups.as_slice()),
                kind: Some(kind),
                // The object's own name: the one its controller generated.
                name: metadata.and_then(|m| m.name.as_deref().or(m.generate_name.as_deref())).or(name.as_deref()),
                owner_references: metadata.map_or(&[], |m| m.owner_references.as_slice()),
                as_stored: false,
            };
            Outcome::Evaluated(evaluate(policy, &subject, &view, now))
        }
    };

    Ok(Admission { uid, kind: label_kind, operation, dry_run: dry_run.unwrap_or(false), namespace, name, outcome })
}

/// For each ephemeral container of `spec`, whether `oldObject` already had
/// one of that name. The apiserver validates the update before validating
/// webhooks see it: an existing ephemeral container cannot be changed or
/// removed and names are unique, so a known name is a container admitted
/// before. Matched by name, not position: the apiserver accepts a new order
/// (a strategic merge patch without `$setElementOrder` puts the added one
/// first, as the end-to-end tests found). Anything unreadable counts as
/// none existing, so that every ephemeral container is evaluated.
fn existing_ephemeral_containers(spec: &PodSpec<'_>, old_object: Option<&RawValue>) -> Vec<bool> {
    let old = old_object.and_then(|old| serde_json::from_str::<Object>(old.get()).ok());
    let Some(old_spec) = old.as_ref().and_then(|old| old.spec.as_ref()) else { return Vec::new() };
    // A set, not a scan per container: both lists come from the request.
    let old_names: std::collections::HashSet<&str> =
        old_spec.pod.ephemeral_containers.iter().map(|container| &*container.name).collect();
    spec.ephemeral_containers.iter().map(|container| old_names.contains(&*container.name)).collect()
}

/// Whether the pod spec (Pod) or pod template (workloads) of an UPDATE's
/// `object` differs from the one in `oldObject`. Anything unreadable counts
/// as changed, so that it is evaluated.
fn template_changed(
    kind: WorkloadKind,
    body: &str,
    object: Option<&Captured<'_, Object<'_>>>,
    old_object: Option<&RawValue>,
) -> bool {
    let Some(old) = old_object else { return true };
    // `request.object` as raw JSON: captured by the fast deserializer, else
    // a second, skipping pass over the body (only UPDATEs of workloads).
    let new = match object.and_then(|object| object.raw) {
        Some(raw) => raw,
        None => match raw_at(body, &["request", "object"]) {
            Ok(Some(raw)) => raw,
            _ => return true,
        },
    };
    match (template_of(kind, new), template_of(kind, old.get())) {
        (Ok(new), Ok(old)) => new != old,
        _ => true,
    }
}

/// The raw sub-tree holding the pod spec of `kind`: Pod `spec`, workload
/// `spec.template`, CronJob `spec.jobTemplate.spec.template`.
fn template_of(kind: WorkloadKind, object: &str) -> Result<Option<&str>, ()> {
    let path: &[&str] = match kind {
        WorkloadKind::Pod => &["spec"],
        WorkloadKind::CronJob => &["spec", "jobTemplate", "spec", "template"],
        _ => &["spec", "template"],
    };
    raw_at(object, path)
}

/// The raw JSON at `path` (a key in an object, then a key in that value,
/// ...) in the JSON `text`, in one pass; `None` when a key is absent or a
/// value on the way is `null`; an error when one is neither an object nor
/// `null`. A repeated key: the last one wins (the decoder already refused
/// repeated keys on these paths in `object`; `oldObject` is the
/// apiserver's own stored object). Read by the fast deserializer; what it
/// refuses, serde_json reads.
fn raw_at<'t>(text: &'t str, path: &[&str]) -> Result<Option<&'t str>, ()> {
    struct Path<'p>(&'p [&'p str]);

    impl<'de> DeserializeSeed<'de> for Path<'_> {
        type Value = Option<&'de str>;
        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            if self.0.is_empty() {
                <&RawValue>::deserialize(deserializer).map(|raw| Some(raw.get()))
            } else {
                deserializer.deserialize_any(self)
            }
        }
    }

    impl<'de> Visitor<'de> for Path<'_> {
        type Value = Option<&'de str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an object with an optional {:?}", self.0.first())
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let (key, rest) = self.0.split_first().expect("a path with a key");
            let mut found = None;
            while let Some(name) = map.next_key::<Text<'de>>()? {
                if *name == **key {
                    found = map.next_value_seed(Path(rest))?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }

    match json::from_str_seed(text, Path(path)) {
        Ok(found) => Ok(found),
        Err(json::Refused) => {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            let found = Path(path).deserialize(&mut deserializer).map_err(|_| ())?;
            deserializer.end().map_err(|_| ())?;
            Ok(found)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(operation: &str, kind: (&str, &str), object: &str, old: &str, extra: &str) -> String {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"{}","version":"v1","kind":"{}"}},"resource":{{"group":"{}","version":"v1","resource":"x"}},"operation":"{operation}","namespace":"prod","object":{object},"oldObject":{old}{extra}}}}}"#,
            kind.0, kind.1, kind.0
        )
    }

    const ROOT_TEMPLATE: &str = r#"{"spec":{"containers":[{"name":"app"}]}}"#;

    fn deployment(replicas: u32, template: &str) -> String {
        format!(r#"{{"metadata":{{"name":"d"}},"spec":{{"replicas":{replicas},"template":{template}}}}}"#)
    }

    #[test]
    fn update_is_evaluated_only_when_the_template_changed() {
        let policy = Policy::default();
        let old = deployment(1, ROOT_TEMPLATE);
        let scaled = review("UPDATE", ("apps", "Deployment"), &deployment(5, ROOT_TEMPLATE), &old, "");
        let admission = admit(&policy, scaled.as_bytes()).unwrap();
        assert!(matches!(admission.outcome, Outcome::Skipped(Skip::Unchanged)));
        assert_eq!(admission.decision(), Decision::Allowed);

        let changed_template = r#"{"spec":{"containers":[{"name":"app","image":"v2"}]}}"#;
        let changed = review("UPDATE", ("apps", "Deployment"), &deployment(1, changed_template), &old, "");
        let admission = admit(&policy, changed.as_bytes()).unwrap();
        assert_eq!(admission.decision(), Decision::Denied);
        assert_eq!(admission.kind, "Deployment");
        assert_eq!(admission.name.as_deref(), Some("d"));
    }

    #[test]
    fn finds_the_template_of_each_kind() {
        let cronjob = r#"{"spec":{"schedule":"x","jobTemplate":{"spec":{"template":{"spec":{"a":1}}, "x": null}}}}"#;
        assert_eq!(template_of(WorkloadKind::CronJob, cronjob).unwrap(), Some(r#"{"spec":{"a":1}}"#));
        let pod = r#"{"metadata":{},"spec":{"b":2}}"#;
        assert_eq!(template_of(WorkloadKind::Pod, pod).unwrap(), Some(r#"{"b":2}"#));
        assert_eq!(template_of(WorkloadKind::Job, r#"{"spec":null}"#).unwrap(), None);
        assert_eq!(template_of(WorkloadKind::Job, r#"{"spec":{"template": null}}"#).unwrap(), Some("null"));
        assert!(template_of(WorkloadKind::Job, r#"{"spec":5}"#).is_err());
        // A repeated key: the last one wins, on both paths (fast and serde_json's).
        let twice = r#"{"spec":{"template":1},"spec":{"template": [2] }}"#;
        assert_eq!(template_of(WorkloadKind::Job, twice).unwrap(), Some("[2]"));
        let twice_with_float = r#"{"spec":{"template":1.5},"spec":{"template": [2.5] }}"#;
        assert_eq!(template_of(WorkloadKind::Job, twice_with_float).unwrap(), Some("[2.5]"));
        // Escaped keys are keys.
        assert_eq!(template_of(WorkloadKind::Pod, r#"{"sp\u0065c":{"c":1}}"#).unwrap(), Some(r#"{"c":1}"#));
    }

    #[test]
    fn operations_and_subresources_are_dispatched() {
        let policy = Policy::default();
        let pod = r#"{"spec":{"containers":[{"name":"app"}],"ephemeralContainers":[{"name":"debug"}]}}"#;
        for (operation, extra, expected) in [
            ("DELETE", "", Some(Skip::Operation)),
            ("CONNECT", "", Some(Skip::Operation)),
            ("UPDATE", r#","subResource":"status""#, Some(Skip::Subresource)),
            ("UPDATE", r#","subResource":"ephemeralcontainers""#, None),
            ("CREATE", "", None),
        ] {
            let body =
                review(operation, ("", "Pod"), pod, "null", extra).replace(r#""resource":"x""#, r#""resource":"pods""#);
            let admission = admit(&policy, body.as_bytes()).unwrap();
            match (expected, &admission.outcome) {
                (Some(skip), Outcome::Skipped(got)) => assert_eq!(*got, skip, "{operation}{extra}"),
                (None, Outcome::Evaluated(verdict)) => assert!(!verdict.allowed(), "{operation}{extra}"),
                (_, other) => panic!("{operation}{extra}: {other:?}"),
            }
        }
        // The subresource view sees only the ephemeral container.
        let body = review("UPDATE", ("", "Pod"), pod, pod, r#","subResource":"ephemeralcontainers""#)
            .replace(r#""resource":"x""#, r#""resource":"pods""#);
        let admission = admit(&policy, body.as_bytes()).unwrap();
        let verdict = admission.verdict().unwrap();
        assert!(verdict.violations.iter().all(|v| v.finding.field.contains("ephemeralContainers[0]")), "{verdict:?}");
    }

    #[test]
    fn ephemeral_containers_subresource_judges_only_the_added_ones() {
        let policy = Policy::default();
        let old = r#"{"spec":{"containers":[{"name":"app"}],"ephemeralContainers":[{"name":"debug-1"}]}}"#;
        let new =
            r#"{"spec":{"containers":[{"name":"app"}],"ephemeralContainers":[{"name":"debug-1"},{"name":"debug-2"}]}}"#;
        let subresource = |object: &str, old: &str| {
            review("UPDATE", ("", "Pod"), object, old, r#","subResource":"ephemeralcontainers""#)
                .replace(r#""resource":"x""#, r#""resource":"pods""#)
        };
        let body = subresource(new, old);
        let admission = admit(&policy, body.as_bytes()).unwrap();
        let verdict = admission.verdict().unwrap();
        assert!(!verdict.violations.is_empty());
        assert!(
            verdict.violations.iter().all(|v| v.finding.field.starts_with("spec.ephemeralContainers[1].")),
            "{verdict:?}"
        );

        // The added one first, as a strategic merge patch without
        // $setElementOrder leaves it: still only the added one is judged.
        let reordered =
            r#"{"spec":{"containers":[{"name":"app"}],"ephemeralContainers":[{"name":"debug-2"},{"name":"debug-1"}]}}"#;
        let body = subresource(reordered, old);
        let admission = admit(&policy, body.as_bytes()).unwrap();
        let fields: Vec<&str> =
            admission.verdict().unwrap().violations.iter().map(|v| v.finding.field.as_str()).collect();
        assert!(!fields.is_empty());
        assert!(fields.iter().all(|f| f.starts_with("spec.ephemeralContainers[0].")), "{fields:?}");

        // No usable oldObject: every ephemeral container is judged.
        for old in ["null", "5", r#"{"spec":{"ephemeralContainers":[{"name":"other"}]}}"#] {
            let body = subresource(new, old);
            let admission = admit(&policy, body.as_bytes()).unwrap();
            let fields: Vec<&str> =
                admission.verdict().unwrap().violations.iter().map(|v| v.finding.field.as_str()).collect();
            assert!(fields.iter().any(|f| f.starts_with("spec.ephemeralContainers[0].")), "{old}: {fields:?}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_v1_review() {
        let policy = Policy::default();
        type Expect = fn(&ReviewError) -> bool;
        let cases: [(&str, Expect); 6] = [
            ("{", |e| matches!(e, ReviewError::NotJson(_))),
            ("[1]", |e| matches!(e, ReviewError::NotAdmissionReview(_))),
            (r#"{"kind":"Pod","apiVersion":"v1"}"#, |e| matches!(e, ReviewError::NotAdmissionReview(_))),
            (
                r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{"uid":"u"}}"#,
                |e| matches!(e, ReviewError::UnsupportedApiVersion(v) if v == "admission.k8s.io/v1beta1"),
            ),
            (r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#, |e| {
                matches!(e, ReviewError::NotAdmissionReview(_))
            }),
            (r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":""}}"#, |e| {
                matches!(e, ReviewError::MissingUid)
            }),
        ];
        for (body, expected) in cases {
            let error = admit(&policy, body.as_bytes()).unwrap_err();
            assert!(expected(&error), "{body}: {error:?}");
        }
    }

    #[test]
    fn invalid_utf8_anywhere_is_not_json() {
        let policy = Policy::default();
        let object = r#"{"spec":{"containers":[{"name":"app","image":"registry/app:1"}]}}"#;
        let body = review("CREATE", ("", "Pod"), object, "null", "");
        // In a field the engine reads (the name), and in one it skips (the image).
        for field in ["app", "registry"] {
            let mut bytes = body.clone().into_bytes();
            let at = body.find(field).unwrap();
            bytes[at] = 0xff;
            let error = admit(&policy, &bytes).unwrap_err();
            let expected = format!("invalid UTF-8 at byte {at}");
            assert!(matches!(&error, ReviewError::NotJson(detail) if *detail == expected), "{field}: {error:?}");
        }
    }

    #[test]
    fn compact_json_as_the_apiserver_sends_it_gets_the_same_answer() {
        // The 9 KB reference review is pretty-printed; the apiserver sends
        // the same document without whitespace.
        let policy = Policy::default();
        let pretty = include_bytes!("../../tests/fixtures/reviews/pod-create.json");
        let compact = include_bytes!("../../tests/fixtures/reviews/pod-create-compact.json");
        assert!(compact.len() + 600 < pretty.len());
        let answer = |body: &[u8]| admit(&policy, body).expect("a valid review").response();
        assert_eq!(answer(compact), answer(pretty));
    }
}
