//! `runAsNonRoot`: every container must run with an effective
//! `runAsNonRoot: true` (its own setting, else the pod's).
//!
//! A Linux pod in its own user namespace (`spec.hostUsers: false`) passes
//! unless `userNamespaces: enforce`: its root is not the host's, and Pod
//! Security Admission allows any `runAsNonRoot` there (see
//! [`UserNamespaces`]).

use serde::{Deserialize, Serialize};

use super::{Action, CheckId, ChecksConfig, Finding, Mode, PodView, UserNamespaces};

const FIELD: &str = "securityContext.runAsNonRoot";

/// `checks.runAsNonRoot`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunAsNonRootRule {
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// `relaxed` (default, as Pod Security Admission) or `enforce`.
    #[serde(default)]
    pub user_namespaces: UserNamespaces,
}

pub fn check(pod: &PodView<'_, '_>, config: &ChecksConfig, out: &mut Vec<Finding>) {
    if pod.relaxed_for_user_namespace(config.run_as_non_root.user_namespaces) {
        return;
    }
    let pod_level = pod.spec.security_context.as_ref().and_then(|sc| sc.run_as_non_root);
    for c in pod.containers() {
        let own = c.container.security_context.as_ref().and_then(|sc| sc.run_as_non_root);
        let fix = match (own, pod_level) {
            (Some(true), _) | (None, Some(true)) => continue,
            (Some(false), _) => format!("{} must not set {FIELD}=false", c.describe()),
            (None, Some(false)) => {
                format!("pod must not set {FIELD}=false, or {} must set {FIELD}=true", c.describe())
            }
            (None, None) => format!("pod or {} must set {FIELD}=true", c.describe()),
        };
        out.push(c.finding(CheckId::RunAsNonRoot, FIELD, format!("runAsNonRoot != true ({fix})")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_support::{fields, run, run_default};

    fn findings(spec: &str) -> Vec<Finding> {
        run_default(check, spec)
    }

    #[test]
    fn accepts_container_level_true() {
        assert!(findings(r#"{"containers":[{"name":"app","securityContext":{"runAsNonRoot":true}}]}"#).is_empty());
    }

    #[test]
    fn accepts_pod_level_true_inherited() {
        let spec = r#"{"securityContext":{"runAsNonRoot":true},"containers":[{"name":"a"},{"name":"b","securityContext":{}}],"initContainers":[{"name":"i"}]}"#;
        assert!(findings(spec).is_empty());
    }

    #[test]
    fn accepts_container_true_overriding_pod_false() {
        let spec = r#"{"securityContext":{"runAsNonRoot":false},"containers":[{"name":"a","securityContext":{"runAsNonRoot":true}}]}"#;
        assert!(findings(spec).is_empty());
    }

    #[test]
    fn rejects_unset_everywhere() {
        let f = findings(r#"{"containers":[{"name":"app"}]}"#);
        assert_eq!(fields(&f), ["spec.containers[0].securityContext.runAsNonRoot"]);
        assert_eq!(
            f[0].message,
            r#"runAsNonRoot != true (pod or container "app" must set securityContext.runAsNonRoot=true)"#
        );
        assert_eq!(f[0].container.as_deref(), Some("app"));
    }

    #[test]
    fn rejects_container_false_overriding_pod_true() {
        let spec = r#"{"securityContext":{"runAsNonRoot":true},"containers":[{"name":"ok"},{"name":"bad","securityContext":{"runAsNonRoot":false}}]}"#;
        let f = findings(spec);
        assert_eq!(fields(&f), ["spec.containers[1].securityContext.runAsNonRoot"]);
        assert_eq!(
            f[0].message,
            r#"runAsNonRoot != true (container "bad" must not set securityContext.runAsNonRoot=false)"#
        );
    }

    #[test]
    fn rejects_pod_false_inherited() {
        let f = findings(r#"{"securityContext":{"runAsNonRoot":false},"containers":[{"name":"app"}]}"#);
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("pod must not set securityContext.runAsNonRoot=false"), "{}", f[0].message);
    }

    #[test]
    fn rejects_every_container_kind() {
        let spec =
            r#"{"containers":[{"name":"a"}],"initContainers":[{"name":"i"}],"ephemeralContainers":[{"name":"e"}]}"#;
        let f = findings(spec);
        assert_eq!(
            fields(&f),
            [
                "spec.containers[0].securityContext.runAsNonRoot",
                "spec.initContainers[0].securityContext.runAsNonRoot",
                "spec.ephemeralContainers[0].securityContext.runAsNonRoot",
            ]
        );
        assert!(f[1].message.contains(r#"init container "i""#));
        assert!(f[2].message.contains(r#"ephemeral container "e""#));
    }

    #[test]
    fn null_security_context_counts_as_unset() {
        assert_eq!(findings(r#"{"securityContext":null,"containers":[{"name":"a","securityContext":null}]}"#).len(), 1);
    }

    fn enforcing_in_user_namespaces() -> ChecksConfig {
        let mut config = ChecksConfig::default();
        config.run_as_non_root.user_namespaces = UserNamespaces::Enforce;
        config
    }

    #[test]
    fn accepts_user_namespaced_pod_running_as_root() {
        for spec in [
            r#"{"hostUsers":false,"containers":[{"name":"app"}]}"#,
            r#"{"hostUsers":false,"securityContext":{"runAsNonRoot":false},"containers":[{"name":"app","securityContext":{"runAsUser":0}}]}"#,
            r#"{"hostUsers":false,"containers":[{"name":"a","securityContext":{"runAsNonRoot":false}}],"initContainers":[{"name":"i"}],"ephemeralContainers":[{"name":"e"}]}"#,
        ] {
            assert!(findings(spec).is_empty(), "{spec}");
        }
    }

    #[test]
    fn rejects_pod_in_host_user_namespace() {
        // Only an explicit `false` is a user namespace (PSA's test): unset,
        // `true` and `null` share the host's.
        for host_users in [r#""hostUsers":true,"#, "", r#""hostUsers":null,"#] {
            let spec = format!(r#"{{{host_users}"containers":[{{"name":"app"}}]}}"#);
            assert_eq!(fields(&findings(&spec)), ["spec.containers[0].securityContext.runAsNonRoot"], "{spec}");
        }
    }

    #[test]
    fn rejects_user_namespaced_pod_when_setting_enforce() {
        let spec = r#"{"hostUsers":false,"securityContext":{"runAsNonRoot":false},"containers":[{"name":"app"}]}"#;
        let f = run(check, &enforcing_in_user_namespaces(), spec);
        assert_eq!(fields(&f), ["spec.containers[0].securityContext.runAsNonRoot"]);
        assert!(f[0].message.contains("pod must not set securityContext.runAsNonRoot=false"), "{}", f[0].message);
        let compliant = r#"{"hostUsers":false,"securityContext":{"runAsNonRoot":true},"containers":[{"name":"app"}]}"#;
        assert!(run(check, &enforcing_in_user_namespaces(), compliant).is_empty());
    }

    #[test]
    fn rejects_windows_pod_whatever_its_host_users() {
        // hostUsers is Linux-only: a Windows pod keeps the Windows rules.
        let spec = r#"{"os":{"name":"windows"},"hostUsers":false,"containers":[{"name":"app"}]}"#;
        assert_eq!(findings(spec).len(), 1);
    }
}
