//! `probeSettings`: every probe that is present (liveness, readiness,
//! startup) must be well-formed: exactly one handler, a port that exists,
//! a timeout that fits in its period, and timings within the configured bounds.

use serde::{Deserialize, Serialize};

use super::{Action, CheckId, ChecksConfig, ContainerRef, Finding, Mode, PodView};
use crate::decode::model::{Port, Probe};

/// API defaults applied when the field is unset.
const DEFAULT_TIMEOUT_SECONDS: i64 = 1;
const DEFAULT_PERIOD_SECONDS: i64 = 10;

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

impl ProbeSettingsRule {
    /// Rejects bounds that parse but make no sense; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_timeout_seconds < 1 {
            return Err("checks.probeSettings.maxTimeoutSeconds: must be at least 1".to_owned());
        }
        if self.min_period_seconds < 1 {
            return Err("checks.probeSettings.minPeriodSeconds: must be at least 1".to_owned());
        }
        if self.max_period_seconds < self.min_period_seconds {
            return Err("checks.probeSettings.maxPeriodSeconds: is below minPeriodSeconds".to_owned());
        }
        if self.max_initial_delay_seconds < 0 {
            return Err("checks.probeSettings.maxInitialDelaySeconds: must not be negative".to_owned());
        }
        Ok(())
    }
}

pub fn check(pod: &PodView<'_, '_>, config: &ChecksConfig, out: &mut Vec<Finding>) {
    let rule = &config.probe_settings;
    for c in pod.containers() {
        let probes = [
            ("livenessProbe", c.container.liveness_probe.as_ref()),
            ("readinessProbe", c.container.readiness_probe.as_ref()),
            ("startupProbe", c.container.startup_probe.as_ref()),
        ];
        for (name, probe) in probes {
            if let Some(probe) = probe {
                check_probe(&c, name, probe, rule, out);
            }
        }
        if rule.forbid_identical_liveness_readiness {
            check_identical(&c, out);
        }
    }
}

fn check_probe(
    c: &ContainerRef<'_, '_>,
    name: &str,
    probe: &Probe<'_>,
    rule: &ProbeSettingsRule,
    out: &mut Vec<Finding>,
) {
    let who = || c.describe();
    let mut push = |field: String, message: String| out.push(c.finding(CheckId::ProbeSettings, &field, message));

    let handlers = [probe.exec.is_some(), probe.http_get.is_some(), probe.tcp_socket.is_some(), probe.grpc.is_some()]
        .into_iter()
        .filter(|&set| set)
        .count();
    if handlers != 1 {
        let what = if handlers == 0 { "has no handler".to_owned() } else { format!("has {handlers} handlers") };
        push(
            name.to_owned(),
            format!(
                "{name} {what} ({} must set exactly one of {name}.exec, {name}.httpGet, {name}.tcpSocket or {name}.grpc)",
                who()
            ),
        );
    }

    let ports = [
        ("httpGet.port", probe.http_get.as_ref().map(|h| h.port.clone())),
        ("tcpSocket.port", probe.tcp_socket.as_ref().map(|t| t.port.clone())),
        ("grpc.port", probe.grpc.as_ref().map(|g| g.port.map(Port::Number))),
    ];
    for (port_field, port) in ports {
        let Some(port) = port else { continue };
        // Formatted only for a finding: most probes are fine.
        let field = || format!("{name}.{port_field}");
        match port {
            None => {
                let field = field();
                push(field.clone(), format!("{field} missing ({} must set {field})", who()))
            }
            Some(Port::Number(n)) if !(1..=65535).contains(&n) => {
                let field = field();
                push(field.clone(), format!("{field}={n} ({} must set {field} to a number from 1 to 65535)", who()))
            }
            Some(Port::Number(_)) => {}
            Some(Port::Name(port_name)) => {
                let declared = c.container.ports.iter().any(|p| p.name.as_deref() == Some(&*port_name));
                if !declared {
                    let field = field();
                    push(
                        field.clone(),
                        format!(
                            "{field}={port_name:?} not found ({} must declare a port named {port_name:?} in ports, or set {field} to a number)",
                            who()
                        ),
                    );
                }
            }
        }
    }

    let timeout = probe.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    let period = probe.period_seconds.unwrap_or(DEFAULT_PERIOD_SECONDS);
    if timeout > period {
        push(
            format!("{name}.timeoutSeconds"),
            format!(
                "{name}.timeoutSeconds={timeout} > periodSeconds={period} ({} must set {name}.timeoutSeconds <= {name}.periodSeconds)",
                who()
            ),
        );
    }
    if timeout > rule.max_timeout_seconds {
        push(
            format!("{name}.timeoutSeconds"),
            format!(
                "{name}.timeoutSeconds={timeout} ({} must set {name}.timeoutSeconds <= {})",
                who(),
                rule.max_timeout_seconds
            ),
        );
    }
    if period < rule.min_period_seconds || period > rule.max_period_seconds {
        push(
            format!("{name}.periodSeconds"),
            format!(
                "{name}.periodSeconds={period} ({} must set {name}.periodSeconds from {} to {})",
                who(),
                rule.min_period_seconds,
                rule.max_period_seconds
            ),
        );
    }
    if let Some(delay) = probe.initial_delay_seconds.filter(|&d| d > rule.max_initial_delay_seconds) {
        push(
            format!("{name}.initialDelaySeconds"),
            format!(
                "{name}.initialDelaySeconds={delay} ({} must set {name}.initialDelaySeconds <= {}, or add a startupProbe)",
                who(),
                rule.max_initial_delay_seconds
            ),
        );
    }
}

