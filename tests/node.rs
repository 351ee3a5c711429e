//! podgate on a real node: `deploy/node.sh up` brings up a single-node
//! cluster (etcd, kube-apiserver, controller-manager, scheduler,
//! containerd, kubelet, kube-proxy) and `helm install`s the chart with its
//! default values (but the locally built image and `pullPolicy: Never`)
//! into a namespace enforcing Pod Security `restricted`; then each
//! behaviour below is checked on it, in order, and the cluster is taken
//! down and checked to have left nothing behind.
//!
//! One `#[test]` of named steps rather than one test per behaviour: the
//! machine holds one such cluster at a time (node IP, bridge, iptables),
//! bringing it up costs most of a minute, and the steps must run in order
//! (the disruptions change the release, `helm uninstall` ends it). Each
//! step prints its name and time; a failing one names itself and shows the
//! components' last log lines.
//!
//! - `install_is_ready`: two replicas Ready under `restricted`, both Pods
//!   in the Service's endpoints, the webhook registered with `Fail`.
//! - `the_service_admits_and_denies`: a compliant Pod is created and a
//!   non-compliant one denied, with podgate's message, through the chart's
//!   Service (the API server calls its endpoints).
//! - `the_pods_serve_their_declared_probes_and_ports`: every probe and port
//!   the chart declares, fetched from each Pod's IP as the kubelet and the
//!   API server do (the webhook port over TLS with the chart's CA and the
//!   Service's DNS name).
//! - `kubectl_logs_are_json_lines`.
//! - `the_in_cluster_auditor_writes_policy_reports`: `audit.enabled`, the
//!   auditor reads the API through the `kubernetes` Service and writes a
//!   PolicyReport with a `fail` for a Pod the webhook never saw.
//! - `latency_through_the_pod_network`: the API server's own histograms of
//!   dry-run Pod creations with podgate's webhook and without one.
//! - `disruptions_under_admission_traffic`: several clients create Pods
//!   (`dryRun=All`) all along while podgate is rolled, loses a Pod, is
//!   upgraded (policy, certificate, image tag), scaled 2 -> 3 -> 2, and
//!   has a replica killed with SIGKILL. Every graceful disruption must
//!   cost no admission; the SIGKILL's cost is measured and reported.
//! - `helm_uninstall_leaves_nothing_that_blocks`.
//! - `down_leaves_nothing_behind`.
//!
//! Needs root and the tools of `.ci/install.d/node.sh`; skipped loudly
//! without them unless `PODGATE_REQUIRE_TOOLS=1`. The image carries
//! `PODGATE_BINARY` (default: this build's `podgate`). Tuning:
//! `PODGATE_NODE_CREATIONS` (latency sample, default 200),
//! `PODGATE_NODE_CLIENTS` (load clients, default 6),
//! `PODGATE_NODE_SETTLE` (seconds of traffic after each disruption is over,
//! default 3). docs/real-node.md has the figures and what they mean.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::apiserver::{manifest, send};
use common::histogram::{buckets, count, delta, quantile};
use common::node::{leftovers, recorded_pids, Node, NAMESPACE, RELEASE};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};

const APPS: &str = "node-apps";
const LOAD: &str = "node-load";
const SELECTOR: &str = "app.kubernetes.io/name=podgate,app.kubernetes.io/instance=podgate";
/// How long a step may wait for the cluster to reach a state.
const PATIENCE: Duration = Duration::from_secs(120);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn note(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{text}\n").as_bytes());
}

