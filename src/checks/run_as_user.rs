//! `runAsUser`: every explicitly set UID, at pod level and on each container,
//! must be non-zero and within `minUid`..=`maxUid`. An unset UID passes here:
//! `runAsNonRoot` governs the image's default user.
//!
//! Windows pods (`spec.os.name: windows`) cannot set `runAsUser` (the API
//! refuses it); there the check forbids the Windows administrator instead:
//! an effective `windowsOptions.runAsUserName` (the container's, else the
//! pod's) of `ContainerAdministrator`, in any case, as Windows compares it.
//!
//! A Linux pod in its own user namespace (`spec.hostUsers: false`) passes
//! unless `userNamespaces: enforce`: its UIDs are not the host's, and Pod
//! Security Admission allows any `runAsUser` there (see [`UserNamespaces`]).
//! `minUid` and `maxUid` keep containers clear of the host's system users
//! and are relaxed with it.

use serde::{Deserialize, Serialize};

use super::{Action, CheckId, ChecksConfig, Finding, Mode, PodView, UserNamespaces};

const FIELD: &str = "securityContext.runAsUser";
const USER_NAME: &str = "securityContext.windowsOptions.runAsUserName";
const ADMINISTRATOR: &str = "ContainerAdministrator";

/// The largest UID Kubernetes accepts (API validation: 0..=2^31-1).
pub const KUBERNETES_MAX_UID: i64 = 2_147_483_647;

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
    /// `relaxed` (default, as Pod Security Admission) or `enforce`.
    #[serde(default)]
    pub user_namespaces: UserNamespaces,
}

fn default_min_uid() -> i64 {
    1000
}

impl Default for RunAsUserRule {
    fn default() -> Self {
        RunAsUserRule {
            action: Action::Deny,
            mode: None,
            min_uid: default_min_uid(),
            max_uid: None,
            user_namespaces: UserNamespaces::Relaxed,
        }
    }
}

impl RunAsUserRule {
    /// Rejects bounds that parse but make no sense; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_uid < 1 {
            return Err(format!("checks.runAsUser.minUid: must be at least 1 (UID 0 is root), got {}", self.min_uid));
        }
        if let Some(max) = self.max_uid {
            if max < self.min_uid {
                return Err(format!("checks.runAsUser.maxUid: {max} is below minUid {}", self.min_uid));
            }
        }
        if self.max_uid.unwrap_or(self.min_uid) > KUBERNETES_MAX_UID || self.min_uid > KUBERNETES_MAX_UID {
            return Err(format!("checks.runAsUser: UIDs above {KUBERNETES_MAX_UID} are not valid in Kubernetes"));
        }
        Ok(())
    }
}

/// What is wrong with `uid`, if anything: the text after `must`.
fn required_fix(uid: i64, rule: &RunAsUserRule) -> Option<String> {
    if uid == 0 {
        return Some(format!("not set {FIELD}=0"));
    }
    let max = rule.max_uid.unwrap_or(KUBERNETES_MAX_UID);
    if (rule.min_uid..=max).contains(&uid) {
        return None;
    }
    Some(if rule.max_uid.is_some() || uid > max {
        format!("set {FIELD} to a UID from {} to {max}", rule.min_uid)
    } else {
        format!("set {FIELD} to a UID >= {}", rule.min_uid)
    })
}

pub fn check(pod: &PodView<'_, '_>, config: &ChecksConfig, out: &mut Vec<Finding>) {
    if pod.is_windows() {
        return check_windows(pod, out);
    }
    let rule = &config.run_as_user;
    if pod.relaxed_for_user_namespace(rule.user_namespaces) {
        return;
    }
    let pod_uid = pod.spec.security_context.as_ref().and_then(|sc| sc.run_as_user);
    if let Some(uid) = pod_uid.filter(|_| pod.includes_pod_level()) {
        if let Some(fix) = required_fix(uid, rule) {
            out.push(Finding {
                check: CheckId::RunAsUser,
                container: None,
                field: pod.field(FIELD),
                message: format!("runAsUser={uid} (pod must {fix})"),
            });
        }
    }
    for c in pod.containers() {
        let Some(uid) = c.container.security_context.as_ref().and_then(|sc| sc.run_as_user) else { continue };
        if let Some(fix) = required_fix(uid, rule) {
            out.push(c.finding(CheckId::RunAsUser, FIELD, format!("runAsUser={uid} ({} must {fix})", c.describe())));
        }
    }
}

fn is_administrator(user_name: &str) -> bool {
    user_name.eq_ignore_ascii_case(ADMINISTRATOR)
}

