//! The end-to-end harness itself (`tests/common/apiserver.rs`): a real
//! kube-apiserver comes up, its clients authenticate and impersonate as
//! documented, and podgate registered through the chart is called.

mod common;

use common::apiserver::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_authenticates_impersonates_and_calls_podgate() {
    let Some(cluster) = cluster().await else { return };
    let ns = cluster.namespace("harness").await;

    // Impersonated identities are who the apiserver says they are, and
    // have no rights until granted.
    let review = |client: kube::Client| async move {
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
        let answer =
            send(&client, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", "application/json", Some(&body))
                .await;
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.body["status"]["userInfo"].clone()
    };
    let admin = review(cluster.admin()).await;
    assert_eq!(admin["username"], "podgate-e2e-admin");
    assert!(admin["groups"].as_array().unwrap().contains(&json!("system:masters")), "{admin}");
    let alice = review(cluster.as_user("alice")).await;
    assert_eq!(alice["username"], "alice");
    let member = review(cluster.as_group("bob", "platform")).await;
    assert!(member["groups"].as_array().unwrap().contains(&json!("platform")), "{member}");
    let account = review(cluster.as_service_account(&ns, "deployer")).await;
    assert_eq!(account["username"], format!("system:serviceaccount:{ns}:deployer"));

    let pod = manifest("pod-compliant.yaml");
    let refused = create(&cluster.as_user("alice"), &ns, &pod).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    cluster.grant_edit(&ns, json!({"kind": "User", "name": "alice"})).await;
    let created = create(&cluster.as_user("alice"), &ns, &pod).await;
    assert_eq!(created.status, 201, "{created:?}");

    // podgate registered by the chart's webhook configuration sees requests
    // of its scope only.
    let podgate = Podgate::register(cluster, "harness", &[]).await;
    let denied = create(&cluster.admin(), &ns, &manifest("pod-noncompliant.yaml")).await;
    assert_eq!(denied.status, 403, "{denied:?}");
    assert!(denied.message().contains("validate.podgate.dev"), "{denied:?}");
    let other = cluster.namespace("harness-elsewhere").await;
    let before = podgate.reviews().await;
    let elsewhere = create(&cluster.admin(), &other, &manifest("pod-noncompliant.yaml")).await;
    assert_eq!(elsewhere.status, 201, "{elsewhere:?}");
    assert_eq!(podgate.reviews().await, before);
}

/// Run in a child process by the next test: starts the cluster, says what
/// it started, and panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the_cluster_goes_away_when_a_test_binary_panics"]
async fn child_starts_a_cluster_and_panics() {
    if std::env::var_os("PODGATE_E2E_CHILD").is_none() {
        return;
    }
    let Some(cluster) = cluster().await else { return };
    let pids: Vec<String> = cluster.pids().iter().map(u32::to_string).collect();
    println!("PIDS {}", pids.join(" "));
    println!("DIR {}", cluster.dir().display());
    panic!("a test fails with the cluster running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_goes_away_when_a_test_binary_panics() {
    if cluster().await.is_none() {
        return;
    }
    let output = tokio::task::spawn_blocking(|| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_starts_a_cluster_and_panics", "--ignored", "--nocapture", "--test-threads=1"])
            .env("PODGATE_E2E_CHILD", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "the child test panics:\n{stdout}");
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|line| Some(&line[line.find(prefix)? + prefix.len()..]))
            .unwrap_or_else(|| panic!("no {prefix:?} line:\n{stdout}"))
            .to_owned()
    };
    let pids = line("PIDS ");
    let dir = std::path::PathBuf::from(line("DIR "));
    assert_eq!(pids.split(' ').count(), 2, "etcd and kube-apiserver: {pids}");
    common::eventually("the child's etcd and kube-apiserver to exit and its files to go", || async {
        // A process that is gone, or a zombie waiting for init, is stopped.
        let alive = pids.split(' ').any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
        });
        !alive && !dir.exists()
    })
    .await;
}
