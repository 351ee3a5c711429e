//! The policy: what the cluster admin configures (YAML, camelCase keys,
//! unknown keys rejected), with the built-in defaults that apply without a file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checks::CheckId;

/// `mode`: whether would-be denials deny (`enforce`) or only warn (`audit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// A check's `action`: what a finding of that check does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Deny,
    Warn,
    Off,
}

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
}

impl Default for Policy {
    fn default() -> Self {
        Policy { mode: Mode::default(), checks: ChecksConfig::default(), exemptions: default_exemptions() }
    }
}

fn default_exemptions() -> Vec<Exemption> {
    vec![Exemption {
        namespaces: vec!["kube-system".to_owned()],
        usernames: Vec::new(),
        service_accounts: Vec::new(),
        groups: Vec::new(),
        checks: Vec::new(),
        reason: "kube-system is managed by the cluster operator".to_owned(),
    }]
}

/// The settings of every check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChecksConfig {
    #[serde(default)]
    pub run_as_non_root: CheckRule,
    #[serde(default)]
    pub run_as_user: RunAsUserRule,
    #[serde(default)]
    pub allow_privilege_escalation: CheckRule,
    #[serde(default)]
    pub liveness_probe: CheckRule,
    #[serde(default)]
    pub readiness_probe: CheckRule,
    #[serde(default)]
    pub probe_settings: ProbeSettingsRule,
}

impl ChecksConfig {
    /// The action and effective mode of a check under the global `mode`.
    pub fn rollout(&self, check: CheckId, global: Mode) -> (Action, Mode) {
        let (action, mode) = match check {
            CheckId::RunAsNonRoot => (self.run_as_non_root.action, self.run_as_non_root.mode),
            CheckId::RunAsUser => (self.run_as_user.action, self.run_as_user.mode),
            CheckId::AllowPrivilegeEscalation => {
                (self.allow_privilege_escalation.action, self.allow_privilege_escalation.mode)
            }
            CheckId::LivenessProbe => (self.liveness_probe.action, self.liveness_probe.mode),
            CheckId::ReadinessProbe => (self.readiness_probe.action, self.readiness_probe.mode),
            CheckId::ProbeSettings => (self.probe_settings.action, self.probe_settings.mode),
        };
        (action, mode.unwrap_or(global))
    }
}

/// Settings of a check that has no options of its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckRule {
    /// `deny` (default), `warn` or `off`.
    #[serde(default)]
    pub action: Action,
    /// Overrides the global `mode` for this check: enforce one check while
    /// the rest is still in audit, or the other way round.
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// `checks.runAsUser`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunAsUserRule {
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Lowest UID allowed (default 1000, keeping clear of system users).
    #[serde(default = "default_min_uid")]
    pub min_uid: i64,
    /// Highest UID allowed (default: no limit).
    #[serde(default)]
    pub max_uid: Option<i64>,
}

fn default_min_uid() -> i64 {
    1000
}

impl Default for RunAsUserRule {
    fn default() -> Self {
        RunAsUserRule { action: Action::Deny, mode: None, min_uid: default_min_uid(), max_uid: None }
    }
}

/// `checks.probeSettings`: bounds for every probe that is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeSettingsRule {
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Largest `timeoutSeconds` allowed (default 60).
    #[serde(default = "default_max_timeout_seconds")]
    pub max_timeout_seconds: i64,
    /// Smallest `periodSeconds` allowed (default 1, the API minimum).
    #[serde(default = "default_min_period_seconds")]
    pub min_period_seconds: i64,
    /// Largest `periodSeconds` allowed (default 300).
    #[serde(default = "default_max_period_seconds")]
    pub max_period_seconds: i64,
    /// Largest `initialDelaySeconds` allowed (default 300; a slow starter
    /// wants a startupProbe instead).
    #[serde(default = "default_max_initial_delay_seconds")]
    pub max_initial_delay_seconds: i64,
    /// Flag a liveness probe whose handler is the same as the readiness
    /// probe's (default false): a dependency outage then restarts the container.
    #[serde(default)]
    pub forbid_identical_liveness_readiness: bool,
}

