//! The chart's Grafana dashboard against a real Prometheus (Debian's
//! `prometheus` server): every panel's query must be valid PromQL and
//! return data.
//!
//! The data is real too: podgate serves reviews that a real kube-apiserver
//! (`tests/common/apiserver.rs`) sends it, registered by the chart's webhook
//! configuration, under a policy that produces every decision (allowed,
//! denied, warned by a `warn` check and by a check in audit mode, exempt by
//! a named waiver with an expiry); and the built `podgate audit --interval`
//! audits a namespace holding a workload that enforcement would deny.
//! Prometheus scrapes both every second, with the jobs the dashboard's
//! variables select (`podgate`, `podgate-audit`), while reviews keep
//! coming. Then every query of `files/dashboards/podgate.json`, with the
//! variables substituted as Grafana does, goes to `/api/v1/query` until
//! it returns at least one finite sample (rates need two scrapes): with a
//! deadline, never a sleep.
//!
//! The same Prometheus evaluates the chart's alerts (the PrometheusRule
//! rendered for the same release): every rule must evaluate, the ones the
//! traffic calls for must fire or be pending, the failure alerts must not.
//!
//! Prometheus and the auditor are killed when the test ends, panics
//! included, and handed to the cluster's watchdog for the cases where the
//! process dies without unwinding.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::apiserver::*;
use serde_json::{json, Value};

const PODGATE: &str = env!("CARGO_BIN_EXE_podgate");
/// The scope of the webhook's registration: the chart renders it as
/// release `podgate-dash` (`fullnameOverride`) in namespace
/// [`RELEASE_NAMESPACE`].
const SCOPE: &str = "dash";
/// The webhook's and the auditor's job names, as the chart's
/// ServiceMonitor names them for that release (its Services' names); the
/// targets also get the `namespace` label the ServiceMonitor would give,
/// so that the chart's alerts select them.
const JOB: &str = "podgate-dash";
const AUDIT_JOB: &str = "podgate-dash-audit";
/// What Grafana puts for its built-in variables; `$__rate_interval` is at
/// least four scrape intervals.
const RATE_INTERVAL: &str = "10s";
const INTERVAL: &str = "1s";
const RANGE: &str = "5m";
/// How long the queries may take to all return data once Prometheus is up,
/// and then the alerts to reach their states.
const QUERY_PATIENCE: Duration = Duration::from_secs(90);

