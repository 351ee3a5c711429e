//! `podgate export vap` proven equal to the webhook on a real kube-apiserver.
//!
//! For each policy (the chart's default, audit mode, a mix of non-default
//! actions, modes and bounds, and one with exemptions), podgate's webhook is
//! registered for one namespace scope and the exported
//! ValidatingAdmissionPolicies for another (the bindings confined to that
//! scope by a namespace selector, the only change made to the export). Every
//! manifest in `tests/fixtures/` and a generated corpus of more than 500
//! objects over the fields the checks read (with each check's edge cases)
//! is created with server-side dry-run in both; the status, the denial
//! message (every deny finding, in order) and the warnings (as a multiset
//! of findings) must be equal for every object. UPDATEs that leave the pod
//! template alone or change it, and `pods/ephemeralcontainers` updates, are
//! compared the same way. User-namespaced Pods (`hostUsers: false`) are in
//! the corpus, judged under both `userNamespaces` settings.

mod common;

use std::sync::Arc;

use common::apiserver::*;
use podgate::config::Policy;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

/// Requests in flight per comparison (the apiserver shares 2 cores).
const CONCURRENCY: usize = 8;

/// Objects in the generated corpus.
const GENERATED: usize = 520;

/// A tiny deterministic generator (xorshift64*): the corpus is the same on
/// every run, so a difference is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// `Some(value)` inserted as `key`, `None` left out.
fn set(object: &mut Value, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        object[key] = value;
    }
}

/// A probe: one handler (the API refuses none or several), a port by
/// number or by name (declared or not), and timings around every bound.
fn probe(rng: &mut Rng) -> Value {
    let port = match rng.below(6) {
        0 => json!("missing"),
        1 => json!("http"),
        2 => json!("metrics"),
        3 => json!(65535),
        _ => json!(8080),
    };
    let numeric = if port.is_number() { port.clone() } else { json!(9090) };
    let mut probe = match rng.below(4) {
        0 => json!({"exec": {"command": [rng.pick(&["true", "/bin/check"])]}}),
        1 => json!({"httpGet": {"path": rng.pick(&["/healthz", "/ready"]), "port": port}}),
        2 => json!({"tcpSocket": {"port": port}}),
        _ => json!({"grpc": {"port": numeric}}),
    };
    set(
        &mut probe,
        "timeoutSeconds",
        rng.pick(&[None, None, Some(1), Some(5), Some(10), Some(11), Some(61)]).map(Value::from),
    );
    set(
        &mut probe,
        "periodSeconds",
        rng.pick(&[None, None, Some(1), Some(5), Some(10), Some(60), Some(299), Some(300), Some(301)]).map(Value::from),
    );
    set(
        &mut probe,
        "initialDelaySeconds",
        rng.pick(&[None, None, Some(0), Some(30), Some(300), Some(301)]).map(Value::from),
    );
    probe
}

/// A container security context over the fields the checks read.
fn security_context(rng: &mut Rng) -> Option<Value> {
    if rng.chance(15) {
        return None;
    }
    let mut sc = json!({});
    set(&mut sc, "runAsNonRoot", rng.pick(&[None, None, Some(true), Some(false)]).map(Value::from));
    set(
        &mut sc,
        "runAsUser",
        rng.pick(&[
            None,
            None,
            None,
            Some(0),
            Some(1),
            Some(999),
            Some(1000),
            Some(2000),
            Some(65535),
            Some(65536),
            Some(2147483647),
        ])
        .map(Value::from),
    );
    // allowPrivilegeEscalation false with privileged true is refused by the API.
    let privileged = rng.pick(&[None, None, None, Some(false), Some(true)]);
    let escalation = if privileged == Some(true) {
        rng.pick(&[None, Some(true)])
    } else {
        rng.pick(&[None, Some(true), Some(false), Some(false), Some(false)])
    };
    set(&mut sc, "allowPrivilegeEscalation", escalation.map(Value::from));
    set(&mut sc, "privileged", privileged.map(Value::from));
    Some(sc)
}

