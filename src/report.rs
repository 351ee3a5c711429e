//! Step 5 for `podgate check`: verdicts as the JSON contract or as text for
//! people; [`sarif`] and [`github`] for CI systems that show findings inline.

use std::fmt::Write as _;

use serde::Serialize;

use crate::checks::CheckId;
use crate::decode::manifest::SkipReason;
use crate::verdict::{Effect, Verdict};

pub mod github;
pub mod sarif;

/// `--format json`: `{"results":[...], "skipped":[...], "errors":[...]}`.
/// This shape is a contract for CI pipelines; tests pin it.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub results: Vec<ObjectResult>,
    /// What was not checked and why (one entry per document, chart or
    /// kustomization).
    pub skipped: Vec<Skipped>,
    /// What could not be read, decoded or rendered (also on stderr).
    pub errors: Vec<Problem>,
}

/// A document, file, chart or kustomization that was not checked.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// `FILE#DOC` for a document, the directory for a chart or kustomization.
    pub source: String,
    pub reason: SkipReason,
}

/// An input podgate could not evaluate: it fails the run (exit code 2).
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `FILE#DOC`, or the file or directory.
    pub source: String,
    /// The file to point at (for annotations), and the line when known.
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
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
    /// The file to point at: the manifest, or for a rendered chart the
    /// template (for a kustomization, its kustomization file).
    pub file: String,
    /// The object's first line in `file`, when known.
    pub line: Option<usize>,
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
    /// The line of the field in the object's `file` (of its nearest
    /// ancestor when the field is missing), when known.
    pub line: Option<usize>,
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
                line: None,
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
        let file = source.rsplit_once('#').map_or(source.as_str(), |(file, _)| file).to_owned();
        ObjectResult {
            file,
            line: None,
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
    /// Documents (charts, kustomizations) not checked, by [`SkipReason`]
    /// in the order of [`SkipReason::ALL`].
    pub skipped: [usize; SkipReason::ALL.len()],
    /// Files or documents that could not be read, decoded or rendered.
    pub errors: usize,
}

impl Tally {
    /// Counts one skipped document or unit.
    pub fn skip(&mut self, reason: SkipReason) {
        self.skipped[reason as usize] += 1;
    }
}

/// Text for a terminal: one block per object, grouped, then a summary line.
pub fn render_text(report: &Report, tally: Tally) -> String {
    let mut out = String::new();
    for result in &report.results {
        let status = if !result.allowed {
            "DENY"
        } else if !result.violations.is_empty() || !result.notices.is_empty() {
            "WARN"
        } else {
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
            match v.line {
                Some(line) => {
                    let _ = writeln!(out, "            field: {}  ({}:{line})", v.field, result.file);
                }
                None => {
                    let _ = writeln!(out, "            field: {}", v.field);
                }
            }
        }
    }
    let mut explained = std::collections::BTreeSet::new();
    for skipped in &report.skipped {
        if let Some(hint) = skip_hint(skipped) {
            // A template file with many documents is explained once.
            let file = skipped.source.rsplit_once('#').map_or(skipped.source.as_str(), |(file, _)| file);
            if explained.insert(file.to_owned()) {
                let _ = writeln!(out, "SKIP  {file}: {hint}");
            }
        }
    }
    out.push('\n');
    out.push_str(&summary(report, tally));
    out
}

/// The last line of the text format: objects by outcome, skips by reason,
/// errors.
pub fn summary(report: &Report, tally: Tally) -> String {
    let mut out = String::new();
    let objects = report.results.len();
    let denied = report.results.iter().filter(|r| !r.allowed).count();
    let warned =
        report.results.iter().filter(|r| r.allowed && (!r.violations.is_empty() || !r.notices.is_empty())).count();
    let passed = objects - denied - warned;
    let _ = write!(
        out,
        "{objects} object{} checked: {denied} denied, {warned} allowed with warnings, {passed} passed",
        if objects == 1 { "" } else { "s" }
    );
    for reason in SkipReason::ALL {
        let count = tally.skipped[reason as usize];
        let noun = match reason {
            SkipReason::HelmChart => "chart",
            SkipReason::Kustomization => "kustomization",
            _ => "document",
        };
        if count > 0 {
            let _ =
                write!(out, "; {count} {noun}{} skipped ({})", if count == 1 { "" } else { "s" }, reason.describe());
        }
    }
    if tally.errors > 0 {
        let _ = write!(out, "; {} error{} (see above)", tally.errors, if tally.errors == 1 { "" } else { "s" });
    }
    out.push('\n');
    out
}

/// The one-line explanation printed for a skipped chart, kustomization or
/// template file: what it is and the command that checks it. Other skipped
/// documents (Services, values files ...) are only counted.
pub fn skip_hint(skipped: &Skipped) -> Option<String> {
    let source = &skipped.source;
    match skipped.reason {
        SkipReason::HelmChart => {
            Some(format!("Helm chart, not rendered; check what it renders with `podgate check --helm {source}`"))
        }
        SkipReason::Kustomization => Some(format!(
            "kustomization, not rendered; check what it renders with `podgate check --kustomize {source}`"
        )),
        SkipReason::GoTemplate => Some(
            "Go template syntax outside a Helm chart: render it and check the output \
             (e.g. `helm template CHART | podgate check -`)"
                .to_owned(),
        ),
        _ => None,
    }
}
