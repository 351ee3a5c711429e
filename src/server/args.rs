//! The flags of `podgate serve`; each has a `PODGATE_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::checks::Mode;
use crate::exemption::Clock;
use crate::telemetry::LogFormat;

/// Default `--max-body-bytes`: the apiserver's 3 MiB request limit plus
/// room for the AdmissionReview envelope.
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024 + 512 * 1024;

/// Default `--max-buffered-bytes`: room for nine bodies of the largest size,
/// or thousands of ordinary reviews, well inside the chart's 128 MiB limit.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 32 * 1024 * 1024;

/// Arguments of `podgate serve`.
///
/// One certificate source is required: `--tls-cert` with `--tls-key`, or
/// `--self-signed` (checked by [`ServeArgs::certificate_source`], so that
/// `PODGATE_SELF_SIGNED=false` next to certificate files is fine).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address of the HTTPS webhook listener (POST /validate). Port 0 picks
    /// a free port; the bound address is logged.
    #[arg(long, env = "PODGATE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP listener for /metrics, /healthz and /readyz.
    #[arg(long, env = "PODGATE_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Serving certificate chain, PEM, leaf first (e.g. a Secret's tls.crt).
    /// Re-read every --cert-reload-interval.
    #[arg(long, env = "PODGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of the serving certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "PODGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Generate a CA and a serving certificate for localhost, 127.0.0.1, ::1
    /// and every --dns-name in memory at start-up (local runs and tests).
    #[arg(long, env = "PODGATE_SELF_SIGNED", value_parser = clap::builder::BoolishValueParser::new())]
    pub self_signed: bool,
    /// Extra DNS name for the --self-signed certificate (repeatable; the
    /// environment variable takes a comma-separated list).
    #[arg(long = "dns-name", env = "PODGATE_DNS_NAMES", value_delimiter = ',', requires = "self_signed")]
    pub dns_names: Vec<String>,
    /// Write the CA certificate of --self-signed to FILE (PEM), for clients
    /// to trust (curl --cacert FILE, a webhook caBundle).
    #[arg(long, env = "PODGATE_WRITE_CA", value_name = "FILE", requires = "self_signed")]
    pub write_ca: Option<PathBuf>,
    /// Policy file (YAML); the built-in default policy applies without one.
    /// Re-read every --config-reload-interval; an invalid new file is
    /// rejected and the current policy stays.
    #[arg(long, env = "PODGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override the policy's mode (also after every reload).
    #[arg(long, env = "PODGATE_MODE", value_enum)]
    pub mode: Option<Mode>,
    /// Log format. The level comes from RUST_LOG (default info).
    #[arg(long, env = "PODGATE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// On SIGTERM/SIGINT: time to keep serving while reporting not ready,
    /// before refusing new connections, so that Kubernetes takes the pod
    /// out of the Service's endpoints first (e.g. 5s; 0s: none). A second
    /// signal cuts it short.
    #[arg(long, env = "PODGATE_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_non_negative)]
    pub shutdown_delay: Duration,
    /// On SIGTERM/SIGINT: time allowed for in-flight reviews to finish
    /// before their connections are cut (e.g. 10s, 500ms, 1m30s).
    #[arg(long, env = "PODGATE_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_non_negative)]
    pub shutdown_grace: Duration,
    /// Largest request body accepted, in bytes; larger gets HTTP 413.
    #[arg(long, env = "PODGATE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES, value_parser = parse_positive)]
    pub max_body_bytes: usize,
    /// Reviews evaluated and answered at once, counted from when a review's
    /// body is complete (a slow body holds no slot; as evaluation is
    /// synchronous, at most one per runtime worker thread); beyond it a
    /// review is answered HTTP 503 at once (the apiserver then applies the
    /// webhook's failurePolicy).
    #[arg(long, env = "PODGATE_MAX_INFLIGHT", default_value_t = 256, value_parser = parse_positive)]
    pub max_inflight: usize,
    /// Bytes of request bodies being received, all connections together
    /// (at least --max-body-bytes); a body that would go beyond it is
    /// answered HTTP 503 at once. Bounds the memory slow bodies can hold.
    #[arg(long, env = "PODGATE_MAX_BUFFERED_BYTES", default_value_t = DEFAULT_MAX_BUFFERED_BYTES, value_parser = parse_positive)]
    pub max_buffered_bytes: usize,
    /// How often the certificate files are checked for a change.
    #[arg(long, env = "PODGATE_CERT_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_positive_duration)]
    pub cert_reload_interval: Duration,
    /// How often the policy file is checked for a change.
    #[arg(long, env = "PODGATE_CONFIG_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_positive_duration)]
    pub config_reload_interval: Duration,
    /// Time allowed for a new connection's TLS handshake.
    #[arg(long, env = "PODGATE_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub tls_handshake_timeout: Duration,
    /// A connection is closed this long after its last request ended (or
    /// its TLS handshake) with no request since (HTTP/1.1 keep-alive and
    /// HTTP/2; pings do not count). Keep it above
    /// the apiserver's 90 s idle-connection timeout, or the apiserver may
    /// send a review on a connection podgate is closing.
    #[arg(long, env = "PODGATE_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,
    /// HTTP/1.1: time allowed for a request's head (request line and
    /// headers), counted from its first byte (on a new connection: from the
    /// end of the TLS handshake); then the connection is closed. The
    /// apiserver sends a head of a few hundred bytes at once.
    #[arg(long, env = "PODGATE_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub header_read_timeout: Duration,
    /// Time allowed to receive a review's body once its headers are in;
    /// a slower client gets HTTP 408.
    #[arg(long, env = "PODGATE_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub request_timeout: Duration,
    /// The time exemption expiry is judged at: the system clock; tests that
    /// run the server in-process set a fixed one. Not a flag.
    #[arg(skip)]
    pub clock: Clock,
}

