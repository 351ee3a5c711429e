//! A real single-node cluster (`deploy/node.sh`) with podgate installed by
//! its chart, for `tests/node.rs`.
//!
//! [`Node::up`] runs `deploy/node.sh up` (the script people use: etcd,
//! kube-apiserver, controller-manager, scheduler, containerd, kubelet,
//! kube-proxy; podgate's image imported; `helm install` with default
//! values but the image and `pullPolicy: Never`, into a namespace enforcing
//! Pod Security `restricted`). `None` (after a loud message) when this is
//! not root or a tool is missing, unless `PODGATE_REQUIRE_TOOLS=1`.
//!
//! Clean-up does not depend on the test process running any code at the
//! end, as in [`super::apiserver`]: a watchdog shell is started first with
//! a pipe as its stdin whose only write end this process holds; when the
//! process ends, however it ends (a panic in any thread, `abort`, a
//! signal), the kernel closes the pipe and the watchdog runs
//! `deploy/node.sh down`, which stops every component by the PID it
//! recorded, kills the containers, unmounts, and removes the iptables
//! chains, the bridge and the node IP. It ignores SIGINT/SIGHUP/SIGTERM so
//! that a Ctrl-C to the process group does not stop it before it is done.
//! [`Node::down`] does the same at once, so that a test can check that
//! nothing is left.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Output, Stdio};
use std::sync::Mutex;

/// The podgate release and its namespace.
pub const RELEASE: &str = "podgate";
pub const NAMESPACE: &str = "podgate";
/// The node's IP (on `lo`) and the bridge of the Pod network.
pub const NODE_IP: &str = "198.18.255.1";
pub const BRIDGE: &str = "podgate0";

/// The running cluster.
pub struct Node {
    /// `PODGATE_NODE_DIR`: PKI, configs, logs, PIDs, data.
    pub dir: PathBuf,
    /// The podgate binary in the image.
    pub binary: PathBuf,
    /// The image reference the chart runs.
    pub image: String,
    script: PathBuf,
    tools: PathBuf,
    _watchdog: Mutex<ChildStdin>,
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn skip_or_fail<T>(what: &str) -> Option<T> {
    if std::env::var("PODGATE_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("real-node tests: {what}, and PODGATE_REQUIRE_TOOLS=1; run `bash .ci/install.d/node.sh` as root");
    }
    let bang = "!".repeat(76);
    let message = format!(
        "\n{bang}\n!!! SKIPPED real-node test: {what}\n!!! needs root and `bash .ci/install.d/node.sh`\n{bang}\n"
    );
    let _ = std::io::stderr().write_all(message.as_bytes());
    None
}

impl Node {
    /// Brings the cluster up with podgate installed (see the module docs).
    pub fn up() -> Option<Node> {
        let script = repo_root().join("deploy/node.sh");
        let dir = std::env::var_os("PODGATE_NODE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/podgate-node"));
        let tools = super::apiserver::tools_dir();
        let binary = std::env::var_os("PODGATE_BINARY")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_podgate")));
        let image = std::env::var("PODGATE_IMAGE").unwrap_or_else(|_| "podgate.local/podgate:node".to_owned());

        let check = Command::new(&script).arg("check").stdin(Stdio::null()).output().expect("run deploy/node.sh");
        match check.status.code() {
            Some(0) => {}
            Some(3) => return skip_or_fail(String::from_utf8_lossy(&check.stderr).trim()),
            _ => panic!("deploy/node.sh check failed:\n{}", String::from_utf8_lossy(&check.stderr)),
        }
        // Someone's cluster (deploy/node.sh up by hand) runs here: never
        // tear it down from a test.
        let pids = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
        let running: Vec<&str> = pids
            .lines()
            .filter(|line| line.split_whitespace().nth(1).is_some_and(|pid| Path::new("/proc").join(pid).exists()))
            .collect();
        assert!(
            running.is_empty(),
            "a cluster runs already in {} ({running:?}); `deploy/node.sh down` first",
            dir.display()
        );

        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg("trap '' INT HUP TERM; while read -r _; do :; done; exec \"$0\" down >/dev/null 2>&1")
            .arg(&script)
            .env("PODGATE_NODE_DIR", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh for the clean-up watchdog");
        let pipe = watchdog.stdin.take().unwrap();
        drop(watchdog); // it outlives this process; its stdin is all we need

        let node = Node { dir, binary, image, script, tools, _watchdog: Mutex::new(pipe) };
        // The script's progress and, on failure, the failing component's
        // log go to the test's stderr as they come.
        let status = Command::new(&node.script)
            .arg("up")
            .env("PODGATE_NODE_DIR", &node.dir)
            .env("PODGATE_BINARY", &node.binary)
            .env("PODGATE_IMAGE", &node.image)
            .stdin(Stdio::null())
            .status()
            .expect("run deploy/node.sh up");
        assert!(status.success(), "deploy/node.sh up failed ({status}); its messages are above");
        Some(node)
    }

