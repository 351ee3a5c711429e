//! Part of step 4: which exemption rules apply to an object at a given time.
//! `verdict::evaluate` is the one decision every path takes (the webhook,
//! `podgate check`, and whatever lists stored objects); this module holds
//! what it asks of a rule, and the [`Subject`] it asks about:
//!
//! - **Objects a workload owns.** A rule naming a workload covers the objects
//!   its controllers create, decided from the object's own controller
//!   `ownerReference` and the controllers' naming, with no API lookup: a
//!   Deployment `D` owns ReplicaSets `D-<hash>`, whose Pods are
//!   `D-<hash>-<suffix>`; a CronJob `C` owns Jobs `C-<digits>`, whose Pods are
//!   `C-<digits>-<suffix>`; StatefulSet, DaemonSet, Job, ReplicaSet and
//!   ReplicationController own their Pods directly (`NAME-<suffix>`).
//!   Names and ownerReferences are written by whoever creates the object,
//!   so in the webhook an owned object counts as owned only when the request
//!   comes from the controller that creates that kind of object
//!   (`policy.controller_usernames`); a workload owner who forges a name and
//!   an ownerReference gets no waiver. Stored objects (`check`, `audit`) have
//!   no requester and are judged as stored ([`Subject::as_stored`]).
//! - **Expiry.** After `expires` a rule applies nowhere; during the last
//!   `warnBeforeExpiry` every admission it covers carries a warning. The
//!   time is a parameter (`now`), so every path decides alike and tests can
//!   set it ([`Clock`]).
//! - **Lints** for `podgate check --config`: expired, expiring, overlapping
//!   rules, and container-scoped rules that waive a security check for
//!   everyone.

use std::time::Duration;

use jiff::Timestamp;

use crate::checks::{CheckId, PodView};
use crate::config::{glob_matches, Exemption, ExemptionEffect, Expiry, ObjectSelector, Policy};
use crate::decode::model::{Object, OwnerReference, Text};
use crate::extract::WorkloadKind;

/// The object and who sent it, for exemptions. Offline checks know no user.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'r> {
    pub namespace: Option<&'r str>,
    /// The requesting user (webhook, or an `AdmissionReview` file).
    pub username: Option<&'r str>,
    pub groups: &'r [Text<'r>],
    /// The object's kind; `verdict::evaluate_object` fills it in when unset.
    pub kind: Option<WorkloadKind>,
    /// The object's `metadata.name` (or `generateName`).
    pub name: Option<&'r str>,
    /// The object's `metadata.ownerReferences`.
    pub owner_references: &'r [OwnerReference<'r>],
    /// `true` for an object as stored or written (`check`, `audit`): there is
    /// no request, so its ownerReferences are taken as they are. `false` in
    /// the webhook: they count only when the owner's controller sends the
    /// object (see the module documentation).
    pub as_stored: bool,
}

impl<'r> Subject<'r> {
    /// An object as stored or written, with no requesting user: namespace
    /// (unless given), name and ownerReferences from its metadata.
    pub fn stored(kind: WorkloadKind, object: &'r Object<'r>, namespace: Option<&'r str>) -> Subject<'r> {
        let metadata = object.metadata.as_ref();
        Subject {
            namespace: namespace.or_else(|| metadata.and_then(|m| m.namespace.as_deref())),
            kind: Some(kind),
            name: metadata.and_then(|m| m.name.as_deref().or(m.generate_name.as_deref())),
            owner_references: metadata.map_or(&[], |m| m.owner_references.as_slice()),
            as_stored: true,
            ..Subject::default()
        }
    }
}

/// Where the decision's `now` comes from: the system clock, or a fixed
/// instant (tests, `podgate check --now`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    #[default]
    System,
    Fixed(Timestamp),
}

impl Clock {
    pub fn now(self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Fixed(at) => at,
        }
    }
}

/// `--now` (`podgate check`, `podgate audit`): a date or an RFC 3339 time,
/// read as `expires` is, so that every command judges expiry the same way.
pub fn parse_now(text: &str) -> Result<Timestamp, String> {
    Expiry::parse(text).map(|expiry| expiry.at)
}

