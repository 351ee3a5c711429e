//! `allowPrivilegeEscalation`: every container must set
//! `securityContext.allowPrivilegeEscalation: false` explicitly (the runtime
//! default is true), and must not be `privileged`.

use super::{CheckId, Finding, PodView};
use crate::config::ChecksConfig;

const FIELD: &str = "securityContext.allowPrivilegeEscalation";
const PRIVILEGED: &str = "securityContext.privileged";

pub fn check(pod: &PodView<'_, '_>, _config: &ChecksConfig, out: &mut Vec<Finding>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_support::{fields, run_default};

    fn container(security_context: &str) -> String {
        format!(r#"{{"containers":[{{"name":"app","securityContext":{security_context}}}]}}"#)
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
}
