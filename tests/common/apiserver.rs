//! A real kube-apiserver (with etcd) for end-to-end tests, and podgate
//! registered with it through the chart's `ValidatingWebhookConfiguration`.
//!
//! # Using it
//!
//! ```ignore
//! mod common;
//! use common::apiserver::*;
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn my_test() {
//!     let Some(cluster) = cluster().await else { return }; // skipped: message printed
//!     let ns = cluster.namespace("mytest").await;          // namespace + its `default` ServiceAccount
//!     let podgate = Podgate::register(cluster, "mytest", &[]).await; // chart defaults (enforce)
//!     let answer = create(&cluster.admin(), &ns, &manifest("pod-compliant.yaml")).await;
//!     assert_eq!(answer.status, 201, "{answer:?}");
//! }
//! ```
//!
//! - [`cluster()`]: the one cluster of this test binary, started on first
//!   use (etcd + kube-apiserver on free loopback ports, a throwaway PKI made
//!   with rcgen, ready when `/readyz` says `ok`). `None` after printing how
//!   to get a kube-apiserver, unless `PODGATE_REQUIRE_TOOLS=1` (then it
//!   panics). Tests of one binary run in parallel on it.
//! - Clients, built per call because a `kube::Client` belongs to the tokio
//!   runtime that made it (each `#[tokio::test]` has its own):
//!   [`Cluster::admin`] (`O=system:masters`), [`Cluster::as_user`],
//!   [`Cluster::as_group`], [`Cluster::as_service_account`]
//!   (impersonation; give them rights with [`Cluster::grant_edit`]).
//! - Namespaces: [`Cluster::namespace`] (a fresh name) or
//!   [`Cluster::create_namespace`] (a given name). Each is labelled
//!   [`SCOPE_LABEL`]`=<scope>` and gets its `default` ServiceAccount (there
//!   is no controller-manager to make it). Namespaces are never deleted
//!   (nothing would finalize them); the cluster goes away with the binary.
//! - [`Podgate::register`]: `helm template` of `charts/podgate` with the
//!   given `--set` values, podgate started in process with the rendered
//!   policy (`ConfigMap` `policy.yaml`), and the rendered webhook
//!   configuration created with only `clientConfig` changed (a loopback
//!   `url` and the test CA as `caBundle`). Each registration is confined to
//!   the namespaces of its *scope* by the chart's own
//!   `webhook.namespaceSelector.matchLabels` value, and named after the scope
//!   (`fullnameOverride`), so parallel tests with different configurations
//!   do not see each other's webhook. It returns once the apiserver sends
//!   podgate reviews.
//! - Requests: [`create`], [`create_dry_run`], [`send`] return an [`Answer`]
//!   (status, `Warning` headers, body) instead of an error, so denials are
//!   data to assert on. [`manifest`] reads `tests/fixtures/e2e/`.
//! - [`Cluster::metrics`]: the apiserver's own `/metrics`.
//!
//! # Binaries
//!
//! kube-apiserver: `PODGATE_KUBE_APISERVER`, else
//! `$PODGATE_TOOLS/bin/kube-apiserver` (what `.ci/install.d/kube-apiserver.sh`
//! installs), else `shared/k8s/kube-apiserver.xz` found in a parent
//! directory of the repository, unpacked once with the `xz` tool into the
//! target directory (the `xz` command, not a crate: Debian's `xz-utils` is
//! there wherever etcd is, and a one-off unpack does not earn a dependency).
//! etcd: `PODGATE_ETCD`, else `etcd` on `PATH` (Debian `etcd-server`).
//! helm: `$PODGATE_TOOLS/bin/helm`, else `PATH` (`.ci/install.d/helm.sh`).
//!
//! # Clean-up
//!
//! The cluster lives in a static, and a test binary exits without dropping
//! statics, and may die by a panic in another thread, `abort` or a signal.
//! So clean-up does not rely on the test process running any code at the
//! end: a watchdog shell is started first, with a pipe as its stdin whose
//! only write end this process holds (Rust opens it close-on-exec, so no
//! other child inherits it). The harness writes each PID it starts into
//! the pipe. When this process ends, however it ends, the kernel closes the
//! pipe; the watchdog reads end-of-file, sends SIGTERM to exactly those PIDs
//! (SIGKILL to any still there after 5 s) and removes the cluster's
//! directory (PKI, etcd data, logs). It ignores SIGINT/SIGHUP/SIGTERM so
//! that a Ctrl-C to the process group does not kill it before it has
//! cleaned up.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{ValidatingWebhookConfiguration, WebhookClientConfig};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, PostParams};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::{eventually, Harness, TestCa, PATIENCE};

/// The namespace label that puts a namespace in a [`Podgate`] registration's scope.
pub const SCOPE_LABEL: &str = "podgate.dev/e2e-scope";

/// The release namespace the chart is rendered for (podgate's own
/// namespace, which the chart always excludes). It exists in the cluster.
pub const RELEASE_NAMESPACE: &str = "podgate";

/// The running cluster of this test binary.
pub struct Cluster {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    dir: PathBuf,
    ca_der: Vec<u8>,
    processes: Mutex<Vec<(&'static str, Child)>>,
    /// Held, never written after start-up except to add PIDs: its closing
    /// (at process exit) is the watchdog's signal.
    watchdog: Mutex<ChildStdin>,
    next: AtomicUsize,
}

/// The cluster, started on first use; `None` (after a message saying how
/// to get one) when there is no kube-apiserver, etcd or helm.
pub async fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceCell<Option<Cluster>> = OnceCell::const_new();
    CLUSTER.get_or_init(|| async { Cluster::start().await }).await.as_ref()
}

/// Where the tools live: `$PODGATE_TOOLS` (default `~/.cache/podgate-tools`).
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("PODGATE_TOOLS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/podgate-tools"),
    }
}

