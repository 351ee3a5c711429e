//! Step 3 of the data flow: the checks.
//!
//! A check is a pure, synchronous function of one pod spec (and its own
//! settings) that appends [`Finding`]s; a failed check is data, not an error.
//! Adding a check takes one file here (with its rule type, when it has
//! options beyond [`CheckRule`]), one [`CheckId`] variant, its field in
//! [`ChecksConfig`] and one line in [`CHECKS`]. The checks know nothing of
//! the policy file: `config` composes their rules, `verdict` applies them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::decode::model::{Container, PodSpec, WindowsOptions};
use crate::extract::PodTarget;

pub mod allow_privilege_escalation;
pub mod liveness_probe;
pub mod probe_settings;
pub mod readiness_probe;
mod rule;
pub mod run_as_non_root;
pub mod run_as_user;

pub use probe_settings::ProbeSettingsRule;
pub use rule::{Action, CheckRule, Mode, UserNamespaces};
pub use run_as_non_root::RunAsNonRootRule;
pub use run_as_user::RunAsUserRule;

/// The signature every check has.
pub type CheckFn = fn(&PodView<'_, '_>, &ChecksConfig, &mut Vec<Finding>);

/// The registry: every check podgate runs, in the order findings are reported.
pub const CHECKS: [(CheckId, CheckFn); 6] = [
    (CheckId::RunAsNonRoot, run_as_non_root::check),
    (CheckId::RunAsUser, run_as_user::check),
    (CheckId::AllowPrivilegeEscalation, allow_privilege_escalation::check),
    (CheckId::LivenessProbe, liveness_probe::check),
    (CheckId::ReadinessProbe, readiness_probe::check),
    (CheckId::ProbeSettings, probe_settings::check),
];

/// The settings of every check: the policy's `checks` key, one rule per check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChecksConfig {
    #[serde(default)]
    pub run_as_non_root: RunAsNonRootRule,
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

    /// Rejects rule settings that parse but make no sense (each rule type
    /// knows its own bounds).
    pub fn validate(&self) -> Result<(), String> {
        self.run_as_user.validate()?;
        self.probe_settings.validate()
    }
}

/// The id of a check, as used in configuration, findings and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckId {
    RunAsNonRoot,
    RunAsUser,
    AllowPrivilegeEscalation,
    LivenessProbe,
    ReadinessProbe,
    ProbeSettings,
}

impl CheckId {
    /// Every check id, in registry order.
    pub const ALL: [CheckId; 6] = [
        CheckId::RunAsNonRoot,
        CheckId::RunAsUser,
        CheckId::AllowPrivilegeEscalation,
        CheckId::LivenessProbe,
        CheckId::ReadinessProbe,
        CheckId::ProbeSettings,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::RunAsNonRoot => "runAsNonRoot",
            CheckId::RunAsUser => "runAsUser",
            CheckId::AllowPrivilegeEscalation => "allowPrivilegeEscalation",
            CheckId::LivenessProbe => "livenessProbe",
            CheckId::ReadinessProbe => "readinessProbe",
            CheckId::ProbeSettings => "probeSettings",
        }
    }

    /// Position in [`CheckId::ALL`], for per-check tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One violated rule: which check, where, and what the user must change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: CheckId,
    /// The container at fault; `None` for a pod-level field.
    pub container: Option<String>,
    /// The full path of the field in the submitted object,
    /// e.g. `spec.template.spec.containers[1].securityContext.runAsUser`.
    pub field: String,
    /// One line in the style of Pod Security Admission:
    /// `what is wrong (who must set which field to what)`.
    pub message: String,
}

/// Which list of the pod spec a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerList {
    Containers,
    InitContainers,
    EphemeralContainers,
}

impl ContainerList {
    /// The field name of the list in a pod spec.
    pub fn field_name(self) -> &'static str {
        match self {
            ContainerList::Containers => "containers",
            ContainerList::InitContainers => "initContainers",
            ContainerList::EphemeralContainers => "ephemeralContainers",
        }
    }
}

/// The pod spec a check looks at, with what it needs to name fields.
#[derive(Debug, Clone, Copy)]
pub struct PodView<'s, 'a> {
    pub spec: &'s PodSpec<'a>,
    /// Path of the pod spec in the submitted object, e.g. `spec.template.spec`.
    pub path: &'static str,
    /// What to evaluate: the whole pod, or only its ephemeral containers.
    pub scope: Scope<'s>,
}

/// What part of a pod spec is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'s> {
    /// Every container and the pod-level settings: a new or changed object.
    Whole,
    /// Only the ephemeral containers added by a `pods/ephemeralcontainers`
    /// update (`kubectl debug`), which changes nothing else of a running pod.
    /// `existing[i]` is true when ephemeral container `i` was already in the
    /// pod (`oldObject`): admitted before and unchangeable, so not judged
    /// again; a policy tightened since must not block every later debug
    /// session. By name, not position: a patch may put the new one first.
    NewEphemeralContainers { existing: &'s [bool] },
}

