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
    /// Remarks on the run as a whole (`podgate audit`: exemptions that
    /// cannot apply); absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
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
#[derive(Debug, Clone, Serialize)]
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
    /// `podgate audit`, a workload: how many Pods it controls (directly or
    /// through ReplicaSets and Jobs) were listed with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<usize>,
    /// `podgate audit`, a workload: its Pods, ReplicaSets and Jobs whose
    /// findings differ from the workload's own, grouped by the difference.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differing: Vec<Differing>,
    /// An exemption covered every check (not part of the JSON contract:
    /// `exempt` says why).
    #[serde(skip)]
    pub fully_exempt: bool,
    /// The file to point at: the manifest, or for a rendered chart the
    /// template; for a kustomization the object's source file (an overlay's
    /// result of its own: the patch, else its kustomization file).
    pub file: String,
    /// The object's first line in `file`, when known.
    pub line: Option<usize>,
    /// `--kustomize`: the kustomization directories whose renderings of
    /// this source document have exactly these findings (one result for
    /// them all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rendered_by: Vec<String>,
    /// `--kustomize`: for an overlay whose patches change the findings of a
    /// source document, what differs from the document's other result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub differs_from: Option<DiffersFrom>,
}

/// How an overlay's rendering of a source document differs from the
/// document's main result (the base rendered alone, else the most overlays).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffersFrom {
    /// The main result's `renderedBy`.
    pub rendered_by: Vec<String>,
    /// The main result's `file` and `line`: the object in its source file.
    pub file: String,
    pub line: Option<usize>,
    /// Findings this rendering has and the main result has not (located at
    /// the patch that makes them, else at the overlay's kustomization).
    pub added: Vec<ViolationResult>,
    /// Findings the main result has and this rendering has not (fixed by
    /// the overlay), located likewise.
    pub removed: Vec<ViolationResult>,
}

/// An exemption rule that applied to an object.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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
    /// The file `line` is in when it is not the object's `file`: in an
    /// overlay's result of its own (`--kustomize`), a finding the base has
    /// too is in the base's source file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `podgate audit`, a workload's finding: how many of its Pods have it too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<usize>,
    /// The effect, which `action` folds audit into `warn` for; kept for
    /// audit's counts and PolicyReports (a would-be denial is a `fail`).
    #[serde(skip)]
    pub effect: Effect,
}

impl ViolationResult {
    /// Whether enforcing would deny the object for this finding (action
    /// `deny`, in enforce or in audit mode).
    pub fn would_deny(&self) -> bool {
        self.effect != Effect::Warn
    }
}

/// Objects controlled by a workload whose findings differ from the
/// workload's own (a sidecar injected by a mutating webhook, a template
/// changed since): every such object with the same difference, counted.
#[derive(Debug, Clone, Serialize)]
pub struct Differing {
    /// `Pod`, `ReplicaSet` or `Job`.
    pub kind: String,
    /// How many objects have exactly this difference.
    pub count: usize,
    /// The API paths of the first few of them.
    pub examples: Vec<String>,
    pub allowed: bool,
    /// Findings these objects have and the workload has not (their own field paths).
    pub added: Vec<ViolationResult>,
    /// Findings the workload has and these objects have not.
    pub missing: Vec<ViolationResult>,
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
                pods: None,
                effect: v.effect,
                line: None,
                file: None,
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
            pods: None,
            differing: Vec::new(),
            fully_exempt: verdict.full_exemption().is_some(),
            rendered_by: Vec::new(),
            differs_from: None,
        }
    }
}

/// A finding to annotate (SARIF, GitHub) once: every finding of a plain or
/// Helm result; for `--kustomize`, a main result's findings with every
/// kustomization that renders them (the overlays whose own result shares
/// them too), and only the findings an overlay's result adds.
pub struct Annotated<'r> {
    pub object: &'r ObjectResult,
    pub violation: &'r ViolationResult,
    /// The file and line to annotate.
    pub file: &'r str,
    pub line: Option<usize>,
    /// The kustomization directories whose renderings have the finding.
    pub rendered_by: Vec<&'r str>,
}

