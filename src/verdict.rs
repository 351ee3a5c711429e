//! Step 4 of the data flow: apply exemptions, run the checks, and turn their
//! findings into a verdict according to each check's action and mode.
//! Which exemption rules apply to whom ([`Subject`]) is
//! [`crate::exemption`]'s part; this module only asks it.
//!
//! [`evaluate`] is the one decision: the webhook, `podgate check` and every
//! other path call it with the object, who sent it (if anyone) and the time,
//! so the same object at the same time gets the same verdict everywhere.

use jiff::Timestamp;

use crate::checks::{Action, CheckId, Finding, Mode, PodView, CHECKS};
use crate::config::{Exemption, ExemptionEffect, Policy};
use crate::decode::model::Object;
use crate::exemption::{self, ExpiryState, Subject};
use crate::extract::{pod_target, WorkloadKind};

/// What a finding does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Denies the request (action `deny`, mode `enforce`).
    Deny,
    /// Reported as a warning only (action `warn`).
    Warn,
    /// Would deny, but the check is in audit mode: reported as a warning.
    Audit,
}

impl Effect {
    /// The metric label: `deny`, `warn` or `audit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Deny => "deny",
            Effect::Warn => "warn",
            Effect::Audit => "audit",
        }
    }
}

/// A finding with the effect the policy gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub finding: Finding,
    pub effect: Effect,
}

impl Violation {
    /// The text of a warning shown to the user (`kubectl` prints it as
    /// `Warning: ...`); audit findings say that they would be denied.
    pub fn warning_text(&self) -> String {
        match self.effect {
            Effect::Audit => format!("would deny (audit mode): {}", self.finding.message),
            _ => self.finding.message.clone(),
        }
    }
}

/// The outcome of evaluating one object.
#[derive(Debug, Clone, Default)]
pub struct Verdict<'p> {
    /// Every finding of every check that is not off or exempted, in registry order.
    pub violations: Vec<Violation>,
    /// The exemption rules that applied (borrowed from the policy).
    pub exemptions: Vec<&'p Exemption>,
    /// Warnings about the verdict itself: an applied exemption expiring soon
    /// (`exemption "legacy-billing" expires on 2027-03-31 (SEC-123)`).
    pub notices: Vec<String>,
}

impl<'p> Verdict<'p> {
    /// Allowed unless some finding denies.
    pub fn allowed(&self) -> bool {
        !self.violations.iter().any(|v| v.effect == Effect::Deny)
    }

    /// The rule that exempted the whole object, if one did.
    pub fn full_exemption(&self) -> Option<&'p Exemption> {
        self.exemptions.iter().copied().find(|e| e.is_full())
    }

    /// The warnings shown to the user: notices, then the findings that warn.
    pub fn warning_texts(&self) -> impl Iterator<Item = String> + '_ {
        self.notices.iter().cloned().chain(self.warnings().map(Violation::warning_text))
    }

    /// The reasons of every exemption that applied, joined for reporting.
    pub fn exemption_reason(&self) -> Option<String> {
        if self.exemptions.is_empty() {
            return None;
        }
        Some(self.exemptions.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>().join("; "))
    }

    /// The deny findings.
    pub fn denials(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|v| v.effect == Effect::Deny)
    }

    /// The findings reported as warnings (action `warn`, or audit mode).
    pub fn warnings(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|v| v.effect != Effect::Deny)
    }

    /// Every deny finding, one per line, as the user sees it after
    /// `admission webhook "..." denied the request:`.
    pub fn denial_message(&self) -> String {
        let mut message = String::new();
        for (i, violation) in self.denials().enumerate() {
            if i > 0 {
                message.push_str("; ");
            }
            message.push_str(&violation.finding.message);
        }
        message
    }
}

