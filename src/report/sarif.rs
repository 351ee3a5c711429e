//! `--format sarif`: SARIF 2.1.0, which GitHub code scanning (and other
//! SARIF readers) show inline.
//!
//! One rule per check id, with its documentation; one result per finding,
//! located at the file and line of the offending field. Inputs that could
//! not be evaluated are the invocation's error notifications (and make the
//! run unsuccessful); skip counts are in the run's `properties`.
//!
//! Artifact URIs carry no dot segments, which SARIF readers refuse
//! (SARIF1002) and code scanning cannot place: a file under the working
//! directory is a relative reference against `%SRCROOT%` (the working
//! directory, given in `originalUriBaseIds`), any other file an absolute
//! `file://` URI. Both are lexically normalized (`a/../b` is `b`), so
//! `podgate check ../deploy` and `/a/b/../deploy` name their files plainly.

use std::path::{Component, Path, PathBuf};

use serde_json::{json, Value};

use super::{Report, Tally};
use crate::checks::{Action, CheckId, Mode};
use crate::config::Policy;
use crate::decode::manifest::SkipReason;

/// The rule's name and documentation: (short description, full description).
fn documentation(check: CheckId) -> (&'static str, &'static str) {
    match check {
        CheckId::RunAsNonRoot => (
            "Containers must run as non-root",
            "The effective runAsNonRoot of every container (its securityContext, else the pod's) must be true. \
             A container-level false overrides a pod-level true and violates. A pod in its own user namespace \
             (hostUsers: false) passes, as Pod Security Admission allows, unless userNamespaces: enforce.",
        ),
        CheckId::RunAsUser => (
            "UIDs must be non-zero and in the allowed range",
            "Every runAsUser that is set (pod level and each container) must be non-zero, at least minUid \
             (default 1000) and at most maxUid if set. An unset UID passes; runAsNonRoot governs it. A pod in \
             its own user namespace (hostUsers: false) may run any UID, as Pod Security Admission allows, unless \
             userNamespaces: enforce.",
        ),
        CheckId::AllowPrivilegeEscalation => (
            "Containers must not allow privilege escalation",
            "Every container must set securityContext.allowPrivilegeEscalation: false explicitly; \
             privileged: true also violates.",
        ),
        CheckId::LivenessProbe => (
            "Long-running containers need a liveness probe",
            "Every regular container and sidecar init container (restartPolicy: Always) needs a livenessProbe, \
             unless the pod runs to completion (restartPolicy Never or OnFailure: Jobs, CronJobs).",
        ),
        CheckId::ReadinessProbe => (
            "Long-running containers need a readiness probe",
            "Every regular container and sidecar init container (restartPolicy: Always) needs a readinessProbe, \
             unless the pod runs to completion (restartPolicy Never or OnFailure: Jobs, CronJobs).",
        ),
        CheckId::ProbeSettings => (
            "Probes must be well-formed",
            "Every probe has exactly one handler, a named port that exists in the container's ports or a \
             numeric port in 1..65535, timeoutSeconds <= periodSeconds, and timeouts, periods and initial \
             delays within the configured limits.",
        ),
    }
}

/// The SARIF level of a finding's action.
fn level(action: &str) -> &'static str {
    if action == "deny" {
        "error"
    } else {
        "warning"
    }
}