/// `name` from `$PODGATE_TOOLS/bin`, else from `PATH`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let local = tools_dir().join("bin").join(name);
    if local.is_file() {
        return Some(local);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Prints a skip banner and returns `None`, or panics under
/// `PODGATE_REQUIRE_TOOLS=1`.
fn missing<T>(what: &str) -> Option<T> {
    let hint = "set PODGATE_KUBE_APISERVER=/path/to/kube-apiserver (1.30 or newer, e.g. an upstream release \
                binary), or run `bash .ci/install.d/kube-apiserver.sh` (unpacks ../shared/k8s/kube-apiserver.xz \
                and installs Debian's etcd-server); helm: `bash .ci/install.d/helm.sh`";
    if std::env::var("PODGATE_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("end-to-end tests: {what}, and PODGATE_REQUIRE_TOOLS=1; {hint}");
    }
    // To the stderr handle, not eprintln!: libtest captures passing tests' output.
    let bang = "!".repeat(76);
    let message = format!("\n{bang}\n!!! SKIPPED end-to-end test: {what}\n!!! {hint}\n{bang}\n");
    let _ = std::io::stderr().write_all(message.as_bytes());
    None
}

/// The kube-apiserver binary (see the module docs for the search order).
fn kube_apiserver() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("PODGATE_KUBE_APISERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("PODGATE_KUBE_APISERVER={} is not a file", path.display()))
        };
    }
    let installed = tools_dir().join("bin/kube-apiserver");
    if installed.is_file() {
        return Ok(installed);
    }
    let xz = repo_root()
        .ancestors()
        .map(|dir| dir.join("shared/k8s/kube-apiserver.xz"))
        .find(|candidate| candidate.is_file())
        .ok_or("no kube-apiserver: PODGATE_KUBE_APISERVER unset, none in $PODGATE_TOOLS/bin, no shared/k8s/kube-apiserver.xz")?;
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kube-apiserver");
    let fresh = |target: &Path| -> bool {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        matches!((modified(target), modified(&xz)), (Some(t), Some(x)) if t >= x)
    };
    if !fresh(&target) {
        // Unpack to a private name and rename: another test binary may be
        // looking at the same path.
        let partial = target.with_extension(format!("partial.{}", std::process::id()));
        let out = std::fs::File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
        let status = Command::new("xz").arg("-dc").arg(&xz).stdout(out).status();
        if !status.is_ok_and(|s| s.success()) {
            let _ = std::fs::remove_file(&partial);
            return Err(format!("`xz -dc {}` failed (is xz-utils installed?)", xz.display()));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&partial, &target).unwrap();
    }
    Ok(target)
}