/// Evaluates one pod spec against the policy at `now`: the exemption rules
/// that apply (not expired, every selector matching), then the checks, each
/// finding skipped or turned into a warning by the rules that cover it.
pub fn evaluate<'p>(policy: &'p Policy, subject: &Subject<'_>, pod: &PodView<'_, '_>, now: Timestamp) -> Verdict<'p> {
    let mut verdict = Verdict::default();
    let mut lineage = None;
    for exemption in &policy.exemptions {
        if !exemption::applies(policy, exemption, subject, &mut lineage, now)
            || !exemption::has_container(exemption, pod)
        {
            continue;
        }
        if exemption::expiry_state(exemption, policy.warn_before_expiry, now) == ExpiryState::Expiring {
            verdict.notices.push(exemption::expiry_warning(exemption));
        }
        verdict.exemptions.push(exemption);
        if exemption.is_full() {
            return verdict;
        }
    }

    let mut findings = Vec::new();
    for (check, run) in CHECKS {
        let Some(effect) = effect_of(policy, check) else { continue };
        // A rule skipping this check in every container: do not even run it.
        let skipped =
            |e: &&Exemption| e.effect == ExemptionEffect::Exempt && e.containers.is_empty() && e.covers(check);
        if verdict.exemptions.iter().any(skipped) {
            continue;
        }
        run(pod, &policy.checks, &mut findings);
        for finding in findings.drain(..) {
            if let Some(effect) = exempted_effect(&verdict.exemptions, &finding, effect) {
                verdict.violations.push(Violation { finding, effect });
            }
        }
    }
    verdict
}

/// The effect of `finding` under the rules that apply: `None` when one
/// exempts it, [`Effect::Audit`] instead of a denial when one audits it.
fn exempted_effect(rules: &[&Exemption], finding: &Finding, effect: Effect) -> Option<Effect> {
    let mut effect = effect;
    for rule in rules {
        if rule.covers_finding(finding.check, finding.container.as_deref()) {
            match rule.effect {
                ExemptionEffect::Exempt => return None,
                ExemptionEffect::Audit if effect == Effect::Deny => effect = Effect::Audit,
                ExemptionEffect::Audit => {}
            }
        }
    }
    Some(effect)
}

/// Evaluates the pod spec of `object`, a recognised Pod or workload, at `now`.
pub fn evaluate_object<'p>(
    policy: &'p Policy,
    subject: &Subject<'_>,
    kind: WorkloadKind,
    object: &Object<'_>,
    now: Timestamp,
) -> Verdict<'p> {
    let target = pod_target(kind, object);
    let subject = Subject { kind: subject.kind.or(Some(kind)), ..*subject };
    evaluate(policy, &subject, &PodView::of(&target), now)
}