/// A compliant container of the default policy, as most real ones are.
fn strict_container(rng: &mut Rng, name: String, probes: bool) -> Value {
    let mut c = json!({
        "name": name, "image": "registry.example.com/app:1",
        "ports": [{"name": "http", "containerPort": 8080}],
        "securityContext": {"allowPrivilegeEscalation": false},
    });
    set(&mut c["securityContext"], "runAsUser", rng.pick(&[None, Some(1000), Some(65532)]).map(Value::from));
    if probes {
        c["livenessProbe"] =
            rng.pick(&[json!({"tcpSocket": {"port": 8080}}), json!({"httpGet": {"path": "/live", "port": "http"}})]);
        c["readinessProbe"] =
            json!({"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": rng.pick(&[5, 10, 30])});
    }
    c
}

fn container(rng: &mut Rng, name: String, probes: bool, strict: bool) -> Value {
    if strict {
        return strict_container(rng, name, probes);
    }
    let mut c = json!({"name": name, "image": "registry.example.com/app:1"});
    // Port numbers differ per container: the apiserver warns about duplicates.
    let base = 8000 + 10 * (name.len() as i64 + name.bytes().map(i64::from).sum::<i64>() % 500);
    let ports: Vec<Value> = match rng.below(4) {
        0 => vec![],
        1 => vec![json!({"name": "http", "containerPort": base})],
        2 => vec![json!({"name": "metrics", "containerPort": base + 1})],
        _ => {
            vec![json!({"name": "http", "containerPort": base}), json!({"name": "metrics", "containerPort": base + 1})]
        }
    };
    if !ports.is_empty() {
        c["ports"] = Value::from(ports);
    }
    set(&mut c, "securityContext", security_context(rng));
    if probes {
        for field in ["livenessProbe", "readinessProbe", "startupProbe"] {
            let percent = if field == "startupProbe" { 25 } else { 75 };
            if rng.chance(percent) {
                c[field] = probe(rng);
            }
        }
        // Identical liveness and readiness handlers (probeSettings option).
        if rng.chance(15) && c.get("livenessProbe").is_some() {
            c["readinessProbe"] = c["livenessProbe"].clone();
        }
    }
    c
}

/// A pod spec; `restart` is the pod's restartPolicy (None: defaulted).
///
/// Half the pod specs are compliant but for at most one container generated
/// freely: the edge cases next to passing objects, not only denials.
fn pod_spec(rng: &mut Rng, restart: Option<&str>) -> Value {
    let mut spec = json!({});
    if let Some(restart) = restart {
        spec["restartPolicy"] = json!(restart);
    }
    if rng.chance(10) {
        return windows_pod_spec(rng, restart);
    }
    // User-namespaced pods (hostUsers: false, explicitly): runAsNonRoot and
    // runAsUser relaxed unless the policy enforces them there; a few pods
    // set hostUsers: true, which is the host's user namespace.
    let user_namespaced = rng.chance(15);
    if user_namespaced {
        spec["hostUsers"] = json!(false);
    } else if rng.chance(5) {
        spec["hostUsers"] = json!(true);
    }
    let strict = rng.chance(50);
    // Which container (if any) is generated freely in a strict pod spec.
    let free = if strict && rng.chance(50) { rng.below(3) } else { usize::MAX };
    let mut psc = json!({});
    if strict {
        // Half the strict user-namespaced pods run as root, as PSA allows.
        spec["securityContext"] =
            if user_namespaced && rng.chance(50) { json!({"runAsUser": 0}) } else { json!({"runAsNonRoot": true}) };
        let containers: Vec<Value> =
            (0..1 + rng.below(2)).map(|i| container(rng, format!("app{i}"), true, i != free)).collect();
        spec["containers"] = Value::from(containers);
        if rng.chance(30) {
            let mut sidecar = container(rng, "proxy".into(), true, free != 2);
            sidecar["restartPolicy"] = json!("Always");
            spec["initContainers"] = json!([sidecar]);
        }
        return spec;
    }
    set(&mut psc, "runAsNonRoot", rng.pick(&[None, Some(true), Some(true), Some(false)]).map(Value::from));
    set(
        &mut psc,
        "runAsUser",
        rng.pick(&[None, None, Some(0), Some(999), Some(1000), Some(4096), Some(70000)]).map(Value::from),
    );
    if psc.as_object().is_some_and(|o| !o.is_empty()) || rng.chance(20) {
        spec["securityContext"] = psc;
    }
    let containers: Vec<Value> =
        (0..1 + rng.below(3)).map(|i| container(rng, format!("app{i}"), true, false)).collect();
    spec["containers"] = Value::from(containers);
    if rng.chance(40) {
        let inits: Vec<Value> = (0..1 + rng.below(2))
            .map(|i| {
                // Only sidecars (restartPolicy Always) may have probes.
                let sidecar = rng.chance(50);
                let mut c = container(rng, format!("init{i}"), sidecar, false);
                if sidecar {
                    c["restartPolicy"] = json!("Always");
                }
                c
            })
            .collect();
        spec["initContainers"] = Value::from(inits);
    }
    spec
}

