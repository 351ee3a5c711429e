//! Step 4 of the data flow: apply exemptions, run the checks, and turn their
//! findings into a verdict according to each check's action and mode.

use crate::checks::{CheckId, Finding, PodView, CHECKS};
use crate::config::{Action, Exemption, Mode, Policy};
use crate::decode::model::{Object, Text};
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

/// Who sent the object, for exemptions. Offline checks know only the namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'r> {
    pub namespace: Option<&'r str>,
    pub username: Option<&'r str>,
    pub groups: &'r [Text<'r>],
}

/// The outcome of evaluating one object.
#[derive(Debug, Clone, Default)]
pub struct Verdict<'p> {
    /// Every finding of every check that is not off or exempted, in registry order.
    pub violations: Vec<Violation>,
    /// The exemption rules that applied (borrowed from the policy).
    pub exemptions: Vec<&'p Exemption>,
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

/// Evaluates one pod spec against the policy.
pub fn evaluate<'p>(policy: &'p Policy, subject: &Subject<'_>, pod: &PodView<'_, '_>) -> Verdict<'p> {
    let mut verdict = Verdict::default();
    for exemption in &policy.exemptions {
        if exemption.matches(subject.namespace, subject.username, subject.groups) {
            verdict.exemptions.push(exemption);
            if exemption.is_full() {
                return verdict;
            }
        }
    }

    let mut findings = Vec::new();
    for (check, run) in CHECKS {
        let Some(effect) = effect_of(policy, check) else { continue };
        if verdict.exemptions.iter().any(|e| e.covers(check)) {
            continue;
        }
        run(pod, &policy.checks, &mut findings);
        verdict.violations.extend(findings.drain(..).map(|finding| Violation { finding, effect }));
    }
    verdict
}

/// Evaluates the pod spec of `object`, a recognised Pod or workload.
pub fn evaluate_object<'p>(
    policy: &'p Policy,
    subject: &Subject<'_>,
    kind: WorkloadKind,
    object: &Object<'_>,
) -> Verdict<'p> {
    let target = pod_target(kind, object);
    evaluate(policy, subject, &PodView::of(&target))
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
        evaluate(policy, &subject, &PodView::of(&target))
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
        let subject = Subject { namespace: Some("prod"), username: Some("ci"), groups: &[] };
        let verdict = verdict_for(&policy, subject, ROOT_POD);
        assert_eq!(
            checks_of(&verdict),
            [(CheckId::RunAsNonRoot, Effect::Deny), (CheckId::AllowPrivilegeEscalation, Effect::Deny)]
        );
        assert!(verdict.full_exemption().is_none());
        assert_eq!(verdict.exemption_reason().as_deref(), Some("probes added later"));
        let other = Subject { namespace: Some("prod"), username: Some("alice"), groups: &[] };
        assert_eq!(verdict_for(&policy, other, ROOT_POD).violations.len(), 4);
    }
}
