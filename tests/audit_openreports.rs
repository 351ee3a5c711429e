//! `podgate audit --policy-reports` on a real kube-apiserver whose report
//! CRDs change as the test goes: none, then OpenReports' only (the CRDs the
//! OpenReports project publishes, `tests/fixtures/crds/*.openreports.io.yaml`),
//! then both. A test binary of its own, with one test: the CRDs belong to
//! the binary's one cluster, so the phases run in order, and the other audit
//! tests (tests/audit_cluster.rs) install the PolicyReport CRD in theirs.

mod common;

use common::apiserver::*;
use common::reports::*;
use podgate::audit::continuous::OpsState;
use podgate::audit::policyreport::{ReportApi, ReportApiChoice};
use serde_json::{json, Value};

const NEITHER: &str = "podgate audit: --policy-reports: neither the PolicyReport CRD (policyreports.wgpolicyk8s.io) \
                       nor the OpenReports Report CRD (reports.openreports.io) is served: no reports written (see --report-api)\n";
const NO_POLICY_REPORTS: &str = "podgate audit: --policy-reports: the PolicyReport CRD (policyreports.wgpolicyk8s.io) \
                                 is not served: no reports written (see --report-api)\n";

/// A fresh namespace with one root Deployment `api` (four failing checks, two passing).
async fn namespace_with_root_deployment(cluster: &Cluster, scope: &str) -> String {
    let ns = cluster.namespace(scope).await;
    let labels = json!({"app": "api"});
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": root_spec(&["app"])}}});
    let answer = create(&cluster.admin(), &ns, &deployment).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    ns
}

fn stderr(run: &std::process::Output) -> String {
    String::from_utf8_lossy(&run.stderr).into_owned()
}

