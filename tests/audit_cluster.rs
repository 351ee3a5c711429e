//! `podgate audit` against a real kube-apiserver (the harness of
//! `tests/common/apiserver.rs`): objects are created while podgate is not
//! registered, with the ownerReferences their controllers would set, then
//! audited by the real binary (kubeconfig, exit codes, JSON and text) and in
//! process (PolicyReports, metrics).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::apiserver::*;
use common::reports::*;
use podgate::audit::continuous::OpsState;
use podgate::audit::policyreport::{ReportApi, ReportApiChoice};
use serde_json::{json, Value};

const PODGATE: &str = env!("CARGO_BIN_EXE_podgate");

/// A kubeconfig for the cluster's admin certificate, impersonating `as_user`
/// when given (how the chart's ServiceAccount is tried).
fn kubeconfig(cluster: &Cluster, as_user: Option<&str>) -> PathBuf {
    cluster.kubeconfig(as_user)
}

async fn created(client: &kube::Client, namespace: &str, object: Value) -> Value {
    let answer = create(client, namespace, &object).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    answer.body
}

fn controller(owner: &Value) -> Value {
    json!([{"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}])
}

/// A batch pod spec that passes every check.
fn batch_spec() -> Value {
    json!({"restartPolicy": "OnFailure", "securityContext": {"runAsNonRoot": true, "runAsUser": 1000},
           "containers": [{"name": "job", "image": "busybox", "securityContext": {"allowPrivilegeEscalation": false}}]})
}

/// The four findings of a root container without probes, as the JSON contract prints them.
fn root_findings(prefix: &str, index: usize, name: &str, pods: Option<usize>) -> Vec<Value> {
    let c = format!("{prefix}.containers[{index}]");
    let mut findings = vec![
        json!({"check": "runAsNonRoot", "action": "deny", "field": format!("{c}.securityContext.runAsNonRoot"), "container": name,
               "message": format!("runAsNonRoot != true (pod or container \"{name}\" must set securityContext.runAsNonRoot=true)")}),
        json!({"check": "allowPrivilegeEscalation", "action": "deny", "field": format!("{c}.securityContext.allowPrivilegeEscalation"), "container": name,
               "message": format!("allowPrivilegeEscalation != false (container \"{name}\" must set securityContext.allowPrivilegeEscalation=false)")}),
        json!({"check": "livenessProbe", "action": "deny", "field": format!("{c}.livenessProbe"), "container": name,
               "message": format!("livenessProbe missing (container \"{name}\" must set livenessProbe)")}),
        json!({"check": "readinessProbe", "action": "deny", "field": format!("{c}.readinessProbe"), "container": name,
               "message": format!("readinessProbe missing (container \"{name}\" must set readinessProbe)")}),
    ];
    for finding in &mut findings {
        finding["line"] = Value::Null;
        if let Some(pods) = pods {
            finding["pods"] = json!(pods);
        }
    }
    findings
}

/// Deployment -> ReplicaSet -> 3 Pods (one with an injected sidecar),
/// CronJob -> Job -> Pod, and a bare compliant Pod.
async fn populate(cluster: &Cluster, ns: &str) {
    let admin = cluster.admin();
    let labels = json!({"app": "web"});
    let template = json!({"metadata": {"labels": labels}, "spec": root_spec(&["app"])});
    let deployment = created(
        &admin,
        ns,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": labels}, "template": template}}),
    )
    .await;
    let replicaset = created(
        &admin,
        ns,
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "ownerReferences": controller(&deployment)},
        "spec": {"selector": {"matchLabels": labels}, "template": template}}),
    )
    .await;
    for (name, containers) in [("web-1-a", &["app"][..]), ("web-1-b", &["app"]), ("web-1-c", &["app", "mesh"])] {
        created(
            &admin,
            ns,
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "ownerReferences": controller(&replicaset)},
            "spec": root_spec(containers)}),
        )
        .await;
    }
    let cronjob = created(
        &admin,
        ns,
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": batch_spec()}}}}}),
    )
    .await;
    let job = created(
        &admin,
        ns,
        json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "nightly-1", "ownerReferences": controller(&cronjob)},
        "spec": {"template": {"spec": batch_spec()}}}),
    )
    .await;
    created(
        &admin,
        ns,
        json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nightly-1-x", "ownerReferences": controller(&job)}, "spec": batch_spec()}),
    )
    .await;
    created(&admin, ns, named(manifest("pod-compliant.yaml"), "lonely")).await;
}

