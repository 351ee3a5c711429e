//! `runAsNonRoot`: every container must run with an effective
//! `runAsNonRoot: true` (its own setting, else the pod's).

use super::{CheckId, ChecksConfig, Finding, PodView};

const FIELD: &str = "securityContext.runAsNonRoot";

pub fn check(pod: &PodView<'_, '_>, _config: &ChecksConfig, out: &mut Vec<Finding>) {
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
    use crate::checks::test_support::{fields, run_default};

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
}
