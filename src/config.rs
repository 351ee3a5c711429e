//! The policy: what the cluster admin configures (YAML, camelCase keys,
//! unknown keys rejected), with the built-in defaults that apply without a file.
//!
//! It composes what the steps before it define: each check's rule
//! ([`ChecksConfig`], [`Mode`] and the rule types live in [`crate::checks`]),
//! plus the exemption rules, whose matching [`crate::exemption`] decides.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::checks::{CheckId, ChecksConfig, Mode};
use crate::extract::WorkloadKind;

/// The whole policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// `enforce` (default) or `audit`: in audit mode nothing is denied and
    /// every would-be denial is reported as a warning.
    #[serde(default)]
    pub mode: Mode,
    /// Per-check action, roll-out mode and options.
    #[serde(default)]
    pub checks: ChecksConfig,
    /// Who and what is not evaluated. The default exempts `kube-system`;
    /// setting the key replaces that list.
    #[serde(default = "default_exemptions")]
    pub exemptions: Vec<Exemption>,
    /// How long before its `expires` an exemption rule starts to add a
    /// warning to every admission it covers (default 14 days).
    #[serde(default = "default_warn_before_expiry", with = "duration_text")]
    pub warn_before_expiry: Duration,
    /// Who creates the objects a workload owns: the identity a request for
    /// an owned object must come from before an exemption naming the owner
    /// covers it (see `exemption`).
    #[serde(default)]
    pub controller_usernames: ControllerUsernames,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mode: Mode::default(),
            checks: ChecksConfig::default(),
            exemptions: default_exemptions(),
            warn_before_expiry: default_warn_before_expiry(),
            controller_usernames: ControllerUsernames::default(),
        }
    }
}

fn default_exemptions() -> Vec<Exemption> {
    vec![Exemption {
        namespaces: vec!["kube-system".to_owned()],
        reason: "kube-system is managed by the cluster operator".to_owned(),
        ..Exemption::default()
    }]
}

fn default_warn_before_expiry() -> Duration {
    Duration::from_secs(14 * 86_400)
}

/// `controllerUsernames`: per owner kind, the usernames of the controller
/// that creates the objects it owns. The defaults are kube-controller-manager's
/// service accounts (`--use-service-account-credentials`, the kubeadm and
/// managed-cluster default); a distribution that runs the controllers under
/// another identity (e.g. `system:kube-controller-manager`) lists it here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerUsernames {
    /// Creates a Deployment's ReplicaSets.
    #[serde(default = "default_deployment_controller")]
    pub deployment: Vec<String>,
    /// Creates a ReplicaSet's Pods.
    #[serde(default = "default_replica_set_controller")]
    pub replica_set: Vec<String>,
    /// Creates a StatefulSet's Pods.
    #[serde(default = "default_stateful_set_controller")]
    pub stateful_set: Vec<String>,
    /// Creates a DaemonSet's Pods.
    #[serde(default = "default_daemon_set_controller")]
    pub daemon_set: Vec<String>,
    /// Creates a Job's Pods.
    #[serde(default = "default_job_controller")]
    pub job: Vec<String>,
    /// Creates a CronJob's Jobs.
    #[serde(default = "default_cron_job_controller")]
    pub cron_job: Vec<String>,
    /// Creates a ReplicationController's Pods.
    #[serde(default = "default_replication_controller")]
    pub replication_controller: Vec<String>,
}

fn controller(name: &str) -> Vec<String> {
    vec![format!("system:serviceaccount:kube-system:{name}")]
}
fn default_deployment_controller() -> Vec<String> {
    controller("deployment-controller")
}
fn default_replica_set_controller() -> Vec<String> {
    controller("replicaset-controller")
}
fn default_stateful_set_controller() -> Vec<String> {
    controller("statefulset-controller")
}
fn default_daemon_set_controller() -> Vec<String> {
    controller("daemon-set-controller")
}
fn default_job_controller() -> Vec<String> {
    controller("job-controller")
}
fn default_cron_job_controller() -> Vec<String> {
    controller("cronjob-controller")
}
fn default_replication_controller() -> Vec<String> {
    controller("replication-controller")
}

