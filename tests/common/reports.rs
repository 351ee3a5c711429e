//! Shared by the audit tests on the real apiserver: the report CRDs
//! installed from `tests/fixtures/crds/`, reports read back, the auditor
//! in process and as the binary, the chart's audit ClusterRole bound to its
//! ServiceAccount, and a namespace large enough to split its reports.

use std::path::Path;
use std::process::{Command, Output};

use podgate::audit::continuous::Auditor;
use podgate::audit::policyreport::{self, ReportApi, ReportApiChoice};
use serde_json::{json, Value};

use super::apiserver::*;

/// The CRD fixtures that serve `api`'s reports.
pub fn crd_files(api: ReportApi) -> &'static [&'static str] {
    match api {
        ReportApi::Wgpolicyk8s => &["policyreports.wgpolicyk8s.io.yaml"],
        ReportApi::OpenReports => &["reports.openreports.io.yaml", "clusterreports.openreports.io.yaml"],
    }
}

/// Creates the CRDs of `api` (already there is fine) and waits until
/// discovery serves them.
pub async fn install_report_crds(cluster: &Cluster, api: ReportApi) {
    let admin = cluster.admin();
    for file in crd_files(api) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crds").join(file);
        let crd: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let answer = send(
            &admin,
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            "application/json",
            Some(&crd),
        )
        .await;
        assert!(answer.status == 201 || answer.status == 409, "{file}: {answer:?}");
    }
    super::eventually(&format!("the {} CRD to be served", api.crd()), || async {
        policyreport::served(&cluster.admin(), api).await.unwrap_or(false)
    })
    .await;
}

/// GET of one of `api`'s reports.
pub async fn report(cluster: &Cluster, api: ReportApi, ns: &str, name: &str) -> Answer {
    let path = format!("/apis/{}/namespaces/{ns}/{}/{name}", api.group_version(), api.plural());
    send(&cluster.admin(), "GET", &path, "application/json", None).await
}

/// Creates `body` as one of `api`'s reports in `ns` (someone else's report).
pub async fn create_report(cluster: &Cluster, api: ReportApi, ns: &str, body: &Value) -> Answer {
    let path = format!("/apis/{}/namespaces/{ns}/{}", api.group_version(), api.plural());
    send(&cluster.admin(), "POST", &path, "application/json", Some(body)).await
}

/// An in-process continuous auditor of `ns` writing reports to `choice`.
pub fn auditor(client: kube::Client, ns: &str, choice: ReportApiChoice) -> Auditor {
    let args = podgate::audit::AuditArgs {
        config: None,
        mode: None,
        format: podgate::audit::AuditFormat::Json,
        namespace: Some(ns.to_owned()),
        now: None,
        page_size: 100,
        kubeconfig: None,
        context: None,
        interval: None,
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        policy_reports: true,
        report_api: choice,
        log_format: podgate::telemetry::LogFormat::Text,
    };
    Auditor::new(client, podgate::config::Policy::default(), args)
}

/// The real binary: `podgate audit --kubeconfig FILE ARGS...`.
pub fn audit(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podgate"))
        .arg("audit")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

/// A pod spec that runs as root without probes (four findings per container).
pub fn root_spec(containers: &[&str]) -> Value {
    let containers: Vec<Value> = containers.iter().map(|name| json!({"name": name, "image": "nginx"})).collect();
    json!({"containers": containers})
}

/// The chart's audit ClusterRole (rendered with `values`), created and bound
/// to the chart's audit ServiceAccount: the role, and the user name that
/// impersonates the account.
pub async fn bind_chart_audit_role(cluster: &Cluster, scope: &str, values: &[&str]) -> (Value, String) {
    let objects = render_chart(cluster, scope, values, &[]);
    let audit_object = |kind: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"].as_str().unwrap().ends_with("-audit"))
            .unwrap_or_else(|| panic!("the chart's audit {kind}"))
            .clone()
    };
    let role = audit_object("ClusterRole");
    let account_name = audit_object("ServiceAccount")["metadata"]["name"].as_str().unwrap().to_owned();
    let subject = json!({"kind": "ServiceAccount", "name": account_name, "namespace": RELEASE_NAMESPACE});
    create_cluster_role_and_binding(cluster, &role, subject).await;
    (role, format!("system:serviceaccount:{RELEASE_NAMESPACE}:{account_name}"))
}

/// Creates `role` and a ClusterRoleBinding of the same name to `subject`.
pub async fn create_cluster_role_and_binding(cluster: &Cluster, role: &Value, subject: Value) {
    let admin = cluster.admin();
    let role_name = role["metadata"]["name"].as_str().unwrap();
    let answer =
        send(&admin, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", "application/json", Some(role)).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": role_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [subject]});
    let answer = send(
        &admin,
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "application/json",
        Some(&binding),
    )
    .await;
    assert_eq!(answer.status, 201, "{answer:?}");
}

/// Pods in a large namespace: 300 bare two-container root Pods, 10 results
/// each, more than 1 MiB of results.
pub const BIG_PODS: usize = 300;

/// A fresh namespace with [`BIG_PODS`] Pods.
pub async fn big_namespace(cluster: &Cluster, scope: &str) -> String {
    let big = cluster.namespace(scope).await;
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..6 {
        let client = cluster.admin();
        let big = big.clone();
        tasks.spawn(async move {
            for i in 0..BIG_PODS / 6 {
                let name = format!("pod-{chunk}-{i:02}-with-a-long-enough-name-to-matter");
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": root_spec(&["app", "sidecar"])});
                let answer = create(&client, &big, &pod).await;
                assert_eq!(answer.status, 201, "{answer:?}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    big
}

/// The reports of a [`big_namespace`] as `api` serves them: split into two
/// or more, each under the limit, with every Pod's 10 results once.
pub async fn assert_split(cluster: &Cluster, api: ReportApi, big: &str) {
    let mut total = 0;
    let mut pods = std::collections::BTreeSet::new();
    let mut parts = 0;
    for name in ["podgate", "podgate-2", "podgate-3"] {
        let answer = report(cluster, api, big, name).await;
        if answer.status == 404 {
            continue;
        }
        parts += 1;
        let size = serde_json::to_vec(&answer.body).unwrap().len();
        assert!(size < policyreport::MAX_REPORT_BYTES, "{api:?} {name}: {size} bytes");
        let results = answer.body["results"].as_array().unwrap();
        total += results.len();
        let summary: u64 = answer.body["summary"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(summary, results.len() as u64, "{api:?} {name}: the summary counts its own results");
        pods.extend(results.iter().map(|r| r["resources"][0]["name"].as_str().unwrap().to_owned()));
    }
    assert!(parts >= 2, "{api:?}: {parts} report(s): the namespace was not split");
    assert_eq!(total, BIG_PODS * 10, "{api:?}");
    assert_eq!(pods.len(), BIG_PODS, "{api:?}");
}