fn expected(ns: &str) -> Value {
    let mut sidecar = root_findings("spec", 1, "mesh", None);
    sidecar.iter_mut().for_each(|f| {
        f.as_object_mut().unwrap().remove("pods");
    });
    // `file` is the API path and `line` null: the contract of `podgate check`, for objects from no file.
    let lonely = format!("api/v1/namespaces/{ns}/pods/lonely");
    let web = format!("apis/apps/v1/namespaces/{ns}/deployments/web");
    let nightly = format!("apis/batch/v1/namespaces/{ns}/cronjobs/nightly");
    json!({"results": [
        {"source": lonely, "file": lonely, "line": null, "apiVersion": "v1", "kind": "Pod",
         "namespace": ns, "name": "lonely", "allowed": true, "exempt": null, "exemptions": [], "notices": [],
         "violations": []},
        {"source": web, "file": web, "line": null, "apiVersion": "apps/v1", "kind": "Deployment",
         "namespace": ns, "name": "web", "allowed": false, "exempt": null, "exemptions": [], "notices": [],
         "violations": root_findings("spec.template.spec", 0, "app", Some(3)), "pods": 3,
         "differing": [{"kind": "Pod", "count": 1, "examples": [format!("api/v1/namespaces/{ns}/pods/web-1-c")],
                        "allowed": false, "added": sidecar, "missing": []}]},
        {"source": nightly, "file": nightly, "line": null, "apiVersion": "batch/v1", "kind": "CronJob",
         "namespace": ns, "name": "nightly", "allowed": true, "exempt": null, "exemptions": [], "notices": [],
         "violations": [], "pods": 1},
    ], "skipped": [], "errors": []})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_audit_groups_by_owner_and_pages_give_the_same_answer() {
    let Some(cluster) = cluster().await else { return };
    let ns = cluster.namespace("audit").await;
    populate(cluster, &ns).await;
    let config = kubeconfig(cluster, None);

    let json_run = audit(&config, &["-n", &ns, "--format", "json"]);
    assert_eq!(json_run.status.code(), Some(1), "{}", String::from_utf8_lossy(&json_run.stderr));
    let report: Value = serde_json::from_slice(&json_run.stdout).unwrap();
    assert_eq!(report, expected(&ns), "{}", serde_json::to_string_pretty(&report).unwrap());

    // Two objects a page: many continue tokens, the same answer byte for byte.
    let paged = audit(&config, &["-n", &ns, "--format", "json", "--page-size", "2"]);
    assert_eq!(paged.status.code(), Some(1));
    assert_eq!(String::from_utf8(paged.stdout).unwrap(), String::from_utf8(json_run.stdout).unwrap());

    // Audit mode: nothing denied (exit 0), the same findings as would-be denials.
    let audit_mode = audit(&config, &["-n", &ns, "--format", "json", "--mode", "audit"]);
    assert_eq!(audit_mode.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&audit_mode.stdout).unwrap();
    assert_eq!(report["results"][1]["violations"][0]["action"], "warn");
    assert!(report["results"][1]["violations"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("would deny (audit mode): "));

    let text = audit(&config, &["-n", &ns]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains(&format!("DENY  Deployment {ns}/web  (apis/apps/v1/namespaces/{ns}/deployments/web)  [3 pods]")),
        "{text}"
    );
    assert!(text.contains("differs: 1 Pod (api/v1/namespaces/"), "{text}");
    assert!(text.contains("3 objects reported (4 pods counted under their owners): 1 denied, 0 allowed with warnings, 2 passed, 0 exempt"), "{text}");
    assert!(text.contains(&format!("\n  {ns:<26}       1       0       2       0\n")), "{text}");
    // livenessProbe: the Deployment, and its 3 Pods (the sidecar's Pod counted once).
    assert!(text.contains("  livenessProbe                                        1       0     3\n"), "{text}");

    // A policy exempting by user cannot apply: the output says so.
    let policy = cluster.scratch("policy").join("policy.yaml");
    std::fs::write(&policy, "exemptions:\n- usernames: [ci]\n  reason: ci pipeline\n").unwrap();
    let noted = audit(&config, &["-n", &ns, "--format", "json", "--config", policy.to_str().unwrap()]);
    let report: Value = serde_json::from_slice(&noted.stdout).unwrap();
    assert!(report["notes"][0].as_str().unwrap().contains("\"ci pipeline\" selects by user"), "{report}");

    // A waiver naming the Deployment decides in the audit as in the webhook
    // and `podgate check`: it applies until `expires`, and not a second after.
    let waiver = cluster.scratch("waiver").join("policy.yaml");
    std::fs::write(
        &waiver,
        format!(
            "exemptions:\n- name: legacy-web\n  objects: [{{namespace: {ns}, kind: Deployment, name: web}}]\n  \
             expires: 2030-01-01T00:00:00Z\n  ticket: SEC-1\n  reason: legacy web until its rewrite\n"
        ),
    )
    .unwrap();
    let web_result = |now: &str| -> Value {
        let run = audit(&config, &["-n", &ns, "--format", "json", "--config", waiver.to_str().unwrap(), "--now", now]);
        let report: Value = serde_json::from_slice(&run.stdout).unwrap();
        report["results"].as_array().unwrap().iter().find(|r| r["name"] == "web").unwrap().clone()
    };
    let waived = web_result("2029-12-31T23:59:59Z");
    assert_eq!(waived["exempt"], "legacy web until its rewrite", "{waived}");
    assert_eq!(waived["allowed"], true, "{waived}");
    assert_eq!(waived["exemptions"][0]["rule"], "legacy-web", "{waived}");
    assert_eq!(waived["exemptions"][0]["ticket"], "SEC-1", "{waived}");
    assert_eq!(waived["exemptions"][0]["expires"], "2030-01-01T00:00:00Z", "{waived}");
    let expired = web_result("2030-01-01T00:00:01Z");
    assert_eq!(expired["exempt"], Value::Null, "{expired}");
    assert_eq!(expired["allowed"], false, "{expired}");
}

/// The chart's ClusterRole for the auditor, bound to a ServiceAccount; the
/// auditor impersonating it lists everything, and a role without `list` on
/// one resource fails with one error naming that resource and verb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_service_account_is_enough_and_a_missing_permission_is_named() {
    let Some(cluster) = cluster().await else { return };
    let ns = cluster.namespace("audit-rbac").await;
    populate(cluster, &ns).await;
    let (role, user) = bind_chart_audit_role(cluster, "audit-rbac", &["audit.enabled=true"]).await;
    let role_name = role["metadata"]["name"].as_str().unwrap().to_owned();
    let config = kubeconfig(cluster, Some(&user));
    // RBAC caches settle within a moment; the all-namespaces audit must then succeed.
    let mut last = None;
    for _ in 0..50 {
        let run = audit(&config, &["--format", "json"]);
        if run.status.code() == Some(1) {
            last = Some(run);
            break;
        }
        last = Some(run);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let run = last.unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stderr));
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    let ours: Vec<&Value> =
        report["results"].as_array().unwrap().iter().filter(|r| r["namespace"] == ns.as_str()).collect();
    assert_eq!(Value::from(ours.into_iter().cloned().collect::<Vec<_>>()), expected(&ns)["results"]);

    // The role is enough to write PolicyReports too.
    install_report_crds(cluster, ReportApi::Wgpolicyk8s).await;
    let run = audit(&config, &["-n", &ns, "--policy-reports"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("PolicyReports: 1 created, 0 updated, 0 deleted"), "{stderr}");
    assert_eq!(policy_report(cluster, &ns, "podgate").await.status, 200);

    // The same user without cronjobs in its role.
    let mut narrow = role.clone();
    narrow["metadata"]["name"] = json!(format!("{role_name}-narrow"));
    for rule in narrow["rules"].as_array_mut().unwrap() {
        if let Some(resources) = rule["resources"].as_array_mut() {
            resources.retain(|r| r != "cronjobs");
        }
    }
    let narrow_user = "audit-narrow";
    let subject = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": narrow_user});
    create_cluster_role_and_binding(cluster, &narrow, subject).await;
    let config = kubeconfig(cluster, Some(narrow_user));
    let mut stderr = String::new();
    for _ in 0..50 {
        let run = audit(&config, &[]);
        stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        if run.status.code() == Some(2) && stderr.contains("cronjobs.batch") {
            // Others of the role may still be settling: wait for the list of deployments to work.
            if !stderr.contains("deployments") {
                assert_eq!(run.stdout, b"", "nothing printed on stdout after an error");
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("podgate audit: permission denied: cannot list cronjobs.batch in all namespaces (grant the verbs get, list and watch on cronjobs.batch): "),
        "{stderr}"
    );
    assert!(stderr.contains("cannot list resource \"cronjobs\""), "{stderr}");
}

async fn policy_report(cluster: &Cluster, ns: &str, name: &str) -> Answer {
    report(cluster, ReportApi::Wgpolicyk8s, ns, name).await
}

/// PolicyReports: written per namespace, updated when an object is fixed,
/// gone when it is deleted, split under 1 MiB, and another's report is never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reports_follow_the_cluster_and_stay_under_the_size_limit() {
    let Some(cluster) = cluster().await else { return };
    install_report_crds(cluster, ReportApi::Wgpolicyk8s).await;
    let ns = cluster.namespace("audit-reports").await;
    let admin = cluster.admin();
    let state = OpsState::default();
    let mut reports = auditor(admin.clone(), &ns, ReportApiChoice::Wgpolicyk8s);

    // Someone else's report in the namespace: never touched.
    let foreign = json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
        "metadata": {"name": "kyverno-pol"}, "results": [{"policy": "other", "result": "pass"}]});
    let answer = send(
        &admin,
        "POST",
        &format!("/apis/wgpolicyk8s.io/v1alpha2/namespaces/{ns}/policyreports"),
        "application/json",
        Some(&foreign),
    )
    .await;
    assert_eq!(answer.status, 201, "{answer:?}");

    let labels = json!({"app": "api"});
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": root_spec(&["app"])}}});
    created(&admin, &ns, deployment.clone()).await;
    assert!(reports.pass(&state).await);
    let written = policy_report(cluster, &ns, "podgate").await;
    assert_eq!(written.status, 200, "{written:?}");
    let body = &written.body;
    assert_eq!(body["metadata"]["labels"]["app.kubernetes.io/managed-by"], "podgate");
    assert_eq!(body["summary"], json!({"pass": 2, "fail": 4, "warn": 0, "error": 0, "skip": 0}));
    let first = &body["results"][0];
    assert_eq!(first["policy"], "podgate");
    assert_eq!(first["rule"], "runAsNonRoot");
    assert_eq!(first["result"], "fail");
    assert_eq!(first["severity"], "high");
    assert_eq!(first["category"], "Pod Security");
    assert_eq!(first["properties"]["field"], "spec.template.spec.containers[0].securityContext.runAsNonRoot");
    assert_eq!(
        first["resources"],
        json!([{"apiVersion": "apps/v1", "kind": "Deployment", "namespace": ns, "name": "api"}])
    );

    // Fixed: every check passes on the next pass.
    let mut fixed = deployment.clone();
    fixed["spec"]["template"]["spec"] = manifest("pod-compliant.yaml")["spec"].clone();
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/api");
    let answer = send(&admin, "PUT", &path, "application/json", Some(&fixed)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(reports.pass(&state).await);
    let body = policy_report(cluster, &ns, "podgate").await.body;
    assert_eq!(body["summary"], json!({"pass": 6, "fail": 0, "warn": 0, "error": 0, "skip": 0}));

    // Deleted: nothing left to report, the report goes; the foreign one stays.
    let answer = send(&admin, "DELETE", &path, "application/json", None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(reports.pass(&state).await);
    assert_eq!(policy_report(cluster, &ns, "podgate").await.status, 404);
    assert_eq!(policy_report(cluster, &ns, "kyverno-pol").await.status, 200);

    // A name taken by a report that is not podgate's: left alone, counted.
    let squatter = json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
        "metadata": {"name": "podgate"}, "results": []});
    send(
        &admin,
        "POST",
        &format!("/apis/wgpolicyk8s.io/v1alpha2/namespaces/{ns}/policyreports"),
        "application/json",
        Some(&squatter),
    )
    .await;
    created(&admin, &ns, deployment.clone()).await;
    reports.pass(&state).await;
    let body = policy_report(cluster, &ns, "podgate").await.body;
    assert_eq!(body["results"], json!([]), "the squatter's report was changed: {body}");
    assert!(state
        .metrics
        .render_prometheus_text()
        .contains("podgate_audit_errors_total{reason=\"policy_report_conflict\"} 1"));

    // A large namespace, more than 1 MiB of results: split into reports each under the limit.
    let big = big_namespace(cluster, "audit-big").await;
    assert!(auditor(cluster.admin(), &big, ReportApiChoice::Wgpolicyk8s).pass(&state).await);
    assert_split(cluster, ReportApi::Wgpolicyk8s, &big).await;
}