/// A Windows pod spec (`spec.os.name: windows`): no Linux-only fields (the
/// API refuses them), `windowsOptions` at pod and container level instead.
fn windows_pod_spec(rng: &mut Rng, restart: Option<&str>) -> Value {
    let users = [None, None, Some("ContainerUser"), Some("ContainerAdministrator"), Some("containeradministrator")];
    let host_process = rng.chance(30);
    let mut pod_options = json!({});
    set(&mut pod_options, "runAsUserName", rng.pick(&users).map(Value::from));
    if host_process {
        // HostProcess pods must use the host network, and every container is one.
        pod_options["hostProcess"] = json!(true);
    }
    let mut spec = json!({"os": {"name": "windows"}, "securityContext": {"windowsOptions": pod_options}});
    set(&mut spec["securityContext"], "runAsNonRoot", rng.pick(&[None, Some(true), Some(false)]).map(Value::from));
    if host_process {
        spec["hostNetwork"] = json!(true);
    }
    if let Some(restart) = restart {
        spec["restartPolicy"] = json!(restart);
    }
    let containers: Vec<Value> = (0..1 + rng.below(2))
        .map(|i| {
            let mut c = strict_container(rng, format!("win{i}"), true);
            let mut options = json!({});
            set(&mut options, "runAsUserName", rng.pick(&users).map(Value::from));
            if host_process && rng.chance(50) {
                options["hostProcess"] = json!(true);
            }
            let mut sc = json!({"windowsOptions": options});
            set(&mut sc, "runAsNonRoot", rng.pick(&[None, None, Some(true), Some(false)]).map(Value::from));
            c["securityContext"] = sc;
            if host_process {
                // HostProcess containers cannot declare container ports other than host ports.
                c.as_object_mut().unwrap().remove("ports");
                c["livenessProbe"] = json!({"tcpSocket": {"port": 8080}});
                c["readinessProbe"] = json!({"exec": {"command": ["cmd", "/c", "exit 0"]}});
            }
            c
        })
        .collect();
    spec["containers"] = Value::from(containers);
    spec
}

/// The generated corpus: Pods and every workload kind, named `gen-N`.
fn corpus() -> Vec<Value> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..GENERATED)
        .map(|i| {
            let name = format!("gen-{i}");
            let labels = json!({"app": name});
            let kind = rng.pick(&[
                "Pod",
                "Pod",
                "Pod",
                "Pod",
                "Deployment",
                "ReplicaSet",
                "StatefulSet",
                "DaemonSet",
                "Job",
                "CronJob",
                "ReplicationController",
            ]);
            let restart = match kind {
                "Pod" => rng.pick(&[None, Some("Always"), Some("Never"), Some("OnFailure")]),
                "Job" | "CronJob" => rng.pick(&[Some("Never"), Some("OnFailure")]),
                _ => rng.pick(&[None, Some("Always")]),
            };
            let spec = pod_spec(&mut rng, restart);
            let template = json!({"metadata": {"labels": labels}, "spec": spec});
            let selector = json!({"matchLabels": labels});
            let (api_version, body) = match kind {
                "Pod" => ("v1", spec),
                "ReplicationController" => ("v1", json!({"selector": labels, "template": template})),
                "Deployment" | "ReplicaSet" | "DaemonSet" => {
                    ("apps/v1", json!({"selector": selector, "template": template}))
                }
                "StatefulSet" => ("apps/v1", json!({"selector": selector, "serviceName": name, "template": template})),
                "Job" => ("batch/v1", json!({"template": template})),
                _ => ("batch/v1", json!({"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}})),
            };
            json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "labels": labels}, "spec": body})
        })
        .collect()
}