/// Every container list, for evaluating a whole object.
pub const ALL_LISTS: &[ContainerList] =
    &[ContainerList::Containers, ContainerList::InitContainers, ContainerList::EphemeralContainers];

impl<'s, 'a> PodView<'s, 'a> {
    /// A view of the whole pod spec of `target`.
    pub fn of(target: &PodTarget<'s, 'a>) -> Self {
        PodView { spec: target.spec, path: target.path, scope: Scope::Whole }
    }

    /// A view of only the ephemeral containers of `target` that are not
    /// marked `existing` (see [`Scope::NewEphemeralContainers`]).
    pub fn new_ephemeral_containers_of(target: &PodTarget<'s, 'a>, existing: &'s [bool]) -> Self {
        PodView { spec: target.spec, path: target.path, scope: Scope::NewEphemeralContainers { existing } }
    }

    /// Whether pod-level fields are evaluated.
    pub fn includes_pod_level(&self) -> bool {
        matches!(self.scope, Scope::Whole)
    }

    /// Every container in the evaluated lists, with its position.
    pub fn containers(&self) -> impl Iterator<Item = ContainerRef<'s, 'a>> + '_ {
        let spec = self.spec;
        let path = self.path;
        let (lists, existing): (&'static [ContainerList], &'s [bool]) = match self.scope {
            Scope::Whole => (ALL_LISTS, &[]),
            Scope::NewEphemeralContainers { existing } => (&[ContainerList::EphemeralContainers], existing),
        };
        lists.iter().flat_map(move |&list| {
            let containers = match list {
                ContainerList::Containers => &spec.containers,
                ContainerList::InitContainers => &spec.init_containers,
                ContainerList::EphemeralContainers => &spec.ephemeral_containers,
            };
            let new = move |(index, _): &(usize, _)| !existing.get(*index).copied().unwrap_or(false);
            containers.iter().enumerate().filter(new).map(move |(index, container)| ContainerRef {
                container,
                list,
                index,
                pod_path: path,
            })
        })
    }

    /// Pod-level field path, e.g. `spec.template.spec.securityContext.runAsUser`.
    pub fn field(&self, rest: &str) -> String {
        format!("{}.{}", self.path, rest)
    }

    /// A Windows pod (`spec.os.name: windows`): Linux-only fields cannot be
    /// set, so checks judge the Windows counterpart instead.
    pub fn is_windows(&self) -> bool {
        self.spec.is_windows()
    }

    /// Whether a check whose `userNamespaces` setting is `setting` passes
    /// this pod unseen: a user-namespaced pod (`spec.hostUsers: false`,
    /// [`PodSpec::user_namespaced`]) under `relaxed`, as Pod Security
    /// Admission judges it (see [`UserNamespaces`]). Not a Windows pod:
    /// `hostUsers` is Linux-only (the API refuses it there) and the Windows
    /// rules stay as they are.
    pub fn relaxed_for_user_namespace(&self, setting: UserNamespaces) -> bool {
        setting == UserNamespaces::Relaxed && self.spec.user_namespaced() && !self.is_windows()
    }

    /// The pod-level `securityContext.windowsOptions`.
    pub fn windows_options(&self) -> Option<&'s WindowsOptions> {
        self.spec.security_context.as_ref().and_then(|sc| sc.windows_options.as_deref())
    }

    /// Pods that run to completion (Jobs, CronJobs, batch Pods) need no
    /// liveness or readiness probes: the API forbids probes' purpose there.
    pub fn runs_to_completion(&self) -> bool {
        matches!(self.spec.restart_policy.as_deref(), Some("Never" | "OnFailure"))
    }
}

/// One container and where it sits in the pod spec.
#[derive(Debug, Clone, Copy)]
pub struct ContainerRef<'s, 'a> {
    pub container: &'s Container<'a>,
    pub list: ContainerList,
    pub index: usize,
    pod_path: &'static str,
}

impl<'s> ContainerRef<'s, '_> {
    /// Full path of a field of this container, e.g.
    /// `spec.containers[0].securityContext.runAsNonRoot`.
    pub fn field(&self, rest: &str) -> String {
        format!("{}.{}[{}].{}", self.pod_path, self.list.field_name(), self.index, rest)
    }

    /// The container's name, for findings.
    pub fn name(&self) -> String {
        self.container.name.to_string()
    }

    /// `container "app"`, or `init container "setup"`, as messages name it.
    pub fn describe(&self) -> String {
        let prefix = match self.list {
            ContainerList::Containers => "container",
            ContainerList::InitContainers => "init container",
            ContainerList::EphemeralContainers => "ephemeral container",
        };
        format!("{prefix} {:?}", &*self.container.name)
    }

    /// The container's own `securityContext.windowsOptions`.
    pub fn windows_options(&self) -> Option<&'s WindowsOptions> {
        self.container.security_context.as_ref().and_then(|sc| sc.windows_options.as_deref())
    }

    /// A sidecar: an init container with `restartPolicy: Always`, which runs
    /// for the pod's lifetime like a regular container.
    pub fn is_sidecar(&self) -> bool {
        self.list == ContainerList::InitContainers && self.container.restart_policy.as_deref() == Some("Always")
    }

    /// Whether liveness and readiness probes are required: regular containers
    /// and sidecars of long-running pods.
    pub fn needs_probes(&self, pod: &PodView<'_, '_>) -> bool {
        !pod.runs_to_completion() && (self.list == ContainerList::Containers || self.is_sidecar())
    }

    /// A finding about this container.
    pub fn finding(&self, check: CheckId, field: &str, message: String) -> Finding {
        Finding { check, container: Some(self.name()), field: self.field(field), message }
    }
}