/// Polls `condition` every 100 ms until it holds; fails after [`PATIENCE`].
async fn until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out ({PATIENCE:?}) waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podgate_on_a_real_node() {
    let started = Instant::now();
    let Some(node) = Node::up() else { return };
    note(&format!("node up with podgate installed: {:.1} s", started.elapsed().as_secs_f64()));
    let client = node.client().await;
    let pids = recorded_pids(&node.dir);

    let steps = Steps { node: &node, client: client.clone() };
    steps.run("install_is_ready", steps.install_is_ready()).await;
    steps.run("the_service_admits_and_denies", steps.the_service_admits_and_denies()).await;
    steps.run("the_pods_serve_their_declared_probes_and_ports", steps.probes_and_ports()).await;
    steps.run("kubectl_logs_are_json_lines", steps.kubectl_logs_are_json_lines()).await;
    steps.run("the_in_cluster_auditor_writes_policy_reports", steps.auditor()).await;
    steps.run("latency_through_the_pod_network", steps.latency()).await;
    steps.run("disruptions_under_admission_traffic", steps.disruptions()).await;
    steps.run("helm_uninstall_leaves_nothing_that_blocks", steps.uninstall()).await;

    let down = Instant::now();
    node.down();
    let left = leftovers(&node.dir, &pids);
    assert!(left.is_empty(), "down_leaves_nothing_behind: left {left:?}");
    note(&format!(
        "step down_leaves_nothing_behind: ok ({:.1} s); whole test {:.1} s",
        down.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
}

struct Steps<'a> {
    node: &'a Node,
    client: kube::Client,
}

impl Steps<'_> {
    /// Runs a step; a failure names it and shows the components' logs.
    async fn run(&self, name: &str, step: impl std::future::Future<Output = ()>) {
        let guard = StepGuard { name, node: self.node, started: Instant::now() };
        step.await;
        drop(guard);
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// podgate's Pods (not the auditor's), terminating ones included.
    async fn podgate_pods(&self) -> Vec<Pod> {
        self.pods_api().list(&ListParams::default().labels(SELECTOR)).await.unwrap().items
    }

    /// Ready endpoints of the Service, from its EndpointSlices.
    async fn ready_endpoints(&self) -> Vec<String> {
        let path = format!(
            "/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{RELEASE}"
        );
        let answer = send(&self.client, "GET", &path, "application/json", None).await;
        let mut ready = Vec::new();
        for slice in answer.body["items"].as_array().into_iter().flatten() {
            for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
                if endpoint["conditions"]["ready"] == true {
                    ready.extend(
                        endpoint["addresses"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()),
                    );
                }
            }
        }
        ready.sort();
        ready
    }

    /// The Deployment rolled out to `replicas` Pods, all Ready and in the
    /// endpoints, and no Pod of it left terminating.
    async fn steady(&self, replicas: usize) -> bool {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), NAMESPACE);
        let Ok(deployment) = deployments.get(RELEASE).await else { return false };
        let status = deployment.status.unwrap_or_default();
        let generation = deployment.metadata.generation.unwrap_or(0);
        let want = replicas as i32;
        let rolled = status.observed_generation.unwrap_or(0) >= generation
            && status.replicas == Some(want)
            && status.updated_replicas == Some(want)
            && status.ready_replicas == Some(want)
            && status.available_replicas == Some(want)
            && deployment.spec.and_then(|s| s.replicas) == Some(want);
        rolled && self.podgate_pods().await.len() == replicas && self.ready_endpoints().await.len() == replicas
    }

    async fn wait_steady(&self, replicas: usize) {
        until(&format!("podgate steady at {replicas} replicas"), || self.steady(replicas)).await;
    }

    async fn install_is_ready(&self) {
        self.wait_steady(2).await;
        let namespace = self.node.kubectl(&["get", "namespace", NAMESPACE, "-o", "json"]);
        let namespace: Value = serde_json::from_str(&namespace).unwrap();
        assert_eq!(namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
        for pod in self.podgate_pods().await {
            let status = pod.status.unwrap();
            assert_eq!(status.phase.as_deref(), Some("Running"));
            assert!(status.conditions.unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        }
        let webhook = self.node.kubectl(&["get", "validatingwebhookconfiguration", RELEASE, "-o", "json"]);
        let webhook: Value = serde_json::from_str(&webhook).unwrap();
        let hook = &webhook["webhooks"][0];
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["clientConfig"]["service"]["name"], RELEASE);
        assert_eq!(hook["clientConfig"]["service"]["namespace"], NAMESPACE);
        for namespace in [APPS, LOAD] {
            self.node.kubectl(&["create", "namespace", namespace]);
        }
        until("the default ServiceAccount of the test namespaces", || async {
            let path = format!("/api/v1/namespaces/{LOAD}/serviceaccounts/default");
            let apps = format!("/api/v1/namespaces/{APPS}/serviceaccounts/default");
            send(&self.client, "GET", &path, "application/json", None).await.status == 200
                && send(&self.client, "GET", &apps, "application/json", None).await.status == 200
        })
        .await;
    }

    /// Reviews answered by all podgate Pods together (their own metrics).
    async fn reviews_answered(&self) -> f64 {
        self.reviews_per_pod().await.iter().map(|(_, n)| n).sum()
    }

    /// Each podgate Pod and the reviews it answered so far.
    async fn reviews_per_pod(&self) -> Vec<(Pod, f64)> {
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
        let mut answered = Vec::new();
        for pod in self.podgate_pods().await {
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
            let text = http.get(format!("http://{ip}:9090/metrics")).send().await.unwrap().text().await.unwrap();
            let reviews = text
                .lines()
                .filter(|line| line.starts_with("podgate_admission_requests_total{"))
                .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum::<f64>();
            answered.push((pod, reviews));
        }
        answered
    }

    /// Each podgate Pod and the reviews it answers over the next second.
    async fn shares(&self) -> Vec<(Pod, f64)> {
        let before = self.reviews_per_pod().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = self.reviews_per_pod().await;
        let shares: Vec<(Pod, f64)> = after
            .into_iter()
            .map(|(pod, n)| {
                let earlier = before.iter().find(|(p, _)| p.metadata.uid == pod.metadata.uid).map_or(0.0, |(_, n)| *n);
                (pod, n - earlier)
            })
            .collect();
        let names: Vec<(&str, f64)> =
            shares.iter().map(|(pod, n)| (pod.metadata.name.as_deref().unwrap_or(""), *n)).collect();
        note(&format!("  reviews per Pod over one second: {names:?}"));
        shares
    }

    /// The Pod answering most reviews over the next second.
    async fn busiest_pod(&self) -> Pod {
        let shares = self.shares().await;
        shares.into_iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0
    }

    async fn the_service_admits_and_denies(&self) {
        let before = self.reviews_answered().await;
        let pods = format!("/api/v1/namespaces/{APPS}/pods");
        let compliant = manifest("pod-compliant.yaml");
        let created = send(&self.client, "POST", &pods, "application/json", Some(&compliant)).await;
        assert_eq!(created.status, 201, "{created:?}");
        let denied =
            send(&self.client, "POST", &pods, "application/json", Some(&manifest("pod-noncompliant.yaml"))).await;
        assert_eq!(denied.status, 403, "{denied:?}");
        assert!(denied.message().starts_with("admission webhook \"validate.podgate.dev\" denied the request: "));
        assert!(denied.message().contains("runAsNonRoot"), "{}", denied.message());
        // Both reviews reached podgate's Pods (through the Service's endpoints).
        until("podgate to count the two reviews", || async { self.reviews_answered().await >= before + 2.0 }).await;
        // Its image cannot be pulled here; the Pod was only there to be admitted.
        send(&self.client, "DELETE", &format!("{pods}/web"), "application/json", None).await;
    }

    async fn probes_and_ports(&self) {
        let secret = self.node.kubectl(&["-n", NAMESPACE, "get", "secret", &format!("{RELEASE}-tls"), "-o", "json"]);
        let secret: Value = serde_json::from_str(&secret).unwrap();
        let ca = decode_base64(secret["data"]["ca.crt"].as_str().unwrap());
        let review = common::fixture("pod-create.json");
        for pod in self.podgate_pods().await {
            let ip: std::net::IpAddr = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).unwrap().parse().unwrap();
            let container = &pod.spec.as_ref().unwrap().containers[0];
            let ports = container.ports.clone().unwrap_or_default();
            let port_of = |port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString| match port {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => *n as u16,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => {
                    ports.iter().find(|p| p.name.as_deref() == Some(name)).expect("a declared port").container_port
                        as u16
                }
            };
            let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
            for (what, probe) in [("liveness", &container.liveness_probe), ("readiness", &container.readiness_probe)] {
                let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).unwrap_or_else(|| panic!("{what} httpGet"));
                let url = format!("http://{ip}:{}{}", port_of(&get.port), get.path.as_deref().unwrap_or("/"));
                let response = http.get(&url).send().await.unwrap_or_else(|e| panic!("{what} probe {url}: {e}"));
                assert_eq!(response.status(), 200, "{what} probe {url}");
            }
            let metrics_port = ports.iter().find(|p| p.name.as_deref() == Some("metrics")).unwrap().container_port;
            let metrics = http.get(format!("http://{ip}:{metrics_port}/metrics")).send().await.unwrap();
            assert!(metrics.text().await.unwrap().contains("# TYPE podgate_"));
            // The webhook port as the API server calls it: TLS, verified
            // against the chart's CA for the Service's DNS name.
            let https_port = ports.iter().find(|p| p.name.as_deref() == Some("https")).unwrap().container_port;
            let host = format!("{RELEASE}.{NAMESPACE}.svc");
            let tls = reqwest::Client::builder()
                .use_preconfigured_tls(common::tls_config(&ca, &[b"h2", b"http/1.1"]))
                .resolve(&host, SocketAddr::new(ip, https_port as u16))
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let (status, answer) =
                common::post_with(&tls, &format!("https://{host}:{https_port}/validate"), review.to_string()).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["response"]["allowed"], true, "{answer}");
        }
    }

    async fn kubectl_logs_are_json_lines(&self) {
        for pod in self.podgate_pods().await {
            let name = pod.metadata.name.unwrap();
            let logs = self.node.kubectl(&["-n", NAMESPACE, "logs", &name]);
            assert!(logs.lines().count() >= 3, "{name}: {logs}");
            for line in logs.lines() {
                let entry: Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line}"));
                for field in ["timestamp", "level", "message"] {
                    assert!(entry[field].is_string(), "{name}: no {field}: {line}");
                }
            }
            assert!(logs.contains("listening on https://0.0.0.0:8443/validate"), "{name}: {logs}");
        }
    }

    async fn auditor(&self) {
        let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/crds/policyreports.wgpolicyk8s.io.yaml");
        self.node.kubectl(&["apply", "-f", crd]);
        self.node.kubectl(&["wait", "--for", "condition=established", "crd/policyreports.wgpolicyk8s.io"]);
        // A Pod the webhook never sees (podgate's own namespace is always
        // excluded) that Pod Security `restricted` admits but that has no
        // probes: the auditor's finding.
        let legacy = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "legacy-no-probes"},
            "spec": {
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "app", "image": "podgate.local/pause:1", "imagePullPolicy": "Never",
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
                }]
            }
        });
        let path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
        let created = send(&self.client, "POST", &path, "application/json", Some(&legacy)).await;
        assert_eq!(created.status, 201, "{created:?}");
        self.node.upgrade(&["audit.enabled=true"]);
        until("a PolicyReport with the legacy Pod's failures", || async {
            let reports = format!("/apis/wgpolicyk8s.io/v1alpha2/namespaces/{NAMESPACE}/policyreports");
            let answer = send(&self.client, "GET", &reports, "application/json", None).await;
            answer.body["items"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["results"].as_array().into_iter().flatten())
                .any(|result| {
                    result["result"] == "fail"
                        && result["resources"][0]["name"] == "legacy-no-probes"
                        && result["rule"] == "livenessProbe"
                })
        })
        .await;
        let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/legacy-no-probes");
        send(&self.client, "DELETE", &path, "application/json", None).await;
    }

    async fn latency(&self) {
        let n = env_number("PODGATE_NODE_CREATIONS", 200) as usize;
        const WEBHOOK: &str = "apiserver_admission_webhook_admission_duration_seconds";
        const REQUEST: &str = "apiserver_request_duration_seconds";
        let snapshot = || async {
            let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
            let text = self.client.request_text(request).await.unwrap();
            [
                buckets(&text, WEBHOOK, &[r#"name="validate.podgate.dev""#, r#"operation="CREATE""#]),
                buckets(
                    &text,
                    REQUEST,
                    &[r#"verb="POST""#, r#"resource="pods""#, r#"subresource="""#, r#"dry_run="All""#],
                ),
            ]
        };
        let pod = unnamed("pod-compliant.yaml");
        let creations = |namespace: &'static str| {
            let pod = pod.clone();
            async move {
                let path = format!("/api/v1/namespaces/{namespace}/pods?dryRun=All");
                let mut client_side = Vec::with_capacity(n);
                for _ in 0..n {
                    let start = Instant::now();
                    let answer = send(&self.client, "POST", &path, "application/json", Some(&pod)).await;
                    client_side.push(start.elapsed());
                    assert_eq!(answer.status, 201, "{answer:?}");
                }
                client_side.sort();
                client_side
            }
        };
        // kube-system: never sent to podgate (the chart excludes it).
        creations("kube-system").await; // warm-up, unmeasured
        let before = snapshot().await;
        let client_without = creations("kube-system").await;
        let middle = snapshot().await;
        let client_with = creations(APPS).await;
        let after = snapshot().await;
        let without = [delta(&middle[0], &before[0]), delta(&middle[1], &before[1])];
        let with = [delta(&after[0], &middle[0]), delta(&after[1], &middle[1])];
        assert_eq!(count(&without[0]), 0.0, "no webhook call in kube-system");
        assert_eq!(count(&with[0]), n as f64, "one webhook call per creation");
        assert_eq!(count(&with[1]), n as f64);
        let ms = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{:.2} ms", s * 1000.0));
        let row = |what: &str, h: &[(f64, f64)]| {
            format!("| {what} | {} | {} | {} |\n", count(h), ms(quantile(0.5, h)), ms(quantile(0.99, h)))
        };
        let client = |what: &str, l: &[Duration]| {
            let at = |q: f64| l[((q * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1].as_secs_f64();
            format!("| {what} | {} | {} | {} |\n", l.len(), ms(Some(at(0.5))), ms(Some(at(0.99))))
        };
        let mut table =
            String::from("| dry-run Pod creations, one at a time | count | p50 | p99 |\n| --- | --- | --- | --- |\n");
        table += &row(
            "`apiserver_admission_webhook_admission_duration_seconds` (podgate, through the Pod network)",
            &with[0],
        );
        table += &row("`apiserver_request_duration_seconds` POST pods, with podgate", &with[1]);
        table += &row("`apiserver_request_duration_seconds` POST pods, no webhook", &without[1]);
        table += &client("client-side, with podgate", &client_with);
        table += &client("client-side, no webhook", &client_without);
        note(&format!("\n{table}"));
    }

    async fn disruptions(&self) {
        let clients = env_number("PODGATE_NODE_CLIENTS", 6) as usize;
        let settle = Duration::from_secs(env_number("PODGATE_NODE_SETTLE", 3));
        let load = Load::start(&self.client, clients);
        // Warm-up: the load runs and nothing is refused before any disruption.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut rows = Vec::new();
        let measure = |name: &str| Measure::start(&load, name);
        // PODGATE_NODE_REPLICAS: the same with more replicas (the chart's default is 2).
        let n = env_number("PODGATE_NODE_REPLICAS", 2) as usize;
        if n != 2 {
            self.node.upgrade(&[&format!("replicaCount={n}")]);
            self.wait_steady(n).await;
        }

        let m = measure("`kubectl rollout restart`");
        self.node.kubectl(&["-n", NAMESPACE, "rollout", "restart", &format!("deployment/{RELEASE}")]);
        self.settled(n, settle).await;
        rows.push(m.end(&load));

        let m = measure("`kubectl delete pod` (one replica)");
        let victim = self.podgate_pods().await[0].metadata.name.clone().unwrap();
        self.node.kubectl(&["-n", NAMESPACE, "delete", "pod", &victim, "--wait=false"]);
        until("the deleted Pod to go", || async {
            self.podgate_pods().await.iter().all(|p| p.metadata.name.as_deref() != Some(victim.as_str()))
        })
        .await;
        self.settled(n, settle).await;
        rows.push(m.end(&load));

        let m = measure("`helm upgrade`: policy change (`checks.runAsUser.minUid`)");
        self.node.upgrade(&["checks.runAsUser.minUid=2000"]);
        self.settled(n, settle).await;
        rows.push(m.end(&load));

        let m = measure("`helm upgrade`: certificate rotation (`tls.rotation`)");
        let old_ca = self.secret_field("ca.crt");
        self.node.upgrade(&["tls.rotation=node-1"]);
        let new_cert = self.secret_field("tls.crt");
        assert_ne!(self.secret_field("ca.crt"), old_ca, "the rotation made a new CA");
        // No roll: the kubelet updates the mounted Secret and podgate reloads it.
        until("every podgate Pod to serve the rotated certificate", || self.all_serve(&new_cert)).await;
        self.settled(n, settle).await;
        rows.push(m.end(&load));

        let m = measure(&format!("`kubectl scale` {n} -> {} -> {n}", n + 1));
        let deployment = format!("deployment/{RELEASE}");
        self.node.kubectl(&["-n", NAMESPACE, "scale", &deployment, &format!("--replicas={}", n + 1)]);
        self.wait_steady(n + 1).await;
        self.node.kubectl(&["-n", NAMESPACE, "scale", &deployment, &format!("--replicas={n}")]);
        self.settled(n, settle).await;
        rows.push(m.end(&load));

        let m = measure("`helm upgrade`: new image tag");
        let (repository, _) = self.node.image.rsplit_once(':').unwrap();
        let retagged = format!("{repository}:node-2");
        self.node.ctr(&["image", "tag", "--force", &self.node.image, &retagged]);
        self.node.upgrade(&["image.tag=node-2"]);
        self.settled(n, settle).await;
        rows.push(m.end(&load));

        // Each time once they have spread, kill the replica answering most.
        // PODGATE_NODE_SIGKILLS repeats it, for the figures.
        let graceful = rows.len();
        for _ in 0..env_number("PODGATE_NODE_SIGKILLS", 1) {
            // The API server resolves the Service only when it opens a
            // connection and keeps it: after the rollouts its connections are
            // all on one replica. podgate closes connections older than
            // --max-connection-age (30 s), so within a minute both replicas
            // answer.
            let spread = Instant::now();
            until("every replica to answer reviews (--max-connection-age)", || async {
                self.shares().await.iter().all(|(_, n)| *n > 0.0)
            })
            .await;
            note(&format!("  the connections spread over the replicas in {:.0} s", spread.elapsed().as_secs_f64()));
            let victim = self.busiest_pod().await;
            let uid = victim.metadata.uid.clone().unwrap();
            let name = victim.metadata.name.clone().unwrap();
            let restarts = restart_count(&victim);
            let pid = podgate_process(&uid).unwrap_or_else(|| panic!("no podgate process in Pod {name}"));
            let m = measure("SIGKILL of the replica serving the API server");
            let kill = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
            assert!(kill.success());
            let pods = self.pods_api();
            until("the killed container to be restarted", || async {
                pods.get(&name).await.is_ok_and(|p| restart_count(&p) > restarts)
            })
            .await;
            self.settled(n, settle).await;
            rows.push(m.end(&load));
        }

        let total = load.stop().await;
        let mut table = String::from(
            "| disruption | seconds | admissions | refused | other errors | admissions/s |\n| --- | --- | --- | --- | --- | --- |\n",
        );
        for row in &rows {
            table += &row.markdown();
        }
        note(&format!("\n{clients} clients; {} admissions in all\n{table}", total.admissions()));
        for row in &rows {
            if !row.samples.is_empty() {
                note(&format!("{}: {:?}", row.name, row.samples));
            }
        }
        // Graceful disruptions cost nothing; the SIGKILL is a crash, measured.
        for row in &rows[..graceful] {
            assert_eq!(row.counts.refused + row.counts.other, 0, "{} cost admissions: {:?}", row.name, row.samples);
            assert!(row.counts.admissions() >= 100, "{}: too little traffic to tell: {:?}", row.name, row.counts);
        }
        for row in &rows[graceful..] {
            // A crash costs refusals (failurePolicy Fail), never anything else.
            assert_eq!(row.counts.other, 0, "{:?}", row.samples);
        }
        assert!(total.denied > 0 && total.allowed > 0, "{total:?}");
    }

    /// Waits until steady at `replicas`, then lets traffic run `settle` more.
    async fn settled(&self, replicas: usize, settle: Duration) {
        self.wait_steady(replicas).await;
        tokio::time::sleep(settle).await;
    }

    fn secret_field(&self, field: &str) -> String {
        let secret = self.node.kubectl(&["-n", NAMESPACE, "get", "secret", &format!("{RELEASE}-tls"), "-o", "json"]);
        let secret: Value = serde_json::from_str(&secret).unwrap();
        decode_base64(secret["data"][field].as_str().unwrap())
    }

    /// Every podgate Pod serves the certificate `cert_pem` on new connections.
    async fn all_serve(&self, cert_pem: &str) -> bool {
        use rustls::pki_types::pem::PemObject;
        let want = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap().to_vec();
        let ca = self.secret_field("ca.crt");
        for pod in self.podgate_pods().await {
            let Some(ip) = pod.status.and_then(|s| s.pod_ip) else { return false };
            let addr: SocketAddr = format!("{ip}:8443").parse().unwrap();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(common::tls_config(&ca, &[b"http/1.1"])));
            let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else { return false };
            let name = rustls::pki_types::ServerName::try_from(format!("{RELEASE}.{NAMESPACE}.svc")).unwrap();
            let Ok(stream) = connector.connect(name, tcp).await else { return false };
            if stream.get_ref().1.peer_certificates().unwrap()[0].as_ref() != want.as_slice() {
                return false;
            }
        }
        true
    }

    async fn uninstall(&self) {
        self.node.helm(&["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "120s"]);
        let webhooks = self.node.kubectl(&["get", "validatingwebhookconfigurations", "-o", "json"]);
        let webhooks: Value = serde_json::from_str(&webhooks).unwrap();
        assert_eq!(webhooks["items"].as_array().unwrap().len(), 0, "{webhooks}");
        until("podgate's Pods to go", || async { self.podgate_pods().await.is_empty() }).await;
        // Nothing left that calls podgate: even a non-compliant Pod is admitted.
        let path = format!("/api/v1/namespaces/{APPS}/pods?dryRun=All");
        let answer =
            send(&self.client, "POST", &path, "application/json", Some(&unnamed("pod-noncompliant.yaml"))).await;
        assert_eq!(answer.status, 201, "{answer:?}");
        let left = self.node.kubectl(&[
            "get",
            "all,secrets,configmaps,serviceaccounts,poddisruptionbudgets,roles,rolebindings",
            "-n",
            NAMESPACE,
            "-l",
            "app.kubernetes.io/instance=podgate",
            "-o",
            "name",
        ]);
        assert_eq!(left.trim(), "", "left by helm uninstall");
    }
}

/// Reports a step's end: its time, or on a panic its name and the
/// components' last log lines.
struct StepGuard<'a> {
    name: &'a str,
    node: &'a Node,
    started: Instant,
}

impl Drop for StepGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            note(&format!("step {}: FAILED\n{}", self.name, self.node.logs()));
        } else {
            note(&format!("step {}: ok ({:.1} s)", self.name, self.started.elapsed().as_secs_f64()));
        }
    }
}