/// A free TCP port on 127.0.0.1 (bound and released; the small window
/// before the server binds it is accepted).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

impl Cluster {
    async fn start() -> Option<Cluster> {
        let apiserver = match kube_apiserver() {
            Ok(path) => path,
            Err(why) => return missing(&why),
        };
        let etcd = match std::env::var_os("PODGATE_ETCD").map(PathBuf::from).or_else(|| find_tool("etcd")) {
            Some(path) => path,
            None => return missing("no etcd (Debian: apt-get install etcd-server; or set PODGATE_ETCD)"),
        };
        find_tool("helm").or_else(|| missing("no helm in $PODGATE_TOOLS/bin or on PATH"))?;

        let dir = tempfile::Builder::new().prefix("podgate-e2e-").tempdir().unwrap().keep();
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(
                r#"trap '' INT HUP TERM
pids=""
while read -r pid; do pids="$pids $pid"; done
kill -TERM $pids 2>/dev/null
i=0
while [ $i -lt 50 ] && kill -0 $pids 2>/dev/null; do sleep 0.1; i=$((i+1)); done
kill -KILL $pids 2>/dev/null
rm -rf "$1""#,
            )
            .arg("podgate-e2e-watchdog")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("sh for the clean-up watchdog");
        let watchdog_pipe = watchdog.stdin.take().unwrap();

        // Throwaway PKI: one CA signs the apiserver's serving certificate
        // and the admin client certificate, and is the client CA.
        let ca = TestCa::new();
        let serving = ca.leaf("kube-apiserver", 2090);
        let admin_key = KeyPair::generate().unwrap();
        let mut admin = CertificateParams::new(Vec::<String>::new()).unwrap();
        admin.distinguished_name.push(DnType::CommonName, "podgate-e2e-admin");
        admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &ca.issuer).unwrap();
        let sa_key = KeyPair::generate().unwrap();