impl Default for ControllerUsernames {
    fn default() -> Self {
        ControllerUsernames {
            deployment: default_deployment_controller(),
            replica_set: default_replica_set_controller(),
            stateful_set: default_stateful_set_controller(),
            daemon_set: default_daemon_set_controller(),
            job: default_job_controller(),
            cron_job: default_cron_job_controller(),
            replication_controller: default_replication_controller(),
        }
    }
}

impl ControllerUsernames {
    /// The identities that create the objects an `owner` of this kind owns;
    /// empty for a kind that owns nothing podgate evaluates (a Pod).
    pub fn of_owner(&self, owner: WorkloadKind) -> &[String] {
        match owner {
            WorkloadKind::Deployment => &self.deployment,
            WorkloadKind::ReplicaSet => &self.replica_set,
            WorkloadKind::StatefulSet => &self.stateful_set,
            WorkloadKind::DaemonSet => &self.daemon_set,
            WorkloadKind::Job => &self.job,
            WorkloadKind::CronJob => &self.cron_job,
            WorkloadKind::ReplicationController => &self.replication_controller,
            WorkloadKind::Pod => &[],
        }
    }
}

/// A duration in the policy file, written like the command line's: Go's
/// syntax (`336h`, `72h30m`; see [`crate::duration`]), kept as a [`Duration`].
mod duration_text {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{}s", value.as_secs()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::duration::parse_non_negative(&text).map_err(serde::de::Error::custom)
    }
}

/// One exemption rule, set by the cluster admin. A rule applies when every
/// selector it sets matches (any entry of a list matches); a rule must set at
/// least one selector. Workload owners cannot exempt themselves: podgate reads
/// no annotation or label for this. How a rule matches an object (owned
/// objects, expiry) is decided in [`crate::exemption`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exemption {
    /// A name for warnings, metrics and reports (`legacy-billing`); unnamed
    /// rules are called `exemptions[INDEX]`.
    #[serde(default)]
    pub name: Option<String>,
    /// Namespaces; an entry ending in `*` matches by prefix (`team-*`).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Request usernames, e.g. `system:serviceaccount:ci:deployer`.
    #[serde(default)]
    pub usernames: Vec<String>,
    /// Service accounts as `namespace/name`; shorthand for their usernames.
    #[serde(default)]
    pub service_accounts: Vec<String>,
    /// Groups of the requesting user, e.g. `system:masters`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Objects by namespace, kind and name; a rule naming a workload also
    /// covers the objects it creates (see [`crate::exemption`]).
    #[serde(default)]
    pub objects: Vec<ObjectSelector>,
    /// Only findings about these containers (e.g. an injected `istio-proxy`);
    /// empty (default): every container and the pod-level fields.
    #[serde(default)]
    pub containers: Vec<String>,
    /// Checks to skip; empty (default) skips all of them.
    #[serde(default)]
    pub checks: Vec<CheckId>,
    /// `exempt` (default): the covered checks are skipped. `audit`: they are
    /// evaluated, and what they would deny is only warned about.
    #[serde(default)]
    pub effect: ExemptionEffect,
    /// After this date (`2027-03-31`, midnight UTC) or RFC 3339 time the rule
    /// no longer applies anywhere.
    #[serde(default)]
    pub expires: Option<Expiry>,
    /// Free-form: the ticket that tracks the waiver (shown in warnings).
    #[serde(default)]
    pub ticket: Option<String>,
    /// Free-form: who answers for the waiver.
    #[serde(default)]
    pub owner: Option<String>,
    /// Why: reported with every exempted request and in metrics.
    pub reason: String,
    /// Position in the policy's list, for naming unnamed rules.
    #[serde(skip)]
    pub index: usize,
}

/// An entry of `exemptions[].objects`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectSelector {
    /// The object's namespace (required: the same name in another
    /// namespace is another team's object); a trailing `*` matches by prefix.
    pub namespace: String,
    /// `Deployment`, `Pod`, ...; unset: any evaluated kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// The object's name; a trailing `*` matches by prefix (`legacy-*`).
    pub name: String,
}

/// `exemptions[].effect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExemptionEffect {
    /// Skip the covered checks.
    #[default]
    Exempt,
    /// Evaluate the covered checks, but only warn where they would deny.
    Audit,
}