/// The findings of a report to annotate, each once (see [`Annotated`]).
pub fn annotated(report: &Report) -> Vec<Annotated<'_>> {
    let mut out = Vec::new();
    for object in &report.results {
        let (violations, own): (Vec<&ViolationResult>, bool) = match &object.differs_from {
            Some(differs) => (differs.added.iter().collect(), true),
            None => (object.violations.iter().collect(), false),
        };
        for v in violations {
            let mut rendered_by: Vec<&str> = object.rendered_by.iter().map(String::as_str).collect();
            if !own {
                let same = |a: &ViolationResult| {
                    (a.check, &a.field, &a.container, &a.message) == (v.check, &v.field, &v.container, &v.message)
                };
                for other in &report.results {
                    let Some(differs) = &other.differs_from else { continue };
                    if other.source == object.source
                        && !differs.removed.iter().any(same)
                        && other.violations.iter().any(same)
                    {
                        rendered_by.extend(other.rendered_by.iter().map(String::as_str));
                    }
                }
            }
            out.push(Annotated {
                object,
                violation: v,
                file: v.file.as_deref().unwrap_or(&object.file),
                line: v.line.or(object.line),
                rendered_by,
            });
        }
    }
    out
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
        if !result.rendered_by.is_empty() {
            let _ = writeln!(out, "      rendered by: {}", result.rendered_by.join(", "));
        }
        if let Some(differs) = &result.differs_from {
            let _ = writeln!(
                out,
                "      differs from the result rendered by {}: {} finding{} added, {} removed",
                differs.rendered_by.join(", "),
                differs.added.len(),
                if differs.added.len() == 1 { "" } else { "s" },
                differs.removed.len()
            );
        }
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
        let removed = result.differs_from.iter().flat_map(|d| &d.removed);
        let findings = result.violations.iter().map(|v| (v.action, v)).chain(removed.map(|v| ("removed", v)));
        for (action, v) in findings {
            let _ = writeln!(out, "      {action:<4}  {}: {}", v.check, v.message);
            let file = v.file.as_deref().unwrap_or(&result.file);
            match v.line {
                Some(line) => {
                    let _ = writeln!(out, "            field: {}  ({file}:{line})", v.field);
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
    let _ = write!(out, "{objects} object{} checked", if objects == 1 { "" } else { "s" });
    let renderings: usize = report.results.iter().map(|r| r.rendered_by.len()).sum();
    if renderings > 0 {
        // A base used by three overlays is one object, rendered four times.
        let _ = write!(
            out,
            " ({renderings} kustomize rendering{} grouped by source)",
            if renderings == 1 { "" } else { "s" }
        );
    }
    let _ = write!(out, ": {denied} denied, {warned} allowed with warnings, {passed} passed");
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

/// `podgate audit`'s text: one block per reported object (a workload with
/// the Pods it controls, or an object without a listed controller), then
/// counts per namespace and per check, worst first.
pub fn render_audit_text(report: &Report) -> String {
    use std::collections::BTreeMap;

    let mut out = String::new();
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}\n");
    }
    // Per namespace: [denied, warned, passed, exempt]; per check: objects
    // with a would-be denial, objects with a warning, Pods affected.
    let mut namespaces: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    let mut checks: BTreeMap<CheckId, [usize; 3]> = BTreeMap::new();
    let mut pods = 0;
    for result in &report.results {
        let denied = !result.allowed || result.differing.iter().any(|d| !d.allowed);
        let warned = !result.violations.is_empty() || result.differing.iter().any(|d| !d.added.is_empty());
        let (status, column) = if denied {
            ("DENY", 0)
        } else if warned {
            ("WARN", 1)
        } else if result.fully_exempt {
            ("EXEMPT", 3)
        } else {
            ("PASS", 2)
        };
        namespaces.entry(result.namespace.as_deref().unwrap_or("")).or_default()[column] += 1;
        let namespace = result.namespace.as_deref().map(|ns| format!("{ns}/")).unwrap_or_default();
        let name = result.name.as_deref().unwrap_or("<unnamed>");
        let owned = match result.pods {
            Some(n) => format!("  [{n} pod{}]", if n == 1 { "" } else { "s" }),
            None => String::new(),
        };
        pods += result.pods.unwrap_or(0);
        let _ = writeln!(out, "{status:<6}{} {namespace}{name}  ({}){owned}", result.kind, result.source);
        if let Some(reason) = &result.exempt {
            let _ = writeln!(out, "      exempt: {reason}");
        }
        let mut seen = [false; CheckId::ALL.len()];
        // Pods with a finding of each check: a check firing on two
        // containers of the same Pods counts those Pods once.
        let mut check_pods = [0usize; CheckId::ALL.len()];
        for v in &result.violations {
            let shared = v.pods.map(|n| format!("  [{n} pod{}]", if n == 1 { "" } else { "s" })).unwrap_or_default();
            let _ = writeln!(out, "      {:<4}  {}: {}{shared}", v.action, v.check, v.message);
            let _ = writeln!(out, "            field: {}", v.field);
            let counts = checks.entry(v.check).or_default();
            if !seen[v.check.index()] {
                seen[v.check.index()] = true;
                counts[if v.would_deny() { 0 } else { 1 }] += 1;
            }
            check_pods[v.check.index()] = check_pods[v.check.index()].max(v.pods.unwrap_or(0));
        }
        for group in &result.differing {
            let _ = writeln!(
                out,
                "      differs: {} {}{} ({}{})",
                group.count,
                group.kind,
                if group.count == 1 { "" } else { "s" },
                group.examples.join(", "),
                if group.count > group.examples.len() { ", ..." } else { "" }
            );
            for v in &group.added {
                let _ = writeln!(out, "        + {:<4}  {}: {}", v.action, v.check, v.message);
                let _ = writeln!(out, "                field: {}", v.field);
                let counts = checks.entry(v.check).or_default();
                if !seen[v.check.index()] {
                    seen[v.check.index()] = true;
                    counts[if v.would_deny() { 0 } else { 1 }] += 1;
                }
            }
            if group.kind == "Pod" {
                // These Pods are already counted for a check when they keep
                // one of the owner's findings of it.
                let mut added = [false; CheckId::ALL.len()];
                for v in &group.added {
                    let kept = result.violations.iter().any(|o| {
                        o.check == v.check
                            && !group.missing.iter().any(|m| m.check == o.check && m.message == o.message)
                    });
                    if !kept && !std::mem::replace(&mut added[v.check.index()], true) {
                        check_pods[v.check.index()] += group.count;
                    }
                }
            }
            for v in &group.missing {
                let _ = writeln!(out, "        - {:<4}  {}: {}", v.action, v.check, v.message);
            }
        }
        for check in CheckId::ALL {
            if check_pods[check.index()] > 0 {
                checks.entry(check).or_default()[2] += check_pods[check.index()];
            }
        }
    }

    let total: [usize; 4] = namespaces.values().fold([0; 4], |mut sum, counts| {
        sum.iter_mut().zip(counts).for_each(|(s, c)| *s += c);
        sum
    });
    let objects = report.results.len();
    let _ = writeln!(
        out,
        "\n{objects} object{} reported ({pods} pod{} counted under their owners): {} denied, {} allowed with \
         warnings, {} passed, {} exempt",
        if objects == 1 { "" } else { "s" },
        if pods == 1 { "" } else { "s" },
        total[0],
        total[1],
        total[2],
        total[3]
    );
    if !namespaces.is_empty() {
        let mut rows: Vec<_> = namespaces.into_iter().collect();
        rows.sort_by(|a, b| (b.1[0], b.1[1]).cmp(&(a.1[0], a.1[1])).then(a.0.cmp(b.0)));
        let _ = writeln!(out, "\nBy namespace (worst first):  denied  warned  passed  exempt");
        for (namespace, c) in rows {
            let namespace = if namespace.is_empty() { "<cluster>" } else { namespace };
            let _ = writeln!(out, "  {namespace:<26}  {:>6}  {:>6}  {:>6}  {:>6}", c[0], c[1], c[2], c[3]);
        }
    }
    if !checks.is_empty() {
        let mut rows: Vec<_> = checks.into_iter().collect();
        rows.sort_by(|a, b| (b.1[0], b.1[1], b.1[2]).cmp(&(a.1[0], a.1[1], a.1[2])).then(a.0.cmp(&b.0)));
        let _ = writeln!(out, "\nBy check (worst first):  objects that would be denied  warned  pods");
        for (check, c) in rows {
            let _ = writeln!(out, "  {:<24}  {:>28}  {:>6}  {:>4}", check.as_str(), c[0], c[1], c[2]);
        }
    }
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