/// Every Pod and workload manifest under `tests/fixtures/` (manifests, the
/// e2e fixtures, the `request.object` of the review fixtures), renamed
/// `fixture-N` and without a namespace.
fn fixture_objects() -> Vec<Value> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files = Vec::new();
    for dir in ["manifests", "e2e", "reviews"] {
        let mut pending = vec![root.join(dir)];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
                    files.push(path);
                }
            }
        }
    }
    files.sort();
    let mut objects = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            // A broken document ends the file (the deserializer cannot resync).
            let Ok(value) = <Value as serde::Deserialize>::deserialize(document) else { break };
            let mut candidates = vec![value.clone()];
            if value["kind"] == "AdmissionReview" {
                candidates = vec![value["request"]["object"].clone()];
            } else if value["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
                candidates = value["items"].as_array().cloned().unwrap_or_default();
            }
            for mut object in candidates {
                let Some(kind) = object["kind"].as_str() else { continue };
                let api_version = object["apiVersion"].as_str().unwrap_or_default();
                if podgate::extract::WorkloadKind::from_api_version_kind(api_version, kind).is_none() {
                    continue;
                }
                let metadata = object["metadata"].as_object_mut().unwrap();
                metadata.remove("namespace");
                metadata.remove("generateName");
                metadata.remove("uid");
                metadata.remove("resourceVersion");
                metadata.remove("creationTimestamp");
                metadata.remove("managedFields");
                metadata.insert("name".into(), json!(format!("fixture-{}", objects.len())));
                // No service accounts but `default` exist in the test namespaces.
                for path in ["/spec", "/spec/template/spec"] {
                    if let Some(spec) = object.pointer_mut(path).and_then(Value::as_object_mut) {
                        spec.remove("serviceAccountName");
                        spec.remove("serviceAccount");
                    }
                }
                objects.push(object);
            }
        }
    }
    objects
}

/// What an answer means for the comparison: the status, the denial message
/// without the prefix naming the webhook or policy, and the warnings as
/// sorted findings (a VAP warning carries all findings of one check).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    status: u16,
    denial: String,
    warnings: Vec<String>,
    /// The apiserver shortened the warnings: past 4,096 characters in all it
    /// cuts each to 256, which cuts a VAP warning (all findings of a check)
    /// where the webhook's (one finding each) stay whole. Then only the
    /// status and denial are compared.
    truncated: bool,
}

/// The apiserver's limit on all warnings of one response, in characters.
const WARNINGS_TOTAL: usize = 4096;

fn outcome(answer: &Answer, namespace: &str) -> Outcome {
    let message = answer.message().replace(namespace, "NAMESPACE");
    let message = message.as_str();
    let denial = if answer.status == 403 {
        message
            .split_once("denied the request: ")
            .or_else(|| message.split_once("denied request: "))
            .map_or(message, |(_, m)| m)
            .to_owned()
    } else if answer.status >= 400 {
        // Refused by API validation: the same in both (names the field).
        message.to_owned()
    } else {
        String::new()
    };
    let mut warnings: Vec<String> = answer
        .warnings
        .iter()
        .flat_map(|w| match w.split_once("' with binding '").and_then(|(_, rest)| rest.split_once("': ")) {
            Some((_, findings)) if w.starts_with("Validation failed for ValidatingAdmissionPolicy '") => {
                findings.split("; ").map(str::to_owned).collect()
            }
            _ => vec![w.clone()],
        })
        .collect();
    warnings.sort();
    let truncated = answer.warnings.iter().map(|w| w.chars().count()).sum::<usize>() > WARNINGS_TOTAL
        || answer.warnings.iter().any(|w| w.chars().count() == 256);
    Outcome { status: answer.status, denial, warnings, truncated }
}