/// The effect findings of `check` have, or `None` when the check is off.
pub fn effect_of(policy: &Policy, check: CheckId) -> Option<Effect> {
    match policy.checks.rollout(check, policy.mode) {
        (Action::Off, _) => None,
        (Action::Warn, _) => Some(Effect::Warn),
        (Action::Deny, Mode::Enforce) => Some(Effect::Deny),
        (Action::Deny, Mode::Audit) => Some(Effect::Audit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_POD: &str = r#"{"spec":{"containers":[{"name":"app"}]}}"#;
    const GOOD_POD: &str = r#"{"spec":{"containers":[{"name":"app","securityContext":{"runAsNonRoot":true,"runAsUser":1000,"allowPrivilegeEscalation":false},"livenessProbe":{"tcpSocket":{"port":80}},"readinessProbe":{"tcpSocket":{"port":80}}}]}}"#;

    fn verdict_for<'p>(policy: &'p Policy, subject: Subject<'_>, pod_json: &str) -> Verdict<'p> {
        let object: Object = serde_json::from_str(pod_json).unwrap();
        let target = pod_target(WorkloadKind::Pod, &object);
        evaluate(policy, &subject, &PodView::of(&target), Timestamp::UNIX_EPOCH)
    }

    fn checks_of(verdict: &Verdict<'_>) -> Vec<(CheckId, Effect)> {
        verdict.violations.iter().map(|v| (v.finding.check, v.effect)).collect()
    }

    #[test]
    fn accepts_a_compliant_pod() {
        let policy = Policy::default();
        let verdict = verdict_for(&policy, Subject::default(), GOOD_POD);
        assert!(verdict.allowed());
        assert!(verdict.violations.is_empty());
    }

    #[test]
    fn rejects_with_every_deny_finding_listed() {
        let policy = Policy::default();
        let verdict = verdict_for(&policy, Subject::default(), ROOT_POD);
        assert!(!verdict.allowed());
        assert_eq!(
            checks_of(&verdict),
            [
                (CheckId::RunAsNonRoot, Effect::Deny),
                (CheckId::AllowPrivilegeEscalation, Effect::Deny),
                (CheckId::LivenessProbe, Effect::Deny),
                (CheckId::ReadinessProbe, Effect::Deny),
            ]
        );
        let message = verdict.denial_message();
        assert_eq!(message.matches("; ").count(), 3, "{message}");
        assert!(message.starts_with("runAsNonRoot != true"));
    }

    #[test]
    fn audit_mode_turns_denials_into_audit_warnings() {
        let policy = Policy { mode: Mode::Audit, ..Policy::default() };
        let verdict = verdict_for(&policy, Subject::default(), ROOT_POD);
        assert!(verdict.allowed());
        assert!(verdict.violations.iter().all(|v| v.effect == Effect::Audit));
        assert_eq!(verdict.warnings().count(), 4);
        assert!(verdict.violations[0].warning_text().starts_with("would deny (audit mode): runAsNonRoot"));
    }

    #[test]
    fn per_check_actions_and_modes_apply() {
        let policy = Policy::from_yaml(
            "mode: audit\nchecks:\n  runAsNonRoot: {mode: enforce}\n  livenessProbe: {action: warn}\n  readinessProbe: {action: off}\n",
        )
        .unwrap();
        let verdict = verdict_for(&policy, Subject::default(), ROOT_POD);
        assert!(!verdict.allowed());
        assert_eq!(
            checks_of(&verdict),
            [
                (CheckId::RunAsNonRoot, Effect::Deny),
                (CheckId::AllowPrivilegeEscalation, Effect::Audit),
                (CheckId::LivenessProbe, Effect::Warn),
            ]
        );
    }

    #[test]
    fn full_exemption_skips_every_check_and_reports_reason() {
        let policy = Policy::default();
        let subject = Subject { namespace: Some("kube-system"), ..Subject::default() };
        let verdict = verdict_for(&policy, subject, ROOT_POD);
        assert!(verdict.allowed());
        assert!(verdict.violations.is_empty());
        assert_eq!(verdict.full_exemption().unwrap().reason, "kube-system is managed by the cluster operator");
    }

    #[test]
    fn partial_exemption_skips_only_listed_checks() {
        let policy = Policy::from_yaml(
            "exemptions:\n- usernames: [ci]\n  checks: [livenessProbe, readinessProbe]\n  reason: probes added later\n",
        )
        .unwrap();
        let subject = Subject { namespace: Some("prod"), username: Some("ci"), ..Subject::default() };
        let verdict = verdict_for(&policy, subject, ROOT_POD);
        assert_eq!(
            checks_of(&verdict),
            [(CheckId::RunAsNonRoot, Effect::Deny), (CheckId::AllowPrivilegeEscalation, Effect::Deny)]
        );
        assert!(verdict.full_exemption().is_none());
        assert_eq!(verdict.exemption_reason().as_deref(), Some("probes added later"));
        let other = Subject { namespace: Some("prod"), username: Some("alice"), ..Subject::default() };
        assert_eq!(verdict_for(&policy, other, ROOT_POD).violations.len(), 4);
    }
}