impl ExemptionEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            ExemptionEffect::Exempt => "exempt",
            ExemptionEffect::Audit => "audit",
        }
    }
}

/// `exemptions[].expires`: a date (midnight UTC at its start) or an RFC 3339
/// time, kept with the text the admin wrote for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub at: jiff::Timestamp,
    pub text: String,
}

impl Expiry {
    /// Parses `2027-03-31` or `2027-03-31T18:00:00Z` (an offset is required:
    /// a time without one means a different instant in every time zone).
    pub fn parse(text: &str) -> Result<Expiry, String> {
        let text = text.trim();
        let at = crate::time::parse_instant(text).map_err(|e| e.to_string())?;
        Ok(Expiry { at, text: text.to_owned() })
    }
}

impl Serialize for Expiry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Expiry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Expiry::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Exemption {
    /// Whether this rule's namespace and user selectors match. Object and
    /// container selectors and expiry are [`crate::exemption`]'s part.
    pub fn matches<G: std::ops::Deref<Target = str>>(
        &self,
        namespace: Option<&str>,
        username: Option<&str>,
        groups: &[G],
    ) -> bool {
        let namespace_ok = self.namespaces.is_empty()
            || namespace.is_some_and(|ns| self.namespaces.iter().any(|pattern| namespace_matches(pattern, ns)));
        let user_set = !self.usernames.is_empty() || !self.service_accounts.is_empty();
        let user_ok = !user_set
            || username.is_some_and(|user| {
                self.usernames.iter().any(|u| u == user)
                    || self.service_accounts.iter().any(|sa| service_account_matches(sa, user))
            });
        let groups_ok = self.groups.is_empty() || groups.iter().any(|g| self.groups.iter().any(|e| e == &**g));
        namespace_ok && user_ok && groups_ok
    }

    /// Whether this rule skips the whole object (not just some checks or
    /// containers, and not only to audit).
    pub fn is_full(&self) -> bool {
        self.checks.is_empty() && self.containers.is_empty() && self.effect == ExemptionEffect::Exempt
    }

    /// Whether this rule covers `check` (for some container at least).
    pub fn covers(&self, check: CheckId) -> bool {
        self.checks.is_empty() || self.checks.contains(&check)
    }

    /// Whether this rule covers a finding of `check` about `container`
    /// (`None`: a pod-level field, which a container-scoped rule never covers).
    pub fn covers_finding(&self, check: CheckId, container: Option<&str>) -> bool {
        self.covers(check)
            && (self.containers.is_empty()
                || container.is_some_and(|c| self.containers.iter().any(|p| glob_matches(p, c))))
    }

    /// The rule as named in warnings, metrics and reports.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("exemptions[{}]", self.index),
        }
    }
}

/// `pattern` with an optional trailing `*` (prefix match) against `text`.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => text.starts_with(prefix),
        None => pattern == text,
    }
}

fn namespace_matches(pattern: &str, namespace: &str) -> bool {
    glob_matches(pattern, namespace)
}

/// `ns/name` matches the username `system:serviceaccount:ns:name`.
fn service_account_matches(service_account: &str, username: &str) -> bool {
    let Some((ns, name)) = service_account.split_once('/') else { return false };
    username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(user_ns, user_name)| user_ns == ns && user_name == name)
}

