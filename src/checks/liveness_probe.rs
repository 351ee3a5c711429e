//! `livenessProbe`: required on every regular container and sidecar of a
//! long-running pod, so a hung process is restarted.

use super::{require_probe, CheckId, ChecksConfig, Finding, PodView};

pub fn check(pod: &PodView<'_, '_>, _config: &ChecksConfig, out: &mut Vec<Finding>) {
    require_probe(pod, CheckId::LivenessProbe, "livenessProbe", |c| c.liveness_probe.is_some(), out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_support::{fields, run_default};

    const PROBE: &str = r#"{"tcpSocket":{"port":8080}}"#;

    #[test]
    fn accepts_containers_with_probe() {
        let spec = format!(r#"{{"containers":[{{"name":"app","livenessProbe":{PROBE}}}]}}"#);
        assert!(run_default(check, &spec).is_empty());
    }

    #[test]
    fn rejects_missing_probe() {
        let f = run_default(check, r#"{"containers":[{"name":"app","readinessProbe":{"exec":{"command":["true"]}}}]}"#);
        assert_eq!(fields(&f), ["spec.containers[0].livenessProbe"]);
        assert_eq!(f[0].message, r#"livenessProbe missing (container "app" must set livenessProbe)"#);
    }

    #[test]
    fn rejects_sidecar_without_probe_but_not_plain_init_or_ephemeral() {
        let spec = r#"{"initContainers":[{"name":"setup"},{"name":"proxy","restartPolicy":"Always"}],"ephemeralContainers":[{"name":"debug"}]}"#;
        let f = run_default(check, spec);
        assert_eq!(fields(&f), ["spec.initContainers[1].livenessProbe"]);
        assert!(f[0].message.contains(r#"init container "proxy""#));
    }

    #[test]
    fn accepts_batch_pods_without_probes() {
        for policy in ["Never", "OnFailure"] {
            let spec = format!(r#"{{"restartPolicy":"{policy}","containers":[{{"name":"job"}}]}}"#);
            assert!(run_default(check, &spec).is_empty(), "{policy}");
        }
        let always = r#"{"restartPolicy":"Always","containers":[{"name":"app"}]}"#;
        assert_eq!(run_default(check, always).len(), 1);
    }
}
