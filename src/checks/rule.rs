//! What every check is configured with: its `action` and roll-out `mode`.
//! A check with options of its own defines its rule type in its own file
//! (`runAsUser`'s [`RunAsUserRule`](super::run_as_user::RunAsUserRule));
//! [`ChecksConfig`](super::ChecksConfig) holds one rule per check, and the
//! policy file (`config`) composes that with the global `mode`.

use serde::{Deserialize, Serialize};

/// `mode`: whether would-be denials deny (`enforce`) or only warn (`audit`).
/// Also the value of every subcommand's `--mode` override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
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

/// `userNamespaces` of `runAsNonRoot` and `runAsUser`: how a pod in its own
/// user namespace (`spec.hostUsers: false`) is judged.
///
/// Inside a user namespace the container's UID 0 maps to an unprivileged UID
/// on the host, so Pod Security Admission (since 1.35, for every level and
/// version) allows any `runAsNonRoot` and any `runAsUser` there:
/// `runAsNonRootV1Dot0` and `runAsUser_1_23` return allowed when
/// `relaxPolicyForUserNamespacePod` holds, i.e. `hostUsers` is explicitly
/// `false` (pod-security-admission `policy/check_runAsNonRoot.go`,
/// `check_runAsUser.go`, `helpers.go`; KEP-127).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserNamespaces {
    /// As Pod Security Admission: a user-namespaced Linux pod passes the
    /// check whatever its UIDs (`runAsUser`'s `minUid`/`maxUid` included).
    #[default]
    Relaxed,
    /// Judged like any other pod: for those who want non-root inside the
    /// user namespace too (a root there still owns the pod's own files and
    /// namespaced capabilities).
    Enforce,
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