/// Parses only the flags of `podgate serve` (tests and embedders).
#[derive(Debug, Parser)]
#[command(name = "podgate serve")]
struct ServeOnly {
    #[command(flatten)]
    args: ServeArgs,
}

impl ServeArgs {
    /// Parses `podgate serve` flags, e.g. `["--self-signed", "--listen", "127.0.0.1:0"]`.
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let argv = std::iter::once(std::ffi::OsString::from("podgate-serve")).chain(args.into_iter().map(Into::into));
        ServeOnly::try_parse_from(argv).map(|parsed| parsed.args)
    }

    /// Where the serving certificate comes from: files, or `None` for
    /// `--self-signed`.
    pub fn certificate_source(&self) -> Result<Option<(PathBuf, PathBuf)>, String> {
        match (&self.tls_cert, &self.tls_key, self.self_signed) {
            (Some(cert), Some(key), false) => Ok(Some((cert.clone(), key.clone()))),
            (None, None, true) => Ok(None),
            _ => Err("give either --tls-cert and --tls-key, or --self-signed".to_owned()),
        }
    }

    /// Checks that the flags fit together (what clap cannot check alone).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_buffered_bytes < self.max_body_bytes {
            return Err(format!(
                "--max-buffered-bytes ({}) is below --max-body-bytes ({}): a body of the largest size could never be received",
                self.max_buffered_bytes, self.max_body_bytes
            ));
        }
        Ok(())
    }

    /// The `--mode` override as a policy mode.
    pub fn mode_override(&self) -> Option<Mode> {
        self.mode
    }
}

/// A duration flag: Go's `time.ParseDuration` syntax (`10s`, `1m30s`,
/// `1.5h`, `500ms`; see [`crate::duration`]), zero or more.
fn parse_non_negative(text: &str) -> Result<Duration, String> {
    crate::duration::parse_non_negative(text).map_err(|e| e.to_string())
}

/// A duration flag that must be more than zero (poll intervals, timeouts).
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_non_negative(text)?;
    if duration.is_zero() {
        return Err(format!("duration {text:?} must be more than zero"));
    }
    Ok(duration)
}

