//! Waivers against a real kube-apiserver (`tests/common/apiserver.rs`):
//! podgate registered by the chart, its policy's exemptions set through the
//! chart's values, and objects created through the API as their real
//! creators would create them. There is no controller-manager, so the test
//! creates a Deployment's ReplicaSet and Pods itself, impersonating the
//! controllers' service accounts, with real ownerReferences (uids from the
//! apiserver) and, for Pods, `generateName` as the controllers use it.
//!
//! Expiry runs on podgate's real clock here: the rules expire a year from
//! now, in three days (inside `warnBeforeExpiry`), and a second ago. The
//! exact boundaries are `tests/waivers.rs`' table, with a set clock.

mod common;

use common::apiserver::*;
use serde_json::{json, Value};

const SCOPE: &str = "waivers";
const DEPLOYMENT_CONTROLLER: &str = "deployment-controller";
const REPLICASET_CONTROLLER: &str = "replicaset-controller";

/// A pod spec that breaks four checks (root, may escalate, no probes).
fn root_spec() -> Value {
    json!({"containers": [{"name": "app", "image": "registry.example.com/billing:1"}]})
}

/// A compliant app container and, as Istio's injector adds it, an
/// `istio-proxy` with a readiness probe and no liveness probe.
fn meshed_spec() -> Value {
    json!({"containers": [
        {"name": "app", "image": "registry.example.com/web:1",
         "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "allowPrivilegeEscalation": false},
         "ports": [{"name": "http", "containerPort": 8080}],
         "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
         "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}}},
        {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0",
         "securityContext": {"runAsNonRoot": true, "runAsUser": 1337, "allowPrivilegeEscalation": false},
         "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "periodSeconds": 15, "timeoutSeconds": 3}}
    ]})
}

fn labels() -> Value {
    json!({"app": "x"})
}

fn deployment(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": labels()}, "template": {"metadata": {"labels": labels()}, "spec": spec}}
    })
}

fn owner_reference(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": true
    })
}

/// The ReplicaSet the deployment controller makes of `deployment` (as stored).
fn replica_set_of(deployment: &Value, hash: &str) -> Value {
    let name = format!("{}-{hash}", deployment["metadata"]["name"].as_str().unwrap());
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "ownerReferences": [owner_reference(deployment)]},
        "spec": {"selector": {"matchLabels": labels()}, "template": deployment["spec"]["template"]}
    })
}

/// A Pod the replicaset controller makes of `replica_set` (as stored), by
/// `generateName`: the apiserver picks the name before the webhook sees it.
fn pod_of(replica_set: &Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": format!("{}-", replica_set["metadata"]["name"].as_str().unwrap()),
            "labels": labels(),
            "ownerReferences": [owner_reference(replica_set)]
        },
        "spec": replica_set["spec"]["template"]["spec"]
    })
}

