//! What `podgate fix` writes, judged by the real kube-apiserver: every
//! object of every fixed fixture is created with `dryRun=All` (validated
//! and defaulted, never stored), and the one edit fix refuses to make
//! (allowPrivilegeEscalation=false on a privileged container) is refused by
//! the API too. No webhook is registered: this is the API's own validation.

mod common;

use std::path::Path;
use std::process::Command;

use common::apiserver::*;
use serde::Deserialize;
use serde_json::{json, Value};

fn fixture(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fix").join(relative)
}

/// The documents of a YAML file, blank ones dropped.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("a YAML document"))
        .filter(|value| !value.is_null())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_accepts_every_fixed_manifest() {
    let Some(cluster) = cluster().await else { return };
    let files = ["kinds.yaml", "sidecars.yaml", "windows.yaml", "multi.yaml", "deployment.yaml"];
    let dir = tempfile::tempdir().unwrap();
    for file in ["kinds.yaml", "sidecars.yaml", "windows.yaml", "multi.yaml"] {
        std::fs::copy(fixture(file), dir.path().join(file)).unwrap();
    }
    std::fs::copy(fixture("hardened/deployment.yaml"), dir.path().join("deployment.yaml")).unwrap();
    std::fs::copy(fixture("hardened/Dockerfile"), dir.path().join("Dockerfile")).unwrap();
    let fix = Command::new(env!("CARGO_BIN_EXE_podgate"))
        .args(["fix", "--tcp-probes", "--healthcheck", "orders=Dockerfile", "."])
        .current_dir(dir.path())
        .env_remove("PODGATE_CONFIG")
        .output()
        .unwrap();
    // multi.yaml keeps findings for a person (exit 1); nothing failed.
    assert_eq!(fix.status.code(), Some(1), "{}", String::from_utf8_lossy(&fix.stderr));

    cluster.create_namespace("shop", "fix").await;
    let admin = cluster.admin();
    let mut created = 0;
    for file in files {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert_ne!(text, std::fs::read_to_string(fixture(file)).unwrap_or_default(), "{file} was fixed");
        for object in documents(&text) {
            let answer = create_dry_run(&admin, "shop", &object).await;
            assert_eq!(answer.status, 201, "{file}: {} {}: {answer:?}", object["kind"], object["metadata"]["name"]);
            created += 1;
        }
    }
    assert_eq!(created, 12, "every object of every file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_refuses_what_fix_leaves_for_a_person() {
    let Some(cluster) = cluster().await else { return };
    cluster.create_namespace("legacy", "fix").await;
    let pod = |security_context: Value| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "legacy", "namespace": "legacy"},
            "spec": {"containers": [{"name": "root", "image": "legacy:1", "securityContext": security_context}]}
        })
    };
    let admin = cluster.admin();
    // As written: accepted.
    let answer = create_dry_run(&admin, "legacy", &pod(json!({"privileged": true}))).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    // With the field fix would otherwise add: refused, so fix leaves it.
    for security_context in [
        json!({"privileged": true, "allowPrivilegeEscalation": false}),
        json!({"capabilities": {"add": ["CAP_SYS_ADMIN"]}, "allowPrivilegeEscalation": false}),
    ] {
        let answer = create_dry_run(&admin, "legacy", &pod(security_context.clone())).await;
        assert_eq!(answer.status, 422, "{security_context}: {answer:?}");
        assert!(answer.message().contains("allowPrivilegeEscalation"), "{answer:?}");
    }
    // A Windows pod may not set it at all.
    let mut windows = pod(json!({"allowPrivilegeEscalation": false}));
    windows["spec"]["os"] = json!({"name": "windows"});
    let answer = create_dry_run(&admin, "legacy", &windows).await;
    assert_eq!(answer.status, 422, "{answer:?}");
}