/// A manifest under `tests/fixtures/e2e/` with `generateName` instead of a
/// name, so that dry-run creations never meet an existing object.
fn unnamed(name: &str) -> Value {
    let mut object = manifest(name);
    let prefix = format!("{}-", object["metadata"]["name"].as_str().unwrap());
    object["metadata"].as_object_mut().unwrap().remove("name");
    object["metadata"]["generateName"] = Value::from(prefix);
    object
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

/// The host PID of the `podgate` process in the Pod with `uid` (its cgroup
/// path names the Pod: `.../pod<uid>/<container>`).
fn podgate_process(uid: &str) -> Option<u32> {
    let marker = format!("pod{uid}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).ok()?;
        (comm.trim() == "podgate" && cgroup.contains(&marker)).then_some(pid)
    })
}

fn decode_base64(text: &str) -> String {
    let output = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("base64 -d");
    String::from_utf8(output.stdout).unwrap()
}

/// Counts of admissions by outcome.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    allowed: u64,
    denied: u64,
    refused: u64,
    other: u64,
}

impl Counts {
    fn admissions(&self) -> u64 {
        self.allowed + self.denied + self.refused + self.other
    }
    fn minus(&self, before: &Counts) -> Counts {
        Counts {
            allowed: self.allowed - before.allowed,
            denied: self.denied - before.denied,
            refused: self.refused - before.refused,
            other: self.other - before.other,
        }
    }
}