/// Where a rule stands at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryState {
    /// No `expires`, or more than `warnBeforeExpiry` away.
    Valid,
    /// Within `warnBeforeExpiry` of `expires`: applies, with a warning.
    Expiring,
    /// `expires` has passed: applies nowhere.
    Expired,
}

/// Where `rule` stands at `now` (a rule stops applying at `expires` itself).
pub fn expiry_state(rule: &Exemption, warn_before: Duration, now: Timestamp) -> ExpiryState {
    let Some(expiry) = &rule.expires else { return ExpiryState::Valid };
    if now >= expiry.at {
        return ExpiryState::Expired;
    }
    let left = now.duration_until(expiry.at).unsigned_abs();
    if left <= warn_before {
        ExpiryState::Expiring
    } else {
        ExpiryState::Valid
    }
}

/// The warning on every admission an expiring rule covers, e.g.
/// `exemption "legacy-billing" expires on 2027-03-31 (SEC-123)`. Rule names
/// are short by validation, tickets at most 128 characters, so it stays
/// within the apiserver's 256-character limit per warning.
pub fn expiry_warning(rule: &Exemption) -> String {
    let when = rule.expires.as_ref().map_or("", |e| e.text.as_str());
    match &rule.ticket {
        Some(ticket) => format!("exemption \"{}\" expires on {when} ({ticket})", rule.label()),
        None => format!("exemption \"{}\" expires on {when}", rule.label()),
    }
}