fn default_max_timeout_seconds() -> i64 {
    60
}
fn default_min_period_seconds() -> i64 {
    1
}
fn default_max_period_seconds() -> i64 {
    300
}
fn default_max_initial_delay_seconds() -> i64 {
    300
}

impl Default for ProbeSettingsRule {
    fn default() -> Self {
        ProbeSettingsRule {
            action: Action::Deny,
            mode: None,
            max_timeout_seconds: default_max_timeout_seconds(),
            min_period_seconds: default_min_period_seconds(),
            max_period_seconds: default_max_period_seconds(),
            max_initial_delay_seconds: default_max_initial_delay_seconds(),
            forbid_identical_liveness_readiness: false,
        }
    }
}

/// One exemption rule, set by the cluster admin. A rule applies when every
/// selector it sets matches (any entry of a list matches); a rule must set at
/// least one selector. Workload owners cannot exempt themselves: podgate reads
/// no annotation or label for this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exemption {
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
    /// Checks to skip; empty (default) skips all of them.
    #[serde(default)]
    pub checks: Vec<CheckId>,
    /// Why: reported with every exempted request and in metrics.
    pub reason: String,
}

impl Exemption {
    /// Whether this rule matches the request's namespace and user.
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

    /// Whether this rule exempts the whole object (not just some checks).
    pub fn is_full(&self) -> bool {
        self.checks.is_empty()
    }

    /// Whether this rule exempts `check`.
    pub fn covers(&self, check: CheckId) -> bool {
        self.checks.is_empty() || self.checks.contains(&check)
    }
}

fn namespace_matches(pattern: &str, namespace: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => namespace.starts_with(prefix),
        None => pattern == namespace,
    }
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
        let policy = if is_blank_yaml(text) {
            Policy::default()
        } else {
            serde_yaml_ng::from_str::<Policy>(text).map_err(|e| e.to_string())?
        };
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
        let uid = &self.checks.run_as_user;
        if uid.min_uid < 1 {
            return Err(format!("checks.runAsUser.minUid: must be at least 1 (UID 0 is root), got {}", uid.min_uid));
        }
        if let Some(max) = uid.max_uid {
            if max < uid.min_uid {
                return Err(format!("checks.runAsUser.maxUid: {max} is below minUid {}", uid.min_uid));
            }
        }
        let kubernetes_max = crate::checks::run_as_user::KUBERNETES_MAX_UID;
        if uid.max_uid.unwrap_or(uid.min_uid) > kubernetes_max || uid.min_uid > kubernetes_max {
            return Err(format!("checks.runAsUser: UIDs above {kubernetes_max} are not valid in Kubernetes"));
        }
        let probes = &self.checks.probe_settings;
        if probes.max_timeout_seconds < 1 {
            return Err("checks.probeSettings.maxTimeoutSeconds: must be at least 1".to_owned());
        }
        if probes.min_period_seconds < 1 {
            return Err("checks.probeSettings.minPeriodSeconds: must be at least 1".to_owned());
        }
        if probes.max_period_seconds < probes.min_period_seconds {
            return Err("checks.probeSettings.maxPeriodSeconds: is below minPeriodSeconds".to_owned());
        }
        if probes.max_initial_delay_seconds < 0 {
            return Err("checks.probeSettings.maxInitialDelaySeconds: must not be negative".to_owned());
        }
        for (i, exemption) in self.exemptions.iter().enumerate() {
            if exemption.reason.trim().is_empty() {
                return Err(format!("exemptions[{i}].reason: must say why"));
            }
            if exemption.namespaces.is_empty()
                && exemption.usernames.is_empty()
                && exemption.service_accounts.is_empty()
                && exemption.groups.is_empty()
            {
                return Err(format!(
                    "exemptions[{i}]: must set at least one of namespaces, usernames, serviceAccounts, groups (an exemption for everyone is mode: audit)"
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
