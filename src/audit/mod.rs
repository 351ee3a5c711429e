//! `podgate audit`: what enforcement would break across a running cluster.
//!
//! Another source of objects for the same pipeline as `podgate check` and
//! the webhook: the apiserver's lists, page by page ([`source`]), decoded
//! with the lean model, then extract -> checks -> verdict as everywhere,
//! then folded by owner ([`owners`]) and reported as text or JSON
//! ([`crate::report`]), and in continuous mode as metrics ([`metrics`]) and
//! PolicyReports ([`policyreport`]).

pub mod continuous;
pub mod metrics;
pub mod owners;
pub mod policyreport;
pub mod source;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::checks::Mode;
use crate::config::Policy;
use crate::decode::model::Object;
use crate::exemption::Subject;
use crate::report::{render_audit_text, ObjectResult, Report};
use crate::verdict::evaluate_object;
use owners::Grouper;
use source::{for_each_page, Resource, SourceError, RESOURCES};

/// Output format of a one-shot `podgate audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFormat {
    Text,
    Json,
}

/// Arguments of `podgate audit`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Policy file (YAML), as for `podgate serve`; the built-in default without one.
    #[arg(long, env = "PODGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override the policy's mode: `--mode enforce` lists what enforcing would deny.
    #[arg(long, env = "PODGATE_MODE", value_enum)]
    pub mode: Option<Mode>,
    /// Output format of a one-shot audit.
    #[arg(long, value_enum, default_value = "text")]
    pub format: AuditFormat,
    /// Audit this namespace only (default: all namespaces).
    #[arg(long, short = 'n', env = "PODGATE_AUDIT_NAMESPACE")]
    pub namespace: Option<String>,
    /// Judge exemption expiry at this time instead of the clock (a date or
    /// an RFC 3339 time), as `podgate check --now` does.
    #[arg(long, value_name = "TIME", value_parser = crate::exemption::parse_now)]
    pub now: Option<jiff::Timestamp>,
    /// Objects per list request (`limit`); memory holds one page at a time.
    #[arg(long, env = "PODGATE_AUDIT_PAGE_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: u32,
    /// kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then the
    /// in-cluster service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Run continuously: audit every INTERVAL (e.g. `5m`), serving /metrics,
    /// /healthz and /readyz on --metrics-listen. Without it, audit once and exit.
    #[arg(long, env = "PODGATE_AUDIT_INTERVAL", value_parser = parse_interval)]
    pub interval: Option<Duration>,
    /// Address of /metrics, /healthz and /readyz in continuous mode.
    #[arg(long, env = "PODGATE_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: std::net::SocketAddr,
    /// Write policy reports (one or more per namespace) to the report APIs
    /// of --report-api.
    #[arg(long, env = "PODGATE_AUDIT_POLICY_REPORTS", value_parser = clap::builder::BoolishValueParser::new())]
    pub policy_reports: bool,
    /// Which report APIs --policy-reports writes to: `auto` (whichever the
    /// cluster serves, both when both are), `wgpolicyk8s`
    /// (`wgpolicyk8s.io/v1alpha2` PolicyReports), `openreports`
    /// (`openreports.io/v1alpha1` Reports) or `both`.
    #[arg(long, env = "PODGATE_AUDIT_REPORT_API", value_enum, default_value = "auto")]
    pub report_api: policyreport::ReportApiChoice,
    /// Log format in continuous mode.
    #[arg(long, env = "PODGATE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = crate::duration::parse_non_negative(text).map_err(|e| e.to_string())?;
    if interval < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(interval)
}

impl AuditArgs {
    /// The policy file with the `--mode` override applied.
    pub fn policy(&self) -> Result<Policy, String> {
        let mut policy = match &self.config {
            Some(path) => Policy::load(path).map_err(|e| e.to_string())?,
            None => Policy::default(),
        };
        if let Some(mode) = self.mode {
            policy.mode = mode;
        }
        Ok(policy)
    }

    /// A client configured like kubectl: `--kubeconfig`, `--context`,
    /// `$KUBECONFIG`, `~/.kube/config`, else the in-cluster service account.
    pub async fn client(&self) -> Result<Client, String> {
        let options = KubeConfigOptions { context: self.context.clone(), ..KubeConfigOptions::default() };
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| e.to_string())?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options).await.map_err(|e| e.to_string())?,
            (None, None) => Config::infer().await.map_err(|e| e.to_string())?,
        };
        Client::try_from(config).map_err(|e| e.to_string())
    }
}