/// A liveness probe that asks the same thing as the readiness probe restarts
/// the container whenever it is merely unready (e.g. a dependency is down).
fn check_identical(c: &ContainerRef<'_, '_>, out: &mut Vec<Finding>) {
    let (Some(live), Some(ready)) = (&c.container.liveness_probe, &c.container.readiness_probe) else { return };
    let same_handler = live.exec == ready.exec
        && live.http_get == ready.http_get
        && live.tcp_socket == ready.tcp_socket
        && live.grpc == ready.grpc;
    if same_handler {
        out.push(c.finding(
            CheckId::ProbeSettings,
            "livenessProbe",
            format!(
                "livenessProbe == readinessProbe ({} must give livenessProbe a different handler than readinessProbe)",
                c.describe()
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_support::{fields, run, run_default};

    fn with_probe(probe: &str) -> String {
        format!(
            r#"{{"containers":[{{"name":"app","ports":[{{"name":"http","containerPort":8080}}],"livenessProbe":{probe}}}]}}"#
        )
    }

    fn findings(probe: &str) -> Vec<Finding> {
        run_default(check, &with_probe(probe))
    }

    #[test]
    fn accepts_well_formed_probes() {
        for probe in [
            r#"{"httpGet":{"path":"/healthz","port":"http"}}"#,
            r#"{"httpGet":{"port":8080},"timeoutSeconds":10,"periodSeconds":10}"#,
            r#"{"tcpSocket":{"port":1}}"#,
            r#"{"tcpSocket":{"port":65535}}"#,
            r#"{"grpc":{"port":9090}}"#,
            r#"{"exec":{"command":["cat","/tmp/ok"]},"initialDelaySeconds":300,"periodSeconds":300,"timeoutSeconds":60}"#,
        ] {
            assert!(findings(probe).is_empty(), "{probe}: {:?}", findings(probe));
        }
    }

    #[test]
    fn accepts_containers_without_probes() {
        assert!(run_default(check, r#"{"containers":[{"name":"app"}]}"#).is_empty());
    }

    #[test]
    fn rejects_no_handler() {
        let f = findings(r#"{"periodSeconds":10}"#);
        assert_eq!(fields(&f), ["spec.containers[0].livenessProbe"]);
        assert_eq!(
            f[0].message,
            r#"livenessProbe has no handler (container "app" must set exactly one of livenessProbe.exec, livenessProbe.httpGet, livenessProbe.tcpSocket or livenessProbe.grpc)"#
        );
    }

    #[test]
    fn rejects_two_handlers() {
        let f = findings(r#"{"exec":{"command":["true"]},"tcpSocket":{"port":80}}"#);
        assert_eq!(f.len(), 1);
        assert!(f[0].message.starts_with("livenessProbe has 2 handlers"));
    }

    #[test]
    fn rejects_ports_out_of_range_on_both_sides() {
        for (probe, field) in [
            (r#"{"tcpSocket":{"port":0}}"#, "tcpSocket.port"),
            (r#"{"tcpSocket":{"port":65536}}"#, "tcpSocket.port"),
            (r#"{"httpGet":{"port":-1}}"#, "httpGet.port"),
            (r#"{"grpc":{"port":70000}}"#, "grpc.port"),
        ] {
            let f = findings(probe);
            assert_eq!(fields(&f), [format!("spec.containers[0].livenessProbe.{field}")], "{probe}");
            assert!(f[0].message.contains("from 1 to 65535"));
        }
    }

    #[test]
    fn rejects_missing_port() {
        let f = findings(r#"{"httpGet":{"path":"/"}}"#);
        assert_eq!(
            f[0].message,
            r#"livenessProbe.httpGet.port missing (container "app" must set livenessProbe.httpGet.port)"#
        );
    }

    #[test]
    fn rejects_unknown_named_port() {
        let f = findings(r#"{"httpGet":{"port":"metrics"}}"#);
        assert_eq!(fields(&f), ["spec.containers[0].livenessProbe.httpGet.port"]);
        assert_eq!(
            f[0].message,
            r#"livenessProbe.httpGet.port="metrics" not found (container "app" must declare a port named "metrics" in ports, or set livenessProbe.httpGet.port to a number)"#
        );
    }

    #[test]
    fn rejects_timeout_above_period_including_api_defaults() {
        let f = findings(r#"{"tcpSocket":{"port":80},"timeoutSeconds":11}"#);
        assert_eq!(fields(&f), ["spec.containers[0].livenessProbe.timeoutSeconds"]);
        assert!(f[0].message.contains("timeoutSeconds=11 > periodSeconds=10"), "{}", f[0].message);
        let f = findings(r#"{"tcpSocket":{"port":80},"periodSeconds":1,"timeoutSeconds":2}"#);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn rejects_timings_beyond_bounds() {
        let f = findings(r#"{"tcpSocket":{"port":80},"timeoutSeconds":61,"periodSeconds":61}"#);
        assert_eq!(fields(&f), ["spec.containers[0].livenessProbe.timeoutSeconds"]);
        let f = findings(r#"{"tcpSocket":{"port":80},"periodSeconds":301}"#);
        assert_eq!(fields(&f), ["spec.containers[0].livenessProbe.periodSeconds"]);
        let f = findings(r#"{"tcpSocket":{"port":80},"initialDelaySeconds":301}"#);
        assert_eq!(fields(&f), ["spec.containers[0].livenessProbe.initialDelaySeconds"]);
        assert!(f[0].message.contains("or add a startupProbe"));
    }

    #[test]
    fn applies_configured_bounds() {
        let mut config = ChecksConfig::default();
        config.probe_settings.min_period_seconds = 15;
        let f = run(check, &config, &with_probe(r#"{"tcpSocket":{"port":80}}"#));
        assert_eq!(f.len(), 1, "the API default period 10 is below 15");
        assert!(f[0].message.contains("periodSeconds=10"));
        assert!(run(check, &config, &with_probe(r#"{"tcpSocket":{"port":80},"periodSeconds":15}"#)).is_empty());
    }

    #[test]
    fn checks_readiness_and_startup_probes_too() {
        let spec = r#"{"containers":[{"name":"app","readinessProbe":{},"startupProbe":{"tcpSocket":{"port":0}}}]}"#;
        assert_eq!(
            fields(&run_default(check, spec)),
            ["spec.containers[0].readinessProbe", "spec.containers[0].startupProbe.tcpSocket.port"]
        );
    }

    #[test]
    fn identical_liveness_and_readiness_only_flagged_when_enabled() {
        let spec = r#"{"containers":[{"name":"app","livenessProbe":{"httpGet":{"path":"/ready","port":80}},"readinessProbe":{"httpGet":{"path":"/ready","port":80},"periodSeconds":5}}]}"#;
        assert!(run_default(check, spec).is_empty());
        let mut config = ChecksConfig::default();
        config.probe_settings.forbid_identical_liveness_readiness = true;
        let f = run(check, &config, spec);
        assert_eq!(fields(&f), ["spec.containers[0].livenessProbe"]);
        assert!(f[0].message.starts_with("livenessProbe == readinessProbe"));
        let different = spec.replacen("/ready", "/live", 1);
        assert!(run(check, &config, &different).is_empty());
    }
}