        let ca_file = write(&dir.join("ca.crt"), &ca.pem);
        let cert_file = write(&dir.join("apiserver.crt"), &serving.cert_pem);
        let key_file = write(&dir.join("apiserver.key"), &serving.key_pem);
        write(&dir.join("admin.crt"), &admin_cert.pem());
        write(&dir.join("admin.key"), &admin_key.serialize_pem());
        let sa_private = write(&dir.join("sa.key"), &sa_key.serialize_pem());
        let sa_public = write(&dir.join("sa.pub"), &sa_key.public_key_pem());

        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let etcd_port = free_port();
        let peer_port = free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_child = Command::new(&etcd)
            .args(["--name", "podgate-e2e", "--log-level", "warn", "--logger", "zap"])
            .arg("--data-dir")
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .arg(format!("--initial-cluster=podgate-e2e={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log("etcd.log"))
            .stderr(log("etcd.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", etcd.display()));
        let mut pipe = watchdog_pipe;
        writeln!(pipe, "{}", etcd_child.id()).unwrap();

        let port = free_port();
        let apiserver_child = Command::new(&apiserver)
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg(format!("--secure-port={port}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--tls-cert-file={cert_file}"))
            .arg(format!("--tls-private-key-file={key_file}"))
            .arg(format!("--client-ca-file={ca_file}"))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={sa_public}"))
            .arg(format!("--service-account-signing-key-file={sa_private}"))
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .arg("--endpoint-reconciler-type=none")
            .arg("--authorization-mode=RBAC")
            .arg("--allow-privileged=true")
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .arg("--profiling=false")
            .stdin(Stdio::null())
            .stdout(log("apiserver.log"))
            .stderr(log("apiserver.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", apiserver.display()));
        writeln!(pipe, "{}", apiserver_child.id()).unwrap();

        let cluster = Cluster {
            url: format!("https://127.0.0.1:{port}"),
            ca_der: rustls::pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap().to_vec(),
            dir,
            processes: Mutex::new(vec![("etcd", etcd_child), ("kube-apiserver", apiserver_child)]),
            watchdog: Mutex::new(pipe),
            next: AtomicUsize::new(0),
        };
        drop(watchdog); // its stdin pipe is all we need; it outlives this process
        cluster.wait_ready().await;
        let admin = cluster.admin();
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let release = json!({"metadata": {"name": RELEASE_NAMESPACE}});
        namespaces.create(&PostParams::default(), &serde_json::from_value(release).unwrap()).await.unwrap();
        Some(cluster)
    }

    /// Waits for `GET /readyz` to answer `ok`; fails with the processes' log
    /// tails if one of them exits or it takes longer than [`PATIENCE`].
    async fn wait_ready(&self) {
        let client = self.admin();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let request = http::Request::get("/readyz").body(Vec::new()).unwrap();
            if let Ok(text) = client.request_text(request).await {
                if text == "ok" {
                    return;
                }
            }
            for (name, child) in self.processes.lock().unwrap().iter_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{name} exited ({status}) before the apiserver was ready:\n{}", self.logs());
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "kube-apiserver not ready in time:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of etcd's and the apiserver's logs, for failure messages.
    pub fn logs(&self) -> String {
        ["etcd.log", "apiserver.log"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!("--- {name} (last 30 lines)\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The cluster's directory: PKI, etcd data, logs (removed with it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The PIDs of etcd and the apiserver.
    pub fn pids(&self) -> Vec<u32> {
        self.processes.lock().unwrap().iter().map(|(_, child)| child.id()).collect()
    }

    /// Hands `pid` (a process a test started beside the cluster, e.g.
    /// Prometheus) to the watchdog too, so that it ends with this test
    /// binary however the binary ends.
    pub fn watch(&self, pid: u32) {
        let _ = writeln!(self.watchdog.lock().unwrap(), "{pid}");
    }

    fn config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.url.parse().unwrap());
        config.root_cert = Some(vec![self.ca_der.clone()]);
        config.auth_info.client_certificate = Some(self.dir.join("admin.crt").display().to_string());
        config.auth_info.client_key = Some(self.dir.join("admin.key").display().to_string());
        config.connect_timeout = Some(PATIENCE);
        config.read_timeout = Some(PATIENCE);
        config.reset_reader_on_write = true;
        config.default_namespace = "default".to_owned();
        config
    }

    fn client(config: kube::Config) -> kube::Client {
        kube::Client::try_from(config).expect("a kube client")
    }

    /// Cluster admin (client certificate with `O=system:masters`).
    pub fn admin(&self) -> kube::Client {
        Self::client(self.config())
    }

    /// The admin impersonating `user` (no groups but `system:authenticated`).
    pub fn as_user(&self, user: &str) -> kube::Client {
        let mut config = self.config();
        config.auth_info.impersonate = Some(user.to_owned());
        Self::client(config)
    }

    /// The admin impersonating `user` as a member of `group`.
    pub fn as_group(&self, user: &str, group: &str) -> kube::Client {
        let mut config = self.config();
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups = Some(vec![group.to_owned()]);
        Self::client(config)
    }

    /// The admin impersonating the ServiceAccount `namespace/name`
    /// (username `system:serviceaccount:NAMESPACE:NAME`).
    pub fn as_service_account(&self, namespace: &str, name: &str) -> kube::Client {
        self.as_user(&format!("system:serviceaccount:{namespace}:{name}"))
    }

    /// A new namespace `SCOPE-N` in `scope`, with its `default` ServiceAccount.
    pub async fn namespace(&self, scope: &str) -> String {
        let name = format!("{scope}-{}", self.next.fetch_add(1, Ordering::Relaxed));
        self.create_namespace(&name, scope).await;
        name
    }

    /// Creates namespace `name` labelled `SCOPE_LABEL=scope`, and its
    /// `default` ServiceAccount (what the missing controller-manager would do).
    pub async fn create_namespace(&self, name: &str, scope: &str) {
        let client = self.admin();
        let namespace = json!({"metadata": {"name": name, "labels": {SCOPE_LABEL: scope}}});
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &serde_json::from_value(namespace).unwrap())
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        let account = json!({"metadata": {"name": "default"}});
        Api::<ServiceAccount>::namespaced(client, name)
            .create(&PostParams::default(), &serde_json::from_value(account).unwrap())
            .await
            .unwrap_or_else(|e| panic!("create serviceaccount {name}/default: {e}"));
    }

    /// Creates the `default` ServiceAccount of an existing namespace
    /// (`kube-system`, [`RELEASE_NAMESPACE`]) unless it is there.
    pub async fn ensure_default_service_account(&self, namespace: &str) {
        let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
        let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts");
        let answer = send(&self.admin(), "POST", &path, "application/json", Some(&account)).await;
        assert!(answer.status == 201 || answer.status == 409, "default serviceaccount in {namespace}: {answer:?}");
    }

    /// Puts an existing namespace (`kube-system`, [`RELEASE_NAMESPACE`]) in
    /// `scope`, so that only the chart's own exclusion keeps it from podgate.
    pub async fn label_namespace(&self, name: &str, scope: &str) {
        let patch = json!({"metadata": {"labels": {SCOPE_LABEL: scope}}});
        Api::<Namespace>::all(self.admin())
            .patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("label namespace {name}: {e}"));
    }

    /// Lets `subject` (an RBAC subject as JSON, e.g.
    /// `{"kind": "User", "name": "alice"}`, `{"kind": "Group", ...}`,
    /// `{"kind": "ServiceAccount", "name": ..., "namespace": ...}`) create
    /// and change Pods and workloads in `namespace`, and waits until the
    /// authorizer says so. A Role of the harness's own: the built-in `edit`
    /// is an aggregated ClusterRole whose rules only the (missing)
    /// controller-manager fills in.
    pub async fn grant_edit(&self, namespace: &str, subject: Value) {
        let client = self.admin();
        let role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "podgate-e2e-workloads"},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "pods/ephemeralcontainers", "replicationcontrollers",
                    "replicationcontrollers/scale"], "verbs": ["*"]},
                {"apiGroups": ["apps", "batch"], "resources": ["*"], "verbs": ["*"]}
            ]
        });
        let path = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles");
        let answer = send(&client, "POST", &path, "application/json", Some(&role)).await;
        assert!(answer.status == 201 || answer.status == 409, "create role in {namespace}: {answer:?}");

        let mut subject = subject;
        if subject["kind"] != "ServiceAccount" {
            subject["apiGroup"] = Value::from("rbac.authorization.k8s.io");
        }
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("podgate-e2e-{}", self.next.fetch_add(1, Ordering::Relaxed))},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "podgate-e2e-workloads"},
            "subjects": [subject],
        });
        let path = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings");
        let answer = send(&client, "POST", &path, "application/json", Some(&binding)).await;
        assert_eq!(answer.status, 201, "create rolebinding in {namespace}: {answer:?}");

        // The RBAC authorizer works from a cache: wait until it has the binding.
        let name = subject["name"].as_str().unwrap().to_owned();
        let (user, groups) = match subject["kind"].as_str() {
            Some("User") => (name, vec![]),
            Some("Group") => ("podgate-e2e-member".to_owned(), vec![name]),
            _ => (format!("system:serviceaccount:{}:{name}", subject["namespace"].as_str().unwrap()), vec![]),
        };
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": groups,
                     "resourceAttributes": {"namespace": namespace, "verb": "create", "resource": "pods"}}
        });
        eventually(&format!("RBAC to allow {user} {groups:?} in {namespace}"), || async {
            let path = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
            send(&client, "POST", path, "application/json", Some(&review)).await.body["status"]["allowed"] == true
        })
        .await;
    }

    /// The apiserver's own `/metrics` (Prometheus text).
    pub async fn metrics(&self) -> String {
        let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
        self.admin().request_text(request).await.expect("apiserver /metrics")
    }

    /// A scratch directory inside the cluster's (removed with it).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.dir.join("scratch").join(format!("{name}-{}", self.next.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A kubeconfig file for the cluster as admin (optionally impersonating
    /// `as_user`), for the podgate binary's kube client (`podgate audit`).
    pub fn kubeconfig(&self, as_user: Option<&str>) -> PathBuf {
        let dir = self.dir();
        let path = self.scratch("kubeconfig").join(as_user.unwrap_or("admin").replace(':', "_"));
        let impersonate = as_user.map(|user| format!(", as: \"{user}\"")).unwrap_or_default();
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\n\
                 clusters: [{{name: e2e, cluster: {{server: \"{}\", certificate-authority: \"{}\"}}}}]\n\
                 users: [{{name: admin, user: {{client-certificate: \"{}\", client-key: \"{}\"{impersonate}}}}}]\n\
                 contexts: [{{name: e2e, context: {{cluster: e2e, user: admin}}}}]\ncurrent-context: e2e\n",
                self.url,
                dir.join("ca.crt").display(),
                dir.join("admin.crt").display(),
                dir.join("admin.key").display(),
            ),
        )
        .unwrap();
        path
    }
}

/// What the apiserver answered: status, each `Warning` header's text, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub warnings: Vec<String>,
    pub body: Value,
}

impl Answer {
    /// The `message` of a `Status` answer (a refusal), else "".
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
}

/// The REST collection path of `object` (its `apiVersion` and `kind`) in `namespace`.
pub fn collection_path(object: &Value, namespace: &str) -> String {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    // Every kind podgate checks has the plural kind + "s".
    let plural = format!("{}s", kind.to_ascii_lowercase());
    let prefix = if api_version.contains('/') { format!("/apis/{api_version}") } else { format!("/api/{api_version}") };
    format!("{prefix}/namespaces/{namespace}/{plural}")
}

/// Sends a request with a JSON body (when given) and collects the answer.
pub async fn send(client: &kube::Client, method: &str, path: &str, content_type: &str, body: Option<&Value>) -> Answer {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header("accept", "application/json")
        .body(kube::client::Body::from(bytes))
        .unwrap();
    let response = client.send(request).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|value| warning_text(value.to_str().expect("an ASCII Warning header")))
        .collect();
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e})"))
    };
    Answer { status, warnings, body }
}