/// Runs `podgate audit` and returns its exit code: 0 nothing would be
/// denied, 1 something would, 2 an error.
pub fn run(args: &AuditArgs) -> ExitCode {
    let policy = match args.policy() {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("podgate audit: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // One thread: the audit is a sequence of requests, and a second worker
    // would only add memory.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("podgate audit: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    if args.interval.is_some() {
        return runtime.block_on(continuous::run(args, policy));
    }
    runtime.block_on(async {
        let client = match args.client().await {
            Ok(client) => client,
            Err(e) => {
                eprintln!("podgate audit: cannot connect: {e}");
                return ExitCode::from(2);
            }
        };
        let report = match audit(
            &client,
            &policy,
            args.namespace.as_deref(),
            args.page_size,
            args.now.unwrap_or_else(jiff::Timestamp::now),
        )
        .await
        {
            Ok(report) => report,
            Err(e) => {
                eprintln!("podgate audit: {e}");
                return ExitCode::from(2);
            }
        };
        if args.policy_reports {
            if let Err(e) = write_policy_reports(&client, args, &policy, &report).await {
                eprintln!("podgate audit: {e}");
                return ExitCode::from(2);
            }
        }
        let rendered = match args.format {
            AuditFormat::Json => serde_json::to_string_pretty(&report).expect("report serialises") + "\n",
            AuditFormat::Text => render_audit_text(&report),
        };
        let _ = std::io::stdout().write_all(rendered.as_bytes());
        if report.results.iter().any(|r| !r.allowed || r.differing.iter().any(|d| !d.allowed)) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// One-shot `--policy-reports`: writes the reports to every API of
/// `--report-api` the cluster serves; an error (exit 2) when one it names,
/// or with `auto` every one, is not served: reports were asked for and
/// cannot be written.
async fn write_policy_reports(
    client: &Client,
    args: &AuditArgs,
    policy: &Policy,
    report: &Report,
) -> Result<(), String> {
    let targets = policyreport::targets(client, args.report_api).await.map_err(|e| e.to_string())?;
    if let Some(missing) = targets.missing_message() {
        return Err(format!("--policy-reports: {missing}: no reports written (see --report-api)"));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let reports = policyreport::build(policy, report, now as i64);
    let mut failure = None;
    for (api, answer) in policyreport::write_all(client, &targets.write, args.namespace.as_deref(), &reports).await {
        match answer {
            Ok(written) => eprintln!(
                "podgate audit: {}: {} created, {} updated, {} deleted, {} bytes",
                api.label(),
                written.created,
                written.updated,
                written.deleted,
                written.bytes
            ),
            Err(e) => {
                failure.get_or_insert(e.to_string());
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

/// One audit pass: lists every resource, evaluates every object and folds
/// them by owner.
pub async fn audit(
    client: &Client,
    policy: &Policy,
    namespace: Option<&str>,
    page_size: u32,
    now: jiff::Timestamp,
) -> Result<Report, SourceError> {
    let mut grouper = Grouper::default();
    for resource in &RESOURCES {
        for_each_page(client, resource, namespace, page_size, |page| {
            for object in &page.items {
                add_object(policy, resource, object, now, &mut grouper);
            }
        })
        .await?;
    }
    Ok(Report { results: grouper.finish(), notes: notes(policy), ..Report::default() })
}

/// Evaluates one listed object and hands its result to the grouper.
fn add_object(policy: &Policy, resource: &Resource, object: &Object<'_>, now: jiff::Timestamp, grouper: &mut Grouper) {
    let metadata = object.metadata.as_ref();
    let namespace = metadata.and_then(|m| m.namespace.as_deref());
    let name = metadata.and_then(|m| m.name.as_deref()).unwrap_or_default();
    // No requesting user: namespace and object exemptions apply, the
    // object's ownerReferences taken as stored (as `podgate check` does).
    let subject = Subject::stored(resource.kind, object, None);
    let verdict = evaluate_object(policy, &subject, resource.kind, object, now);
    let result = ObjectResult::new(
        resource.object_path(namespace.unwrap_or_default(), name),
        resource.api_version().to_owned(),
        resource.kind.as_str().to_owned(),
        namespace.map(str::to_owned),
        Some(name.to_owned()),
        &verdict,
    );
    let uid = metadata.and_then(|m| m.uid.as_deref());
    let controller = metadata.and_then(|m| m.controller()).map(|owner| &*owner.uid);
    grouper.add(resource.kind, uid, controller, result);
}

/// What the output must say about the policy: exemptions by user, group or
/// service account cannot apply to objects that are already stored.
pub fn notes(policy: &Policy) -> Vec<String> {
    policy
        .exemptions
        .iter()
        .filter(|e| !e.usernames.is_empty() || !e.service_accounts.is_empty() || !e.groups.is_empty())
        .map(|e| {
            format!(
                "exemption {:?} selects by user, group or service account and cannot apply in an audit \
                 (a stored object has no requesting user): its objects are evaluated",
                e.reason
            )
        })
        .collect()
}
