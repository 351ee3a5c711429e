//! `allowPrivilegeEscalation`: every container must set
//! `securityContext.allowPrivilegeEscalation: false` explicitly (the runtime
//! default is true), and must not be `privileged`.
//!
//! Windows pods (`spec.os.name: windows`) cannot set either field (the API
//! refuses them); their privileged containers are HostProcess containers,
//! so there the check forbids `windowsOptions.hostProcess: true` at pod and
//! container level instead, as Pod Security Admission does.

use super::{CheckId, ChecksConfig, Finding, PodView};

const FIELD: &str = "securityContext.allowPrivilegeEscalation";
const PRIVILEGED: &str = "securityContext.privileged";
const HOST_PROCESS: &str = "securityContext.windowsOptions.hostProcess";

pub fn check(pod: &PodView<'_, '_>, _config: &ChecksConfig, out: &mut Vec<Finding>) {
    if pod.is_windows() {
        return check_windows(pod, out);
    }
    for c in pod.containers() {
        let sc = c.container.security_context.as_ref();
        if sc.and_then(|sc| sc.allow_privilege_escalation) != Some(false) {
            let message = format!("allowPrivilegeEscalation != false ({} must set {FIELD}=false)", c.describe());
            out.push(c.finding(CheckId::AllowPrivilegeEscalation, FIELD, message));
        }
        if sc.and_then(|sc| sc.privileged) == Some(true) {
            let message = format!("privileged ({} must not set {PRIVILEGED}=true)", c.describe());
            out.push(c.finding(CheckId::AllowPrivilegeEscalation, PRIVILEGED, message));
        }
    }
}

/// HostProcess at pod level (which every container inherits) and on each
/// container that sets it itself.
fn check_windows(pod: &PodView<'_, '_>, out: &mut Vec<Finding>) {
    if pod.includes_pod_level() && pod.windows_options().and_then(|w| w.host_process) == Some(true) {
        out.push(Finding {
            check: CheckId::AllowPrivilegeEscalation,
            container: None,
            field: pod.field(HOST_PROCESS),
            message: format!("hostProcess (pod must not set {HOST_PROCESS}=true)"),
        });
    }
    for c in pod.containers() {
        if c.windows_options().and_then(|w| w.host_process) == Some(true) {
            let message = format!("hostProcess ({} must not set {HOST_PROCESS}=true)", c.describe());
            out.push(c.finding(CheckId::AllowPrivilegeEscalation, HOST_PROCESS, message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_support::{fields, run_default};

    fn container(security_context: &str) -> String {
        format!(r#"{{"containers":[{{"name":"app","securityContext":{security_context}}}]}}"#)
    }

    fn windows(rest: &str) -> String {
        format!(r#"{{"os":{{"name":"windows"}},{rest}}}"#)
    }

    #[test]
    fn accepts_explicit_false() {
        assert!(run_default(check, &container(r#"{"allowPrivilegeEscalation":false}"#)).is_empty());
        assert!(run_default(check, &container(r#"{"allowPrivilegeEscalation":false,"privileged":false}"#)).is_empty());
    }

    #[test]
    fn rejects_unset_with_psa_message() {
        for sc in ["null", "{}", r#"{"allowPrivilegeEscalation":null}"#] {
            let f = run_default(check, &container(sc));
            assert_eq!(fields(&f), ["spec.containers[0].securityContext.allowPrivilegeEscalation"], "{sc}");
            assert_eq!(
                f[0].message,
                r#"allowPrivilegeEscalation != false (container "app" must set securityContext.allowPrivilegeEscalation=false)"#
            );
        }
    }

    #[test]
    fn rejects_true() {
        assert_eq!(run_default(check, &container(r#"{"allowPrivilegeEscalation":true}"#)).len(), 1);
    }

    #[test]
    fn rejects_privileged_even_with_escalation_off() {
        let f = run_default(check, &container(r#"{"allowPrivilegeEscalation":false,"privileged":true}"#));
        assert_eq!(fields(&f), ["spec.containers[0].securityContext.privileged"]);
        assert_eq!(f[0].message, r#"privileged (container "app" must not set securityContext.privileged=true)"#);
    }

    #[test]
    fn checks_every_container_kind() {
        let spec =
            r#"{"containers":[{"name":"a"}],"initContainers":[{"name":"i"}],"ephemeralContainers":[{"name":"e"}]}"#;
        assert_eq!(run_default(check, spec).len(), 3);
    }

    #[test]
    fn accepts_windows_pod_without_linux_only_fields() {
        for spec in [
            windows(r#""containers":[{"name":"app"}]"#),
            windows(r#""containers":[{"name":"app","securityContext":{"windowsOptions":{"hostProcess":false}}}]"#),
            windows(r#""securityContext":{"windowsOptions":{"hostProcess":false}},"containers":[{"name":"app"}]"#),
        ] {
            assert!(run_default(check, &spec).is_empty(), "{spec}");
        }
    }

    #[test]
    fn linux_rules_apply_without_os_or_with_os_linux() {
        let linux = r#"{"os":{"name":"linux"},"containers":[{"name":"app"}]}"#;
        assert_eq!(fields(&run_default(check, linux)), ["spec.containers[0].securityContext.allowPrivilegeEscalation"]);
        // hostProcess means nothing on Linux pods (the API refuses it there).
        let no_os = r#"{"containers":[{"name":"app","securityContext":{"allowPrivilegeEscalation":false,"windowsOptions":{"hostProcess":true}}}]}"#;
        assert!(run_default(check, no_os).is_empty());
    }

    #[test]
    fn rejects_windows_host_process_container() {
        let spec = windows(
            r#""containers":[{"name":"ok"},{"name":"app","securityContext":{"windowsOptions":{"hostProcess":true}}}]"#,
        );
        let f = run_default(check, &spec);
        assert_eq!(fields(&f), ["spec.containers[1].securityContext.windowsOptions.hostProcess"]);
        assert_eq!(
            f[0].message,
            r#"hostProcess (container "app" must not set securityContext.windowsOptions.hostProcess=true)"#
        );
        assert_eq!(f[0].container.as_deref(), Some("app"));
    }

    #[test]
    fn rejects_windows_host_process_pod() {
        let spec = windows(
            r#""securityContext":{"windowsOptions":{"hostProcess":true}},"containers":[{"name":"app"}],"initContainers":[{"name":"i","securityContext":{"windowsOptions":{"hostProcess":true}}}]"#,
        );
        let f = run_default(check, &spec);
        assert_eq!(
            fields(&f),
            [
                "spec.securityContext.windowsOptions.hostProcess",
                "spec.initContainers[0].securityContext.windowsOptions.hostProcess"
            ]
        );
        assert_eq!(f[0].message, "hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)");
        assert_eq!(f[0].container, None);
    }
}
