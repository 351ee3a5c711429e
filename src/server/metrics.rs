//! The Prometheus metrics of `podgate serve`, in OpenMetrics text.
//!
//! Every label has a small, fixed set of values (kinds, operations,
//! decisions, check ids, the admin's exemption reasons): no namespace, name
//! or user ever becomes a label. Counters are atomics; recording a review
//! takes no lock held across an `.await`.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::admission::Decision;
use crate::checks::CheckId;
use crate::config::{Exemption, Policy};
use crate::telemetry::metrics::{prometheus_text, render_openmetrics};
use crate::verdict::Effect;

/// Upper bounds of the review latency histogram, 50 us to 1 s.
pub const DURATION_BUCKETS: [f64; 10] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25, 1.0];

/// `reason` of `podgate_invalid_requests_total`: why a request got no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    NotJson,
    NotAdmissionReview,
    UnsupportedApiVersion,
    MissingUid,
    TooLarge,
    Timeout,
    BodyError,
    UnsupportedMediaType,
    MethodNotAllowed,
    NotFound,
    InternalError,
}

impl InvalidReason {
    pub const ALL: [InvalidReason; 11] = [
        InvalidReason::NotJson,
        InvalidReason::NotAdmissionReview,
        InvalidReason::UnsupportedApiVersion,
        InvalidReason::MissingUid,
        InvalidReason::TooLarge,
        InvalidReason::Timeout,
        InvalidReason::BodyError,
        InvalidReason::UnsupportedMediaType,
        InvalidReason::MethodNotAllowed,
        InvalidReason::NotFound,
        InvalidReason::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::NotJson => "not_json",
            InvalidReason::NotAdmissionReview => "not_admission_review",
            InvalidReason::UnsupportedApiVersion => "unsupported_api_version",
            InvalidReason::MissingUid => "missing_uid",
            InvalidReason::TooLarge => "too_large",
            InvalidReason::Timeout => "timeout",
            InvalidReason::BodyError => "body_error",
            InvalidReason::UnsupportedMediaType => "unsupported_media_type",
            InvalidReason::MethodNotAllowed => "method_not_allowed",
            InvalidReason::NotFound => "not_found",
            InvalidReason::InternalError => "internal_error",
        }
    }
}