/// Every container whose effective user is `ContainerAdministrator`; the
/// message says where the value comes from, like `runAsNonRoot`'s.
fn check_windows(pod: &PodView<'_, '_>, out: &mut Vec<Finding>) {
    let pod_user = pod.windows_options().and_then(|w| w.run_as_user_name.as_deref());
    for c in pod.containers() {
        let own = c.windows_options().and_then(|w| w.run_as_user_name.as_deref());
        let (user, fix) = match (own, pod_user) {
            (Some(user), _) if is_administrator(user) => {
                (user, format!("{} must not set {USER_NAME}={ADMINISTRATOR}", c.describe()))
            }
            (None, Some(user)) if is_administrator(user) => (
                user,
                format!(
                    "pod must not set {USER_NAME}={ADMINISTRATOR}, or {} must set it to another user",
                    c.describe()
                ),
            ),
            _ => continue,
        };
        out.push(c.finding(CheckId::RunAsUser, USER_NAME, format!("runAsUserName={user:?} ({fix})")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_support::{fields, run, run_default};

    fn with_uids(pod_uid: &str, container_uid: &str) -> String {
        format!(
            r#"{{"securityContext":{{"runAsUser":{pod_uid}}},"containers":[{{"name":"app","securityContext":{{"runAsUser":{container_uid}}}}}]}}"#
        )
    }

    #[test]
    fn accepts_unset_uids() {
        assert!(run_default(check, r#"{"containers":[{"name":"app"}]}"#).is_empty());
        assert!(run_default(check, &with_uids("null", "null")).is_empty());
    }

    #[test]
    fn accepts_uids_at_and_above_the_minimum() {
        assert!(run_default(check, &with_uids("1000", "65532")).is_empty());
    }

    #[test]
    fn rejects_root_at_pod_level() {
        let f = run_default(check, &with_uids("0", "2000"));
        assert_eq!(fields(&f), ["spec.securityContext.runAsUser"]);
        assert_eq!(f[0].message, "runAsUser=0 (pod must not set securityContext.runAsUser=0)");
        assert_eq!(f[0].container, None);
    }

    #[test]
    fn rejects_root_in_container_even_with_pod_uid_set() {
        let f = run_default(check, &with_uids("2000", "0"));
        assert_eq!(fields(&f), ["spec.containers[0].securityContext.runAsUser"]);
        assert_eq!(f[0].message, r#"runAsUser=0 (container "app" must not set securityContext.runAsUser=0)"#);
    }

    #[test]
    fn rejects_just_below_the_minimum() {
        let f = run_default(check, &with_uids("1000", "999"));
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].message,
            r#"runAsUser=999 (container "app" must set securityContext.runAsUser to a UID >= 1000)"#
        );
    }

    #[test]
    fn rejects_negative_uids() {
        assert_eq!(run_default(check, &with_uids("-1", "1000")).len(), 1);
    }

    #[test]
    fn rejects_uids_beyond_what_kubernetes_accepts() {
        let f = run_default(check, &with_uids("2147483647", "2147483648"));
        assert_eq!(fields(&f), ["spec.containers[0].securityContext.runAsUser"]);
        assert_eq!(
            f[0].message,
            r#"runAsUser=2147483648 (container "app" must set securityContext.runAsUser to a UID from 1000 to 2147483647)"#
        );
    }

    #[test]
    fn enforces_configured_bounds_on_both_sides() {
        let mut config = ChecksConfig::default();
        config.run_as_user.min_uid = 10_000;
        config.run_as_user.max_uid = Some(20_000);
        assert!(run(check, &config, &with_uids("10000", "20000")).is_empty());
        let f = run(check, &config, &with_uids("9999", "20001"));
        assert_eq!(fields(&f), ["spec.securityContext.runAsUser", "spec.containers[0].securityContext.runAsUser"]);
        assert!(f[1].message.contains("a UID from 10000 to 20000"), "{}", f[1].message);
    }

    #[test]
    fn ephemeral_scope_skips_pod_level_and_other_containers() {
        use crate::checks::PodView;
        use crate::decode::model::Object;
        use crate::extract::{pod_target, WorkloadKind};
        let json = r#"{"spec":{"securityContext":{"runAsUser":0},"containers":[{"name":"a","securityContext":{"runAsUser":0}}],"ephemeralContainers":[{"name":"debug","securityContext":{"runAsUser":0}}]}}"#;
        let object: Object = serde_json::from_str(json).unwrap();
        let target = pod_target(WorkloadKind::Pod, &object);
        let mut f = Vec::new();
        check(&PodView::new_ephemeral_containers_of(&target, &[]), &ChecksConfig::default(), &mut f);
        assert_eq!(fields(&f), ["spec.ephemeralContainers[0].securityContext.runAsUser"]);
    }

    fn windows(rest: &str) -> String {
        format!(r#"{{"os":{{"name":"windows"}},{rest}}}"#)
    }

    #[test]
    fn accepts_windows_pod_with_ordinary_user() {
        for spec in [
            windows(r#""containers":[{"name":"app"}]"#),
            windows(
                r#""containers":[{"name":"app","securityContext":{"windowsOptions":{"runAsUserName":"ContainerUser"}}}]"#,
            ),
            // A container's own user overrides the pod's administrator.
            windows(
                r#""securityContext":{"windowsOptions":{"runAsUserName":"ContainerAdministrator"}},"containers":[{"name":"app","securityContext":{"windowsOptions":{"runAsUserName":"ContainerUser"}}}]"#,
            ),
        ] {
            assert!(run_default(check, &spec).is_empty(), "{spec}");
        }
    }

    #[test]
    fn rejects_windows_container_administrator_in_any_case() {
        let spec = windows(
            r#""containers":[{"name":"app","securityContext":{"windowsOptions":{"runAsUserName":"containeradministrator"}}}]"#,
        );
        let f = run_default(check, &spec);
        assert_eq!(fields(&f), ["spec.containers[0].securityContext.windowsOptions.runAsUserName"]);
        assert_eq!(
            f[0].message,
            r#"runAsUserName="containeradministrator" (container "app" must not set securityContext.windowsOptions.runAsUserName=ContainerAdministrator)"#
        );
    }

    #[test]
    fn rejects_windows_administrator_inherited_from_pod() {
        let spec = windows(
            r#""securityContext":{"windowsOptions":{"runAsUserName":"ContainerAdministrator"}},"containers":[{"name":"app"}],"initContainers":[{"name":"i","securityContext":{"windowsOptions":{"runAsUserName":"ContainerUser"}}}]"#,
        );
        let f = run_default(check, &spec);
        assert_eq!(fields(&f), ["spec.containers[0].securityContext.windowsOptions.runAsUserName"]);
        assert_eq!(
            f[0].message,
            r#"runAsUserName="ContainerAdministrator" (pod must not set securityContext.windowsOptions.runAsUserName=ContainerAdministrator, or container "app" must set it to another user)"#
        );
    }

    #[test]
    fn windows_pods_are_not_judged_by_uid() {
        // The API refuses runAsUser on Windows pods; the UID rules do not apply.
        assert!(
            run_default(check, &windows(r#""securityContext":{"runAsUser":0},"containers":[{"name":"a"}]"#)).is_empty()
        );
        // Without spec.os a pod is a Linux pod, and its user name is not read.
        let linux = r#"{"containers":[{"name":"a","securityContext":{"windowsOptions":{"runAsUserName":"ContainerAdministrator"}}}]}"#;
        assert!(run_default(check, linux).is_empty());
    }

    #[test]
    fn checks_init_and_ephemeral_containers() {
        let spec = r#"{"initContainers":[{"name":"i","securityContext":{"runAsUser":0}}],"ephemeralContainers":[{"name":"e","securityContext":{"runAsUser":1}}]}"#;
        assert_eq!(
            fields(&run_default(check, spec)),
            [
                "spec.initContainers[0].securityContext.runAsUser",
                "spec.ephemeralContainers[0].securityContext.runAsUser"
            ]
        );
    }

    fn user_namespaced(rest: &str) -> String {
        format!(r#"{{"hostUsers":false,{rest}}}"#)
    }

    #[test]
    fn accepts_user_namespaced_pod_running_as_root() {
        for spec in [
            user_namespaced(r#""securityContext":{"runAsUser":0},"containers":[{"name":"app"}]"#),
            user_namespaced(
                r#""containers":[{"name":"app","securityContext":{"runAsUser":0}}],"initContainers":[{"name":"i","securityContext":{"runAsUser":0}}],"ephemeralContainers":[{"name":"e","securityContext":{"runAsUser":0}}]"#,
            ),
            // minUid and maxUid are relaxed with it, as PSA allows any runAsUser.
            user_namespaced(
                r#""securityContext":{"runAsUser":5},"containers":[{"name":"app","securityContext":{"runAsUser":999}}]"#,
            ),
        ] {
            assert!(run_default(check, &spec).is_empty(), "{spec}");
        }
    }

    #[test]
    fn rejects_root_in_host_user_namespace() {
        for spec in [
            with_uids("0", "1000").replacen('{', r#"{"hostUsers":true,"#, 1),
            with_uids("0", "1000").replacen('{', r#"{"hostUsers":null,"#, 1),
        ] {
            assert_eq!(fields(&run_default(check, &spec)), ["spec.securityContext.runAsUser"], "{spec}");
        }
    }

    #[test]
    fn rejects_user_namespaced_pod_when_setting_enforce() {
        let mut config = ChecksConfig::default();
        config.run_as_user.user_namespaces = UserNamespaces::Enforce;
        let spec = user_namespaced(
            r#""securityContext":{"runAsUser":0},"containers":[{"name":"app","securityContext":{"runAsUser":999}}]"#,
        );
        let f = run(check, &config, &spec);
        assert_eq!(fields(&f), ["spec.securityContext.runAsUser", "spec.containers[0].securityContext.runAsUser"]);
        assert_eq!(f[0].message, "runAsUser=0 (pod must not set securityContext.runAsUser=0)");
    }

    #[test]
    fn rejects_windows_administrator_whatever_its_host_users() {
        let spec = r#"{"os":{"name":"windows"},"hostUsers":false,"containers":[{"name":"app","securityContext":{"windowsOptions":{"runAsUserName":"ContainerAdministrator"}}}]}"#;
        assert_eq!(run_default(check, spec).len(), 1);
    }
}
