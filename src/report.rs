//! Step 5 for `podgate check`: verdicts as the JSON contract or as text for people.

use std::fmt::Write as _;

use serde::Serialize;

use crate::checks::CheckId;
use crate::verdict::{Effect, Verdict};

/// `--format json`: `{"results":[...]}`. This shape is a contract for CI
/// pipelines; tests pin it.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub results: Vec<ObjectResult>,
}

/// The verdict on one object.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectResult {
    /// `FILE#DOC`: the file and the 0-based index of the document in it.
    pub source: String,
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub allowed: bool,
    /// The reason of the exemption that applied, if any.
    pub exempt: Option<String>,
    /// Every exemption rule that applied: name, effect, ticket, expiry.
    pub exemptions: Vec<ExemptionResult>,
    /// Warnings about the verdict: an applied rule expiring soon.
    pub notices: Vec<String>,
    pub violations: Vec<ViolationResult>,
}

/// An exemption rule that applied to an object.
#[derive(Debug, Serialize)]
pub struct ExemptionResult {
    /// The rule's `name`, or `exemptions[INDEX]`.
    pub rule: String,
    /// `exempt` or `audit`.
    pub effect: &'static str,
    pub reason: String,
    pub ticket: Option<String>,
    pub owner: Option<String>,
    /// As written in the policy (a date or an RFC 3339 time).
    pub expires: Option<String>,
}

/// One finding of an object.
#[derive(Debug, Serialize)]
pub struct ViolationResult {
    pub check: CheckId,
    /// `deny` or `warn` (a would-be denial in audit mode is a warning).
    pub action: &'static str,
    pub field: String,
    pub container: Option<String>,
    pub message: String,
}

impl ObjectResult {
    /// Builds the result from an object's identity and its verdict.
    pub fn new(
        source: String,
        api_version: String,
        kind: String,
        namespace: Option<String>,
        name: Option<String>,
        verdict: &Verdict<'_>,
    ) -> Self {
        let violations = verdict
            .violations
            .iter()
            .map(|v| ViolationResult {
                check: v.finding.check,
                action: if v.effect == Effect::Deny { "deny" } else { "warn" },
                field: v.finding.field.clone(),
                container: v.finding.container.clone(),
                message: v.warning_text(),
            })
            .collect();
        let exemptions = verdict
            .exemptions
            .iter()
            .map(|rule| ExemptionResult {
                rule: rule.label(),
                effect: rule.effect.as_str(),
                reason: rule.reason.clone(),
                ticket: rule.ticket.clone(),
                owner: rule.owner.clone(),
                expires: rule.expires.as_ref().map(|e| e.text.clone()),
            })
            .collect();
        ObjectResult {
            source,
            api_version,
            kind,
            namespace,
            name,
            allowed: verdict.allowed(),
            exempt: verdict.exemption_reason(),
            exemptions,
            notices: verdict.notices.clone(),
            violations,
        }
    }
}

/// Counts for the summary line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Documents that hold no Pod or workload (Services, ConfigMaps ...).
    pub skipped: usize,
    /// Files or documents that could not be read or decoded.
    pub errors: usize,
}

/// Text for a terminal: one block per object, grouped, then a summary line.
pub fn render_text(report: &Report, tally: Tally) -> String {
    let mut out = String::new();
    let (mut denied, mut warned, mut passed) = (0, 0, 0);
    for result in &report.results {
        let status = if !result.allowed {
            denied += 1;
            "DENY"
        } else if !result.violations.is_empty() || !result.notices.is_empty() {
            warned += 1;
            "WARN"
        } else {
            passed += 1;
            "PASS"
        };
        let namespace = result.namespace.as_deref().map(|ns| format!("{ns}/")).unwrap_or_default();
        let name = result.name.as_deref().unwrap_or("<unnamed>");
        let _ = writeln!(out, "{status}  {} {namespace}{name}  ({})", result.kind, result.source);
        for rule in &result.exemptions {
            let mut about = format!("rule {}", rule.rule);
            for (key, value) in [("ticket", &rule.ticket), ("owner", &rule.owner), ("expires", &rule.expires)] {
                if let Some(value) = value {
                    let _ = write!(about, ", {key} {value}");
                }
            }
            let _ = writeln!(out, "      {}: {} ({about})", rule.effect, rule.reason);
        }
        for notice in &result.notices {
            let _ = writeln!(out, "      note  {notice}");
        }
        for v in &result.violations {
            let _ = writeln!(out, "      {:<4}  {}: {}", v.action, v.check, v.message);
            let _ = writeln!(out, "            field: {}", v.field);
        }
    }
    let objects = report.results.len();
    let _ = write!(
        out,
        "\n{objects} object{} checked: {denied} denied, {warned} allowed with warnings, {passed} passed",
        if objects == 1 { "" } else { "s" }
    );
    if tally.skipped > 0 {
        let _ = write!(
            out,
            "; {} document{} skipped (not a Pod or workload)",
            tally.skipped,
            if tally.skipped == 1 { "" } else { "s" }
        );
    }
    if tally.errors > 0 {
        let _ = write!(out, "; {} error{} (see above)", tally.errors, if tally.errors == 1 { "" } else { "s" });
    }
    out.push('\n');
    out
}