/// The export of `policy`, confined to the namespaces of `scope` and named after it.
fn scoped_export(policy: &Policy, scope: &str) -> Vec<Value> {
    let mut objects = podgate::export::vap::objects(policy).expect("the policy exports");
    for object in &mut objects {
        let name = object["metadata"]["name"].as_str().unwrap().replace("podgate-", &format!("podgate-{scope}-"));
        object["metadata"]["name"] = json!(name);
        if object["kind"] == "ValidatingAdmissionPolicyBinding" {
            object["spec"]["policyName"] = json!(name);
            object["spec"]["matchResources"] = json!({"namespaceSelector": {"matchLabels": {SCOPE_LABEL: scope}}});
        }
    }
    objects
}

/// Creates the exported objects and waits until the apiserver applies them.
async fn install_export(cluster: &Cluster, objects: &[Value], namespace: &str) {
    let client = cluster.admin();
    for object in objects {
        let plural = if object["kind"] == "ValidatingAdmissionPolicy" {
            "validatingadmissionpolicies"
        } else {
            "validatingadmissionpolicybindings"
        };
        let path = format!("/apis/admissionregistration.k8s.io/v1/{plural}");
        let answer = send(&client, "POST", &path, "application/json", Some(object)).await;
        assert_eq!(answer.status, 201, "create {}: {answer:?}", object["metadata"]["name"]);
    }
    // The apiserver picks policies and bindings up one by one: wait until
    // every exported policy answers, not just the first. The probe Pod fails
    // a check of each (root, may escalate, no probes), whatever its action
    // and mode, so each policy denies or warns under its own name.
    let policies: Vec<String> = objects
        .iter()
        .filter(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .map(|o| format!("ValidatingAdmissionPolicy '{}'", o["metadata"]["name"].as_str().unwrap()))
        .collect();
    let pod = named(manifest("pod-noncompliant.yaml"), "vap-probe");
    common::eventually("the apiserver to apply every exported policy", || async {
        let answer = create_dry_run(&client, namespace, &pod).await;
        let message = answer.message();
        policies.iter().all(|p| message.contains(p.as_str()) || answer.warnings.iter().any(|w| w.contains(p.as_str())))
    })
    .await;
}

/// Sends every object to both namespaces with dry-run and returns the
/// differences, and the tally of outcomes (denied, warned, clean, invalid).
async fn compare(
    client: &kube::Client,
    webhook_ns: &str,
    vap_ns: &str,
    objects: &[Value],
) -> (Vec<String>, [usize; 4]) {
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, object) in objects.iter().enumerate() {
        let (client, gate, object) = (client.clone(), gate.clone(), object.clone());
        let (webhook_ns, vap_ns) = (webhook_ns.to_owned(), vap_ns.to_owned());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let webhook = outcome(&create_dry_run(&client, &webhook_ns, &object).await, &webhook_ns);
            let vap = outcome(&create_dry_run(&client, &vap_ns, &object).await, &vap_ns);
            (index, object, webhook, vap)
        });
    }
    let mut differences = Vec::new();
    let mut tally = [0; 4];
    let mut tally_truncated = 0;
    while let Some(joined) = tasks.join_next().await {
        let (index, object, webhook, vap) = joined.unwrap();
        tally[match webhook.status {
            403 => 0,
            s if s < 300 && !webhook.warnings.is_empty() => 1,
            s if s < 300 => 2,
            _ => 3,
        }] += 1;
        let same = if webhook.truncated || vap.truncated {
            tally_truncated += 1;
            webhook.status == vap.status && webhook.denial == vap.denial
        } else {
            webhook == vap
        };
        if !same {
            let only = |a: &Outcome, b: &Outcome| -> Vec<String> {
                a.warnings.iter().filter(|w| !b.warnings.contains(w)).cloned().collect()
            };
            differences.push(format!(
                "object {index} ({} {}): status {} / {}\n  webhook denial: {}\n  vap denial:     {}\n  \
                 warnings only from the webhook: {:?}\n  warnings only from the VAP: {:?}",
                object["kind"].as_str().unwrap_or_default(),
                object["metadata"]["name"].as_str().unwrap_or_default(),
                webhook.status,
                vap.status,
                webhook.denial,
                vap.denial,
                only(&webhook, &vap),
                only(&vap, &webhook),
            ));
        }
    }
    if tally_truncated > 0 {
        eprintln!("  ({tally_truncated} answers with warnings shortened by the apiserver: status and denial compared)");
    }
    // Few enough that the warnings are compared for almost every object.
    assert!(tally_truncated * 10 < objects.len(), "{tally_truncated} answers with truncated warnings");
    (differences, tally)
}