/// A path as a SARIF URI reference: relative paths stay relative (GitHub
/// resolves them against the repository root), absolute ones become
/// `file://` URIs; characters outside the URI grammar are percent-encoded.
pub fn uri(path: &str) -> String {
    let path = path.strip_prefix("./").unwrap_or(path);
    let mut out = String::with_capacity(path.len() + 8);
    if path.starts_with('/') {
        out.push_str("file://");
    }
    for byte in path.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The `uriBaseId` of files under the working directory.
pub const SRCROOT: &str = "%SRCROOT%";

/// `path` with `.` and `..` segments resolved lexically (as a URI resolver
/// would, not by following symbolic links); `..` above the root of an
/// absolute path stays at the root, and leading `..` of a relative one stay.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                let popped = matches!(out.components().next_back(), Some(Component::Normal(_))) && out.pop();
                if !popped && !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The path's components joined with `/`, whatever the platform's separator.
fn slashed(path: &Path) -> String {
    let mut out = String::new();
    for component in path.components() {
        match component {
            Component::RootDir => out.push('/'),
            Component::Prefix(prefix) => out.push_str(&prefix.as_os_str().to_string_lossy()),
            other => {
                if !out.is_empty() && !out.ends_with('/') {
                    out.push('/');
                }
                out.push_str(&other.as_os_str().to_string_lossy());
            }
        }
    }
    out
}

/// The `artifactLocation` of `file` (as the report names it, relative to
/// the working directory or absolute) when `srcroot` is the working
/// directory: relative to [`SRCROOT`] when the file is under it, else an
/// absolute `file://` URI; without a `srcroot`, the normalized path as it is.
pub fn artifact_location(file: &str, srcroot: Option<&Path>) -> Value {
    let path = Path::new(file);
    let Some(root) = srcroot.map(normalize) else {
        return json!({"uri": uri(&slashed(&normalize(path)))});
    };
    let absolute = normalize(&root.join(path));
    match absolute.strip_prefix(&root) {
        Ok(relative) if !relative.as_os_str().is_empty() => {
            json!({"uri": uri(&slashed(relative)), "uriBaseId": SRCROOT})
        }
        _ => json!({"uri": uri(&slashed(&absolute))}),
    }
}

/// `originalUriBaseIds`: where [`SRCROOT`] is, as an absolute `file://`
/// URI ending in `/` (relative references resolve against it).
fn original_uri_base_ids(srcroot: &Path) -> Value {
    let mut root = uri(&slashed(&normalize(srcroot)));
    if !root.ends_with('/') {
        root.push('/');
    }
    json!({SRCROOT: {"uri": root, "description": {"text": "The working directory of podgate check."}}})
}

fn location(file: &str, line: Option<usize>, srcroot: Option<&Path>) -> Value {
    let mut physical = json!({"artifactLocation": artifact_location(file, srcroot)});
    physical["region"] = json!({"startLine": line.unwrap_or(1).max(1)});
    json!({"physicalLocation": physical})
}

/// The whole SARIF log for one run of `podgate check`; `srcroot` is the
/// absolute working directory the report's relative paths are relative to
/// (`None`: unknown, and the paths are given as they are).
pub fn render(report: &Report, tally: Tally, policy: &Policy, srcroot: Option<&Path>) -> Value {
    let rules: Vec<Value> = CheckId::ALL
        .iter()
        .map(|&check| {
            let (short, full) = documentation(check);
            let (action, mode) = policy.checks.rollout(check, policy.mode);
            let configuration = match (action, mode) {
                (Action::Off, _) => json!({"enabled": false, "level": "none"}),
                (Action::Deny, Mode::Enforce) => json!({"level": "error"}),
                _ => json!({"level": "warning"}),
            };
            json!({
                // No `name`: SARIF wants it to differ from `id` beyond case,
                // and the check id is already the readable name.
                "id": check.as_str(),
                "shortDescription": {"text": format!("{short}.")},
                "fullDescription": {"text": full},
                "help": {
                    "text": format!("{full} Configure it under checks.{check} in the podgate policy file."),
                    "markdown": format!("{full}\n\nConfigure it under `checks.{check}` in the podgate policy file."),
                },
                "defaultConfiguration": configuration,
                "properties": {"tags": ["security", "kubernetes"]},
            })
        })
        .collect();

    let mut results = Vec::new();
    // A base object's finding once, with the kustomizations rendering it.
    for found in super::annotated(report) {
        let (object, v) = (found.object, found.violation);
        let namespace = object.namespace.as_deref().map(|ns| format!("{ns}/")).unwrap_or_default();
        let name = object.name.as_deref().unwrap_or("<unnamed>");
        let mut result = json!({
            "ruleId": v.check.as_str(),
            "ruleIndex": v.check.index(),
            "level": level(v.action),
            "message": {"text": format!("{} ({} {namespace}{name}, field {})", v.message, object.kind, v.field)},
            "locations": [location(found.file, found.line, srcroot)],
            // Stable across line moves, so code scanning tracks a finding
            // through edits of the file.
            "partialFingerprints": {
                "podgate/v1": format!("{}|{}|{namespace}{name}|{}", object.kind, v.check, v.field),
            },
        });
        if !found.rendered_by.is_empty() {
            result["properties"] = json!({"renderedBy": found.rendered_by});
        }
        if let Some(differs) = &object.differs_from {
            // An overlay's finding: the patched object in its base file.
            let mut base = location(&differs.file, differs.line, srcroot);
            base["id"] = json!(0);
            base["message"] =
                json!({"text": format!("the object patched, as rendered by {}", differs.rendered_by.join(", "))});
            result["relatedLocations"] = json!([base]);
            result["properties"]["differsFrom"] = json!(differs.rendered_by);
        }
        results.push(result);
    }

    let notifications: Vec<Value> = report
        .errors
        .iter()
        .map(|e| {
            json!({
                "level": "error",
                "message": {"text": format!("{}: {}", e.source, e.message)},
                "locations": [location(&e.file, e.line, srcroot)],
            })
        })
        .collect();
    let skipped: serde_json::Map<String, Value> = SkipReason::ALL
        .iter()
        .filter(|r| tally.skipped[**r as usize] > 0)
        .map(|r| (r.as_str().to_owned(), json!(tally.skipped[*r as usize])))
        .collect();

    let mut run = json!({
        "tool": {"driver": {
            "name": "podgate",
            "version": env!("CARGO_PKG_VERSION"),
            "semanticVersion": env!("CARGO_PKG_VERSION"),
            "rules": rules,
        }},
        "invocations": [{
            "executionSuccessful": report.errors.is_empty(),
            "toolExecutionNotifications": notifications,
        }],
        "results": results,
        "properties": {"objectsChecked": report.results.len(), "skipped": skipped},
    });
    if let Some(root) = srcroot {
        run["originalUriBaseIds"] = original_uri_base_ids(root);
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [run],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_uri_references() {
        assert_eq!(uri("./deploy/app.yaml"), "deploy/app.yaml");
        assert_eq!(uri("charts/my chart/templates/x.yaml"), "charts/my%20chart/templates/x.yaml");
        assert_eq!(uri("/srv/repo/a#b.yaml"), "file:///srv/repo/a%23b.yaml");
    }

    #[test]
    fn accepts_files_under_the_working_directory_as_srcroot_relative() {
        let root = Some(Path::new("/srv/repo"));
        for (file, expected) in [
            ("deploy/app.yaml", "deploy/app.yaml"),
            ("./deploy/./app.yaml", "deploy/app.yaml"),
            ("deploy/../manifests/app.yaml", "manifests/app.yaml"),
            ("/srv/repo/deploy/../manifests/app.yaml", "manifests/app.yaml"),
            ("/srv/other/../repo/my app.yaml", "my%20app.yaml"),
        ] {
            assert_eq!(artifact_location(file, root), json!({"uri": expected, "uriBaseId": SRCROOT}), "{file}");
        }
    }

    #[test]
    fn rejects_dot_segments_for_files_outside_the_working_directory() {
        let root = Some(Path::new("/srv/repo/ci"));
        for (file, expected) in [
            ("../deploy/x.yaml", "file:///srv/repo/deploy/x.yaml"),
            ("../../../../etc/x.yaml", "file:///etc/x.yaml"),
            ("/a/b/../deploy/x.yaml", "file:///a/deploy/x.yaml"),
            ("/srv/repo/ci2/x.yaml", "file:///srv/repo/ci2/x.yaml"),
            ("/srv/repo/ci/..", "file:///srv/repo"),
        ] {
            let location = artifact_location(file, root);
            assert_eq!(location, json!({"uri": expected}), "{file}");
        }
        // Without a working directory: normalized, leading `..` kept.
        assert_eq!(artifact_location("a/../../b.yaml", None), json!({"uri": "../b.yaml"}));
        assert_eq!(artifact_location("/a/./b/../c.yaml", None), json!({"uri": "file:///a/c.yaml"}));
    }

    #[test]
    fn srcroot_is_an_absolute_uri_ending_in_a_slash() {
        assert_eq!(original_uri_base_ids(Path::new("/srv/my repo"))[SRCROOT]["uri"], "file:///srv/my%20repo/");
        assert_eq!(original_uri_base_ids(Path::new("/"))[SRCROOT]["uri"], "file:///");
    }
}