    /// `deploy/node.sh down`, now.
    pub fn down(&self) {
        let output = Command::new(&self.script)
            .arg("down")
            .env("PODGATE_NODE_DIR", &self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run deploy/node.sh down");
        assert!(output.status.success(), "deploy/node.sh down: {}", String::from_utf8_lossy(&output.stderr));
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A kube client as cluster admin.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("the node's kubeconfig");
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        config.connect_timeout = Some(super::PATIENCE);
        config.read_timeout = Some(super::PATIENCE);
        kube::Client::try_from(config).unwrap()
    }

    /// Runs a tool with the node's kubeconfig; panics with its output unless it succeeds.
    fn run(&self, tool: &str, args: &[&str]) -> String {
        let output = self.run_status(tool, args);
        assert!(
            output.status.success(),
            "{tool} {}: {}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn run_status(&self, tool: &str, args: &[&str]) -> Output {
        let helm = self.dir.join("helm");
        Command::new(self.tools.join("bin").join(tool))
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HELM_CACHE_HOME", helm.join("cache"))
            .env("HELM_CONFIG_HOME", helm.join("config"))
            .env("HELM_DATA_HOME", helm.join("data"))
            .env_remove("HELM_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    /// `kubectl ARGS` (stdout).
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.run("kubectl", args)
    }

    /// `helm ARGS` (stdout).
    pub fn helm(&self, args: &[&str]) -> String {
        self.run("helm", args)
    }

    /// `helm upgrade` of the release with its values so far and `set` (`--set` items), waiting for it.
    pub fn upgrade(&self, set: &[&str]) {
        let chart = repo_root().join("charts/podgate").display().to_string();
        let mut args = vec!["upgrade", RELEASE, &chart, "--namespace", NAMESPACE, "--reuse-values"];
        for item in set {
            args.extend(["--set", item]);
        }
        args.extend(["--wait", "--timeout", "120s"]);
        self.helm(&args);
    }

    /// `ctr -n k8s.io ARGS` against the node's containerd.
    pub fn ctr(&self, args: &[&str]) -> String {
        let socket = self.dir.join("containerd/containerd.sock").display().to_string();
        let output = Command::new("ctr")
            .args(["--address", &socket, "-n", "k8s.io"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr");
        assert!(output.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }

    /// The last lines of each component's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["kube-apiserver", "kubelet", "kube-controller-manager", "containerd"] {
            let log = std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log"))).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            text += &format!("--- {name} (last 15 lines)\n{}\n", lines[lines.len().saturating_sub(15)..].join("\n"));
        }
        text
    }
}

/// What is left of a cluster after `down`: running recorded processes,
/// mounts under `dir`, KUBE-/CNI- iptables chains, the bridge, the node IP.
pub fn leftovers(dir: &Path, pids: &[u32]) -> Vec<String> {
    let mut left = Vec::new();
    for pid in pids {
        if Path::new("/proc").join(pid.to_string()).exists() {
            left.push(format!("process {pid}"));
        }
    }
    let prefix = format!("{}/", dir.display());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    left.extend(
        mounts
            .lines()
            .filter(|line| line.split(' ').nth(1).is_some_and(|m| m.starts_with(&prefix)))
            .map(|line| format!("mount {}", line.split(' ').nth(1).unwrap())),
    );
    for tool in ["iptables-save", "ip6tables-save"] {
        if let Ok(output) = Command::new(tool).output() {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            left.extend(
                text.lines()
                    .filter(|line| line.starts_with(":KUBE-") || line.starts_with(":CNI-"))
                    .map(|line| format!("{tool}: chain {}", line.split(' ').next().unwrap())),
            );
        }
    }
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        left.push(format!("bridge {BRIDGE}"));
    }
    let addresses = Command::new("ip").args(["-o", "addr", "show", "dev", "lo"]).output().unwrap();
    if String::from_utf8_lossy(&addresses.stdout).contains(&format!(" {NODE_IP}/32 ")) {
        left.push(format!("{NODE_IP} on lo"));
    }
    if dir.exists() {
        left.push(format!("{} exists", dir.display()));
    }
    left
}

/// The PIDs `deploy/node.sh` recorded.
pub fn recorded_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1)?.parse().ok())
        .collect()
}