/// `result` of the reload counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Success,
    Error,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    operation: &'static str,
    decision: &'static str,
    mode: &'static str,
    dry_run: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ViolationLabels {
    check: &'static str,
    action: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ExemptionLabels {
    rule: String,
    effect: &'static str,
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StaticReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type HistogramFamily = Family<KindLabel, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// One review as the metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct ReviewRecord<'a> {
    pub kind: &'static str,
    pub operation: &'static str,
    pub decision: Decision,
    pub mode: &'static str,
    pub dry_run: bool,
    pub seconds: f64,
    /// `(check, action)` of every violation.
    pub violations: &'a [(CheckId, Effect)],
}

/// The `kind` labels of a review, in [`Metrics`]' per-kind tables.
const KINDS: [&str; 9] =
    ["Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicationController", "other"];
/// The `operation` labels.
const OPERATIONS: [&str; 5] = ["CREATE", "UPDATE", "DELETE", "CONNECT", "other"];
/// The `mode` labels.
const MODES: [&str; 2] = ["enforce", "audit"];
const DECISIONS: [Decision; 4] = [Decision::Allowed, Decision::Denied, Decision::Warned, Decision::Exempt];
const EFFECTS: [Effect; 3] = [Effect::Deny, Effect::Warn, Effect::Audit];
const REQUEST_SERIES: usize = KINDS.len() * OPERATIONS.len() * DECISIONS.len() * MODES.len() * 2;

/// The counters and histograms of one review's fixed label sets, resolved in
/// the families once, on first use (so that a series appears in `/metrics`
/// when it first happens, as before), and then updated without the family's
/// lock and label hashing.
#[derive(Debug)]
struct Resolved {
    requests: Box<[OnceLock<Counter>]>,
    duration: [OnceLock<Histogram>; KINDS.len()],
    violations: [[OnceLock<Counter>; EFFECTS.len()]; CheckId::ALL.len()],
}

impl Default for Resolved {
    fn default() -> Self {
        Resolved {
            requests: (0..REQUEST_SERIES).map(|_| OnceLock::new()).collect(),
            duration: Default::default(),
            violations: Default::default(),
        }
    }
}

fn position(labels: &[&str], value: &str) -> Option<usize> {
    labels.iter().position(|label| *label == value)
}

/// Where a review's `podgate_admission_requests_total` series is in
/// [`Resolved::requests`].
fn request_index(record: &ReviewRecord<'_>) -> Option<usize> {
    let kind = position(&KINDS, record.kind)?;
    let operation = position(&OPERATIONS, record.operation)?;
    let decision = DECISIONS.iter().position(|d| *d == record.decision)?;
    let mode = position(&MODES, record.mode)?;
    let series = ((kind * OPERATIONS.len() + operation) * DECISIONS.len() + decision) * MODES.len() + mode;
    Some(series * 2 + usize::from(record.dry_run))
}

/// Every metric podgate exports, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    resolved: Resolved,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    violations: Family<ViolationLabels, Counter>,
    exemptions: Family<ExemptionLabels, Counter>,
    exemption_expiry: Family<RuleLabel, Gauge>,
    invalid: Family<StaticReasonLabel, Counter>,
    overload: Counter,
    certificate_expiry: Gauge,
    tls_reloads: Family<ResultLabel, Counter>,
    config_reloads: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "podgate_admission_requests",
            "Admission reviews answered, by object kind, operation, decision, policy mode and dry run",
            requests.clone(),
        );
        let duration = HistogramFamily::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register(
            "podgate_admission_request_duration_seconds",
            "Time from receiving a review to having its answer, by object kind",
            duration.clone(),
        );
        let violations = Family::<ViolationLabels, Counter>::default();
        registry.register(
            "podgate_policy_violations",
            "Findings reported in answered reviews, by check and action (deny, warn, audit)",
            violations.clone(),
        );
        let exemptions = Family::<ExemptionLabels, Counter>::default();
        registry.register(
            "podgate_exemptions",
            "Reviews an exemption rule applied to, by the rule's name, effect and reason",
            exemptions.clone(),
        );
        let exemption_expiry = Family::<RuleLabel, Gauge>::default();
        registry.register(
            "podgate_exemption_expiry_timestamp_seconds",
            "When a named exemption rule with expires stops applying, as a Unix timestamp",
            exemption_expiry.clone(),
        );
        let invalid = Family::<StaticReasonLabel, Counter>::default();
        registry.register(
            "podgate_invalid_requests",
            "Requests rejected without a verdict, by reason",
            invalid.clone(),
        );
        let overload = Counter::default();
        registry.register(
            "podgate_overload_rejections",
            "Reviews answered 503 at once because --max-inflight reviews were already in flight",
            overload.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "podgate_tls_certificate_expiry_timestamp_seconds",
            "Expiry (notAfter) of the serving certificate, as a Unix timestamp",
            certificate_expiry.clone(),
        );
        let tls_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "podgate_tls_reloads",
            "Attempts to load a changed certificate and key, by result",
            tls_reloads.clone(),
        );
        let config_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "podgate_config_reloads",
            "Attempts to load a changed policy file, by result",
            config_reloads.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        registry.register("podgate_build_info", "Always 1; the version label is podgate's version", build_info.clone());
        build_info.get_or_create(&VersionLabel { version: env!("CARGO_PKG_VERSION") }).set(1);

        // Fixed label sets start at zero so that rate() and alerts see them.
        for reason in InvalidReason::ALL {
            drop(invalid.get_or_create(&StaticReasonLabel { reason: reason.as_str() }));
        }
        for result in [ReloadResult::Success, ReloadResult::Error] {
            drop(tls_reloads.get_or_create(&ResultLabel { result: result.as_str() }));
            drop(config_reloads.get_or_create(&ResultLabel { result: result.as_str() }));
        }

        Metrics {
            registry,
            resolved: Resolved::default(),
            requests,
            duration,
            violations,
            exemptions,
            exemption_expiry,
            invalid,
            overload,
            certificate_expiry,
            tls_reloads,
            config_reloads,
        }
    }

    /// Records one answered review.
    pub fn review(&self, record: &ReviewRecord<'_>) {
        let labels = || RequestLabels {
            kind: record.kind,
            operation: record.operation,
            decision: record.decision.as_str(),
            mode: record.mode,
            dry_run: if record.dry_run { "true" } else { "false" },
        };
        match request_index(record) {
            Some(index) => {
                self.resolved.requests[index].get_or_init(|| self.requests.get_or_create(&labels()).clone()).inc()
            }
            // A label outside the fixed sets (there is none): the family itself.
            None => self.requests.get_or_create(&labels()).inc(),
        };
        let kind = KindLabel { kind: record.kind };
        match position(&KINDS, record.kind) {
            Some(index) => self.resolved.duration[index]
                .get_or_init(|| self.duration.get_or_create(&kind).clone())
                .observe(record.seconds),
            None => self.duration.get_or_create(&kind).observe(record.seconds),
        }
        for &(check, effect) in record.violations {
            let action = EFFECTS.iter().position(|e| *e == effect).unwrap_or_default();
            let slot = &self.resolved.violations[check.index()][action];
            let labels = ViolationLabels { check: check.as_str(), action: effect.as_str() };
            slot.get_or_init(|| self.violations.get_or_create(&labels).clone()).inc();
        }
    }

    /// Records that an exemption rule applied.
    pub fn exemption(&self, rule: &Exemption) {
        let labels = ExemptionLabels { rule: rule.label(), effect: rule.effect.as_str(), reason: rule.reason.clone() };
        self.exemptions.get_or_create(&labels).inc();
    }

    /// Publishes the expiry of every named rule of `policy` that has one,
    /// replacing those of the policy before (a rule removed from the file
    /// disappears; the rule count is the admin's, so the series are few).
    pub fn set_exemption_expiries(&self, policy: &Policy) {
        self.exemption_expiry.clear();
        for rule in &policy.exemptions {
            if let (Some(name), Some(expiry)) = (&rule.name, &rule.expires) {
                self.exemption_expiry.get_or_create(&RuleLabel { rule: name.clone() }).set(expiry.at.as_second());
            }
        }
    }

    pub fn invalid_request(&self, reason: InvalidReason) {
        self.invalid.get_or_create(&StaticReasonLabel { reason: reason.as_str() }).inc();
    }

    pub fn overload_rejection(&self) {
        self.overload.inc();
    }

    pub fn tls_reload(&self, result: ReloadResult) {
        self.tls_reloads.get_or_create(&ResultLabel { result: result.as_str() }).inc();
    }

    pub fn config_reload(&self, result: ReloadResult) {
        self.config_reloads.get_or_create(&ResultLabel { result: result.as_str() }).inc();
    }

    pub fn set_certificate_expiry(&self, unix_seconds: i64) {
        self.certificate_expiry.set(unix_seconds);
    }

    /// Every metric in OpenMetrics text, ending with `# EOF`
    /// ([`OPENMETRICS_CONTENT_TYPE`](crate::telemetry::metrics::OPENMETRICS_CONTENT_TYPE)).
    pub fn render(&self) -> String {
        render_openmetrics(&self.registry, 8 * 1024)
    }

    /// Every metric in the Prometheus text format 0.0.4, for clients that do
    /// not ask for OpenMetrics (`curl`, `promtool check metrics`): the same
    /// samples, with counter families named after their `_total` samples and
    /// without the `# EOF` marker.
    pub fn render_prometheus_text(&self) -> String {
        prometheus_text(&self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_fixed_labels() {
        let metrics = Metrics::new();
        metrics.review(&ReviewRecord {
            kind: "Pod",
            operation: "CREATE",
            decision: Decision::Denied,
            mode: "enforce",
            dry_run: false,
            seconds: 0.0002,
            violations: &[(CheckId::RunAsNonRoot, Effect::Deny)],
        });
        let policy = Policy::from_yaml(
            "exemptions:\n- namespaces: [kube-system]\n  reason: kube-system is managed by the cluster operator\n- name: legacy-billing\n  objects: [{namespace: shop, name: billing}]\n  effect: audit\n  expires: 2027-03-31\n  reason: legacy\n",
        )
        .unwrap();
        metrics.exemption(&policy.exemptions[0]);
        metrics.exemption(&policy.exemptions[1]);
        metrics.set_exemption_expiries(&policy);
        metrics.invalid_request(InvalidReason::NotJson);
        metrics.set_certificate_expiry(1_900_000_000);
        let text = metrics.render();
        for expected in [
            r#"podgate_admission_requests_total{kind="Pod",operation="CREATE",decision="denied",mode="enforce",dry_run="false"} 1"#,
            r#"podgate_admission_request_duration_seconds_bucket{le="0.00025",kind="Pod"} 1"#,
            r#"podgate_policy_violations_total{check="runAsNonRoot",action="deny"} 1"#,
            r#"podgate_exemptions_total{rule="exemptions[0]",effect="exempt",reason="kube-system is managed by the cluster operator"} 1"#,
            r#"podgate_exemptions_total{rule="legacy-billing",effect="audit",reason="legacy"} 1"#,
            r#"podgate_exemption_expiry_timestamp_seconds{rule="legacy-billing"} 1806451200"#,
            r#"podgate_invalid_requests_total{reason="not_json"} 1"#,
            r#"podgate_invalid_requests_total{reason="too_large"} 0"#,
            "podgate_overload_rejections_total 0",
            "podgate_tls_certificate_expiry_timestamp_seconds 1900000000",
            r#"podgate_tls_reloads_total{result="error"} 0"#,
            r#"podgate_config_reloads_total{result="success"} 0"#,
            concat!(r#"podgate_build_info{version=""#, env!("CARGO_PKG_VERSION"), r#""} 1"#),
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn every_fixed_label_set_has_a_series_of_its_own() {
        let metrics = Metrics::new();
        let mut expected = 0;
        for kind in KINDS {
            for operation in OPERATIONS {
                for decision in DECISIONS {
                    for mode in MODES {
                        for dry_run in [false, true] {
                            let violations: &[(CheckId, Effect)] = &[(CheckId::RunAsUser, Effect::Warn)];
                            let record =
                                ReviewRecord { kind, operation, decision, mode, dry_run, seconds: 0.001, violations };
                            metrics.review(&record);
                            expected += 1;
                        }
                    }
                }
            }
        }
        // An unknown label still counts, through the family.
        let violations: &[(CheckId, Effect)] = &[];
        let odd = ReviewRecord {
            kind: "Pod",
            operation: "PATCH",
            decision: Decision::Allowed,
            mode: "enforce",
            dry_run: false,
            seconds: 0.0,
            violations,
        };
        metrics.review(&odd);
        let text = metrics.render();
        let series: Vec<&str> = text.lines().filter(|l| l.starts_with("podgate_admission_requests_total{")).collect();
        assert_eq!(series.len(), expected + 1);
        assert!(series.iter().all(|line| line.ends_with(" 1")), "{series:?}");
        assert!(text.contains(r#"podgate_admission_requests_total{kind="CronJob",operation="DELETE",decision="exempt",mode="audit",dry_run="true"} 1"#));
        assert!(text.contains(r#"podgate_policy_violations_total{check="runAsUser",action="warn"} 720"#));
        assert!(text.contains(r#"podgate_admission_request_duration_seconds_count{kind="other"} 80"#), "{text}");
    }

    #[test]
    fn prometheus_text_names_counter_families_with_their_total_suffix() {
        let metrics = Metrics::new();
        metrics.overload_rejection();
        metrics.review(&ReviewRecord {
            kind: "Job",
            operation: "UPDATE",
            decision: Decision::Allowed,
            mode: "audit",
            dry_run: true,
            seconds: 0.5,
            violations: &[],
        });
        let text = metrics.render_prometheus_text();
        assert!(text.contains("# HELP podgate_overload_rejections_total Reviews"), "{text}");
        assert!(
            text.contains("# TYPE podgate_overload_rejections_total counter\npodgate_overload_rejections_total 1\n")
        );
        assert!(text.contains("# TYPE podgate_admission_request_duration_seconds histogram"));
        assert!(text.contains("# TYPE podgate_build_info gauge"));
        assert!(!text.contains("# EOF"));
    }
}