/// A child process killed (and reaped) when dropped, also on a panic.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(cluster: &Cluster, name: &'static str, command: &mut Command, log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        cluster.watch(child.id());
        Process { name, child, log }
    }

    /// The last lines of its output, for failure messages.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- {} (last 20 lines)\n{}", self.name, lines[lines.len().saturating_sub(20)..].join("\n"))
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.tail());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Prometheus server: `PODGATE_PROMETHEUS`, else `prometheus` in
/// `$PODGATE_TOOLS/bin` or on `PATH` (Debian's `prometheus` package, which
/// `.ci/install.d/apt.sh` installs). Missing: a loud skip, or a failure
/// under `PODGATE_REQUIRE_TOOLS=1`.
fn prometheus_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PODGATE_PROMETHEUS") {
        return Some(PathBuf::from(path));
    }
    if let Some(path) = find_tool("prometheus") {
        return Some(path);
    }
    let hint = "apt-get install prometheus (or bash .ci/install.d/apt.sh), or set PODGATE_PROMETHEUS";
    assert!(
        std::env::var("PODGATE_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "no prometheus server and PODGATE_REQUIRE_TOOLS=1; {hint}"
    );
    let bang = "!".repeat(76);
    let message = format!("\n{bang}\n!!! SKIPPED dashboard test: no prometheus server; {hint}\n{bang}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The dashboard the chart carries (tests/chart.rs checks that the
/// ConfigMap holds exactly this file).
fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/podgate/files/dashboards/podgate.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("the dashboard is JSON")
}

/// A query with the dashboard's and Grafana's variables substituted; panics
/// on a variable this test does not know (a new one needs a value here).
fn substitute(expr: &str) -> String {
    let text = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", INTERVAL)
        .replace("$__range", RANGE)
        .replace("$audit_job", AUDIT_JOB)
        .replace("$job", JOB);
    assert!(!text.contains('$'), "a variable this test does not substitute in {expr}");
    text
}

/// The compliant Pod, named `name`, changed by `change`.
fn variant(name: &str, change: impl FnOnce(&mut Value)) -> Value {
    let mut pod = named(manifest("pod-compliant.yaml"), name);
    change(&mut pod);
    pod
}

/// The webhook's traffic: one review of each decision per round.
fn reviews(ns: &str, legacy_ns: &str) -> Vec<(String, Value)> {
    vec![
        // allowed
        (ns.to_owned(), variant("ok", |_| {})),
        // denied: root, may escalate, no probes
        (ns.to_owned(), named(manifest("pod-noncompliant.yaml"), "root")),
        // warned: readinessProbe has action warn
        (
            ns.to_owned(),
            variant("unready", |p| {
                p["spec"]["containers"][0].as_object_mut().unwrap().remove("readinessProbe");
            }),
        ),
        // warned: runAsUser is in audit mode, and 500 < minUid
        (ns.to_owned(), variant("low-uid", |p| p["spec"]["securityContext"]["runAsUser"] = json!(500))),
        // exempt: the named waiver covers the namespace
        (legacy_ns.to_owned(), named(manifest("pod-noncompliant.yaml"), "legacy")),
    ]
}

/// Objects for the auditor: a Deployment enforcement would deny and a
/// compliant Pod.
async fn populate(cluster: &Cluster, ns: &str) {
    let admin = cluster.admin();
    let labels = json!({"app": "web"});
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}});
    for object in [deployment, named(manifest("pod-compliant.yaml"), "fine")] {
        let answer = create(&admin, ns, &object).await;
        assert_eq!(answer.status, 201, "{answer:?}");
    }
}