/// The text of a `Warning: 299 - "text"` header (RFC 7234 quoted string).
pub fn warning_text(header: &str) -> String {
    let quoted = header.strip_prefix("299 - ").unwrap_or(header);
    let inner = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')).unwrap_or(quoted);
    let mut text = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        text.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
    }
    text
}

/// POSTs `object` to its collection in `namespace`.
pub async fn create(client: &kube::Client, namespace: &str, object: &Value) -> Answer {
    send(client, "POST", &collection_path(object, namespace), "application/json", Some(object)).await
}

/// The same with `?dryRun=All`: evaluated by admission, never stored.
pub async fn create_dry_run(client: &kube::Client, namespace: &str, object: &Value) -> Answer {
    let path = format!("{}?dryRun=All", collection_path(object, namespace));
    send(client, "POST", &path, "application/json", Some(object)).await
}

/// A manifest from `tests/fixtures/e2e/` as JSON (the first document).
pub fn manifest(name: &str) -> Value {
    let path = repo_root().join("tests/fixtures/e2e").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `object` with `metadata.name` set.
pub fn named(mut object: Value, name: &str) -> Value {
    object["metadata"]["name"] = Value::from(name);
    object
}

/// podgate serving in process, registered with the cluster by the chart's
/// webhook configuration for one scope.
pub struct Podgate {
    /// The server, its test CA, its certificate mount and a client.
    pub harness: Harness,
    /// Name of the `ValidatingWebhookConfiguration` (also the webhook's
    /// `name` label value in the apiserver's metrics is `validate.podgate.dev`).
    pub configuration: String,
    /// The policy file the chart rendered (`policy.yaml` of its ConfigMap).
    pub policy: PathBuf,
    /// The rendered webhook configuration as registered.
    pub webhook: ValidatingWebhookConfiguration,
    /// A namespace in the scope, used to see the registration take effect.
    pub probe_namespace: String,
}

/// `helm template` of the chart in [`RELEASE_NAMESPACE`], for one scope, with `--set` values.
/// `json_values` are `--set-json` items (`exemptions=[...]`).
pub fn render_chart(cluster: &Cluster, scope: &str, values: &[&str], json_values: &[&str]) -> Vec<Value> {
    let helm = find_tool("helm").expect("helm (checked when the cluster started)");
    let home = cluster.dir.join("helm-home");
    let mut command = Command::new(helm);
    command
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("HELM_NAMESPACE")
        .env_remove("KUBECONFIG")
        .arg("template")
        .arg(format!("podgate-{scope}"))
        .arg(repo_root().join("charts/podgate"))
        .args(["--namespace", RELEASE_NAMESPACE])
        .arg("--set")
        .arg(format!("fullnameOverride=podgate-{scope}"))
        .arg("--set-json")
        .arg(format!("webhook.namespaceSelector.matchLabels={}", json!({SCOPE_LABEL: scope})));
    for value in values {
        command.args(["--set", value]);
    }
    for value in json_values {
        command.args(["--set-json", value]);
    }
    let output = command.output().expect("run helm");
    assert!(output.status.success(), "helm template failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("helm output is YAML"))
        .filter(|doc: &Value| !doc.is_null())
        .collect()
}

impl Podgate {
    /// Renders the chart for `scope` with `values` (`--set` items such as
    /// `mode=audit`), starts podgate with the rendered policy and `extra`
    /// serve flags, registers the rendered webhook configuration (only
    /// `clientConfig` changed) and waits until the apiserver calls podgate.
    pub async fn register(cluster: &Cluster, scope: &str, values: &[&str]) -> Podgate {
        Self::register_with(cluster, scope, values, &[], &[]).await
    }

    /// [`register`](Self::register) with `--set-json` items as well
    /// (`exemptions=[...]`) and extra `podgate serve` flags.
    pub async fn register_with(
        cluster: &Cluster,
        scope: &str,
        values: &[&str],
        json_values: &[&str],
        extra: &[&str],
    ) -> Podgate {
        let documents = render_chart(cluster, scope, values, json_values);
        let find = |kind: &str| {
            documents.iter().find(|doc| doc["kind"] == kind).unwrap_or_else(|| panic!("the chart renders no {kind}"))
        };
        let policy_text = find("ConfigMap")["data"]["policy.yaml"].as_str().expect("policy.yaml in the ConfigMap");
        let policy = cluster.scratch(scope).join("policy.yaml");
        std::fs::write(&policy, policy_text).unwrap();
        let policy_arg = policy.display().to_string();
        let mut args = vec!["--config", policy_arg.as_str()];
        args.extend_from_slice(extra);
        let harness = super::start(&args).await;

        let mut webhook: ValidatingWebhookConfiguration =
            serde_json::from_value(find("ValidatingWebhookConfiguration").clone()).unwrap();
        for hook in webhook.webhooks.iter_mut().flatten() {
            hook.client_config = WebhookClientConfig {
                url: Some(harness.url.clone()),
                ca_bundle: Some(ByteString(harness.ca.pem.clone().into_bytes())),
                service: None,
            };
        }
        let configuration = webhook.metadata.name.clone().unwrap();
        let probe_namespace = cluster.namespace(scope).await;
        Api::<ValidatingWebhookConfiguration>::all(cluster.admin())
            .create(&PostParams::default(), &webhook)
            .await
            .unwrap_or_else(|e| panic!("create {configuration}: {e}"));
        let podgate = Podgate { harness, configuration, policy, webhook, probe_namespace };
        podgate.wait_until_called(cluster).await;
        podgate
    }

    /// Reviews podgate answered so far (all kinds and decisions).
    pub async fn reviews(&self) -> f64 {
        let text = self.harness.metrics().await;
        text.lines()
            .filter(|line| line.starts_with("podgate_admission_requests_total{"))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Dry-run creations of a Pod in the probe namespace until one reaches
    /// podgate: the apiserver picks up new webhook configurations a moment
    /// after they are stored.
    async fn wait_until_called(&self, cluster: &Cluster) {
        let client = cluster.admin();
        let before = self.reviews().await;
        let pod = named(manifest("pod-compliant.yaml"), "podgate-probe");
        eventually("the apiserver to call podgate", || async {
            create_dry_run(&client, &self.probe_namespace, &pod).await;
            self.reviews().await > before
        })
        .await;
    }

    /// Deletes the webhook configuration (podgate keeps running).
    pub async fn unregister(&self, cluster: &Cluster) {
        Api::<ValidatingWebhookConfiguration>::all(cluster.admin())
            .delete(&self.configuration, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {}: {e}", self.configuration));
    }
}