/// A configuration that cannot be used; the message names the key and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Policy {
    /// Parses and validates a policy document. An empty document is the default.
    pub fn from_yaml(text: &str) -> Result<Policy, String> {
        let mut policy = if is_blank_yaml(text) {
            Policy::default()
        } else {
            serde_yaml_ng::from_str::<Policy>(text).map_err(|e| e.to_string())?
        };
        for (index, exemption) in policy.exemptions.iter_mut().enumerate() {
            exemption.index = index;
        }
        policy.validate()?;
        Ok(policy)
    }

    /// Reads, parses and validates the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy, ConfigError> {
        let display = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: display.clone(), source })?;
        Policy::from_yaml(&text).map_err(|message| ConfigError::Invalid { path: display, message })
    }

    /// Rejects settings that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        self.checks.validate()?;
        let mut names = std::collections::HashSet::new();
        for (i, exemption) in self.exemptions.iter().enumerate() {
            if exemption.reason.trim().is_empty() {
                return Err(format!("exemptions[{i}].reason: must say why"));
            }
            if exemption.namespaces.is_empty()
                && exemption.usernames.is_empty()
                && exemption.service_accounts.is_empty()
                && exemption.groups.is_empty()
                && exemption.objects.is_empty()
                && exemption.containers.is_empty()
            {
                return Err(format!(
                    "exemptions[{i}]: must set at least one of namespaces, usernames, serviceAccounts, groups, objects, containers (an exemption for everyone is mode: audit)"
                ));
            }
            if let Some(name) = &exemption.name {
                let valid = !name.is_empty()
                    && name.len() <= 63
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !valid {
                    return Err(format!(
                        "exemptions[{i}].name: {name:?} must be 1 to 63 letters, digits, '-', '_' or '.'"
                    ));
                }
                if !names.insert(name.as_str()) {
                    return Err(format!("exemptions[{i}].name: {name:?} is used by an earlier rule"));
                }
            }
            for (key, value) in [("ticket", &exemption.ticket), ("owner", &exemption.owner)] {
                if let Some(value) = value {
                    if value.len() > 128 || value.chars().any(char::is_control) {
                        return Err(format!("exemptions[{i}].{key}: at most 128 characters, no control characters"));
                    }
                }
            }
            for (j, object) in exemption.objects.iter().enumerate() {
                let at = format!("exemptions[{i}].objects[{j}]");
                for (key, pattern) in [("namespace", &object.namespace), ("name", &object.name)] {
                    if pattern.is_empty() || pattern == "*" {
                        return Err(format!(
                            "{at}.{key}: must name a {key} (a prefix like legacy-* at most): a name alone would match the same name in every namespace"
                        ));
                    }
                    if pattern.trim_end_matches('*').contains('*') {
                        return Err(format!("{at}.{key}: {pattern:?}: '*' only at the end (a prefix)"));
                    }
                }
                if let Some(kind) = &object.kind {
                    if !WorkloadKind::ALL.iter().any(|k| k.as_str() == kind) {
                        return Err(format!(
                            "{at}.kind: {kind:?} is not a kind podgate evaluates (Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob, ReplicationController)"
                        ));
                    }
                }
            }
            if let Some(container) = exemption.containers.iter().find(|c| c.is_empty() || c.as_str() == "*") {
                return Err(format!(
                    "exemptions[{i}].containers: {container:?} must name containers (leave the key out for all)"
                ));
            }
            if let Some(sa) = exemption
                .service_accounts
                .iter()
                .find(|sa| sa.split_once('/').is_none_or(|(ns, n)| ns.is_empty() || n.is_empty()))
            {
                return Err(format!("exemptions[{i}].serviceAccounts: {sa:?} must be namespace/name"));
            }
        }
        Ok(())
    }
}

