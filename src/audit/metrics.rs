//! The metrics of continuous `podgate audit`: what the last pass found, as
//! gauges (a pass replaces the previous one's numbers), and errors as a
//! counter. Labels are kinds, results, check ids, actions and error reasons:
//! never a namespace or a name.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::checks::CheckId;
use crate::extract::WorkloadKind;
use crate::report::{ObjectResult, Report};
use crate::verdict::Effect;

/// `result` of `podgate_audit_objects`.
pub const RESULTS: [&str; 4] = ["pass", "warn", "would_deny", "exempt"];
/// `reason` of `podgate_audit_errors_total`.
pub const ERROR_REASONS: [&str; 7] =
    ["forbidden", "expired", "api", "transport", "decode", "policy_report", "policy_report_conflict"];
const EFFECTS: [Effect; 3] = [Effect::Deny, Effect::Warn, Effect::Audit];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ObjectLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FindingLabels {
    check: &'static str,
    action: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The auditor's registry.
#[derive(Debug)]
pub struct AuditMetrics {
    registry: Registry,
    objects: Family<ObjectLabels, Gauge>,
    findings: Family<FindingLabels, Gauge>,
    last_success: Gauge<f64, AtomicU64>,
    duration: Gauge<f64, AtomicU64>,
    errors: Family<ReasonLabel, Counter>,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `result` label of one reported object.
pub fn result_label(result: &ObjectResult) -> &'static str {
    if result.fully_exempt {
        "exempt"
    } else if super::owners::would_deny(result) {
        "would_deny"
    } else if result.violations.is_empty() && result.differing.is_empty() {
        "pass"
    } else {
        "warn"
    }
}

impl AuditMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let objects = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "podgate_audit_objects",
            "Objects reported by the last audit pass (workloads with their Pods, and objects without a listed \
             controller), by kind and result (pass, warn, would_deny, exempt)",
            objects.clone(),
        );
        let findings = Family::<FindingLabels, Gauge>::default();
        registry.register(
            "podgate_audit_findings",
            "Findings of the last audit pass on reported objects, by check and action (deny, warn, audit)",
            findings.clone(),
        );
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "podgate_audit_last_success_timestamp_seconds",
            "End of the last successful audit pass, as a Unix timestamp (0 before the first)",
            last_success.clone(),
        );
        let duration = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "podgate_audit_duration_seconds",
            "Duration of the last successful audit pass (listing, evaluating and writing reports)",
            duration.clone(),
        );
        let errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "podgate_audit_errors",
            "Audit passes or report writes that failed, by reason",
            errors.clone(),
        );
        let build_info = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        registry.register("podgate_build_info", "Always 1; the version label is podgate's version", build_info.clone());
        build_info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))]).set(1);

        // Every fixed label set starts at zero, so alerts and rate() see them.
        for kind in WorkloadKind::ALL {
            for result in RESULTS {
                drop(objects.get_or_create(&ObjectLabels { kind: kind.as_str(), result }));
            }
        }
        for check in CheckId::ALL {
            for effect in EFFECTS {
                drop(findings.get_or_create(&FindingLabels { check: check.as_str(), action: effect.as_str() }));
            }
        }
        for reason in ERROR_REASONS {
            drop(errors.get_or_create(&ReasonLabel { reason }));
        }
        AuditMetrics { registry, objects, findings, last_success, duration, errors }
    }

    /// Replaces the gauges with what a successful pass found.
    pub fn record_pass(&self, report: &Report, seconds: f64, unix_now: f64) {
        let mut objects = [[0i64; RESULTS.len()]; WorkloadKind::ALL.len()];
        let mut findings = [[0i64; EFFECTS.len()]; CheckId::ALL.len()];
        for result in &report.results {
            let kind = WorkloadKind::ALL.iter().position(|k| k.as_str() == result.kind).unwrap_or(0);
            let label = result_label(result);
            objects[kind][RESULTS.iter().position(|r| *r == label).unwrap_or(0)] += 1;
            let added = result.differing.iter().flat_map(|d| &d.added);
            for v in result.violations.iter().chain(added) {
                findings[v.check.index()][EFFECTS.iter().position(|e| *e == v.effect).unwrap_or(0)] += 1;
            }
        }
        for (kind, counts) in WorkloadKind::ALL.iter().zip(objects) {
            for (result, count) in RESULTS.iter().zip(counts) {
                self.objects.get_or_create(&ObjectLabels { kind: kind.as_str(), result }).set(count);
            }
        }
        for (check, counts) in CheckId::ALL.iter().zip(findings) {
            for (effect, count) in EFFECTS.iter().zip(counts) {
                self.findings
                    .get_or_create(&FindingLabels { check: check.as_str(), action: effect.as_str() })
                    .set(count);
            }
        }
        self.duration.set(seconds);
        self.last_success.set(unix_now);
    }

    /// Counts a failure; `reason` is one of [`ERROR_REASONS`].
    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// OpenMetrics text, ending with `# EOF`.
    pub fn render(&self) -> String {
        crate::telemetry::metrics::render_openmetrics(&self.registry, 4 * 1024)
    }

    /// The Prometheus text format 0.0.4 (what `promtool check metrics` reads).
    pub fn render_prometheus_text(&self) -> String {
        crate::telemetry::metrics::prometheus_text(&self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_label_sets_start_at_zero_and_carry_no_names() {
        let metrics = AuditMetrics::new();
        metrics.error("forbidden");
        let text = metrics.render_prometheus_text();
        assert!(text.contains("podgate_audit_objects{kind=\"Deployment\",result=\"would_deny\"} 0"), "{text}");
        assert!(text.contains("podgate_audit_findings{check=\"runAsNonRoot\",action=\"audit\"} 0"), "{text}");
        assert!(text.contains("podgate_audit_errors_total{reason=\"forbidden\"} 1"), "{text}");
        assert!(text.contains("podgate_audit_last_success_timestamp_seconds 0"), "{text}");
        assert!(!text.contains("namespace="));
    }
}