/// Continuous mode: the real binary's /readyz turns ready after a pass and
/// /metrics passes promtool with the pass's numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_audit_serves_metrics() {
    let Some(cluster) = cluster().await else { return };
    let ns = cluster.namespace("audit-metrics").await;
    populate(cluster, &ns).await;
    let config = kubeconfig(cluster, None);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(PODGATE)
        .args(["audit", "--interval", "1s", "--metrics-listen", &listen, "-n", &ns, "--kubeconfig"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{listen}{path}");
    common::eventually("the auditor to be ready", || async {
        http.get(url("/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let metrics = http.get(url("/metrics")).send().await.unwrap().text().await.unwrap();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let value = |series: &str| common::metric_value(&metrics, series);
    assert_eq!(value("podgate_audit_objects{kind=\"Deployment\",result=\"would_deny\"}"), Some(1.0), "{metrics}");
    assert_eq!(value("podgate_audit_objects{kind=\"CronJob\",result=\"pass\"}"), Some(1.0));
    assert_eq!(value("podgate_audit_objects{kind=\"Pod\",result=\"pass\"}"), Some(1.0));
    // The Deployment's own four and the sidecar's four.
    assert_eq!(value("podgate_audit_findings{check=\"livenessProbe\",action=\"deny\"}"), Some(2.0));
    assert!(value("podgate_audit_last_success_timestamp_seconds").unwrap() > 1.7e9);
    assert!(value("podgate_audit_duration_seconds").unwrap() > 0.0);
    assert_eq!(value("podgate_audit_errors_total{reason=\"forbidden\"}"), Some(0.0));
    assert!(!metrics.contains(&ns), "no namespace in metrics");
    if common::promtool_available() {
        common::promtool_check(&metrics);
    }
}

/// `podgate audit` judges stored user-namespaced workloads (`hostUsers:
/// false`, UID 0) as the webhook does: passed by default, as Pod Security
/// Admission passes them; refused with `userNamespaces: enforce`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespaced_workloads_pass_unless_the_policy_enforces_inside_user_namespaces() {
    let Some(cluster) = cluster().await else { return };
    let ns = cluster.namespace("audit-userns").await;
    let admin = cluster.admin();
    let pod = manifest("pod-user-namespace.yaml");
    let labels = json!({"app": "userns-web"});
    created(
        &admin,
        &ns,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "userns-web"},
        "spec": {"selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": pod["spec"].clone()}}}),
    )
    .await;
    created(&admin, &ns, pod).await;
    let config = kubeconfig(cluster, None);

    let relaxed = audit(&config, &["-n", &ns, "--format", "json"]);
    assert_eq!(relaxed.status.code(), Some(0), "{}", String::from_utf8_lossy(&relaxed.stderr));
    let report: Value = serde_json::from_slice(&relaxed.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{report}");
    assert!(results.iter().all(|r| r["allowed"] == true && r["violations"] == json!([])), "{report}");

    let policy = cluster.scratch("userns-policy").join("policy.yaml");
    std::fs::write(&policy, "checks:\n  runAsUser:\n    userNamespaces: enforce\n").unwrap();
    let strict = audit(&config, &["-n", &ns, "--format", "json", "--config", policy.to_str().unwrap()]);
    assert_eq!(strict.status.code(), Some(1), "{}", String::from_utf8_lossy(&strict.stderr));
    let report: Value = serde_json::from_slice(&strict.stdout).unwrap();
    let fields: Vec<(&str, &str)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["violations"].as_array().unwrap().iter())
        .map(|v| (v["check"].as_str().unwrap(), v["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        fields,
        [
            ("runAsUser", "spec.securityContext.runAsUser"),
            ("runAsUser", "spec.template.spec.securityContext.runAsUser")
        ],
        "{report}"
    );
}