/// RFC 3339, whole seconds, `seconds` from now.
fn from_now(seconds: i64) -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + seconds).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waivers_in_a_real_cluster() {
    let Some(cluster) = cluster().await else { return };
    let shop = cluster.namespace(SCOPE).await;
    let other = cluster.namespace(SCOPE).await;
    let payments = cluster.namespace(SCOPE).await;
    for ns in [&shop, &other, &payments] {
        cluster.grant_edit(ns, json!({"kind": "User", "name": "alice"})).await;
        for controller in [DEPLOYMENT_CONTROLLER, REPLICASET_CONTROLLER] {
            cluster
                .grant_edit(ns, json!({"kind": "ServiceAccount", "name": controller, "namespace": "kube-system"}))
                .await;
        }
    }
    let in_a_year = from_now(365 * 86_400);
    let in_three_days = from_now(3 * 86_400);
    let a_second_ago = from_now(-1);
    let values: Vec<String> = [
        "exemptions[0].namespaces[0]=kube-system".to_owned(),
        "exemptions[0].reason=the control plane".to_owned(),
        "exemptions[1].name=legacy-billing".to_owned(),
        format!("exemptions[1].objects[0].namespace={shop}"),
        "exemptions[1].objects[0].kind=Deployment".to_owned(),
        "exemptions[1].objects[0].name=legacy-billing".to_owned(),
        format!("exemptions[1].expires={in_a_year}"),
        "exemptions[1].ticket=SEC-123".to_owned(),
        "exemptions[1].reason=runs as root until its rewrite".to_owned(),
        "exemptions[2].name=soon".to_owned(),
        format!("exemptions[2].objects[0].namespace={shop}"),
        "exemptions[2].objects[0].name=soon".to_owned(),
        format!("exemptions[2].expires={in_three_days}"),
        "exemptions[2].ticket=SEC-9".to_owned(),
        "exemptions[2].reason=almost fixed".to_owned(),
        "exemptions[3].name=gone".to_owned(),
        format!("exemptions[3].objects[0].namespace={shop}"),
        "exemptions[3].objects[0].name=gone".to_owned(),
        format!("exemptions[3].expires={a_second_ago}"),
        "exemptions[3].reason=expired".to_owned(),
        "exemptions[4].name=payments-rollout".to_owned(),
        format!("exemptions[4].namespaces[0]={payments}"),
        "exemptions[4].effect=audit".to_owned(),
        "exemptions[4].reason=payments still sees warnings only".to_owned(),
        "exemptions[5].name=mesh-probes".to_owned(),
        format!("exemptions[5].namespaces[0]={shop}"),
        "exemptions[5].containers[0]=istio-proxy".to_owned(),
        "exemptions[5].checks[0]=livenessProbe".to_owned(),
        "exemptions[5].reason=istio-proxy has no liveness probe".to_owned(),
    ]
    .into();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let podgate = Podgate::register(cluster, SCOPE, &values).await;
    let admin = cluster.admin();
    let alice = cluster.as_user("alice");
    let deployment_controller = cluster.as_service_account("kube-system", DEPLOYMENT_CONTROLLER);
    let replicaset_controller = cluster.as_service_account("kube-system", REPLICASET_CONTROLLER);

    // The Deployment named in the rule, its ReplicaSet and Pod from the controllers.
    let created = create(&alice, &shop, &deployment("legacy-billing", root_spec())).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert!(created.warnings.is_empty(), "{created:?}");
    let rs = create(&deployment_controller, &shop, &replica_set_of(&created.body, "5d8f7c9b4")).await;
    assert_eq!(rs.status, 201, "{rs:?}");
    let pod = create(&replicaset_controller, &shop, &pod_of(&rs.body)).await;
    assert_eq!(pod.status, 201, "{pod:?}");
    assert!(pod.body["metadata"]["name"].as_str().unwrap().starts_with("legacy-billing-5d8f7c9b4-"));

    // A user cannot borrow it: the same Pod with the same real ownerReference,
    // a ReplicaSet claiming the Deployment, the same name in another namespace.
    let forged = create(&alice, &shop, &pod_of(&rs.body)).await;
    assert_eq!(forged.status, 403, "{forged:?}");
    assert!(forged.message().contains("runAsNonRoot"), "{forged:?}");
    let forged_rs = create(&alice, &shop, &replica_set_of(&created.body, "aaaaaaaaa")).await;
    assert_eq!(forged_rs.status, 403, "{forged_rs:?}");
    let elsewhere = create(&alice, &other, &deployment("legacy-billing", root_spec())).await;
    assert_eq!(elsewhere.status, 403, "{elsewhere:?}");

    // Within warnBeforeExpiry: admitted, with the warning kubectl prints.
    let soon = create(&alice, &shop, &deployment("soon", root_spec())).await;
    assert_eq!(soon.status, 201, "{soon:?}");
    let expected = format!("exemption \"soon\" expires on {in_three_days} (SEC-9)");
    assert!(soon.warnings.iter().any(|w| w.ends_with(&expected)), "{:?}, want {expected}", soon.warnings);
    assert!(soon
        .warnings
        .iter()
        .all(|w| w.chars().count() < 256 + "admission webhook \"validate.podgate.dev\" ".len()));

    // Past expires: no longer applies.
    let gone = create(&alice, &shop, &deployment("gone", root_spec())).await;
    assert_eq!(gone.status, 403, "{gone:?}");

    // Audit-only: admitted, every would-be denial a warning.
    let audited = create(&alice, &payments, &deployment("checkout", root_spec())).await;
    assert_eq!(audited.status, 201, "{audited:?}");
    assert_eq!(audited.warnings.iter().filter(|w| w.contains("would deny (audit mode): ")).count(), 4, "{audited:?}");

    // An injected istio-proxy: the Deployment (written without it) passes,
    // its Pods (created with it, as the mesh's injector leaves them) pass
    // only where the containers rule applies.
    for (ns, expected) in [(&shop, 201), (&other, 403)] {
        let mut app_only = meshed_spec();
        app_only["containers"].as_array_mut().unwrap().truncate(1);
        let web = create(&alice, ns, &deployment("web", app_only)).await;
        assert_eq!(web.status, 201, "{web:?}");
        let rs = create(&deployment_controller, ns, &replica_set_of(&web.body, "6c9f8d7b5")).await;
        assert_eq!(rs.status, 201, "{rs:?}");
        let mut injected = pod_of(&rs.body);
        injected["spec"] = meshed_spec();
        let pod = create(&replicaset_controller, ns, &injected).await;
        assert_eq!(pod.status, expected, "{ns}: {pod:?}");
        if expected == 403 {
            assert!(pod.message().contains("livenessProbe missing (container \"istio-proxy\""), "{pod:?}");
        }
    }

    // The webhook counted the waivers by rule.
    let metrics = podgate.harness.metrics().await;
    for expected in [
        r#"podgate_exemptions_total{rule="legacy-billing",effect="exempt",reason="runs as root until its rewrite"} 3"#,
        r#"podgate_exemptions_total{rule="payments-rollout",effect="audit",reason="payments still sees warnings only"} 1"#,
        r#"podgate_exemption_expiry_timestamp_seconds{rule="gone"}"#,
    ] {
        assert!(metrics.contains(expected), "missing {expected} in\n{metrics}");
    }
    drop(admin);
    podgate.unregister(cluster).await;
}