fn parse_positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{text:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_flags_take_go_durations() {
        let args = ServeArgs::try_parse_from([
            "--self-signed",
            "--shutdown-grace",
            "1m30s",
            "--shutdown-delay",
            "0",
            "--request-timeout",
            "1.5h",
            "--header-read-timeout",
            "2h45m0.5s",
            "--tls-handshake-timeout",
            ".5s",
            "--cert-reload-interval",
            "300ms",
            "--config-reload-interval",
            "12µs",
        ])
        .unwrap();
        assert_eq!(args.shutdown_grace, Duration::from_secs(90));
        assert_eq!(args.shutdown_delay, Duration::ZERO);
        assert_eq!(args.request_timeout, Duration::from_secs(5400));
        assert_eq!(args.header_read_timeout, Duration::from_millis((2 * 3600 + 45 * 60) * 1000 + 500));
        assert_eq!(args.tls_handshake_timeout, Duration::from_millis(500));
        assert_eq!(args.cert_reload_interval, Duration::from_millis(300));
        assert_eq!(args.config_reload_interval, Duration::from_micros(12));
    }

    #[test]
    fn duration_flags_refuse_with_the_reason() {
        let error = |flag: &str, value: &str| {
            ServeArgs::try_parse_from(["--self-signed", flag, value]).unwrap_err().to_string()
        };
        let message = error("--shutdown-grace", "10");
        assert!(message.contains(r#"missing unit in duration "10""#), "{message}");
        assert!(message.contains("--shutdown-grace"), "{message}");
        let negative = ServeArgs::try_parse_from(["--self-signed", "--shutdown-grace=-1.5h"]).unwrap_err().to_string();
        assert!(negative.contains(r#"duration "-1.5h" is negative; give zero or more"#), "{negative}");
        assert!(error("--shutdown-delay", "1d").contains(r#"unknown unit "d""#));
        assert!(error("--request-timeout", "1 m").contains(r#"unknown unit " m""#));
        assert!(error("--request-timeout", "3000000h").contains("too long"));
        assert!(error("--cert-reload-interval", "0s").contains(r#"duration "0s" must be more than zero"#));
        assert!(error("--config-reload-interval", "0").contains("must be more than zero"));
        // --shutdown-delay may be zero: it is off then.
        assert!(ServeArgs::try_parse_from(["--self-signed", "--shutdown-delay", "0s"]).is_ok());
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let args = ServeArgs::try_parse_from(["--self-signed"]).unwrap();
        assert_eq!(args.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(args.metrics_listen.to_string(), "0.0.0.0:9090");
        assert_eq!(args.shutdown_grace, Duration::from_secs(10));
        assert_eq!(args.shutdown_delay, Duration::ZERO);
        assert_eq!(args.max_inflight, 256);
        assert_eq!(args.max_body_bytes, 3_670_016);
        assert_eq!(args.max_buffered_bytes, 32 * 1024 * 1024);
        assert_eq!(args.idle_timeout, Duration::from_secs(120));
        assert_eq!(args.header_read_timeout, Duration::from_secs(5));
        assert!(args.validate().is_ok());
        assert_eq!(args.log_format, LogFormat::Text);
    }

    #[test]
    fn the_body_budget_holds_at_least_one_body_of_the_largest_size() {
        let parse = |extra: &[&str]| ServeArgs::try_parse_from([&["--self-signed"], extra].concat()).unwrap();
        assert!(parse(&["--max-body-bytes", "1000", "--max-buffered-bytes", "1000"]).validate().is_ok());
        let error = parse(&["--max-body-bytes", "1001", "--max-buffered-bytes", "1000"]).validate().unwrap_err();
        assert!(error.contains("--max-buffered-bytes (1000) is below --max-body-bytes (1001)"), "{error}");
    }

    #[test]
    fn requires_one_certificate_source() {
        let source = |args: &[&str]| ServeArgs::try_parse_from(args).map_err(|e| e.to_string())?.certificate_source();
        assert!(source(&[]).is_err());
        assert!(source(&["--tls-cert", "c"]).is_err());
        assert_eq!(source(&["--tls-cert", "c", "--tls-key", "k"]), Ok(Some(("c".into(), "k".into()))));
        assert_eq!(source(&["--self-signed"]), Ok(None));
        assert!(source(&["--tls-cert", "c", "--tls-key", "k", "--self-signed"]).is_err());
        assert!(ServeArgs::try_parse_from(["--write-ca", "ca.pem"]).is_err());
        let args = ServeArgs::try_parse_from(["--self-signed", "--dns-name", "a", "--dns-name", "b,c"]).unwrap();
        assert_eq!(args.dns_names, ["a", "b", "c"]);
        assert!(ServeArgs::try_parse_from(["--self-signed", "--max-inflight", "0"]).is_err());
    }

    #[test]
    fn certificate_source_is_checked_again_after_environment_variables() {
        // PODGATE_SELF_SIGNED=false satisfies clap's group but asks for nothing.
        let mut args = ServeArgs::try_parse_from(["--self-signed"]).unwrap();
        args.self_signed = false;
        assert!(args.certificate_source().is_err());
        args.tls_cert = Some("c".into());
        args.tls_key = Some("k".into());
        assert!(args.certificate_source().is_ok());
    }
}
