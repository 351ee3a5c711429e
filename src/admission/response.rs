//! Encodes the `AdmissionReview` answer with plain `Serialize` structs.
//!
//! Limits follow what the apiserver accepts and shows: each warning under 256
//! characters and all of them under 4 KiB (it truncates beyond that), and the
//! denial message and audit annotations capped so that a pod with thousands
//! of bad containers cannot make the answer huge.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::verdict::{Effect, Verdict};

/// The only `apiVersion` podgate speaks.
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The `kind` of request and answer.
pub const KIND: &str = "AdmissionReview";

/// Longest single warning, in bytes (the apiserver's limit is 256 characters).
pub const MAX_WARNING_BYTES: usize = 255;
/// Largest total of all warnings, in bytes (the apiserver's limit is 4 KiB).
pub const MAX_WARNINGS_TOTAL_BYTES: usize = 4000;
/// Largest denial message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Largest `violations` audit annotation, in bytes.
pub const MAX_ANNOTATION_BYTES: usize = 8 * 1024;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: BTreeMap<&'static str, String>,
}

/// The `metav1.Status` of a denial.
#[derive(Debug, Serialize)]
struct StatusOut {
    code: u16,
    reason: &'static str,
    message: String,
}

/// The answer to a review podgate did not evaluate, or that had nothing to
/// report: the bytes `encode` makes of it, written around the uid directly
/// (the answer to nearly every review).
pub fn allowed(uid: &str) -> Vec<u8> {
    const HEAD: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#;
    const TAIL: &str = r#","allowed":true}}"#;
    let mut out = Vec::with_capacity(HEAD.len() + uid.len() + 2 + TAIL.len());
    out.extend_from_slice(HEAD.as_bytes());
    // A string into a Vec cannot fail to serialise.
    serde_json::to_writer(&mut out, uid).expect("a string serialises");
    out.extend_from_slice(TAIL.as_bytes());
    out
}

/// The answer carrying a verdict: a 403 status listing every deny finding
/// when denied, every other finding as a warning, and every finding and
/// exemption in the audit annotations.
pub fn from_verdict(uid: &str, verdict: &Verdict<'_>) -> Vec<u8> {
    let allowed = verdict.allowed();
    let status = (!allowed).then(|| StatusOut { code: 403, reason: "Forbidden", message: denial_message(verdict) });
    let warnings = limit_warnings(verdict.warning_texts());
    let mut audit_annotations = BTreeMap::new();
    if !verdict.violations.is_empty() {
        audit_annotations.insert("violations", violations_annotation(verdict));
    }
    if let Some(reason) = verdict.exemption_reason() {
        audit_annotations.insert("exemption", sanitize(&reason));
        // The rules by name, for audit-log queries (names are validated).
        let rules: Vec<String> = verdict.exemptions.iter().map(|rule| rule.label()).collect();
        audit_annotations.insert("exemptionRules", rules.join(","));
    }
    encode(&ReviewOut {
        api_version: API_VERSION,
        kind: KIND,
        response: ResponseOut { uid, allowed, status, warnings, audit_annotations },
    })
}

fn encode(review: &ReviewOut<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Serialising these structs into a Vec cannot fail: no maps with non-string
    // keys, no floats, no custom Serialize impls.
    serde_json::to_writer(&mut out, review).expect("AdmissionReview response serialises");
    out
}

/// Every deny finding, `; `-separated like `Verdict::denial_message`, capped
/// at [`MAX_MESSAGE_BYTES`] with a count of what was left out.
fn denial_message(verdict: &Verdict<'_>) -> String {
    join_capped(verdict.denials().map(|v| v.finding.message.as_str()), "; ", MAX_MESSAGE_BYTES, "findings")
}

/// `check/action field` of every finding, for the audit log.
fn violations_annotation(verdict: &Verdict<'_>) -> String {
    let items = verdict.violations.iter().map(|v| {
        let action = match v.effect {
            Effect::Deny => "deny",
            Effect::Warn => "warn",
            Effect::Audit => "audit",
        };
        format!("{}/{action} {}", v.finding.check, v.finding.field)
    });
    let items: Vec<String> = items.collect();
    join_capped(items.iter().map(String::as_str), ", ", MAX_ANNOTATION_BYTES, "violations")
}

/// Joins `items` with `separator` while the result stays within `max` bytes;
/// the rest is summarised as `... and N more {what}`.
fn join_capped<'i>(items: impl Iterator<Item = &'i str>, separator: &str, max: usize, what: &str) -> String {
    const SUMMARY_ROOM: usize = 64;
    let items: Vec<&str> = items.collect();
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        let item = truncate(sanitize(item), max - SUMMARY_ROOM);
        let separator_len = if out.is_empty() { 0 } else { separator.len() };
        // Every item but the last must leave room for the summary.
        let limit = if i + 1 == items.len() { max } else { max - SUMMARY_ROOM };
        if out.len() + separator_len + item.len() > limit {
            if !out.is_empty() {
                out.push_str(separator);
            }
            out.push_str(&format!("... and {} more {what}", items.len() - i));
            return out;
        }
        if !out.is_empty() {
            out.push_str(separator);
        }
        out.push_str(&item);
    }
    out
}