/// Shared by `livenessProbe` and `readinessProbe`: every container that needs
/// probes must have the one named `field`.
pub(crate) fn require_probe(
    pod: &PodView<'_, '_>,
    check: CheckId,
    field: &str,
    probe: fn(&Container<'_>) -> bool,
    out: &mut Vec<Finding>,
) {
    for c in pod.containers() {
        if c.needs_probes(pod) && !probe(c.container) {
            out.push(c.finding(check, field, format!("{field} missing ({} must set {field})", c.describe())));
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers for the table-driven tests beside each check.
    use super::*;
    use crate::decode::model::Object;
    use crate::extract::{pod_target, WorkloadKind};

    /// Runs `check` with `config` over a Pod whose `spec` is `spec_json`.
    pub fn run(check: CheckFn, config: &ChecksConfig, spec_json: &str) -> Vec<Finding> {
        let json = format!(r#"{{"spec":{spec_json}}}"#);
        let object: Object = serde_json::from_str(&json).expect("test spec parses");
        let target = pod_target(WorkloadKind::Pod, &object);
        let mut findings = Vec::new();
        check(&PodView::of(&target), config, &mut findings);
        findings
    }

    /// Like [`run`] with the default configuration.
    pub fn run_default(check: CheckFn, spec_json: &str) -> Vec<Finding> {
        run(check, &ChecksConfig::default(), spec_json)
    }

    /// The fields of the findings, for compact assertions.
    pub fn fields(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.field.as_str()).collect()
    }
}

#[cfg(test)]
mod windows_tests {
    //! One table for Windows pods across every check: which checks change
    //! meaning on Windows (allowPrivilegeEscalation, runAsUser) and which
    //! apply unchanged (runAsNonRoot and the probe checks).
    use super::test_support::run_default;
    use super::*;

    /// The check ids that report findings for `spec`, in registry order.
    fn failing(spec: &str) -> Vec<CheckId> {
        let mut failing = Vec::new();
        for (id, check) in CHECKS {
            if !run_default(check, spec).is_empty() {
                failing.push(id);
            }
        }
        failing
    }

    const PROBES: &str = r#""livenessProbe":{"tcpSocket":{"port":80}},"readinessProbe":{"tcpSocket":{"port":80}}"#;

    #[test]
    fn windows_pods_across_every_check() {
        use CheckId::*;
        let compliant = format!(
            r#"{{"os":{{"name":"windows"}},"securityContext":{{"runAsNonRoot":true}},"containers":[{{"name":"app",{PROBES}}}]}}"#
        );
        let cases: Vec<(&str, String, Vec<CheckId>)> = vec![
            ("compliant: no Linux-only field needed", compliant.clone(), vec![]),
            (
                "HostProcess container",
                compliant.replace(
                    r#""name":"app","#,
                    r#""name":"app","securityContext":{"windowsOptions":{"hostProcess":true}},"#,
                ),
                vec![AllowPrivilegeEscalation],
            ),
            (
                "ContainerAdministrator at pod level",
                compliant.replace(
                    r#""runAsNonRoot":true"#,
                    r#""runAsNonRoot":true,"windowsOptions":{"runAsUserName":"CONTAINERADMINISTRATOR"}"#,
                ),
                vec![RunAsUser],
            ),
            ("runAsNonRoot applies unchanged", compliant.replace(r#""runAsNonRoot":true"#, ""), vec![RunAsNonRoot]),
            (
                "probes apply unchanged",
                compliant.replace(&format!(",{PROBES}"), ""),
                vec![LivenessProbe, ReadinessProbe],
            ),
            (
                "probe settings apply unchanged",
                compliant.replace(r#"{"port":80}},"readinessProbe""#, r#"{"port":0}},"readinessProbe""#),
                vec![ProbeSettings],
            ),
            (
                "the same pod without spec.os is a Linux pod",
                compliant.replace(r#""os":{"name":"windows"},"#, ""),
                vec![AllowPrivilegeEscalation],
            ),
        ];
        for (what, spec, expected) in cases {
            assert_eq!(failing(&spec), expected, "{what}: {spec}");
        }
    }
}