/// One instant query: `Ok(Some(..))` with a finite sample, `Ok(None)` while
/// there is none yet (empty, or only NaN), `Err` when Prometheus rejects
/// the query (invalid PromQL: no point waiting).
async fn query(http: &reqwest::Client, base: &str, expr: &str) -> Result<Option<Value>, String> {
    let url = reqwest::Url::parse_with_params(&format!("{base}/api/v1/query"), &[("query", expr)]).unwrap();
    let response = http.get(url).send().await.map_err(|e| format!("request failed: {e}"))?;
    let answer: Value = response.json().await.map_err(|e| format!("not JSON: {e}"))?;
    if answer["status"] != "success" {
        return Err(format!("{answer}"));
    }
    let data = &answer["data"];
    let samples: Vec<&Value> = match data["resultType"].as_str() {
        Some("vector") => data["result"].as_array().unwrap().iter().map(|s| &s["value"]).collect(),
        Some("scalar") => vec![&data["result"]],
        other => return Err(format!("result type {other:?}: a panel needs a vector or a scalar: {answer}")),
    };
    let finite = samples.iter().any(|v| v[1].as_str().and_then(|t| t.parse::<f64>().ok()).is_some_and(f64::is_finite));
    Ok(finite.then(|| data["result"].clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_returns_data_from_a_real_prometheus() {
    let Some(prometheus_bin) = prometheus_binary() else { return };
    let Some(cluster) = cluster().await else { return };
    let started = std::time::Instant::now();

    // The auditor, on a namespace outside the webhook's scope.
    let audit_ns = cluster.namespace("dash-audit").await;
    populate(cluster, &audit_ns).await;
    let audit_port = free_port();
    let scratch = cluster.scratch("dashboard");
    let mut auditor = Process::spawn(
        cluster,
        "podgate audit",
        Command::new(PODGATE)
            .args([
                "audit",
                "--interval",
                "1s",
                "--metrics-listen",
                &format!("127.0.0.1:{audit_port}"),
                "-n",
                &audit_ns,
            ])
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig(None)),
        scratch.join("audit.log"),
    );

    // The webhook: a warn check, a check in audit mode, a named waiver
    // that expires in ten days.
    let legacy_ns = "dash-legacy";
    cluster.create_namespace(legacy_ns, SCOPE).await;
    // Five days: inside PodgateExemptionExpiringSoon's seven.
    let expires = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 5 * 86400).unwrap();
    let exemptions = json!([
        {"namespaces": ["kube-system"], "reason": "kube-system is managed by the cluster operator"},
        {"name": "legacy-billing", "namespaces": [legacy_ns], "expires": expires.to_string(),
         "ticket": "SEC-123", "reason": "rewrite under way"},
    ]);
    let values = ["checks.readinessProbe.action=warn", "checks.runAsUser.mode=audit"];
    let exemptions = format!("exemptions={exemptions}");
    let podgate = Podgate::register_with(cluster, SCOPE, &values, &[&exemptions], &[]).await;
    let ns = cluster.namespace(SCOPE).await;
    // The chart's alerts for the same release, evaluated by the same Prometheus.
    let mut with_rules = values.to_vec();
    with_rules.extend(["prometheusRule.enabled=true", "audit.enabled=true"]);
    let documents = render_chart(cluster, SCOPE, &with_rules, &[&exemptions]);
    let rule = documents.iter().find(|d| d["kind"] == "PrometheusRule").expect("the chart renders a PrometheusRule");

    // Reviews keep coming while Prometheus scrapes (dry runs: nothing is
    // stored, every request still reaches podgate). The first round checks
    // that each request got the decision it stands for.
    let round = reviews(&ns, legacy_ns);
    let admin = cluster.admin();
    for ((namespace, pod), expect) in round.iter().zip([201, 403, 201, 201, 201]) {
        let answer = create_dry_run(&admin, namespace, pod).await;
        assert_eq!(answer.status, expect, "{}: {answer:?}", pod["metadata"]["name"]);
    }
    for decision in ["allowed", "denied", "warned", "exempt"] {
        let series =
            format!("podgate_admission_requests_total{{kind=\"Pod\",operation=\"CREATE\",decision=\"{decision}\",mode=\"enforce\",dry_run=\"true\"}}");
        assert!(podgate.harness.metric(&series).await >= 1.0, "{series}:\n{}", podgate.harness.metrics().await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let admin = cluster.admin();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (namespace, pod) in &round {
                    create_dry_run(&admin, namespace, pod).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Prometheus, scraping both every second.
    let webhook_target = podgate.harness.server.metrics_addr().to_string();
    std::fs::write(scratch.join("rules.json"), serde_json::to_vec(&rule["spec"]).unwrap()).unwrap();
    let labels = format!("labels: {{namespace: {RELEASE_NAMESPACE}}}");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: [rules.json]\n\
         scrape_configs:\n\
         \x20 - job_name: {JOB}\n    static_configs: [{{targets: [\"{webhook_target}\"], {labels}}}]\n\
         \x20 - job_name: {AUDIT_JOB}\n    static_configs: [{{targets: [\"127.0.0.1:{audit_port}\"], {labels}}}]\n"
    );
    std::fs::write(scratch.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let mut prometheus = Process::spawn(
        cluster,
        "prometheus",
        Command::new(&prometheus_bin)
            .arg(format!("--config.file={}", scratch.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", scratch.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn"),
        scratch.join("prometheus.log"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        prometheus.assert_running();
        if http.get(format!("{base}/-/ready")).send().await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "Prometheus not ready in time:\n{}", prometheus.tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = started.elapsed();

    // Every query of every panel, until each has data.
    let dashboard = dashboard();
    let mut pending: Vec<(String, String)> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            pending.push((panel["title"].as_str().unwrap().to_owned(), substitute(expr)));
        }
    }
    let total = pending.len();
    assert!(total >= 30, "{total} queries: the dashboard lost its panels?");
    let deadline = tokio::time::Instant::now() + QUERY_PATIENCE;
    let mut last = Vec::new();
    while !pending.is_empty() {
        last.clear();
        let mut still = Vec::new();
        for (title, expr) in pending {
            match query(&http, &base, &expr).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    last.push(format!("{title}: {expr}: no finite sample yet"));
                    still.push((title, expr));
                }
                Err(e) if e.starts_with("request failed") => {
                    last.push(format!("{title}: {expr}: {e}"));
                    still.push((title, expr));
                }
                Err(e) => panic!("panel {title:?}: Prometheus rejects {expr}: {e}"),
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        prometheus.assert_running();
        auditor.assert_running();
        if tokio::time::Instant::now() > deadline {
            let targets = http.get(format!("{base}/api/v1/targets")).send().await.unwrap().text().await.unwrap();
            panic!(
                "{} of {total} queries returned no data within {QUERY_PATIENCE:?}:\n{}\n--- targets\n{targets}\n{}\n{}",
                pending.len(),
                last.join("\n"),
                prometheus.tail(),
                auditor.tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The variables resolve to the jobs.
    for variable in dashboard["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
        let definition = variable["definition"].as_str().unwrap();
        let metric = definition
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(", job)"))
            .unwrap_or_else(|| panic!("variable {}: not label_values(METRIC, job): {definition}", variable["name"]));
        let url = reqwest::Url::parse_with_params(&format!("{base}/api/v1/label/job/values"), &[("match[]", metric)])
            .unwrap();
        let answer: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        let expected = if variable["name"] == "audit_job" { AUDIT_JOB } else { JOB };
        assert_eq!(answer["data"], json!([expected]), "variable {}: {answer}", variable["name"]);
    }

    // The chart's alerts on these series: every rule evaluates, and those
    // the traffic and the audited workload call for fire or are pending,
    // with the labels they carry; those about failures stay quiet.
    let expected = [
        ("PodgateWouldDenyInAudit", "firing", ("check", "runAsUser")),
        ("PodgateExemptionExpiringSoon", "firing", ("rule", "legacy-billing")),
        ("PodgateAuditWouldDeny", "pending", ("kind", "Deployment")),
    ];
    let quiet = [
        "PodgateDown",
        "PodgateWebhookErrors",
        "PodgateTLSOrConfigReloadFailing",
        "PodgateExemptionExpired",
        "PodgateAuditStale",
        "PodgateCertificateExpiringSoon",
    ];
    let mut alerts = Value::Null;
    let mut seen = false;
    let deadline = tokio::time::Instant::now() + QUERY_PATIENCE;
    while tokio::time::Instant::now() < deadline {
        let rules: Value = http.get(format!("{base}/api/v1/rules")).send().await.unwrap().json().await.unwrap();
        let all: Vec<&Value> =
            rules["data"]["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
        assert_eq!(all.len(), 11, "every alert of the chart is loaded: {rules}");
        for rule in &all {
            assert_ne!(rule["health"], "err", "{} does not evaluate: {}", rule["name"], rule["lastError"]);
        }
        alerts = http.get(format!("{base}/api/v1/alerts")).send().await.unwrap().json::<Value>().await.unwrap()["data"]
            ["alerts"]
            .clone();
        let list = alerts.as_array().unwrap();
        for alert in list {
            let name = alert["labels"]["alertname"].as_str().unwrap();
            assert!(!quiet.contains(&name), "{name} is {}: {alert}", alert["state"]);
        }
        seen = all.iter().all(|r| r["health"] == "ok")
            && expected.iter().all(|(name, state, (label, value))| {
                list.iter()
                    .any(|a| a["labels"]["alertname"] == *name && a["state"] == *state && a["labels"][label] == *value)
            });
        if seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(seen, "alerts expected: {expected:?}; active: {alerts:#}");

    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    podgate.unregister(cluster).await;
    eprintln!(
        "dashboard: {total} queries returned data and the alerts evaluated; Prometheus ready after {ready:?}, done after {:?}",
        started.elapsed()
    );
}