#[derive(Default)]
struct Tally {
    allowed: AtomicU64,
    denied: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
    /// (when, what) of every refusal or other error, for the report.
    failures: Mutex<Vec<(Instant, String)>>,
}

/// Clients creating Pods with `dryRun=All` in [`LOAD`] as fast as the
/// API server answers: nine compliant for each non-compliant one.
struct Load {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &kube::Client, clients: usize) -> Load {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let compliant = unnamed("pod-compliant.yaml");
        let noncompliant = unnamed("pod-noncompliant.yaml");
        let tasks = (0..clients)
            .map(|_| {
                let (client, tally, stop) = (client.clone(), tally.clone(), stop.clone());
                let (compliant, noncompliant) = (compliant.clone(), noncompliant.clone());
                tokio::spawn(async move {
                    let path = format!("/api/v1/namespaces/{LOAD}/pods?dryRun=All");
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let good = i % 10 != 0;
                        let body = if good { &compliant } else { &noncompliant };
                        let outcome = admit(&client, &path, body).await;
                        match outcome {
                            Ok((201, _)) if good => tally.allowed.fetch_add(1, Ordering::Relaxed),
                            Ok((403, message)) if !good && message.contains("denied the request") => {
                                tally.denied.fetch_add(1, Ordering::Relaxed)
                            }
                            Ok((status, message)) => {
                                let refused = message.contains("failed calling webhook");
                                let what = format!("{status}: {message}");
                                tally.failures.lock().unwrap().push((Instant::now(), what));
                                if refused {
                                    tally.refused.fetch_add(1, Ordering::Relaxed)
                                } else {
                                    tally.other.fetch_add(1, Ordering::Relaxed)
                                }
                            }
                            Err(error) => {
                                tally.failures.lock().unwrap().push((Instant::now(), error));
                                tally.other.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Load { tally, stop, tasks }
    }

    fn counts(&self) -> Counts {
        Counts {
            allowed: self.tally.allowed.load(Ordering::Relaxed),
            denied: self.tally.denied.load(Ordering::Relaxed),
            refused: self.tally.refused.load(Ordering::Relaxed),
            other: self.tally.other.load(Ordering::Relaxed),
        }
    }

    async fn stop(mut self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.tasks) {
            task.await.unwrap();
        }
        self.counts()
    }
}

/// One POST; the status and the `message` of the answer, or the transport error.
async fn admit(client: &kube::Client, path: &str, body: &Value) -> Result<(u16, String), String> {
    let request = http::Request::post(path)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(kube::client::Body::from(body.to_string().into_bytes()))
        .unwrap();
    let response = client.send(request).await.map_err(|e| format!("transport: {e}"))?;
    let status = response.status().as_u16();
    let bytes =
        http_body_util::BodyExt::collect(response.into_body()).await.map_err(|e| format!("body: {e}"))?.to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, answer["message"].as_str().unwrap_or("").to_owned()))
}

/// A disruption being measured.
struct Measure {
    name: String,
    started: Instant,
    before: Counts,
}

/// What a disruption cost.
#[derive(Clone)]
struct Row {
    name: String,
    seconds: f64,
    counts: Counts,
    /// Refusals and other errors: seconds after the start, and the message.
    samples: Vec<String>,
}

impl Measure {
    fn start(load: &Load, name: &str) -> Measure {
        Measure { name: name.to_owned(), started: Instant::now(), before: load.counts() }
    }

    fn end(self, load: &Load) -> Row {
        let counts = load.counts().minus(&self.before);
        let failures = load.tally.failures.lock().unwrap();
        let samples = failures
            .iter()
            .filter(|(when, _)| *when >= self.started)
            .map(|(when, what)| format!("+{:.2}s {what}", (*when - self.started).as_secs_f64()))
            .collect();
        let seconds = self.started.elapsed().as_secs_f64();
        note(&format!("  {}: {seconds:.1} s, {counts:?}", self.name));
        Row { name: self.name, seconds, counts, samples }
    }
}

impl Row {
    fn markdown(&self) -> String {
        format!(
            "| {} | {:.0} | {} | {} | {} | {:.0} |\n",
            self.name,
            self.seconds,
            self.counts.admissions(),
            self.counts.refused,
            self.counts.other,
            self.counts.admissions() as f64 / self.seconds
        )
    }
}