fn conflicts(state: &OpsState) -> Option<f64> {
    common::metric_value(
        &state.metrics.render_prometheus_text(),
        "podgate_audit_errors_total{reason=\"policy_report_conflict\"}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_go_to_the_report_apis_the_cluster_serves() {
    let Some(cluster) = cluster().await else { return };
    let admin = cluster.admin();
    let config = cluster.kubeconfig(None);
    let ns = namespace_with_root_deployment(cluster, "reports").await;

    // Neither CRD: asking for reports is an error naming both CRDs (exit 2,
    // nothing on stdout); the continuous auditor carries on with metrics.
    let run = audit(&config, &["-n", &ns, "--policy-reports"]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert_eq!(stderr(&run), NEITHER);
    assert_eq!(run.stdout, b"");
    let run = audit(&config, &["-n", &ns, "--policy-reports", "--report-api", "openreports"]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("the OpenReports Report CRD (reports.openreports.io) is not served"),
        "{}",
        stderr(&run)
    );
    let state = OpsState::default();
    assert!(auditor(admin.clone(), &ns, ReportApiChoice::Auto).pass(&state).await);
    assert!(common::metric_value(
        &state.metrics.render_prometheus_text(),
        "podgate_audit_last_success_timestamp_seconds"
    )
    .is_some_and(|t| t > 0.0));

    // OpenReports only (the case of issue #22): `auto` writes Reports.
    install_report_crds(cluster, ReportApi::OpenReports).await;
    let run = audit(&config, &["-n", &ns, "--policy-reports"]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(
        stderr(&run).starts_with("podgate audit: OpenReports: 1 created, 0 updated, 0 deleted, "),
        "{}",
        stderr(&run)
    );
    assert!(!stderr(&run).contains("PolicyReports"), "{}", stderr(&run));
    let written = report(cluster, ReportApi::OpenReports, &ns, "podgate").await;
    assert_eq!(written.status, 200, "{written:?}");
    let body = &written.body;
    assert_eq!((&body["apiVersion"], &body["kind"]), (&json!("openreports.io/v1alpha1"), &json!("Report")));
    assert_eq!(body["source"], "podgate");
    assert_eq!(body["metadata"]["labels"]["app.kubernetes.io/managed-by"], "podgate");
    assert_eq!(body["summary"], json!({"pass": 2, "fail": 4, "warn": 0, "error": 0, "skip": 0}));
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    let first = &results[0];
    for (key, value) in [
        ("source", json!("podgate")),
        ("policy", json!("podgate")),
        ("rule", json!("runAsNonRoot")),
        ("result", json!("fail")),
        ("severity", json!("high")),
        ("category", json!("Pod Security")),
        ("scored", json!(true)),
        ("resources", json!([{"apiVersion": "apps/v1", "kind": "Deployment", "namespace": ns, "name": "api"}])),
    ] {
        assert_eq!(first[key], value, "{key}: {first}");
    }
    assert_eq!(
        first["properties"],
        // Properties are strings in the schema; `pods`: none runs (no controller-manager here).
        json!({"field": "spec.template.spec.containers[0].securityContext.runAsNonRoot", "container": "app", "pods": "0"})
    );
    assert!(first["message"].as_str().unwrap().starts_with("runAsNonRoot != true"), "{first}");
    assert_eq!(first["timestamp"]["nanos"], 0);
    assert!(first["timestamp"]["seconds"].as_i64().unwrap() > 1_700_000_000, "{first}");
    let passes: Vec<&str> =
        results.iter().filter(|r| r["result"] == "pass").map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(passes, ["runAsUser", "probeSettings"]);

    // An explicit choice of an API not served: an error naming its CRD, and nothing written.
    let version = &body["metadata"]["resourceVersion"];
    for choice in ["wgpolicyk8s", "both"] {
        let run = audit(&config, &["-n", &ns, "--policy-reports", "--report-api", choice]);
        assert_eq!(run.status.code(), Some(2), "{choice}: {}", stderr(&run));
        assert_eq!(stderr(&run), NO_POLICY_REPORTS, "{choice}");
    }
    let again = report(cluster, ReportApi::OpenReports, &ns, "podgate").await;
    assert_eq!(&again.body["metadata"]["resourceVersion"], version, "rewritten after an error");

    // The chart's ClusterRole, as its ServiceAccount, is enough for Reports
    // (RBAC settles within a moment after the binding).
    let (_, user) = bind_chart_audit_role(cluster, "reports-rbac", &["audit.enabled=true"]).await;
    let as_account = cluster.kubeconfig(Some(&user));
    let rbac_ns = namespace_with_root_deployment(cluster, "reports-rbac").await;
    let mut run = None;
    for _ in 0..50 {
        let attempt = audit(&as_account, &["-n", &rbac_ns, "--policy-reports", "--report-api", "openreports"]);
        let settled = attempt.status.code() == Some(1);
        run = Some(attempt);
        if settled {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let run = run.unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(
        stderr(&run).starts_with("podgate audit: OpenReports: 1 created, 0 updated, 0 deleted"),
        "{}",
        stderr(&run)
    );
    assert_eq!(report(cluster, ReportApi::OpenReports, &rbac_ns, "podgate").await.status, 200);

    // Ownership: another's Report is never touched; a name taken by one is
    // left alone and counted; podgate's own goes when nothing is left.
    let owned = namespace_with_root_deployment(cluster, "reports-owned").await;
    let foreign = json!({"apiVersion": "openreports.io/v1alpha1", "kind": "Report", "metadata": {"name": "kyverno-pol"},
        "source": "kyverno", "results": [{"policy": "other", "result": "pass"}]});
    assert_eq!(create_report(cluster, ReportApi::OpenReports, &owned, &foreign).await.status, 201);
    let state = OpsState::default();
    let mut open = auditor(admin.clone(), &owned, ReportApiChoice::Openreports);
    assert!(open.pass(&state).await);
    assert_eq!(report(cluster, ReportApi::OpenReports, &owned, "podgate").await.status, 200);
    let path = format!("/apis/apps/v1/namespaces/{owned}/deployments/api");
    assert_eq!(send(&admin, "DELETE", &path, "application/json", None).await.status, 200);
    assert!(open.pass(&state).await);
    assert_eq!(report(cluster, ReportApi::OpenReports, &owned, "podgate").await.status, 404);
    let kept = report(cluster, ReportApi::OpenReports, &owned, "kyverno-pol").await;
    assert_eq!(kept.body["results"], foreign["results"], "{kept:?}");
    let squatter = json!({"apiVersion": "openreports.io/v1alpha1", "kind": "Report", "metadata": {"name": "podgate"},
        "source": "someone"});
    assert_eq!(create_report(cluster, ReportApi::OpenReports, &owned, &squatter).await.status, 201);
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
        "spec": {"selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}}, "spec": root_spec(&["app"])}}});
    assert_eq!(create(&admin, &owned, &deployment).await.status, 201);
    open.pass(&state).await;
    let body = report(cluster, ReportApi::OpenReports, &owned, "podgate").await.body;
    assert_eq!((&body["source"], body.get("results")), (&json!("someone"), None), "the squatter was changed: {body}");
    assert_eq!(conflicts(&state), Some(1.0));

    // A large namespace: its Reports are split, each under the limit.
    let big = big_namespace(cluster, "reports-big").await;
    assert!(auditor(admin.clone(), &big, ReportApiChoice::Auto).pass(&OpsState::default()).await);
    assert_split(cluster, ReportApi::OpenReports, &big).await;

    // Both served: an explicit choice writes only its API; `auto` writes both,
    // the same results and summary.
    install_report_crds(cluster, ReportApi::Wgpolicyk8s).await;
    let both = namespace_with_root_deployment(cluster, "reports-both").await;
    let run = audit(&config, &["-n", &both, "--policy-reports", "--report-api", "openreports"]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(stderr(&run).starts_with("podgate audit: OpenReports: 1 created"), "{}", stderr(&run));
    assert!(!stderr(&run).contains("PolicyReports"), "{}", stderr(&run));
    assert_eq!(report(cluster, ReportApi::Wgpolicyk8s, &both, "podgate").await.status, 404);
    let run = audit(&config, &["-n", &both, "--policy-reports", "--report-api", "wgpolicyk8s"]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(stderr(&run).starts_with("podgate audit: PolicyReports: 1 created"), "{}", stderr(&run));
    assert!(!stderr(&run).contains("OpenReports"), "{}", stderr(&run));
    let run = audit(&config, &["-n", &both, "--policy-reports"]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let text = stderr(&run);
    let lines: Vec<&str> = text.lines().map(|line| line.rsplit_once(", ").unwrap().0).collect();
    assert_eq!(
        lines,
        [
            "podgate audit: PolicyReports: 0 created, 1 updated, 0 deleted",
            "podgate audit: OpenReports: 0 created, 1 updated, 0 deleted"
        ]
    );
    let policy_report = report(cluster, ReportApi::Wgpolicyk8s, &both, "podgate").await.body;
    let open_report = report(cluster, ReportApi::OpenReports, &both, "podgate").await.body;
    assert_eq!(policy_report["kind"], "PolicyReport");
    for key in ["summary", "results"] {
        assert_eq!(policy_report[key], open_report[key], "{key}");
    }
    assert_eq!(policy_report["results"].as_array().map(Vec::len), Some(6));

    // A conflict in one API does not keep the other from being written.
    let state = OpsState::default();
    auditor(admin.clone(), &owned, ReportApiChoice::Both).pass(&state).await;
    assert_eq!(conflicts(&state), Some(1.0));
    let body = report(cluster, ReportApi::Wgpolicyk8s, &owned, "podgate").await.body;
    assert_eq!(body["summary"], json!({"pass": 2, "fail": 4, "warn": 0, "error": 0, "skip": 0}), "{body}");
    let squatted: Value = report(cluster, ReportApi::OpenReports, &owned, "podgate").await.body;
    assert_eq!(squatted["source"], "someone");
}