/// True for a document with nothing but whitespace, comments and markers.
fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{Action, CheckRule};

    #[test]
    fn empty_file_is_the_default_policy() {
        assert_eq!(Policy::from_yaml("# nothing\n").unwrap(), Policy::default());
        let default = Policy::default();
        assert_eq!(default.mode, Mode::Enforce);
        assert_eq!(default.checks.run_as_user.min_uid, 1000);
        assert_eq!(default.exemptions[0].namespaces, ["kube-system"]);
    }

    #[test]
    fn partial_check_settings_keep_other_defaults() {
        let policy = Policy::from_yaml("mode: audit\nchecks:\n  runAsUser:\n    minUid: 2000\n").unwrap();
        assert_eq!(policy.mode, Mode::Audit);
        assert_eq!(policy.checks.run_as_user.min_uid, 2000);
        assert_eq!(policy.checks.run_as_user.action, Action::Deny);
        assert_eq!(policy.checks.liveness_probe, CheckRule::default());
    }

    #[test]
    fn rejects_unknown_keys_naming_key_and_line() {
        let err = Policy::from_yaml("mode: enforce\nchecks:\n  runAsUser:\n    minUID: 5\n").unwrap_err();
        assert!(err.contains("minUID"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Policy::from_yaml("mode: strict\n").unwrap_err().contains("strict"));
        assert!(Policy::from_yaml("checks:\n  runAsUser:\n    minUid: 0\n").unwrap_err().contains("minUid"));
        assert!(Policy::from_yaml("checks:\n  runAsUser:\n    minUid: 10\n    maxUid: 5\n")
            .unwrap_err()
            .contains("maxUid"));
        assert!(Policy::from_yaml("checks:\n  runAsUser:\n    maxUid: 4294967295\n")
            .unwrap_err()
            .contains("2147483647"));
        assert!(Policy::from_yaml("exemptions:\n- namespaces: [a]\n  reason: ''\n").unwrap_err().contains("reason"));
        assert!(Policy::from_yaml("exemptions:\n- reason: all\n").unwrap_err().contains("at least one"));
        assert!(Policy::from_yaml("exemptions:\n- serviceAccounts: [ci]\n  reason: x\n")
            .unwrap_err()
            .contains("namespace/name"));
        assert!(Policy::from_yaml("checks:\n  runAsNonRoot:\n    action: block\n").unwrap_err().contains("block"));
        assert!(Policy::from_yaml("exemptions:\n- namespaces: [a]\n  checks: [noSuchCheck]\n  reason: x\n").is_err());
    }

    #[test]
    fn user_namespaces_default_to_relaxed_per_check() {
        use crate::checks::UserNamespaces;
        let default = Policy::default();
        assert_eq!(default.checks.run_as_non_root.user_namespaces, UserNamespaces::Relaxed);
        assert_eq!(default.checks.run_as_user.user_namespaces, UserNamespaces::Relaxed);
        let policy = Policy::from_yaml("checks:\n  runAsUser:\n    userNamespaces: enforce\n").unwrap();
        assert_eq!(policy.checks.run_as_user.user_namespaces, UserNamespaces::Enforce);
        assert_eq!(policy.checks.run_as_non_root.user_namespaces, UserNamespaces::Relaxed);
        let err = Policy::from_yaml("checks:\n  runAsNonRoot:\n    userNamespaces: strict\n").unwrap_err();
        assert!(err.contains("userNamespaces") || err.contains("strict"), "{err}");
        assert!(err.contains("relaxed") && err.contains("enforce"), "{err}");
        // Only the two checks that Pod Security Admission relaxes take it.
        assert!(Policy::from_yaml("checks:\n  allowPrivilegeEscalation:\n    userNamespaces: enforce\n")
            .unwrap_err()
            .contains("userNamespaces"));
    }

    #[test]
    fn per_check_mode_overrides_global_mode() {
        let policy = Policy::from_yaml("mode: audit\nchecks:\n  runAsNonRoot:\n    mode: enforce\n").unwrap();
        assert_eq!(policy.checks.rollout(CheckId::RunAsNonRoot, policy.mode), (Action::Deny, Mode::Enforce));
        assert_eq!(policy.checks.rollout(CheckId::RunAsUser, policy.mode), (Action::Deny, Mode::Audit));
    }

    #[test]
    fn exemptions_match_all_selectors_they_set() {
        let rule = Exemption {
            namespaces: vec!["team-*".into()],
            usernames: vec![],
            service_accounts: vec!["ci/deployer".into()],
            groups: vec![],
            checks: vec![],
            reason: "ci".into(),
            ..Exemption::default()
        };
        let ci = Some("system:serviceaccount:ci:deployer");
        assert!(rule.matches::<&str>(Some("team-a"), ci, &[]));
        assert!(!rule.matches::<&str>(Some("prod"), ci, &[]));
        assert!(!rule.matches::<&str>(Some("team-a"), Some("alice"), &[]));
        assert!(!rule.matches::<&str>(None, ci, &[]));
        assert!(!rule.matches::<&str>(Some("team-a"), Some("system:serviceaccount:ci:deployer2"), &[]));

        let admins =
            Exemption { namespaces: vec![], service_accounts: vec![], groups: vec!["system:masters".into()], ..rule };
        assert!(admins.matches(Some("any"), Some("bob"), &["system:authenticated", "system:masters"]));
        assert!(!admins.matches(Some("any"), Some("bob"), &["system:authenticated"]));
    }
}