/// The workloads an object belongs to besides itself, nearest first: its
/// controller (when the naming fits and, in the webhook, the request comes
/// from that controller) and the controller's own owner inferred from its
/// name (a ReplicaSet's Deployment, a Job's CronJob).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lineage<'s> {
    pub owner: Option<(WorkloadKind, &'s str)>,
    pub grand_owner: Option<(WorkloadKind, &'s str)>,
}

/// Whether `owner` may own an object of `kind` (the pairs the built-in
/// controllers create).
fn owns(owner: WorkloadKind, kind: WorkloadKind) -> bool {
    use WorkloadKind::*;
    matches!(
        (owner, kind),
        (Deployment, ReplicaSet)
            | (CronJob, Job)
            | (ReplicaSet | StatefulSet | DaemonSet | Job | ReplicationController, Pod)
    )
}

/// A generated name suffix: lowercase letters and digits, no dash (pod
/// suffixes, pod-template hashes and StatefulSet ordinals all are).
fn is_suffix(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// `name` is `owner-<suffix>` as a controller generates it: the prefix
/// `owner-` (cut to 58 bytes, as the apiserver cuts a long `generateName`),
/// then lowercase letters, digits and dashes (an indexed Job's Pods are
/// `JOB-<index>-<random>`).
fn named_after(name: &str, owner: &str) -> bool {
    const MAX_GENERATE_NAME_PREFIX: usize = 58;
    let Some(rest) = name.strip_prefix(owner) else {
        // The prefix may have been cut; compare what is left of it.
        let cut = owner.len().min(MAX_GENERATE_NAME_PREFIX);
        return owner.len() + 1 > MAX_GENERATE_NAME_PREFIX
            && owner.is_char_boundary(cut)
            && name.len() > cut
            && name.starts_with(&owner[..cut])
            && is_generated(&name[cut..]);
    };
    match rest.strip_prefix('-') {
        Some(suffix) => !suffix.is_empty() && is_generated(suffix),
        // `owner-` cut right before its dash.
        None => owner.len() == MAX_GENERATE_NAME_PREFIX && !rest.is_empty() && is_generated(rest),
    }
}

/// The generated part of a name: lowercase letters, digits, dashes.
fn is_generated(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl<'s> Lineage<'s> {
    /// Works out the lineage of `subject` under `policy`'s controller identities.
    pub fn of(policy: &Policy, subject: &Subject<'s>) -> Lineage<'s> {
        let mut lineage = Lineage::default();
        let (Some(kind), Some(name)) = (subject.kind, subject.name) else { return lineage };
        // Controllers mark their reference `controller: true`; an object has at most one.
        let Some(reference) = subject.owner_references.iter().find(|r| r.controller == Some(true)) else {
            return lineage;
        };
        let Some(owner_kind) = WorkloadKind::from_api_version_kind(&reference.api_version, &reference.kind) else {
            return lineage;
        };
        let owner_name: &'s str = &reference.name;
        if owner_name.is_empty() || !owns(owner_kind, kind) || !named_after(name, owner_name) {
            return lineage;
        }
        let from_controller = subject.as_stored
            || subject
                .username
                .is_some_and(|user| policy.controller_usernames.of_owner(owner_kind).iter().any(|c| c == user));
        if !from_controller {
            return lineage;
        }
        lineage.owner = Some((owner_kind, owner_name));
        let grand_kind = match owner_kind {
            WorkloadKind::ReplicaSet => WorkloadKind::Deployment,
            WorkloadKind::Job => WorkloadKind::CronJob,
            _ => return lineage,
        };
        if let Some((grand_name, suffix)) = owner_name.rsplit_once('-') {
            let fits = !grand_name.is_empty()
                && !suffix.is_empty()
                && match grand_kind {
                    // CronJob Jobs are named after the scheduled minute.
                    WorkloadKind::CronJob => suffix.bytes().all(|b| b.is_ascii_digit()),
                    _ => is_suffix(suffix),
                };
            if fits {
                lineage.grand_owner = Some((grand_kind, grand_name));
            }
        }
        lineage
    }
}

fn selector_matches(selector: &ObjectSelector, namespace: &str, kind: WorkloadKind, name: &str) -> bool {
    glob_matches(&selector.namespace, namespace)
        && selector.kind.as_deref().is_none_or(|k| k == kind.as_str())
        && glob_matches(&selector.name, name)
}

/// Whether `rule`'s object selectors match the object or a workload it
/// belongs to. `lineage` is worked out on first use and kept for the next rule.
fn objects_match<'s>(
    policy: &Policy,
    rule: &Exemption,
    subject: &Subject<'s>,
    lineage: &mut Option<Lineage<'s>>,
) -> bool {
    if rule.objects.is_empty() {
        return true;
    }
    let (Some(namespace), Some(kind), Some(name)) = (subject.namespace, subject.kind, subject.name) else {
        return false;
    };
    let lineage = *lineage.get_or_insert_with(|| Lineage::of(policy, subject));
    let identities = [Some((kind, name)), lineage.owner, lineage.grand_owner];
    rule.objects.iter().any(|selector| {
        identities.iter().flatten().any(|&(kind, name)| selector_matches(selector, namespace, kind, name))
    })
}

/// Whether `rule` applies to `subject` at `now`: not expired, and every
/// selector it sets matches. A container-scoped rule also needs one of its
/// containers in the pod ([`has_container`], checked by the caller).
/// `lineage` caches the object's owners across the rules.
pub fn applies<'s>(
    policy: &Policy,
    rule: &Exemption,
    subject: &Subject<'s>,
    lineage: &mut Option<Lineage<'s>>,
    now: Timestamp,
) -> bool {
    if rule.expires.as_ref().is_some_and(|expiry| now >= expiry.at) {
        return false;
    }
    rule.matches(subject.namespace, subject.username, subject.groups) && objects_match(policy, rule, subject, lineage)
}

/// Whether `pod` has a container (of any kind) that `rule` names; true for a
/// rule that names none.
pub fn has_container(rule: &Exemption, pod: &PodView<'_, '_>) -> bool {
    if rule.containers.is_empty() {
        return true;
    }
    let spec = pod.spec;
    spec.containers
        .iter()
        .chain(&spec.init_containers)
        .chain(&spec.ephemeral_containers)
        .any(|c| rule.containers.iter().any(|pattern| glob_matches(pattern, &c.name)))
}

/// Checks a container-scoped rule must not waive for everyone: container
/// names are chosen by workload owners, so `containers: [istio-proxy]`
/// alone would let anyone run a root container by calling it `istio-proxy`.
const OWNER_CHOSEN_RISK: [CheckId; 3] = [CheckId::RunAsNonRoot, CheckId::RunAsUser, CheckId::AllowPrivilegeEscalation];

/// Warnings about the rules of `policy` at `now`, for `podgate check --config`:
/// expired, expiring, container-scoped security waivers without a namespace
/// or object, and rules that overlap. They do not make the policy invalid.
pub fn lint(policy: &Policy, now: Timestamp) -> Vec<String> {
    let mut warnings = Vec::new();
    for rule in &policy.exemptions {
        let label = rule.label();
        match expiry_state(rule, policy.warn_before_expiry, now) {
            ExpiryState::Expired => warnings.push(format!(
                "exemption \"{label}\": expired on {}; it no longer applies anywhere: remove it",
                rule.expires.as_ref().map_or("", |e| e.text.as_str())
            )),
            ExpiryState::Expiring => {
                warnings.push(format!("{}: renew it or fix the workloads it covers", expiry_warning(rule)))
            }
            ExpiryState::Valid => {}
        }
        if rule.expires.is_some() && rule.name.is_none() {
            warnings.push(format!(
                "exemption \"{label}\": has expires but no name: name it, so that metrics and alerts can show it"
            ));
        }
        let risky: Vec<&str> = OWNER_CHOSEN_RISK.iter().filter(|c| rule.covers(**c)).map(|c| c.as_str()).collect();
        if !rule.containers.is_empty()
            && rule.effect == ExemptionEffect::Exempt
            && rule.namespaces.is_empty()
            && rule.objects.is_empty()
            && !risky.is_empty()
        {
            warnings.push(format!(
                "exemption \"{label}\": skips {} for containers named {} in every namespace; container names are chosen by workload owners, so any of them can use it: add namespaces or objects, or limit checks to the probes",
                risky.join(", "),
                rule.containers.join(", ")
            ));
        }
    }
    // Overlaps between rules that say where they apply (namespaces or
    // objects) and still apply: a rule for every namespace overlaps all.
    let placed: Vec<&Exemption> = policy
        .exemptions
        .iter()
        .filter(|r| !(r.namespaces.is_empty() && r.objects.is_empty()))
        .filter(|r| expiry_state(r, policy.warn_before_expiry, now) != ExpiryState::Expired)
        .collect();
    for (i, a) in placed.iter().enumerate() {
        for b in &placed[i + 1..] {
            if overlap(a, b) {
                warnings.push(format!(
                    "exemptions \"{}\" and \"{}\" overlap: an object can match both (the first exempt one wins over audit)",
                    a.label(),
                    b.label()
                ));
            }
        }
    }
    warnings
}

/// Two patterns with optional trailing `*` can match the same text.
fn patterns_intersect(a: &str, b: &str) -> bool {
    match (a.strip_suffix('*'), b.strip_suffix('*')) {
        (Some(pa), Some(pb)) => pa.starts_with(pb) || pb.starts_with(pa),
        (Some(pa), None) => b.starts_with(pa),
        (None, Some(pb)) => a.starts_with(pb),
        (None, None) => a == b,
    }
}

/// Two lists of patterns can match the same text; an empty list matches anything.
fn lists_intersect(a: &[String], b: &[String]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|x| b.iter().any(|y| patterns_intersect(x, y)))
}

/// Whether some request could match both rules and both cover some check.
/// A container-scoped rule (a sidecar's) and a workload's rule are about
/// different things and both applying is expected: not reported.
fn overlap(a: &Exemption, b: &Exemption) -> bool {
    if a.containers.is_empty() != b.containers.is_empty() {
        return false;
    }
    let checks = a.checks.is_empty() || b.checks.is_empty() || a.checks.iter().any(|c| b.checks.contains(c));
    let namespaces_of = |rule: &Exemption| -> Vec<String> {
        // An object selector pins the namespace too.
        if rule.namespaces.is_empty() {
            rule.objects.iter().map(|o| o.namespace.clone()).collect()
        } else {
            rule.namespaces.clone()
        }
    };
    let users_a: Vec<String> = a.usernames.iter().chain(&a.service_accounts).cloned().collect();
    let users_b: Vec<String> = b.usernames.iter().chain(&b.service_accounts).cloned().collect();
    let objects = a.objects.is_empty()
        || b.objects.is_empty()
        || a.objects.iter().any(|x| {
            b.objects.iter().any(|y| {
                patterns_intersect(&x.namespace, &y.namespace)
                    && (x.kind.is_none() || y.kind.is_none() || x.kind == y.kind)
                    && patterns_intersect(&x.name, &y.name)
            })
        });
    // Usernames and service accounts are compared as written: a lint, not a proof.
    checks
        && lists_intersect(&namespaces_of(a), &namespaces_of(b))
        && (users_a.is_empty() || users_b.is_empty() || users_a.iter().any(|u| users_b.contains(u)))
        && lists_intersect(&a.groups, &b.groups)
        && lists_intersect(&a.containers, &b.containers)
        && objects
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(api_version: &'static str, kind: &'static str, name: &'static str) -> OwnerReference<'static> {
        OwnerReference {
            api_version: Text(api_version.into()),
            kind: Text(kind.into()),
            name: Text(name.into()),
            uid: Text::default(),
            controller: Some(true),
        }
    }

    #[test]
    fn lineage_follows_controller_naming_and_identity() {
        let policy = Policy::default();
        let rs = [owner("apps/v1", "ReplicaSet", "legacy-7d9f8b6c5")];
        let pod = Subject {
            namespace: Some("shop"),
            username: Some("system:serviceaccount:kube-system:replicaset-controller"),
            kind: Some(WorkloadKind::Pod),
            name: Some("legacy-7d9f8b6c5-x2x4q"),
            owner_references: &rs,
            ..Subject::default()
        };
        let lineage = Lineage::of(&policy, &pod);
        assert_eq!(lineage.owner, Some((WorkloadKind::ReplicaSet, "legacy-7d9f8b6c5")));
        assert_eq!(lineage.grand_owner, Some((WorkloadKind::Deployment, "legacy")));

        // Anyone else: the ownerReference is not believed.
        let forged = Subject { username: Some("alice"), ..pod };
        assert_eq!(Lineage::of(&policy, &forged), Lineage::default());
        // Stored objects are judged as stored.
        let stored = Subject { username: None, as_stored: true, ..pod };
        assert_eq!(Lineage::of(&policy, &stored).grand_owner, Some((WorkloadKind::Deployment, "legacy")));
        // A name that does not follow the owner's.
        let renamed = Subject { name: Some("other-x2x4q"), ..pod };
        assert_eq!(Lineage::of(&policy, &renamed), Lineage::default());
        // A reference that is not the controller's.
        let plain = [OwnerReference { controller: None, ..rs[0].clone() }];
        assert_eq!(Lineage::of(&policy, &Subject { owner_references: &plain, ..pod }), Lineage::default());
        // An indexed Job's Pod, and a Pod of a ReplicaSet whose name was too
        // long for the generated name to keep all of it.
        let indexed = [owner("batch/v1", "Job", "etl")];
        let indexed_pod = Subject { name: Some("etl-3-abcde"), owner_references: &indexed, as_stored: true, ..pod };
        assert_eq!(Lineage::of(&policy, &indexed_pod).owner, Some((WorkloadKind::Job, "etl")));
        let long_rs_name = format!("{}-7d9f8b6c5", "a".repeat(55));
        let long_rs = [OwnerReference { name: Text(long_rs_name.clone().into()), ..rs[0].clone() }];
        let cut_name = format!("{}x2x4q", &long_rs_name[..58]);
        let long_pod = Subject { name: Some(&cut_name), owner_references: &long_rs, as_stored: true, ..pod };
        assert_eq!(Lineage::of(&policy, &long_pod).grand_owner, Some((WorkloadKind::Deployment, &*"a".repeat(55))));
        // A kind the owner never creates.
        let sts = [owner("apps/v1", "StatefulSet", "legacy-7d9f8b6c5")];
        let job_of_sts = Subject { kind: Some(WorkloadKind::Job), owner_references: &sts, as_stored: true, ..pod };
        assert_eq!(Lineage::of(&policy, &job_of_sts), Lineage::default());

        let cron = [owner("batch/v1", "Job", "nightly-29104560")];
        let job_pod = Subject {
            username: Some("system:serviceaccount:kube-system:job-controller"),
            name: Some("nightly-29104560-abcde"),
            owner_references: &cron,
            ..pod
        };
        assert_eq!(Lineage::of(&policy, &job_pod).grand_owner, Some((WorkloadKind::CronJob, "nightly")));
        // A Job not named after a scheduled minute has no CronJob.
        let manual = [owner("batch/v1", "Job", "nightly-manual")];
        let manual_pod = Subject { name: Some("nightly-manual-abcde"), owner_references: &manual, ..job_pod };
        assert_eq!(Lineage::of(&policy, &manual_pod).grand_owner, None);
    }

    #[test]
    fn expiry_states_and_warning_text() {
        let policy = Policy::from_yaml(
            "exemptions:\n- name: legacy-billing\n  namespaces: [shop]\n  expires: 2027-03-31\n  ticket: SEC-123\n  reason: x\n",
        )
        .unwrap();
        let rule = &policy.exemptions[0];
        let at = |text: &str| text.parse::<Timestamp>().unwrap();
        let warn = policy.warn_before_expiry;
        assert_eq!(expiry_state(rule, warn, at("2027-03-16T23:59:59Z")), ExpiryState::Valid);
        assert_eq!(expiry_state(rule, warn, at("2027-03-17T00:00:00Z")), ExpiryState::Expiring);
        assert_eq!(expiry_state(rule, warn, at("2027-03-30T23:59:59Z")), ExpiryState::Expiring);
        assert_eq!(expiry_state(rule, warn, at("2027-03-31T00:00:00Z")), ExpiryState::Expired);
        assert_eq!(expiry_warning(rule), r#"exemption "legacy-billing" expires on 2027-03-31 (SEC-123)"#);
    }

    #[test]
    fn lints_expired_expiring_risky_and_overlapping_rules() {
        let policy = Policy::from_yaml(
            r#"
exemptions:
- name: old
  namespaces: [legacy]
  expires: 2026-01-01
  reason: gone
- name: soon
  objects: [{namespace: shop, kind: Deployment, name: legacy-*}]
  expires: 2026-12-10
  reason: soon
- name: mesh
  containers: [istio-proxy]
  reason: sidecar
- name: mesh-probes
  containers: [istio-proxy]
  checks: [livenessProbe]
  namespaces: [other]
  reason: sidecar probes
- objects: [{namespace: shop, name: legacy-billing}]
  expires: 2030-01-01
  reason: overlaps soon
"#,
        )
        .unwrap();
        let now: Timestamp = "2026-12-02T06:00:00Z".parse().unwrap();
        let lints = lint(&policy, now);
        let has = |needle: &str| lints.iter().any(|l| l.contains(needle));
        assert!(has(r#"exemption "old": expired on 2026-01-01"#), "{lints:#?}");
        assert!(has(r#"exemption "soon" expires on 2026-12-10"#), "{lints:#?}");
        assert!(has(r#"exemption "mesh": skips runAsNonRoot, runAsUser, allowPrivilegeEscalation"#), "{lints:#?}");
        assert!(!has(r#"exemption "mesh-probes": skips"#), "{lints:#?}");
        assert!(has(r#"exemptions "soon" and "exemptions[4]" overlap"#), "{lints:#?}");
        assert!(has(r#"exemption "exemptions[4]": has expires but no name"#), "{lints:#?}");
        assert!(!has(r#""old" and"#), "{lints:#?}");
    }
}
