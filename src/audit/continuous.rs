//! Continuous audit: a pass every `--interval`, with `/metrics`, `/healthz`
//! and `/readyz` on the ops port, and policy reports when asked for.
//!
//! Why an interval and not watches: a pass lists page by page and keeps only
//! per-workload results, so memory stays bounded whatever the cluster holds;
//! watches would need every object (or its findings) cached to rebuild
//! owner groups and reports, and relisting on every watch expiry anyway.
//! The standing view this serves (alerts, PolicyReports) changes with
//! deployments, not by the second, and each pass rewrites the reports whole,
//! so deleted and fixed objects drop out without delete-event bookkeeping.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use kube::Client;

use super::metrics::AuditMetrics;
use super::{audit, policyreport, AuditArgs};
use crate::config::Policy;
use crate::telemetry;

/// What the ops endpoints read.
#[derive(Debug, Default)]
pub struct OpsState {
    pub metrics: AuditMetrics,
    /// Set after the first successful pass; `/readyz` answers 503 before.
    pub ready: AtomicBool,
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn ops_router(state: Arc<OpsState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<OpsState>>, headers: HeaderMap) -> Response {
    telemetry::metrics::scrape_response(&headers, || state.metrics.render())
}

async fn readyz(State(state): State<Arc<OpsState>>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: no successful audit pass yet\n")
    }
}

/// Runs until SIGTERM or Ctrl-C; exit code 2 only when it cannot start.
pub async fn run(args: &AuditArgs, policy: Policy) -> ExitCode {
    telemetry::init_subscriber(args.log_format, std::io::stdout);
    let client = match args.client().await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("podgate audit: cannot connect: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.metrics_listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("podgate audit: cannot listen on {}: {e}", args.metrics_listen);
            return ExitCode::from(2);
        }
    };
    let address: SocketAddr = listener.local_addr().unwrap_or(args.metrics_listen);
    let state = Arc::new(OpsState::default());
    let router = ops_router(state.clone());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            })
            .await;
    });
    tracing::info!(metrics = %address, interval = ?args.interval, "podgate audit running");

    let interval = args.interval.unwrap_or(Duration::from_secs(300));
    let mut auditor = Auditor::new(client, policy, args.clone());
    tokio::spawn(async move {
        let _ = shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    loop {
        auditor.pass(&state).await;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop_rx.wait_for(|stop| *stop) => break,
        }
    }
    tracing::info!("podgate audit stopping");
    let _ = server.await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => Ok(()),
            result = tokio::signal::ctrl_c() => result,
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}

/// One auditor: its client, policy and what it logged already.
pub struct Auditor {
    pub client: Client,
    pub policy: Policy,
    pub args: AuditArgs,
    /// The last "CRD not served" warning, logged once until it changes.
    reports_missing_logged: Option<String>,
}

impl Auditor {
    pub fn new(client: Client, policy: Policy, args: AuditArgs) -> Self {
        Auditor { client, policy, args, reports_missing_logged: None }
    }

    /// One pass: audit, metrics, policy reports. Failures are logged and
    /// counted; the next pass tries again.
    pub async fn pass(&mut self, state: &OpsState) -> bool {
        let started = Instant::now();
        let namespace = self.args.namespace.as_deref();
        let report = match audit(
            &self.client,
            &self.policy,
            namespace,
            self.args.page_size,
            self.args.now.unwrap_or_else(jiff::Timestamp::now),
        )
        .await
        {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(reason = e.metric_reason(), "audit pass failed: {e}");
                state.metrics.error(e.metric_reason());
                return false;
            }
        };
        for note in &report.notes {
            tracing::warn!("{note}");
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.args.policy_reports && !self.write_reports(state, &report, now.as_secs() as i64).await {
            return false;
        }
        let seconds = started.elapsed().as_secs_f64();
        state.metrics.record_pass(&report, seconds, now.as_secs_f64());
        state.ready.store(true, Ordering::Release);
        let would_deny = report.results.iter().filter(|r| super::owners::would_deny(r)).count();
        tracing::info!(objects = report.results.len(), would_deny, seconds, "audit pass done");
        true
    }

    /// The pass's reports, to every report API of `--report-api` the cluster
    /// serves (discovered every pass, so a CRD installed later is picked
    /// up). An API not served is logged once and the pass goes on (metrics
    /// only); a conflict is counted; false when a write failed.
    async fn write_reports(&mut self, state: &OpsState, report: &super::Report, now: i64) -> bool {
        let targets = match policyreport::targets(&self.client, self.args.report_api).await {
            Ok(targets) => targets,
            Err(e) => {
                tracing::error!("{e}");
                state.metrics.error("policy_report");
                return true;
            }
        };
        let missing = targets.missing_message();
        if missing != self.reports_missing_logged {
            if let Some(missing) = &missing {
                let written: Vec<&str> = targets.write.iter().map(|api| api.label()).collect();
                if written.is_empty() {
                    tracing::warn!("{missing}: no reports written (metrics only)");
                } else {
                    tracing::warn!("{missing}: reports written as {} only", written.join(" and "));
                }
            }
            self.reports_missing_logged = missing;
        }
        if targets.write.is_empty() {
            return true;
        }
        let reports = policyreport::build(&self.policy, report, now);
        let namespace = self.args.namespace.as_deref();
        let mut ok = true;
        for (api, answer) in policyreport::write_all(&self.client, &targets.write, namespace, &reports).await {
            match answer {
                Ok(written) => tracing::info!(
                    api = api.group_version(),
                    created = written.created,
                    updated = written.updated,
                    deleted = written.deleted,
                    bytes = written.bytes,
                    "{} written",
                    api.label()
                ),
                Err(e @ policyreport::ReportError::Conflict(_)) => {
                    tracing::error!("{e}");
                    state.metrics.error("policy_report_conflict");
                }
                Err(e) => {
                    tracing::error!("{e}");
                    state.metrics.error("policy_report");
                    ok = false;
                }
            }
        }
        ok
    }
}