/// The exemption policy's other selectors: a namespace prefix, a username,
/// a service account, and a user no rule matches, each on a slice of the
/// objects.
async fn exemption_runs(
    cluster: &Cluster,
    webhook_scope: &str,
    vap_scope: &str,
    webhook_ns: &str,
    vap_ns: &str,
    objects: &[Value],
) -> Vec<String> {
    let slice = &objects[..objects.len().min(80)];
    let mut failures = Vec::new();
    let (prefixed_w, prefixed_v) = ("vd-exempt-xw", "vd-exempt-xv");
    cluster.create_namespace(prefixed_w, webhook_scope).await;
    cluster.create_namespace(prefixed_v, vap_scope).await;
    let (differences, tally) = compare(&cluster.admin(), prefixed_w, prefixed_v, slice).await;
    eprintln!("vd-exempt, namespace prefix: {tally:?}, {} differences", differences.len());
    failures.extend(differences);

    let users: [(&str, kube::Client, Value); 3] = [
        ("alice", cluster.as_user("alice"), json!({"kind": "User", "name": "alice"})),
        (
            "ci/deployer",
            cluster.as_service_account("ci", "deployer"),
            json!({"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}),
        ),
        ("bob", cluster.as_user("bob"), json!({"kind": "User", "name": "bob"})),
    ];
    for (who, client, subject) in users {
        for ns in [webhook_ns, vap_ns] {
            cluster.grant_edit(ns, subject.clone()).await;
        }
        let (differences, tally) = compare(&client, webhook_ns, vap_ns, slice).await;
        eprintln!("vd-exempt, as {who}: {tally:?}, {} differences", differences.len());
        // alice and the service account are exempt, bob is not.
        if who == "bob" {
            assert!(tally[0] > 10, "bob: {tally:?}");
        } else {
            assert_eq!(tally[0], 0, "{who}: {tally:?}");
        }
        failures.extend(differences.into_iter().map(|d| format!("[as {who}] {d}")));
    }
    failures
}

struct Setup {
    scope: &'static str,
    values: &'static [&'static str],
}

const POLICIES: &[Setup] = &[
    Setup { scope: "vd-default", values: &[] },
    Setup { scope: "vd-audit", values: &["mode=audit", "checks.runAsNonRoot.userNamespaces=enforce"] },
    Setup {
        scope: "vd-mixed",
        values: &[
            "checks.runAsUser.minUid=2000",
            "checks.runAsUser.maxUid=65535",
            "checks.runAsUser.userNamespaces=enforce",
            "checks.runAsNonRoot.action=warn",
            "checks.livenessProbe.mode=audit",
            "checks.readinessProbe.action=off",
            "checks.probeSettings.maxTimeoutSeconds=5",
            "checks.probeSettings.minPeriodSeconds=5",
            "checks.probeSettings.maxPeriodSeconds=60",
            "checks.probeSettings.maxInitialDelaySeconds=30",
            "checks.probeSettings.forbidIdenticalLivenessReadiness=true",
        ],
    },
    Setup {
        scope: "vd-exempt",
        values: &[
            // The admin's group: only the probe checks are skipped.
            "exemptions[0].groups[0]=system:masters",
            "exemptions[0].checks[0]=livenessProbe",
            "exemptions[0].checks[1]=probeSettings",
            "exemptions[0].reason=probes come later",
            // Namespaces by prefix (`vd-exempt-xw`, `vd-exempt-xv` below).
            "exemptions[1].namespaces[0]=vd-exempt-x*",
            "exemptions[1].checks[0]=runAsNonRoot",
            "exemptions[1].reason=team x",
            "exemptions[2].serviceAccounts[0]=ci/deployer",
            "exemptions[2].usernames[0]=alice",
            "exemptions[2].reason=ci",
        ],
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_policies_decide_as_the_webhook_does() {
    let Some(cluster) = cluster().await else { return };
    let mut objects = fixture_objects();
    let fixtures = objects.len();
    objects.extend(corpus());
    assert!(fixtures >= 5, "fixtures found: {fixtures}");
    let user_namespaced = objects.iter().filter(|o| o.to_string().contains(r#""hostUsers":false"#)).count();
    assert!(user_namespaced >= 40, "user-namespaced objects: {user_namespaced}");

    let client = cluster.admin();
    let mut failures = Vec::new();
    for setup in POLICIES {
        let webhook_scope = format!("{}-w", setup.scope);
        let vap_scope = format!("{}-v", setup.scope);
        eprintln!("{}: registering the webhook and the export", setup.scope);
        let podgate = Podgate::register(cluster, &webhook_scope, setup.values).await;
        let policy = Policy::load(&podgate.policy).expect("the chart renders a valid policy");
        let webhook_ns = cluster.namespace(&webhook_scope).await;
        let vap_ns = cluster.namespace(&vap_scope).await;
        install_export(cluster, &scoped_export(&policy, &vap_scope), &vap_ns).await;
        eprintln!("{}: comparing {} objects", setup.scope, objects.len());
        let started = std::time::Instant::now();

        let (differences, tally) = compare(&client, &webhook_ns, &vap_ns, &objects).await;
        eprintln!(
            "{}: {} objects in {:.1} s: {} denied, {} allowed with warnings, {} allowed, {} refused by API validation; {} differences",
            setup.scope,
            objects.len(),
            started.elapsed().as_secs_f64(),
            tally[0],
            tally[1],
            tally[2],
            tally[3],
            differences.len()
        );
        for difference in differences.iter().take(5) {
            eprintln!("{difference}");
        }
        // The corpus must exercise the policy, not only API validation.
        assert!(tally[3] < objects.len() / 4, "{}: too many invalid objects: {tally:?}", setup.scope);
        if setup.values.first() == Some(&"mode=audit") {
            assert!(tally[1] > 100 && tally[0] == 0, "{}: {tally:?}", setup.scope);
        } else if setup.scope != "vd-exempt" {
            assert!(tally[0] > 100 && tally[2] > 20, "{}: {tally:?}", setup.scope);
        }
        failures.extend(differences.into_iter().map(|d| format!("[{}] {d}", setup.scope)));
        if setup.scope == "vd-exempt" {
            failures.extend(exemption_runs(cluster, &webhook_scope, &vap_scope, &webhook_ns, &vap_ns, &objects).await);
        }
        podgate.unregister(cluster).await;
    }
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures[..failures.len().min(20)].join("\n"));
}

/// A merge patch (or strategic merge patch for a subresource) with dry-run.
async fn patch_dry_run(client: &kube::Client, path: &str, content_type: &str, patch: &Value) -> Answer {
    send(client, "PATCH", &format!("{path}?dryRun=All"), content_type, Some(patch)).await
}

/// UPDATEs that leave the pod template alone are not judged, UPDATEs that
/// change it are; `kubectl debug` is judged on the ephemeral containers it
/// adds only. The objects are stored before podgate or the export is bound
/// to their namespaces, as objects that predate a policy are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_ephemeral_containers_as_the_webhook_does() {
    let Some(cluster) = cluster().await else { return };
    let client = cluster.admin();
    let (webhook_scope, vap_scope) = ("vu-w", "vu-v");
    let webhook_ns = cluster.namespace(webhook_scope).await;
    let vap_ns = cluster.namespace(vap_scope).await;

    let legacy = manifest("pod-noncompliant.yaml");
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "legacy-web"},
        "spec": {"selector": {"matchLabels": {"app": "legacy-web"}},
                 "template": {"metadata": {"labels": {"app": "legacy-web"}}, "spec": legacy["spec"].clone()}},
    });
    let debugged = named(legacy.clone(), "debugged");
    let debug = |name: &str, compliant: bool| {
        let mut c = json!({"name": name, "image": "busybox", "command": ["sh"], "stdin": true, "tty": true});
        if compliant {
            c["securityContext"] = json!({"runAsNonRoot": true, "runAsUser": 1000, "allowPrivilegeEscalation": false});
        }
        c
    };
    for ns in [&webhook_ns, &vap_ns] {
        for object in [&legacy, &deployment, &debugged] {
            let answer = create(&client, ns, object).await;
            assert_eq!(answer.status, 201, "{answer:?}");
        }
        // An ephemeral container that predates the policy.
        let path = format!("/api/v1/namespaces/{ns}/pods/debugged/ephemeralcontainers");
        let patch = json!({"spec": {"ephemeralContainers": [debug("old-debug", false)]}});
        let answer = send(&client, "PATCH", &path, "application/strategic-merge-patch+json", Some(&patch)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }

    let podgate = Podgate::register(cluster, webhook_scope, &[]).await;
    let policy = Policy::load(&podgate.policy).unwrap();
    install_export(cluster, &scoped_export(&policy, vap_scope), &vap_ns).await;

    let merge = "application/merge-patch+json";
    let strategic = "application/strategic-merge-patch+json";
    // (what, path under the namespace, content type, patch, expected status)
    let cases: Vec<(&str, &str, &str, Value, u16)> = vec![
        (
            "deployment labels",
            "/apis/apps/v1/namespaces/NS/deployments/legacy-web",
            merge,
            json!({"metadata": {"labels": {"team": "shop"}}}),
            200,
        ),
        (
            "deployment replicas",
            "/apis/apps/v1/namespaces/NS/deployments/legacy-web",
            merge,
            json!({"spec": {"replicas": 3}}),
            200,
        ),
        (
            "deployment template",
            "/apis/apps/v1/namespaces/NS/deployments/legacy-web",
            merge,
            json!({"spec": {"template": {"metadata": {"annotations": {"restartedAt": "now"}}}}}),
            403,
        ),
        (
            "pod labels",
            "/api/v1/namespaces/NS/pods/legacy",
            merge,
            json!({"metadata": {"labels": {"team": "shop"}}}),
            200,
        ),
        (
            "pod image",
            "/api/v1/namespaces/NS/pods/legacy",
            strategic,
            json!({"spec": {"containers": [{"name": "app", "image": "registry.example.com/shop/legacy:1.0"}]}}),
            403,
        ),
        (
            "compliant debug container",
            "/api/v1/namespaces/NS/pods/debugged/ephemeralcontainers",
            strategic,
            json!({"spec": {"ephemeralContainers": [debug("old-debug", false), debug("debug-ok", true)]}}),
            200,
        ),
        (
            "non-compliant debug container",
            "/api/v1/namespaces/NS/pods/debugged/ephemeralcontainers",
            strategic,
            json!({"spec": {"ephemeralContainers": [debug("old-debug", false), debug("debug-root", false)]}}),
            403,
        ),
        // Without the old one in the patch the apiserver stores the new one first.
        (
            "non-compliant debug container first",
            "/api/v1/namespaces/NS/pods/debugged/ephemeralcontainers",
            strategic,
            json!({"spec": {"ephemeralContainers": [debug("debug-root", false)]}}),
            403,
        ),
    ];
    let mut failures = Vec::new();
    for (what, path, content_type, patch, expected) in cases {
        let webhook = patch_dry_run(&client, &path.replace("NS", &webhook_ns), content_type, &patch).await;
        let vap = patch_dry_run(&client, &path.replace("NS", &vap_ns), content_type, &patch).await;
        if webhook.status != expected {
            failures.push(format!("{what}: webhook answered {webhook:?}, expected {expected}"));
        }
        let (webhook, vap) = (outcome(&webhook, &webhook_ns), outcome(&vap, &vap_ns));
        if webhook != vap {
            failures.push(format!("{what}:\n  webhook: {webhook:?}\n  vap:     {vap:?}"));
        }
        if what.starts_with("non-compliant debug container") {
            // Only the added container is judged, not the pod's own or the earlier one.
            assert!(webhook.denial.contains("ephemeral container \"debug-root\""), "{webhook:?}");
            assert!(!webhook.denial.contains("old-debug") && !webhook.denial.contains("\"app\""), "{webhook:?}");
        }
    }
    podgate.unregister(cluster).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