/// Caps each warning at [`MAX_WARNING_BYTES`] and all of them at
/// [`MAX_WARNINGS_TOTAL_BYTES`]; a last warning says how many were left out.
pub fn limit_warnings(texts: impl Iterator<Item = String>) -> Vec<String> {
    const SUMMARY_ROOM: usize = 80;
    let texts: Vec<String> = texts.collect();
    let mut out = Vec::new();
    let mut total = 0;
    for (i, text) in texts.iter().enumerate() {
        let text = truncate(sanitize(text), MAX_WARNING_BYTES);
        let last = i + 1 == texts.len();
        let budget = if last { MAX_WARNINGS_TOTAL_BYTES } else { MAX_WARNINGS_TOTAL_BYTES - SUMMARY_ROOM };
        if total + text.len() > budget {
            out.push(format!("podgate: {} more findings not shown (see the audit annotations)", texts.len() - i));
            return out;
        }
        total += text.len();
        out.push(text);
    }
    out
}

/// Replaces control characters (newlines, escapes) with spaces: answers end
/// up in HTTP headers and terminals.
fn sanitize(text: &str) -> String {
    // ASCII (nearly every message) is checked byte by byte, without decoding.
    let has_control =
        if text.is_ascii() { text.bytes().any(|b| b < 0x20 || b == 0x7f) } else { text.chars().any(char::is_control) };
    if has_control {
        text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
    } else {
        text.to_owned()
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("...");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{CheckId, Finding};
    use crate::verdict::Violation;

    fn violation(effect: Effect, message: &str) -> Violation {
        Violation {
            finding: Finding {
                check: CheckId::RunAsNonRoot,
                container: Some("app".into()),
                field: "spec.containers[0].securityContext.runAsNonRoot".into(),
                message: message.into(),
            },
            effect,
        }
    }

    #[test]
    fn allowed_answer_is_minimal() {
        let json = String::from_utf8(allowed("u-1")).unwrap();
        assert_eq!(
            json,
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-1","allowed":true}}"#
        );
    }

    #[test]
    fn allowed_answer_is_what_the_structs_encode() {
        for uid in ["u-1", "quote\"back\\slash", "ctrl\u{1}\n", "ünï"] {
            let structs = encode(&ReviewOut {
                api_version: API_VERSION,
                kind: KIND,
                response: ResponseOut {
                    uid,
                    allowed: true,
                    status: None,
                    warnings: Vec::new(),
                    audit_annotations: BTreeMap::new(),
                },
            });
            assert_eq!(allowed(uid), structs, "{uid}");
        }
    }

    #[test]
    fn denial_has_status_warnings_and_annotations() {
        let verdict = Verdict {
            violations: vec![violation(Effect::Deny, "bad one"), violation(Effect::Warn, "meh\nline")],
            exemptions: vec![],
            notices: vec![],
        };
        let json: serde_json::Value = serde_json::from_slice(&from_verdict("u\"2", &verdict)).unwrap();
        let response = &json["response"];
        assert_eq!(response["uid"], "u\"2");
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 403);
        assert_eq!(response["status"]["reason"], "Forbidden");
        assert_eq!(response["status"]["message"], "bad one");
        assert_eq!(response["warnings"], serde_json::json!(["meh line"]));
        assert_eq!(
            response["auditAnnotations"]["violations"],
            "runAsNonRoot/deny spec.containers[0].securityContext.runAsNonRoot, runAsNonRoot/warn spec.containers[0].securityContext.runAsNonRoot"
        );
    }

    #[test]
    fn warnings_stay_within_the_apiserver_limits() {
        let texts = (0..100).map(|i| format!("{i} {}", "x".repeat(300)));
        let warnings = limit_warnings(texts);
        assert!(warnings.iter().all(|w| w.len() < 256), "{warnings:?}");
        assert!(warnings.iter().map(String::len).sum::<usize>() < 4096);
        assert!(warnings.last().unwrap().contains("more findings not shown"), "{warnings:?}");
        assert_eq!(limit_warnings(["é".repeat(200)].into_iter())[0].len(), 255);
    }

    #[test]
    fn long_denials_are_capped_and_counted() {
        let verdict = Verdict {
            violations: (0..2000)
                .map(|i| violation(Effect::Deny, &format!("finding {i} {}", "y".repeat(50))))
                .collect(),
            exemptions: vec![],
            notices: vec![],
        };
        let message = denial_message(&verdict);
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
        assert!(message.ends_with("more findings"), "{}", &message[message.len() - 40..]);
        let annotation = violations_annotation(&verdict);
        assert!(annotation.len() <= MAX_ANNOTATION_BYTES);
    }
}
