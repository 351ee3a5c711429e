//! `readinessProbe`: required on every regular container and sidecar of a
//! long-running pod, so traffic only reaches containers that can serve it.

use super::{require_probe, CheckId, ChecksConfig, Finding, PodView};

pub fn check(pod: &PodView<'_, '_>, _config: &ChecksConfig, out: &mut Vec<Finding>) {
    require_probe(pod, CheckId::ReadinessProbe, "readinessProbe", |c| c.readiness_probe.is_some(), out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_support::{fields, run_default};

    #[test]
    fn accepts_containers_with_probe() {
        let spec = r#"{"containers":[{"name":"app","readinessProbe":{"httpGet":{"port":8080}}}]}"#;
        assert!(run_default(check, spec).is_empty());
    }

    #[test]
    fn rejects_missing_probe() {
        let f =
            run_default(check, r#"{"containers":[{"name":"ok","readinessProbe":{"grpc":{"port":9}}},{"name":"app"}]}"#);
        assert_eq!(fields(&f), ["spec.containers[1].readinessProbe"]);
        assert_eq!(f[0].message, r#"readinessProbe missing (container "app" must set readinessProbe)"#);
    }

    #[test]
    fn rejects_sidecar_without_probe_but_not_plain_init_or_ephemeral() {
        let spec = r#"{"initContainers":[{"name":"setup","restartPolicy":"OnFailure"},{"name":"proxy","restartPolicy":"Always"}],"ephemeralContainers":[{"name":"debug"}]}"#;
        assert_eq!(fields(&run_default(check, spec)), ["spec.initContainers[1].readinessProbe"]);
    }

    #[test]
    fn accepts_batch_pods_without_probes() {
        let spec = r#"{"restartPolicy":"OnFailure","containers":[{"name":"job"}],"initContainers":[{"name":"s","restartPolicy":"Always"}]}"#;
        assert!(run_default(check, spec).is_empty());
    }
}
