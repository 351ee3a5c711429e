//! The Helm chart (`charts/podgate`) and the plain manifests (`deploy/`).
//!
//! Shells out to `helm` (v3), `kubernetes-validate` and `openssl`, and to the
//! podgate binary built by this crate. A missing tool skips the test with a
//! loud message, unless `PODGATE_REQUIRE_TOOLS=1` (set by `.ci/run`, which
//! installs them through `.ci/install.d/`): then it fails.
//!
//! Schema validation: built-in kinds go through `kubernetes-validate
//! --strict` for the oldest Kubernetes the chart supports and newer ones.
//! Its offline schemas know no CRDs, so the cert-manager and
//! prometheus-operator objects (Issuer, Certificate, ServiceMonitor,
//! PrometheusRule) are checked here instead, field by field against the
//! subset of their CRD schema that the chart uses, and against the objects
//! they refer to (the Service, the Secret, the metric names podgate exports);
//! the PrometheusRule's groups also go through `promtool check rules`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{json, Value};

const RELEASE: &str = "podgate";
const NAMESPACE: &str = "podgate";
/// The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), the
/// one this crate's API types target, and the newest the pinned
/// kubernetes-validate knows.
const KUBERNETES_VERSIONS: [&str; 3] = ["1.25.0", "1.33.0", "1.37.0"];
/// The `podgate serve` arguments the chart and the server agreed on.
const SERVE_ARGS: [&str; 12] = [
    "serve",
    "--listen=0.0.0.0:8443",
    "--metrics-listen=0.0.0.0:9090",
    "--tls-cert=/certs/tls.crt",
    "--tls-key=/certs/tls.key",
    "--config=/config/policy.yaml",
    "--log-format=json",
    "--shutdown-delay=5s",
    "--shutdown-grace=10s",
    "--idle-timeout=120s",
    "--header-read-timeout=5s",
    "--max-buffered-bytes=33554432",
];
/// The metrics `podgate serve` exports; alerts may use nothing else.
const METRICS: [&str; 16] = [
    "podgate_admission_requests_total",
    "podgate_admission_request_duration_seconds",
    "podgate_policy_violations_total",
    "podgate_exemptions_total",
    "podgate_exemption_expiry_timestamp_seconds",
    "podgate_invalid_requests_total",
    "podgate_tls_certificate_expiry_timestamp_seconds",
    "podgate_tls_reloads_total",
    "podgate_config_reloads_total",
    "podgate_overload_rejections_total",
    "podgate_build_info",
    "podgate_audit_objects",
    "podgate_audit_findings",
    "podgate_audit_last_success_timestamp_seconds",
    "podgate_audit_duration_seconds",
    "podgate_audit_errors_total",
];
const CHECK_IDS: [&str; 6] =
    ["runAsNonRoot", "runAsUser", "allowPrivilegeEscalation", "livenessProbe", "readinessProbe", "probeSettings"];

// ---------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    root().join("charts/podgate")
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/chart").join(name)
}

fn tools_dir() -> PathBuf {
    match std::env::var_os("PODGATE_TOOLS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/podgate-tools"),
    }
}

/// `name` from `$PODGATE_TOOLS/bin`, else from `PATH`.
fn find_tool(name: &str) -> Option<PathBuf> {
    let local = tools_dir().join("bin").join(name);
    if local.is_file() {
        return Some(local);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// The tool, or `None` after a loud skip message; panics instead when
/// `PODGATE_REQUIRE_TOOLS=1`.
fn require_tool(name: &str, test: &str) -> Option<PathBuf> {
    if let Some(path) = find_tool(name) {
        return Some(path);
    }
    let hint =
        "install the tools with `for f in .ci/install.d/*.sh; do bash \"$f\"; done` (helm goes to $PODGATE_TOOLS/bin)";
    if std::env::var("PODGATE_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{test}: `{name}` not found and PODGATE_REQUIRE_TOOLS=1; {hint}");
    }
    // Written to the stderr handle, not with eprintln!: libtest captures
    // the output of passing tests, and a skip must be seen.
    let bang = "!".repeat(76);
    let message = format!(
        "\n{bang}\n!!! SKIPPED {test}: `{name}` not found; {hint}\n\
         !!! (set PODGATE_REQUIRE_TOOLS=1 to make a missing tool fail the test)\n{bang}\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
    None
}

/// The tool, or return from the test (skip).
macro_rules! tool {
    ($test:expr, $name:expr) => {
        match require_tool($name, $test) {
            Some(path) => path,
            None => return,
        }
    };
}

/// A scratch directory for the whole test binary (helm's cache and config
/// homes, rendered files), removed by the OS's tmp cleaning, not by us:
/// tests run in parallel and share it.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().prefix("podgate-chart-test").tempdir().unwrap().keep())
}

fn helm_command(helm: &Path) -> Command {
    let mut command = Command::new(helm);
    let home = scratch().join("helm-home");
    command
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("HELM_NAMESPACE")
        .env_remove("KUBECONFIG");
    command
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `helm template` of `chart` in `namespace` with the value files and
/// `--set` arguments: stdout, or stderr as the error.
fn try_render(helm: &Path, chart: &Path, namespace: &str, values: &[&Path], set: &[&str]) -> Result<String, String> {
    let mut command = helm_command(helm);
    command.arg("template").arg(RELEASE).arg(chart).args(["--namespace", namespace]);
    for file in values {
        command.arg("--values").arg(file);
    }
    for item in set {
        command.args(["--set", item]);
    }
    let output = run(&mut command);
    if output.status.success() {
        Ok(stdout(&output))
    } else {
        Err(stderr(&output))
    }
}

fn render(helm: &Path, values: &[&Path], set: &[&str]) -> Rendering {
    let text = try_render(helm, &chart_dir(), NAMESPACE, values, set)
        .unwrap_or_else(|e| panic!("helm template with {values:?} {set:?} failed:\n{e}"));
    Rendering::parse(&format!("values {values:?} {set:?}"), text)
}

// ---------------------------------------------------------------------------
// Renderings
// ---------------------------------------------------------------------------

/// One rendered document: its raw text (as helm printed it) and its value.
struct Doc {
    raw: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
    fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
}

struct Rendering {
    label: String,
    text: String,
    docs: Vec<Doc>,
}

impl Rendering {
    fn parse(label: &str, text: String) -> Rendering {
        let mut docs = Vec::new();
        let mut chunk = String::new();
        let flush = |chunk: &mut String, docs: &mut Vec<Doc>| {
            let raw = std::mem::take(chunk);
            let value: Value = serde_yaml_ng::from_str(&raw)
                .unwrap_or_else(|e| panic!("{label}: a rendered document is not YAML: {e}\n{raw}"));
            if !value.is_null() {
                docs.push(Doc { raw, value });
            }
        };
        for line in text.lines() {
            if line == "---" {
                flush(&mut chunk, &mut docs);
            } else {
                chunk.push_str(line);
                chunk.push('\n');
            }
        }
        flush(&mut chunk, &mut docs);
        Rendering { label: label.to_owned(), text, docs }
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d.kind() == kind).map(|d| &d.value).collect()
    }

    fn maybe(&self, kind: &str) -> Option<&Value> {
        let all = self.all(kind);
        assert!(all.len() <= 1, "{}: more than one {kind}", self.label);
        all.into_iter().next()
    }

    fn one(&self, kind: &str) -> &Value {
        self.maybe(kind).unwrap_or_else(|| panic!("{}: no {kind} rendered", self.label))
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.all(kind)
            .into_iter()
            .find(|v| v["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} named {name}", self.label))
    }

    fn kinds(&self) -> BTreeSet<String> {
        self.docs.iter().map(|d| d.kind().to_owned()).collect()
    }

    /// The webhook's Deployment (not the auditor's).
    fn deployment(&self) -> &Value {
        let all: Vec<&Value> = self
            .all("Deployment")
            .into_iter()
            .filter(|d| !d["metadata"]["name"].as_str().unwrap_or("").ends_with("-audit"))
            .collect();
        assert_eq!(all.len(), 1, "{}: one webhook Deployment", self.label);
        all[0]
    }

    fn container(&self) -> &Value {
        let containers = self.deployment()["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{}: one container", self.label);
        &containers[0]
    }

    fn webhook(&self) -> &Value {
        let webhooks = self.one("ValidatingWebhookConfiguration")["webhooks"].as_array().unwrap();
        assert_eq!(webhooks.len(), 1, "{}: one webhook", self.label);
        &webhooks[0]
    }

    /// The ConfigMap of the policy (not the dashboard's).
    fn policy_config_map(&self) -> &Value {
        let all: Vec<&Value> =
            self.all("ConfigMap").into_iter().filter(|c| c["data"]["policy.yaml"].is_string()).collect();
        assert_eq!(all.len(), 1, "{}: one ConfigMap with data.policy.yaml", self.label);
        all[0]
    }

    /// The policy file the ConfigMap carries.
    fn policy_text(&self) -> String {
        self.policy_config_map()["data"]["policy.yaml"].as_str().unwrap().to_owned()
    }

    fn policy(&self) -> Value {
        serde_yaml_ng::from_str(&self.policy_text()).unwrap()
    }

    fn write(&self, name: &str) -> PathBuf {
        let path = scratch().join(name);
        std::fs::write(&path, &self.text).unwrap();
        path
    }
}

fn file_name(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

// ---------------------------------------------------------------------------
// The checks every rendering must pass
// ---------------------------------------------------------------------------

/// API groups of the CRD kinds the chart may render; checked in Rust.
const CRD_KINDS: [(&str, &str); 4] = [
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
];

fn is_crd(doc: &Doc) -> bool {
    CRD_KINDS.iter().any(|(api, kind)| doc.api_version() == *api && doc.kind() == *kind)
}

/// Everything every rendering must satisfy, whatever its values.
fn check_rendering(tools: &Tools, r: &Rendering) {
    validate_builtin_kinds(&tools.kubernetes_validate, r);
    check_crd_objects(r);
    podgate_accepts_itself(r);
    rendered_policy_is_valid(r);
    common_invariants(r);
}

/// `kubernetes-validate --strict` on every built-in kind, for every
/// Kubernetes version: every document must be found and pass.
fn validate_builtin_kinds(kubernetes_validate: &Path, r: &Rendering) {
    validate_builtin_kinds_for(kubernetes_validate, r, &KUBERNETES_VERSIONS)
}

/// [`validate_builtin_kinds`] for the given Kubernetes versions only.
fn validate_builtin_kinds_for(kubernetes_validate: &Path, r: &Rendering, versions: &[&str]) {
    let builtin: Vec<&Doc> = r.docs.iter().filter(|d| !is_crd(d)).collect();
    for doc in &r.docs {
        let group = doc.api_version().split('/').next().unwrap();
        assert!(
            is_crd(doc) || !group.contains('.') || group.ends_with(".k8s.io"),
            "{}: {} {} is neither a built-in kind nor a CRD kind this test checks",
            r.label,
            doc.api_version(),
            doc.kind()
        );
    }
    let text: String = builtin.iter().map(|d| format!("---\n{}", d.raw)).collect();
    let path = scratch().join(format!("builtin-{}.yaml", file_name(&r.label)));
    std::fs::write(&path, text).unwrap();
    for &version in versions {
        let output =
            run(Command::new(kubernetes_validate).args(["--strict", "--kubernetes-version", version]).arg(&path));
        let out = format!("{}{}", stdout(&output), stderr(&output));
        assert!(output.status.success(), "{}: kubernetes-validate --strict -k {version} failed:\n{out}", r.label);
        let passed = out.lines().filter(|l| l.contains(" passed for resource ")).count();
        assert_eq!(
            passed,
            builtin.len(),
            "{}: kubernetes-validate -k {version} passed {passed} of {} documents (a schema missing?):\n{out}",
            r.label,
            builtin.len()
        );
        assert!(!out.contains("WARN") && !out.contains("ERROR"), "{}: -k {version}:\n{out}", r.label);
    }
}

/// Asserts that `value` is an object whose keys are all in `allowed` and
/// that holds every key in `required`.
fn keys(what: &str, value: &Value, allowed: &[&str], required: &[&str]) {
    let map = value.as_object().unwrap_or_else(|| panic!("{what}: not an object: {value}"));
    for key in map.keys() {
        assert!(allowed.contains(&key.as_str()), "{what}: unknown field {key:?} (allowed: {allowed:?})");
    }
    for key in required {
        assert!(map.contains_key(*key), "{what}: missing field {key:?}");
    }
}

fn string(what: &str, value: &Value) -> String {
    value.as_str().unwrap_or_else(|| panic!("{what}: not a string: {value}")).to_owned()
}

fn is_go_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ns", "us", "ms", "s", "m", "h"].iter().find(|u| rest.starts_with(**u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

fn metadata_ok(what: &str, doc: &Value, namespaced: bool) {
    let required: &[&str] = if namespaced { &["name", "namespace", "labels"] } else { &["name", "labels"] };
    keys(what, &doc["metadata"], &["name", "namespace", "labels", "annotations"], required);
    if namespaced {
        assert_eq!(doc["metadata"]["namespace"], NAMESPACE, "{what}: namespace");
    }
}

/// The cert-manager and prometheus-operator objects: the fields the chart
/// uses, checked against their CRD schemas (cert-manager.io/v1,
/// monitoring.coreos.com/v1) by hand, plus what they refer to.
fn check_crd_objects(r: &Rendering) {
    for doc in r.docs.iter().filter(|d| is_crd(d)) {
        let v = &doc.value;
        let what = format!("{}: {} {}", r.label, doc.kind(), doc.name());
        keys(&what, v, &["apiVersion", "kind", "metadata", "spec"], &["apiVersion", "kind", "metadata", "spec"]);
        metadata_ok(&what, v, true);
        match doc.kind() {
            "Issuer" => check_issuer(&what, &v["spec"], r),
            "Certificate" => check_certificate(&what, &v["spec"], r),
            "ServiceMonitor" => check_service_monitor(&what, &v["spec"], r),
            "PrometheusRule" => check_prometheus_rule(&what, &v["spec"]),
            other => unreachable!("{other}"),
        }
    }
}

fn check_issuer(what: &str, spec: &Value, r: &Rendering) {
    keys(what, spec, &["selfSigned", "ca"], &[]);
    let map = spec.as_object().unwrap();
    assert_eq!(map.len(), 1, "{what}: exactly one issuer type");
    if let Some(ca) = map.get("ca") {
        keys(what, ca, &["secretName"], &["secretName"]);
        // The CA secret is the one a rendered isCA Certificate writes.
        let secret = string(what, &ca["secretName"]);
        let writer = r
            .all("Certificate")
            .into_iter()
            .find(|c| c["spec"]["secretName"] == secret.as_str())
            .unwrap_or_else(|| panic!("{what}: no Certificate writes {secret}"));
        assert_eq!(writer["spec"]["isCA"], true, "{what}: the CA secret comes from an isCA Certificate");
    } else {
        assert_eq!(map["selfSigned"], json!({}), "{what}");
    }
}

fn check_certificate(what: &str, spec: &Value, r: &Rendering) {
    keys(
        what,
        spec,
        &[
            "secretName",
            "secretTemplate",
            "commonName",
            "dnsNames",
            "duration",
            "renewBefore",
            "privateKey",
            "usages",
            "issuerRef",
            "isCA",
        ],
        &["secretName", "issuerRef"],
    );
    string(what, &spec["secretName"]);
    for field in ["duration", "renewBefore"] {
        if let Some(d) = spec.get(field) {
            assert!(is_go_duration(&string(what, d)), "{what}: {field} {d} is not a duration");
        }
    }
    if let Some(key) = spec.get("privateKey") {
        keys(what, key, &["algorithm", "size", "rotationPolicy", "encoding"], &[]);
        assert!(["RSA", "ECDSA", "Ed25519"].contains(&key["algorithm"].as_str().unwrap()), "{what}");
    }
    if let Some(usages) = spec.get("usages") {
        for usage in usages.as_array().unwrap() {
            assert!(["server auth", "digital signature", "key encipherment"].contains(&usage.as_str().unwrap()));
        }
    }
    if let Some(template) = spec.get("secretTemplate") {
        keys(what, template, &["labels", "annotations"], &[]);
    }
    let issuer = &spec["issuerRef"];
    keys(what, issuer, &["name", "kind", "group"], &["name"]);
    if issuer["kind"] == "Issuer" {
        // A namespaced Issuer must be one the chart renders.
        r.named("Issuer", issuer["name"].as_str().unwrap());
    }
    if spec.get("isCA") == Some(&json!(true)) {
        return;
    }
    // The serving certificate: the Secret the Deployment mounts, for the
    // Service's DNS name.
    let volumes = r.deployment()["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    let certs = volumes.iter().find(|v| v["name"] == "certs").expect("certs volume");
    assert_eq!(certs["secret"]["secretName"], spec["secretName"], "{what}: the Deployment mounts its Secret");
    let service = r.one("Service")["metadata"]["name"].as_str().unwrap().to_owned();
    let ns = NAMESPACE.to_owned();
    let dns: Vec<&str> = spec["dnsNames"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert!(dns.contains(&format!("{service}.{ns}.svc").as_str()), "{what}: dnsNames {dns:?}");
}

fn check_service_monitor(what: &str, spec: &Value, r: &Rendering) {
    keys(what, spec, &["selector", "namespaceSelector", "endpoints", "jobLabel"], &["selector", "endpoints"]);
    keys(what, &spec["selector"], &["matchLabels"], &["matchLabels"]);
    // It selects podgate's Service, in its namespace, on a port it has.
    let service = r.one("Service");
    for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][k], v, "{what}: selector {k} does not match the Service");
    }
    let ns = NAMESPACE.to_owned();
    assert_eq!(spec["namespaceSelector"], json!({"matchNames": [ns]}), "{what}");
    let ports: Vec<&Value> = service["spec"]["ports"].as_array().unwrap().iter().map(|p| &p["name"]).collect();
    let endpoints = spec["endpoints"].as_array().unwrap();
    assert!(!endpoints.is_empty(), "{what}: endpoints");
    for endpoint in endpoints {
        keys(
            what,
            endpoint,
            &["port", "path", "scheme", "interval", "scrapeTimeout", "relabelings", "metricRelabelings"],
            &["port"],
        );
        assert!(ports.contains(&&endpoint["port"]), "{what}: port {} not on the Service", endpoint["port"]);
        assert_eq!(endpoint["path"], "/metrics", "{what}");
        assert!(["http", "https"].contains(&endpoint["scheme"].as_str().unwrap_or("http")));
        for relabel in ["relabelings", "metricRelabelings"] {
            for item in endpoint.get(relabel).and_then(Value::as_array).into_iter().flatten() {
                keys(
                    what,
                    item,
                    &["action", "sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement"],
                    &[],
                );
            }
        }
    }
}

fn check_prometheus_rule(what: &str, spec: &Value) {
    keys(what, spec, &["groups"], &["groups"]);
    let mut alerts = BTreeSet::new();
    for group in spec["groups"].as_array().unwrap() {
        keys(what, group, &["name", "interval", "rules"], &["name", "rules"]);
        for rule in group["rules"].as_array().unwrap() {
            keys(what, rule, &["alert", "record", "expr", "for", "labels", "annotations"], &["alert", "expr"]);
            let alert = string(what, &rule["alert"]);
            let expr = string(what, &rule["expr"]);
            if let Some(duration) = rule.get("for") {
                assert!(is_go_duration(&string(what, duration)), "{what}: {alert}: for {duration}");
            }
            assert!(rule["labels"]["severity"].is_string(), "{what}: {alert} has no severity");
            assert!(rule["annotations"]["summary"].is_string(), "{what}: {alert} has no summary");
            assert!(rule["annotations"]["description"].is_string(), "{what}: {alert} has no description");
            expr_sane(&format!("{what}: {alert}"), &expr);
            alerts.insert(alert);
        }
    }
    promtool_accepts_rules(what, spec);
    for needed in [
        "PodgateDown",
        "PodgateWebhookErrors",
        "PodgateWebhookLatencyHigh",
        "PodgateCertificateExpiringSoon",
        "PodgateDenialsSpiking",
        "PodgateWouldDenyInAudit",
        "PodgateExemptionExpiringSoon",
        "PodgateExemptionExpired",
    ] {
        assert!(alerts.contains(needed), "{what}: no alert {needed}");
    }
}

/// Prometheus' own `promtool check rules` parses every expression, `for`
/// duration and template of the rendered rule groups.
fn promtool_accepts_rules(what: &str, spec: &Value) {
    let Some(promtool) = require_tool("promtool", what) else { return };
    let file = scratch().join(format!("rules-{}.json", file_name(what)));
    // JSON is YAML: promtool reads the groups as they are.
    std::fs::write(&file, serde_json::to_vec(spec).unwrap()).unwrap();
    let output = run(Command::new(promtool).args(["check", "rules"]).arg(&file));
    assert!(output.status.success(), "{what}: promtool check rules:\n{}{}", stdout(&output), stderr(&output));
}

/// Cheap checks beside promtool's: the brackets balance, no template was
/// left unrendered, and every podgate metric name is one the server exports.
fn expr_sane(what: &str, expr: &str) {
    let mut stack = Vec::new();
    let mut quoted = false;
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let open = stack.pop();
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                assert_eq!(open, Some(want), "{what}: unbalanced {c} in {expr}");
            }
            _ => {}
        }
    }
    assert!(stack.is_empty() && !quoted, "{what}: unbalanced brackets or quotes in {expr}");
    assert!(!expr.contains("{{"), "{what}: unrendered template in {expr}");
    for (start, _) in expr.match_indices("podgate_") {
        let name: String =
            expr[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
        assert!(METRICS.contains(&base), "{what}: unknown metric {name}");
    }
}

/// Every rendering through `podgate check`: podgate's own Deployment passes
/// the built-in policy and the rendered one (forced to enforce), with no
/// finding at all and no exemption.
fn podgate_accepts_itself(r: &Rendering) {
    let manifests = r.write(&format!("render-{}.yaml", file_name(&r.label)));
    let policy = scratch().join(format!("policy-{}.yaml", file_name(&r.label)));
    std::fs::write(&policy, r.policy_text()).unwrap();
    for config in [None, Some(&policy)] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_podgate"));
        command.args(["check", "--format", "json", "--mode", "enforce"]);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let output = run(command.arg(&manifests));
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: podgate check (config {config:?}) denied its own rendering:\n{}{}",
            r.label,
            stdout(&output),
            stderr(&output)
        );
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        let results = report["results"].as_array().unwrap();
        let deployments: Vec<&Value> = results.iter().filter(|o| o["kind"] == "Deployment").collect();
        assert_eq!(deployments.len(), 1, "{}: podgate check saw the Deployment: {report}", r.label);
        let d = deployments[0];
        assert_eq!(d["allowed"], true, "{}: {d}", r.label);
        assert_eq!(d["exempt"], Value::Null, "{}: podgate must pass, not be exempt: {d}", r.label);
        assert_eq!(d["violations"], json!([]), "{}: podgate has findings against itself: {d}", r.label);
    }
}

/// The ConfigMap's policy is a valid podgate configuration, and it is the
/// values' policy.
fn rendered_policy_is_valid(r: &Rendering) {
    let policy = scratch().join(format!("lint-{}.yaml", file_name(&r.label)));
    std::fs::write(&policy, r.policy_text()).unwrap();
    let output = run(Command::new(env!("CARGO_BIN_EXE_podgate")).args(["check", "--config"]).arg(&policy));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}: podgate check --config rejects the rendered policy:\n{}\n{}",
        r.label,
        stderr(&output),
        r.policy_text()
    );
    let p = r.policy();
    keys(
        &r.label,
        &p,
        &["mode", "checks", "exemptions", "warnBeforeExpiry", "controllerUsernames"],
        &["mode", "checks", "exemptions"],
    );
    for check in p["checks"].as_object().unwrap().keys() {
        assert!(CHECK_IDS.contains(&check.as_str()), "{}: unknown check {check}", r.label);
    }
    // A policy change rolls the Pods.
    let checksum = &r.deployment()["spec"]["template"]["metadata"]["annotations"]["checksum/policy"];
    assert_eq!(checksum.as_str().map(str::len), Some(64), "{}: checksum/policy annotation", r.label);
}

/// Invariants of every rendering: the webhook contract, podgate's own
/// hardening, the Service/ServiceAccount, no RBAC.
fn common_invariants(r: &Rendering) {
    let ns = NAMESPACE.to_owned();
    let label = &r.label;
    // The rendered arguments are ones `podgate serve` accepts, and its
    // shutdown fits in the time Kubernetes gives the pod before SIGKILL.
    let args: Vec<String> =
        r.container()["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
    assert_eq!(args[0], "serve", "{label}");
    let serve = podgate::server::ServeArgs::try_parse_from(&args[1..])
        .unwrap_or_else(|e| panic!("{label}: podgate serve rejects the chart's arguments {args:?}: {e}"));
    let termination = r.deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        (serve.shutdown_delay + serve.shutdown_grace).as_secs() < termination,
        "{label}: shutdown delay + grace must end before terminationGracePeriodSeconds ({termination})"
    );
    // podgate never closes a connection the apiserver (idle timeout 90 s) is about to reuse.
    assert!(serve.idle_timeout.as_secs() > 90, "{label}: --idle-timeout must stay above 90 s");
    assert!(serve.validate().is_ok(), "{label}: {:?}", serve.validate());
    for kind in ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"] {
        assert!(r.all(kind).is_empty(), "{label}: the webhook needs no RBAC, but a {kind} is rendered");
    }
    assert!(r.all("MutatingWebhookConfiguration").is_empty(), "{label}");
    for doc in &r.docs {
        let labels = &doc.value["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"], "podgate", "{label}: {} labels", doc.kind());
        assert_eq!(labels["app.kubernetes.io/instance"], RELEASE, "{label}: {} labels", doc.kind());
        assert_eq!(labels["app.kubernetes.io/version"], env!("CARGO_PKG_VERSION"), "{label}: {}", doc.kind());
        if doc.kind() != "ValidatingWebhookConfiguration" {
            assert_eq!(doc.value["metadata"]["namespace"], ns.as_str(), "{label}: {} namespace", doc.kind());
        }
    }

    // The webhook.
    let w = r.webhook();
    assert_eq!(w["admissionReviewVersions"], json!(["v1"]), "{label}");
    assert_eq!(w["sideEffects"], "None", "{label}");
    assert_eq!(w["matchPolicy"], "Equivalent", "{label}");
    assert!(["Fail", "Ignore"].contains(&w["failurePolicy"].as_str().unwrap()), "{label}");
    let service = r.one("Service");
    assert_eq!(
        w["clientConfig"]["service"],
        json!({"name": service["metadata"]["name"], "namespace": ns, "path": "/validate", "port": 443}),
        "{label}"
    );
    assert_eq!(
        w["rules"],
        json!([
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
             "resources": ["pods", "replicationcontrollers"], "scope": "Namespaced"},
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
             "resources": ["pods/ephemeralcontainers"], "scope": "Namespaced"},
            {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
             "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"], "scope": "Namespaced"},
            {"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
             "resources": ["jobs", "cronjobs"], "scope": "Namespaced"},
        ]),
        "{label}: webhook rules"
    );
    // kube-system and the release namespace can never be locked out.
    let first = &w["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(first["key"], "kubernetes.io/metadata.name", "{label}");
    assert_eq!(first["operator"], "NotIn", "{label}");
    let excluded: Vec<&str> = first["values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(excluded.contains(&"kube-system") && excluded.contains(&ns.as_str()), "{label}: excluded {excluded:?}");

    // The Service reaches the container's ports.
    let ports = &service["spec"]["ports"];
    assert_eq!(ports[0]["name"], "https", "{label}");
    assert_eq!(ports[0]["port"], 443, "{label}");
    assert_eq!(ports[0]["targetPort"], "https", "{label}");
    assert_eq!(ports[1]["name"], "metrics", "{label}");
    assert_eq!(ports[1]["targetPort"], "metrics", "{label}");
    let selector = &service["spec"]["selector"];
    let pod_labels = &r.deployment()["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "{label}: the Service selects the Pods");
    }
    assert_eq!(&r.deployment()["spec"]["selector"]["matchLabels"], selector, "{label}");

    // podgate's own Pod: hardened, token-less, probed.
    let pod = &r.deployment()["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false, "{label}");
    let account = pod["serviceAccountName"].as_str().unwrap();
    if let Some(sa) = r.maybe("ServiceAccount") {
        assert_eq!(sa["metadata"]["name"], account, "{label}");
        assert_eq!(sa["automountServiceAccountToken"], false, "{label}");
    }
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{label}");
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{label}");
    let c = r.container();
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsUser"], 65532, "{label}");
    assert_eq!(sc["runAsNonRoot"], true, "{label}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{label}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{label}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{label}");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{label}");
    assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "metrics"}), "{label}");
    assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "metrics"}), "{label}");
    assert!(c["resources"]["requests"]["memory"].is_string(), "{label}: memory request");
    assert!(c["resources"]["limits"]["memory"].is_string(), "{label}: memory limit");
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    for flag in ["--tls-cert=/certs/tls.crt", "--tls-key=/certs/tls.key", "--config=/config/policy.yaml"] {
        assert!(args.contains(&flag), "{label}: args {args:?} lack {flag}");
    }
    let mounts = &c["volumeMounts"];
    assert_eq!(mounts[0], json!({"name": "certs", "mountPath": "/certs", "readOnly": true}), "{label}");
    assert_eq!(mounts[1], json!({"name": "config", "mountPath": "/config", "readOnly": true}), "{label}");
    for mount in mounts.as_array().unwrap() {
        assert!(mount.get("subPath").is_none(), "{label}: subPath mounts are never updated: no hot reload");
    }
    let volumes = &pod["volumes"];
    assert_eq!(volumes[1]["configMap"]["name"], r.policy_config_map()["metadata"]["name"], "{label}");
    if let Some(secret) = r.maybe("Secret") {
        assert_eq!(volumes[0]["secret"]["secretName"], secret["metadata"]["name"], "{label}");
    }
    // Group-readable volumes need the fsGroup.
    assert_eq!(pod["securityContext"]["fsGroup"], 65532, "{label}");
}

// ---------------------------------------------------------------------------
// Helpers for the tests
// ---------------------------------------------------------------------------

struct Tools {
    helm: PathBuf,
    kubernetes_validate: PathBuf,
}

fn scenario_tools(test: &str) -> Option<Tools> {
    let helm = require_tool("helm", test)?;
    let kubernetes_validate = require_tool("kubernetes-validate", test)?;
    Some(Tools { helm, kubernetes_validate })
}

/// Minimal base64 (standard alphabet, padding) for Secret data.
fn base64_decode(text: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        };
        bits = (bits << 6) | u32::from(v);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

fn b64_field(what: &str, value: &Value) -> String {
    String::from_utf8(base64_decode(value.as_str().unwrap_or_else(|| panic!("{what}: missing"))))
        .unwrap_or_else(|_| panic!("{what}: not UTF-8"))
}

fn pem_count(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

/// The generated Secret, its CA and the webhook's caBundle agree: the
/// serving certificate chains to the CA, names the Service, matches its key.
fn check_generated_tls(r: &Rendering, openssl: Option<&Path>) -> (String, String, String) {
    let label = &r.label;
    let secret = r.one("Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls", "{label}");
    let crt = b64_field("tls.crt", &secret["data"]["tls.crt"]);
    let key = b64_field("tls.key", &secret["data"]["tls.key"]);
    let ca = b64_field("ca.crt", &secret["data"]["ca.crt"]);
    assert_eq!(pem_count(&crt), 1, "{label}");
    assert_eq!(pem_count(&ca), 1, "{label}");
    assert!(key.contains("PRIVATE KEY-----"), "{label}");
    let bundle = b64_field("caBundle", &r.webhook()["clientConfig"]["caBundle"]);
    assert!(bundle.contains(ca.trim()), "{label}: the caBundle holds the Secret's CA");
    assert!(
        r.one("ValidatingWebhookConfiguration")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].is_null(),
        "{label}"
    );
    if let Some(openssl) = openssl {
        let dir = tempfile::tempdir().unwrap();
        let (crt_path, ca_path, key_path) = (dir.path().join("c"), dir.path().join("a"), dir.path().join("k"));
        std::fs::write(&crt_path, &crt).unwrap();
        std::fs::write(&ca_path, &ca).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let verify = run(Command::new(openssl).arg("verify").arg("-CAfile").arg(&ca_path).arg(&crt_path));
        assert!(verify.status.success(), "{label}: certificate does not chain to the CA: {}", stderr(&verify));
        let san = run(Command::new(openssl).args(["x509", "-noout", "-ext", "subjectAltName", "-in"]).arg(&crt_path));
        let san = stdout(&san);
        let ns = NAMESPACE.to_owned();
        let service = r.one("Service")["metadata"]["name"].as_str().unwrap().to_owned();
        assert!(san.contains(&format!("DNS:{service}.{ns}.svc,")), "{label}: SAN {san}");
        let cert_key = run(Command::new(openssl).args(["x509", "-noout", "-pubkey", "-in"]).arg(&crt_path));
        let key_pub = run(Command::new(openssl).args(["pkey", "-pubout", "-in"]).arg(&key_path));
        assert_eq!(stdout(&cert_key), stdout(&key_pub), "{label}: tls.key does not match tls.crt");
        assert!(!stdout(&key_pub).is_empty(), "{label}");
    }
    (crt, key, bundle)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn chart_metadata_matches_the_crate() {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Chart {
        api_version: String,
        name: String,
        app_version: String,
    }
    let chart: Chart =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap()).unwrap();
    assert_eq!(chart.api_version, "v2");
    assert_eq!(chart.name, "podgate");
    assert_eq!(chart.app_version, env!("CARGO_PKG_VERSION"), "Chart.yaml appVersion must be the crate version");
}

/// The image's default command is the chart's: `docker run` of the image
/// behaves as the chart's pod does.
#[test]
fn dockerfile_defaults_match_the_chart() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let joined = dockerfile.replace("\\\n", " ");
    let cmd = joined.lines().find_map(|line| line.strip_prefix("CMD ")).expect("Dockerfile has a CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd.trim()).expect("CMD is in exec (JSON) form");
    assert_eq!(cmd, SERVE_ARGS, "Dockerfile CMD differs from the chart's serve arguments");
    assert!(dockerfile.contains("USER 65532:65532"), "the image runs as the chart's non-root UID");
}

#[test]
fn helm_lint_strict() {
    let helm = tool!("helm_lint_strict", "helm");
    let mut cases = vec![None];
    cases.extend(scenario_fixtures().into_iter().map(Some));
    for values in cases {
        let mut command = helm_command(&helm);
        command.args(["lint", "--strict", "--namespace", NAMESPACE]).arg(chart_dir());
        if let Some(values) = &values {
            command.arg("--values").arg(values);
        }
        let output = run(&mut command);
        assert!(output.status.success(), "helm lint --strict {values:?}:\n{}{}", stdout(&output), stderr(&output));
    }
}

fn scenario_fixtures() -> Vec<PathBuf> {
    ["audit.yaml", "cert-manager.yaml", "cert-manager-issuer.yaml", "everything.yaml"]
        .into_iter()
        .map(fixture)
        .collect()
}

#[test]
fn defaults() {
    let Some(tools) = scenario_tools("defaults") else { return };
    let r = render(&tools.helm, &[], &[]);
    check_rendering(&tools, &r);
    let label = &r.label;
    assert_eq!(
        r.kinds(),
        [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceAccount",
            "ValidatingWebhookConfiguration"
        ]
        .map(String::from)
        .into(),
        "{label}: optional objects are off by default"
    );
    assert_eq!(r.webhook()["failurePolicy"], "Fail", "{label}: enforce mode fails closed");
    assert_eq!(r.webhook()["timeoutSeconds"], 5, "{label}");
    assert_eq!(
        r.webhook()["namespaceSelector"],
        json!({"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NAMESPACE]}
        ]}),
        "{label}"
    );
    assert_eq!(r.webhook()["objectSelector"], json!({}), "{label}");
    let d = r.deployment();
    assert_eq!(d["spec"]["replicas"], 2, "{label}");
    assert_eq!(r.container()["image"], format!("podgate:{}", env!("CARGO_PKG_VERSION")), "{label}");
    assert_eq!(r.container()["args"], json!(SERVE_ARGS), "{label}: the serve contract");
    let pod = &d["spec"]["template"]["spec"];
    assert!(pod.get("priorityClassName").is_none() && pod.get("imagePullSecrets").is_none(), "{label}");
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    assert_eq!(spread.len(), 2, "{label}");
    for constraint in spread {
        assert_eq!(constraint["labelSelector"]["matchLabels"], d["spec"]["selector"]["matchLabels"], "{label}");
        assert_eq!(constraint["whenUnsatisfiable"], "ScheduleAnyway", "{label}");
    }
    let pdb = r.one("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{label}");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], d["spec"]["selector"]["matchLabels"], "{label}");

    // The default policy is podgate's built-in default.
    let p = r.policy();
    assert_eq!(p["mode"], "enforce", "{label}");
    assert_eq!(p["checks"]["runAsUser"]["minUid"], 1000, "{label}");
    for check in CHECK_IDS {
        assert_eq!(p["checks"][check]["action"], "deny", "{label}: {check}");
    }
    assert_eq!(p["exemptions"][0]["namespaces"], json!(["kube-system"]), "{label}");

    let openssl = require_tool("openssl", "defaults (certificate checks)");
    let (crt, _, bundle) = check_generated_tls(&r, openssl.as_deref());
    assert_eq!(pem_count(&bundle), 1, "{label}: a fresh install trusts one CA");
    // `helm template` cannot look up the previous Secret: every render makes
    // new material (which is why deploy/podgate.yaml does not use it).
    let again = render(&tools.helm, &[], &[]);
    assert_ne!(check_generated_tls(&again, None).0, crt);
}

#[test]
fn audit_mode_fails_open() {
    let Some(tools) = scenario_tools("audit_mode_fails_open") else { return };
    let r = render(&tools.helm, &[&fixture("audit.yaml")], &[]);
    check_rendering(&tools, &r);
    assert_eq!(r.webhook()["failurePolicy"], "Ignore", "an audit-only install must never block the cluster");
    let p = r.policy();
    assert_eq!(p["mode"], "audit");
    assert_eq!(p["checks"]["runAsNonRoot"], json!({"action": "deny", "mode": "enforce", "userNamespaces": "relaxed"}));
    assert_eq!(p["checks"]["livenessProbe"], json!({"action": "warn"}));

    // An explicit failurePolicy wins over the derived one, both ways.
    let r = render(&tools.helm, &[&fixture("audit.yaml")], &["webhook.failurePolicy=Fail"]);
    assert_eq!(r.webhook()["failurePolicy"], "Fail");
    let r = render(&tools.helm, &[], &["webhook.failurePolicy=Ignore"]);
    assert_eq!(r.webhook()["failurePolicy"], "Ignore");
    let r = render(&tools.helm, &[], &["mode=audit"]);
    assert_eq!(r.webhook()["failurePolicy"], "Ignore");
}

#[test]
fn cert_manager() {
    let Some(tools) = scenario_tools("cert_manager") else { return };
    let r = render(&tools.helm, &[&fixture("cert-manager.yaml")], &[]);
    check_rendering(&tools, &r);
    assert!(r.maybe("Secret").is_none(), "cert-manager writes the Secret; the chart must not");
    assert!(r.webhook()["clientConfig"].get("caBundle").is_none(), "cainjector fills the caBundle");
    assert!(!r.text.contains("PRIVATE KEY"));
    let serving = r.named("Certificate", "podgate-serving");
    assert_eq!(
        r.one("ValidatingWebhookConfiguration")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{NAMESPACE}/podgate-serving")
    );
    // Self-signed root -> CA certificate -> CA Issuer -> serving certificate.
    assert_eq!(
        serving["spec"]["issuerRef"],
        json!({"name": "podgate-ca", "kind": "Issuer", "group": "cert-manager.io"})
    );
    let ca_issuer = r.named("Issuer", "podgate-ca");
    let ca = r.named("Certificate", "podgate-ca");
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(ca_issuer["spec"]["ca"]["secretName"], ca["spec"]["secretName"]);
    assert_eq!(ca["spec"]["issuerRef"]["name"], "podgate-selfsigned");
    assert_eq!(r.named("Issuer", "podgate-selfsigned")["spec"], json!({"selfSigned": {}}));

    let r = render(&tools.helm, &[&fixture("cert-manager-issuer.yaml")], &[]);
    check_rendering(&tools, &r);
    assert!(r.all("Issuer").is_empty(), "an existing issuer is used as is");
    assert_eq!(r.all("Certificate").len(), 1);
    let serving = r.one("Certificate");
    assert_eq!(
        serving["spec"]["issuerRef"],
        json!({"name": "cluster-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
    assert_eq!(serving["spec"]["duration"], "2160h");
}

#[test]
fn every_optional_object() {
    let Some(tools) = scenario_tools("every_optional_object") else { return };
    let r = render(&tools.helm, &[&fixture("everything.yaml")], &[]);
    check_rendering(&tools, &r);
    let label = &r.label;
    for kind in ["ServiceMonitor", "PrometheusRule", "NetworkPolicy"] {
        r.one(kind);
    }
    // Extra labels and annotations on every object.
    for doc in &r.docs {
        let meta = &doc.value["metadata"];
        assert_eq!(meta["labels"]["example.com/team"], "platform", "{label}: {} labels", doc.kind());
        assert_eq!(
            meta["annotations"]["example.com/contact"],
            "platform@example.com",
            "{label}: {} annotations",
            doc.kind()
        );
    }
    assert_eq!(r.one("Service")["metadata"]["annotations"]["example.com/service-note"], "webhook");
    let sa = r.one("ServiceAccount");
    assert_eq!(sa["metadata"]["name"], "podgate-webhook");
    assert_eq!(sa["metadata"]["annotations"]["example.com/sa-note"], "no-api-access");
    let d = r.deployment();
    let template = &d["spec"]["template"];
    assert_eq!(template["metadata"]["labels"]["example.com/pod-tier"], "control");
    assert_eq!(template["metadata"]["annotations"]["example.com/pod-note"], "hello");
    let pod = &template["spec"];
    assert_eq!(pod["serviceAccountName"], "podgate-webhook");
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(pod["tolerations"][0]["key"], "node-role.kubernetes.io/control-plane");
    assert_eq!(pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"], 50);
    assert_eq!(pod["topologySpreadConstraints"].as_array().unwrap().len(), 1);
    assert_eq!(d["spec"]["replicas"], 3);
    let c = r.container();
    assert_eq!(
        c["image"],
        "registry.example.com/platform/podgate@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["env"], json!([{"name": "RUST_LOG", "value": "info"}]));
    let args = c["args"].as_array().unwrap();
    assert!(args.contains(&json!("--listen=[::]:8443")) && args.contains(&json!("--log-format=text")));
    assert_eq!(args.last().unwrap(), "--max-inflight=512");

    // Webhook knobs.
    let w = r.webhook();
    assert_eq!(w["failurePolicy"], "Fail");
    assert_eq!(w["timeoutSeconds"], 10);
    assert_eq!(
        w["namespaceSelector"],
        json!({
            "matchLabels": {"environment": "production"},
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                 "values": ["kube-system", NAMESPACE, "monitoring", "cert-manager"]},
                {"key": "podgate.dev/ignore", "operator": "DoesNotExist"},
            ]
        })
    );
    assert_eq!(w["objectSelector"]["matchExpressions"][0]["key"], "podgate.dev/skip");
    assert_eq!(r.one("ValidatingWebhookConfiguration")["metadata"]["annotations"]["example.com/owner"], "platform");

    // The policy carries every option, big integers intact.
    let p = r.policy();
    assert_eq!(
        p["checks"]["runAsUser"],
        json!({"action": "deny", "minUid": 10000, "maxUid": 2147483647i64, "mode": "audit", "userNamespaces": "enforce"})
    );
    assert_eq!(p["checks"]["probeSettings"]["forbidIdenticalLivenessReadiness"], true);
    assert_eq!(p["exemptions"].as_array().unwrap().len(), 4);
    assert_eq!(p["exemptions"][2]["serviceAccounts"], json!(["ci/deployer"]));
    // A waiver with every key, dates kept as the strings they were.
    assert_eq!(
        p["exemptions"][3],
        json!({"name": "legacy-billing", "objects": [{"namespace": "shop", "kind": "Deployment", "name": "legacy-billing"}],
               "containers": ["app"], "checks": ["runAsNonRoot"], "effect": "audit", "expires": "2027-03-31",
               "ticket": "SEC-123", "owner": "team-billing", "reason": "rewrite under way"})
    );
    assert_eq!(p["warnBeforeExpiry"], "504h");
    assert_eq!(p["controllerUsernames"], json!({"replicaSet": ["system:kube-controller-manager"]}));

    // The NetworkPolicy selects the Pods and opens exactly their ports.
    let np = &r.one("NetworkPolicy")["spec"];
    for (k, v) in np["podSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&template["metadata"]["labels"][k], v);
    }
    assert_eq!(np["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["ingress"][0]["ports"], json!([{"port": 8443, "protocol": "TCP"}]));
    assert_eq!(np["ingress"][0]["from"], json!([{"ipBlock": {"cidr": "10.0.0.0/16"}}]));
    assert_eq!(np["ingress"][1]["ports"], json!([{"port": 9090, "protocol": "TCP"}]));
    assert_eq!(np["egress"], json!([]), "podgate calls nothing: no egress");

    // ServiceMonitor and PrometheusRule details.
    let sm = r.one("ServiceMonitor");
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus-stack");
    assert_eq!(sm["spec"]["endpoints"][0]["interval"], "15s");
    let rules = &r.one("PrometheusRule")["spec"]["groups"][0]["rules"];
    for rule in rules.as_array().unwrap() {
        assert_eq!(rule["labels"]["team"], "platform", "additional alert labels on {}", rule["alert"]);
        assert!(rule["expr"].as_str().unwrap().contains("namespace=\"podgate\""), "alerts are scoped: {rule}");
    }
    let would_deny = rules.as_array().unwrap().iter().find(|r| r["alert"] == "PodgateWouldDenyInAudit").unwrap();
    assert!(would_deny["expr"].as_str().unwrap().contains("podgate_policy_violations_total"));
    assert!(would_deny["expr"].as_str().unwrap().contains("action=\"audit\""));
    let expiry = rules.as_array().unwrap().iter().find(|r| r["alert"] == "PodgateCertificateExpiringSoon").unwrap();
    assert!(expiry["expr"].as_str().unwrap().contains("< 14 * 86400"), "{expiry}");
    let waiver = rules.as_array().unwrap().iter().find(|r| r["alert"] == "PodgateExemptionExpiringSoon").unwrap();
    let expr = waiver["expr"].as_str().unwrap();
    assert!(expr.contains("podgate_exemption_expiry_timestamp_seconds") && expr.contains("< 5 * 86400"), "{waiver}");
}

#[test]
fn namespace_selector_follows_the_release_namespace() {
    let helm = tool!("namespace_selector_follows_the_release_namespace", "helm");
    let text =
        try_render(&helm, &chart_dir(), "security-tools", &[], &["webhook.excludeNamespaces={kube-system,legacy}"])
            .unwrap();
    let r = Rendering::parse("namespace security-tools", text);
    assert_eq!(
        r.webhook()["namespaceSelector"]["matchExpressions"][0],
        json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn",
               "values": ["kube-system", "security-tools", "legacy"]}),
        "always kube-system and the release namespace, then the configured ones, without duplicates"
    );
    assert_eq!(r.webhook()["clientConfig"]["service"]["namespace"], "security-tools");
}

#[test]
fn schema_rejects_bad_values() {
    let helm = tool!("schema_rejects_bad_values", "helm");
    let dir = fixture("invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 5, "fixtures in {dir:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{file:?}: first line must be `# expect: <error text>`"));
        match try_render(&helm, &chart_dir(), NAMESPACE, &[&file], &[]) {
            Ok(_) => panic!("{file:?}: helm accepted invalid values"),
            Err(e) => {
                assert!(e.contains("values don't meet the specifications of the schema"), "{file:?}: {e}");
                assert!(e.contains(expect), "{file:?}: expected {expect:?} in:\n{e}");
            }
        }
    }
    // The same through --set, as people type it.
    for (set, expect) in [
        ("mode=block", "mode must be one of the following: \"enforce\", \"audit\""),
        ("replicaCount=two", "replicaCount: Invalid type. Expected: integer, given: string"),
        ("checks.livenessProbe.action=block", "checks.livenessProbe.action must be one of the following"),
        ("maxBufferedBytes=1000", "maxBufferedBytes: Must be greater than or equal to"),
        ("idleTimeout=0s", "idleTimeout: Does not match pattern"),
        ("headerReadTimeout=soon", "headerReadTimeout: Does not match pattern"),
        ("audit.reportApi=openreports.io", "audit.reportApi must be one of the following: \"auto\", \"wgpolicyk8s\""),
    ] {
        let e = try_render(&helm, &chart_dir(), NAMESPACE, &[], &[set]).expect_err(set);
        assert!(e.contains(expect), "--set {set}: expected {expect:?} in:\n{e}");
    }
}

/// The values schema takes a duration where `podgate serve` does: Go's
/// `time.ParseDuration` syntax, zero or more. Each value goes through
/// `helm template` (the schema) and, when the schema lets it through, the
/// rendered `--shutdown-grace` through podgate's own flag parser.
#[test]
fn schema_takes_go_durations_as_podgate_does() {
    let helm = tool!("schema_takes_go_durations_as_podgate_does", "helm");
    // (value, schema accepts, podgate accepts)
    let mut cases: Vec<(&str, bool, bool)> = Vec::new();
    // Few cases: each is a helm run (about half a second). Go's whole table
    // is in podgate's own unit tests (src/duration.rs).
    for value in ["0", "+5s", "1m30s", ".5s", "5.s", "12µs", "12μs", "2h45m0.5s", "10.5s4m"] {
        cases.push((value, true, true));
    }
    for value in ["", "10", "1d", "-5s", "1 m", ".s", "5S"] {
        cases.push((value, false, false));
    }
    // Where a pattern cannot follow: the schema does not count (more than
    // int64 nanoseconds), and it has no minus sign, not even for zero.
    cases.extend([("3000000h", true, false), ("-0s", false, true)]);

    let outcomes: Vec<(String, bool, Result<String, String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = cases
            .chunks(cases.len().div_ceil(2))
            .enumerate()
            .map(|(worker, chunk)| {
                let helm = &helm;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .enumerate()
                        .map(|(i, &(value, _, _))| {
                            let file = scratch().join(format!("duration-{worker}-{i}.yaml"));
                            // A JSON string is a YAML string: the value exactly.
                            std::fs::write(&file, format!("shutdownGrace: {}\n", json!(value))).unwrap();
                            let rendered = try_render(helm, &chart_dir(), NAMESPACE, &[&file], &[]);
                            (value.to_owned(), podgate::duration::parse_non_negative(value).is_ok(), rendered)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });

    for ((value, schema, podgate), (_, podgate_now, rendered)) in cases.iter().zip(outcomes) {
        assert_eq!(*podgate, podgate_now, "{value:?}: podgate's parser");
        match rendered {
            Ok(text) => {
                assert!(schema, "{value:?}: the schema accepted it");
                let r = Rendering::parse(value, text);
                let args: Vec<String> =
                    r.container()["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
                let flag = format!("--shutdown-grace={value}");
                assert!(args.contains(&flag), "{value:?}: {args:?}");
                let parsed = podgate::server::ServeArgs::try_parse_from(&args[1..]);
                assert_eq!(parsed.is_ok(), *podgate, "{value:?}: podgate serve {args:?}: {:?}", parsed.err());
            }
            Err(e) => {
                assert!(!schema, "{value:?}: the schema refused it:\n{e}");
                assert!(e.contains("shutdownGrace"), "{value:?}: {e}");
            }
        }
    }
}

/// A copy of the chart in which `lookup` of the TLS Secret reads a file
/// instead of the cluster, so that the reuse/renew/rotate logic can run
/// under `helm template`.
fn chart_with_previous_secret(previous: Option<&Value>) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(scratch()).unwrap();
    copy_dir(&chart_dir(), dir.path());
    let webhook = dir.path().join("templates/webhook.yaml");
    let text = std::fs::read_to_string(&webhook).unwrap();
    let lookup = r#"(lookup "v1" "Secret" .Release.Namespace $secretName)"#;
    assert_eq!(text.matches(lookup).count(), 1, "webhook.yaml must look the Secret up exactly so: {lookup}");
    std::fs::write(&webhook, text.replace(lookup, r#"(.Files.Get "previous-secret.yaml" | fromYaml)"#)).unwrap();
    let previous = previous.map(|p| serde_yaml_ng::to_string(p).unwrap()).unwrap_or_default();
    std::fs::write(dir.path().join("previous-secret.yaml"), previous).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn generated_certificate_is_kept_renewed_and_rotated_across_upgrades() {
    let helm = tool!("generated_certificate_is_kept_renewed_and_rotated_across_upgrades", "helm");
    let openssl = require_tool("openssl", "generated certificate (openssl checks)");
    let upgrade = |previous: Option<&Value>, set: &[&str]| {
        let chart = chart_with_previous_secret(previous);
        let text = try_render(&helm, chart.path(), NAMESPACE, &[], set).unwrap_or_else(|e| panic!("{e}"));
        let r = Rendering::parse(&format!("upgrade {set:?}"), text);
        let material = check_generated_tls(&r, openssl.as_deref());
        (r.one("Secret").clone(), material)
    };

    // Install: nothing to look up.
    let (installed, (crt, key, bundle)) = upgrade(None, &[]);
    assert_eq!(pem_count(&bundle), 1);
    let not_after: i64 =
        installed["metadata"]["annotations"]["podgate.dev/tls-not-after"].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((not_after - now - 3650 * 86400).abs() < 3600, "notAfter annotation {not_after}, now {now}");

    // Upgrade: the same certificate, key and CA.
    let (kept, (crt2, key2, bundle2)) = upgrade(Some(&installed), &[]);
    assert_eq!((&crt2, &key2, &bundle2), (&crt, &key, &bundle), "upgrade must keep the certificate");
    assert_eq!(kept["data"], installed["data"]);
    assert_eq!(kept["metadata"]["annotations"], installed["metadata"]["annotations"]);

    // Rotation on request: new certificate; the caBundle trusts the new and
    // the old CA until the next upgrade.
    let (rotated, (crt3, _, bundle3)) = upgrade(Some(&installed), &["tls.rotation=2025-06-01"]);
    assert_ne!(crt3, crt);
    assert_eq!(pem_count(&bundle3), 2, "new CA plus the old one");
    let old_ca = b64_field("old ca", &installed["data"]["ca.crt"]);
    let new_ca = b64_field("new ca", &rotated["data"]["ca.crt"]);
    assert!(bundle3.contains(old_ca.trim()) && bundle3.contains(new_ca.trim()));
    assert_eq!(rotated["metadata"]["annotations"]["podgate.dev/tls-rotation"], "2025-06-01");
    // The next upgrade with the same rotation value keeps it and drops the old CA.
    let (_, (crt4, _, bundle4)) = upgrade(Some(&rotated), &["tls.rotation=2025-06-01"]);
    assert_eq!(crt4, crt3);
    assert_eq!(bundle4.trim(), new_ca.trim());

    // Renewal: within renewBeforeDays of expiry, an upgrade issues a new one.
    let mut expiring = installed.clone();
    expiring["metadata"]["annotations"]["podgate.dev/tls-not-after"] = json!((now + 10 * 86400).to_string());
    let (_, (crt5, _, bundle5)) = upgrade(Some(&expiring), &[]);
    assert_ne!(crt5, crt);
    assert_eq!(pem_count(&bundle5), 2);
    // ...but not before.
    let (_, (crt6, _, _)) = upgrade(Some(&expiring), &["tls.renewBeforeDays=5"]);
    assert_eq!(crt6, crt);

    // A Secret the chart did not write (no annotations) or an incomplete
    // one is replaced.
    let mut foreign = installed.clone();
    foreign["metadata"]["annotations"] = json!({});
    assert_ne!(upgrade(Some(&foreign), &[]).1 .0, crt);
    let mut partial = installed.clone();
    partial["data"].as_object_mut().unwrap().remove("tls.key");
    assert_ne!(upgrade(Some(&partial), &[]).1 .0, crt);
}

/// NOTES.txt, rendered through a copy of the chart that turns it into a
/// ConfigMap (`helm install --dry-run` would need a cluster).
fn notes(helm: &Path, set: &[&str]) -> String {
    let dir = tempfile::tempdir_in(scratch()).unwrap();
    copy_dir(&chart_dir(), dir.path());
    std::fs::copy(chart_dir().join("templates/NOTES.txt"), dir.path().join("notes.txt")).unwrap();
    std::fs::write(
        dir.path().join("templates/zz-notes.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ tpl (.Files.Get \"notes.txt\") . | quote }}\n",
    )
    .unwrap();
    let mut command = helm_command(helm);
    command.arg("template").arg(RELEASE).arg(dir.path()).args(["--namespace", NAMESPACE]);
    command.args(["--show-only", "templates/zz-notes.yaml"]);
    for item in set {
        command.args(["--set", item]);
    }
    let output = run(&mut command);
    assert!(output.status.success(), "{}", stderr(&output));
    let cm: Value = serde_yaml_ng::from_str(&stdout(&output)).unwrap();
    cm["data"]["notes"].as_str().unwrap().to_owned()
}

#[test]
fn notes_tell_the_mode_the_would_deny_counts_and_how_to_enforce() {
    let helm = tool!("notes_tell_the_mode_the_would_deny_counts_and_how_to_enforce", "helm");
    let audit = notes(&helm, &["mode=audit"]);
    assert!(audit.contains("Mode: audit"), "{audit}");
    assert!(audit.contains("failurePolicy: Ignore"), "{audit}");
    assert!(audit.contains("podgate_policy_violations_total") && audit.contains("action=\"audit\""), "{audit}");
    assert!(audit.contains("--set mode=enforce"), "{audit}");
    assert!(audit.contains("--set checks.runAsNonRoot.mode=enforce"), "{audit}");
    let enforce = notes(&helm, &[]);
    assert!(enforce.contains("Mode: enforce"), "{enforce}");
    assert!(enforce.contains("failurePolicy: Fail"), "{enforce}");
    assert!(enforce.contains("--set mode=audit"), "{enforce}");
    assert!(!enforce.contains("{{"), "{enforce}");
    assert!(enforce.contains("podgate audit --config policy.yaml --mode enforce"), "{enforce}");
    assert!(!enforce.contains("The auditor"), "{enforce}");
    let auditor = notes(&helm, &["audit.enabled=true"]);
    assert!(auditor.contains("The auditor (podgate-audit) does that every 300s"), "{auditor}");
    assert!(auditor.contains("kubectl get policyreport -A -l app.kubernetes.io/managed-by=podgate"), "{auditor}");
}

#[test]
fn plain_manifests_are_in_sync_and_valid() {
    let Some(tools) = scenario_tools("plain_manifests_are_in_sync_and_valid") else { return };
    let script = root().join("deploy/generate.sh");
    let output = run(Command::new("bash").arg(&script).arg("-").env("HELM", &tools.helm).envs([
        ("HELM_CACHE_HOME", scratch().join("helm-home/cache")),
        ("HELM_CONFIG_HOME", scratch().join("helm-home/config")),
        ("HELM_DATA_HOME", scratch().join("helm-home/data")),
    ]));
    assert!(output.status.success(), "deploy/generate.sh failed: {}", stderr(&output));
    let generated = stdout(&output);
    let checked_in = std::fs::read_to_string(root().join("deploy/podgate.yaml")).unwrap();
    if generated != checked_in {
        let line = generated.lines().zip(checked_in.lines()).position(|(a, b)| a != b);
        panic!(
            "deploy/podgate.yaml is out of sync with charts/podgate (first difference at line {}): \
             run deploy/generate.sh and commit the result",
            line.map_or("end".to_owned(), |l| (l + 1).to_string())
        );
    }
    // The auditor's file too.
    let output = run(Command::new("bash").arg(&script).args(["--audit", "-"]).env("HELM", &tools.helm).envs([
        ("HELM_CACHE_HOME", scratch().join("helm-home/cache")),
        ("HELM_CONFIG_HOME", scratch().join("helm-home/config")),
        ("HELM_DATA_HOME", scratch().join("helm-home/data")),
    ]));
    assert!(output.status.success(), "deploy/generate.sh --audit failed: {}", stderr(&output));
    let audit = std::fs::read_to_string(root().join("deploy/podgate-audit.yaml")).unwrap();
    assert!(stdout(&output) == audit, "deploy/podgate-audit.yaml is out of sync: run deploy/generate.sh");
    let audit = Rendering::parse("deploy/podgate-audit.yaml", audit);
    validate_builtin_kinds(&tools.kubernetes_validate, &audit);
    assert_eq!(
        audit.kinds(),
        ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"].map(String::from).into()
    );
    let r = Rendering::parse("deploy/podgate.yaml", checked_in);
    // No private key is ever checked in: cert-manager issues the certificate.
    assert!(!r.text.contains("PRIVATE KEY") && r.maybe("Secret").is_none());
    assert!(r.webhook()["clientConfig"].get("caBundle").is_none());
    let namespace = r.one("Namespace");
    assert_eq!(namespace["metadata"]["name"], NAMESPACE);
    assert_eq!(namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
    // The Namespace carries no chart labels; the rest is the chart.
    let chart_part = Rendering {
        label: r.label.clone(),
        text: r.text.clone(),
        docs: r.docs.into_iter().filter(|d| d.kind() != "Namespace").collect(),
    };
    validate_builtin_kinds(&tools.kubernetes_validate, &Rendering::parse("deploy/podgate.yaml (all)", r.text.clone()));
    check_crd_objects(&chart_part);
    podgate_accepts_itself(&chart_part);
    rendered_policy_is_valid(&chart_part);
    common_invariants(&chart_part);
    assert_eq!(chart_part.webhook()["failurePolicy"], "Fail");
}

/// `audit.enabled`: the auditor's own Deployment, ServiceAccount, read-only
/// ClusterRole (plus PolicyReports), metrics Service scraped by the
/// ServiceMonitor, and its alerts; hardened like the webhook and passing
/// podgate's own checks. (tests/audit_cluster.rs runs the auditor as this
/// ServiceAccount against a real apiserver.)
#[test]
fn audit_deployment() {
    let Some(tools) = scenario_tools("audit_deployment") else { return };
    let r =
        render(&tools.helm, &[], &["audit.enabled=true", "serviceMonitor.enabled=true", "prometheusRule.enabled=true"]);
    let label = &r.label;
    validate_builtin_kinds(&tools.kubernetes_validate, &r);
    let name = format!("{RELEASE}-audit");
    let deployment = r.named("Deployment", &name);
    assert_eq!(deployment["spec"]["replicas"], 1, "{label}");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], name.as_str(), "{label}");
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"],
        r.deployment()["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    );
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[0], "audit", "{label}");
    use clap::Parser as _;
    let cli = podgate::cli::Cli::try_parse_from(std::iter::once("podgate").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{label}: podgate rejects the auditor's arguments {args:?}: {e}"));
    let podgate::cli::Command::Audit(audit) = cli.command else { panic!("{label}: not an audit") };
    assert_eq!(audit.interval, Some(std::time::Duration::from_secs(300)));
    assert!(audit.policy_reports);
    assert_eq!(audit.report_api, podgate::audit::policyreport::ReportApiChoice::Auto);
    // Its pod selector is not the webhook Service's: no webhook traffic reaches it.
    let webhook_service = r.named("Service", RELEASE);
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert!(webhook_service["spec"]["selector"].as_object().unwrap().iter().any(|(k, v)| &pod_labels[k] != v));
    // The ServiceMonitor scrapes its Service.
    let service = r.named("Service", &name);
    let monitor = r.one("ServiceMonitor");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][k], v, "{label}: ServiceMonitor selector {k}");
    }
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    // RBAC: read Pods and workloads, write both kinds of policy reports; nothing else.
    let mut expected = audit_reads();
    expected.extend([POLICY_REPORTS_GRANT, OPEN_REPORTS_GRANT].map(str::to_owned));
    assert_eq!(grants(r.named("ClusterRole", &name)), expected, "{label}");
    let binding = r.named("ClusterRoleBinding", &name);
    assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]));
    // The alerts, through promtool.
    let rule = r.one("PrometheusRule");
    check_prometheus_rule(label, &rule["spec"]);
    let alerts: Vec<&str> =
        rule["spec"]["groups"][0]["rules"].as_array().unwrap().iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert!(alerts.contains(&"PodgateAuditWouldDeny") && alerts.contains(&"PodgateAuditStale"), "{alerts:?}");
    // podgate passes its own checks, the auditor too.
    let manifests = r.write("render-audit.yaml");
    let output = run(Command::new(env!("CARGO_BIN_EXE_podgate"))
        .args(["check", "--format", "json", "--mode", "enforce"])
        .arg(&manifests));
    assert_eq!(output.status.code(), Some(0), "{label}: {}", stdout(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let deployments: Vec<&Value> =
        report["results"].as_array().unwrap().iter().filter(|o| o["kind"] == "Deployment").collect();
    assert_eq!(deployments.len(), 2, "{report}");
    for d in deployments {
        assert_eq!(d["violations"], json!([]), "{label}: {d}");
        assert_eq!(d["exempt"], Value::Null, "{label}: {d}");
    }
}

const POLICY_REPORTS_GRANT: &str = "wgpolicyk8s.io/policyreports: get,list,create,update,delete";
const OPEN_REPORTS_GRANT: &str = "openreports.io/reports: get,list,create,update,delete";

/// What the auditor's ClusterRole grants, one `group/resource: verbs` a resource.
fn grants(role: &Value) -> BTreeSet<String> {
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let verbs: Vec<&str> = rule["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                grants.insert(format!(
                    "{}/{}: {}",
                    group.as_str().unwrap(),
                    resource.as_str().unwrap(),
                    verbs.join(",")
                ));
            }
        }
    }
    grants
}

/// The auditor's reads: Pods and the workloads.
fn audit_reads() -> BTreeSet<String> {
    let read = "get,list,watch";
    ["/pods", "/replicationcontrollers", "apps/deployments", "apps/replicasets", "apps/statefulsets", "apps/daemonsets"]
        .into_iter()
        .chain(["batch/jobs", "batch/cronjobs"])
        .map(|resource| format!("{resource}: {read}"))
        .collect()
}

/// `audit.reportApi` reaches `--report-api` and grants exactly the report
/// APIs it may write; `audit.policyReports=false` grants none.
#[test]
fn audit_report_api_picks_the_arguments_and_the_grants() {
    let helm = tool!("audit_report_api_picks_the_arguments_and_the_grants", "helm");
    let name = format!("{RELEASE}-audit");
    for (values, argument, reports) in [
        (&["audit.reportApi=auto"][..], Some("--report-api=auto"), &[POLICY_REPORTS_GRANT, OPEN_REPORTS_GRANT][..]),
        (&["audit.reportApi=both"], Some("--report-api=both"), &[POLICY_REPORTS_GRANT, OPEN_REPORTS_GRANT]),
        (&["audit.reportApi=wgpolicyk8s"], Some("--report-api=wgpolicyk8s"), &[POLICY_REPORTS_GRANT]),
        (&["audit.reportApi=openreports"], Some("--report-api=openreports"), &[OPEN_REPORTS_GRANT]),
        (&["audit.policyReports=false", "audit.reportApi=both"], None, &[]),
    ] {
        let set: Vec<&str> = std::iter::once("audit.enabled=true").chain(values.iter().copied()).collect();
        let r = render(&helm, &[], &set);
        let args = r.named("Deployment", &name)["spec"]["template"]["spec"]["containers"][0]["args"].clone();
        let args: Vec<&str> = args.as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let report_args: Vec<&str> = args.iter().copied().filter(|a| a.contains("report")).collect();
        match argument {
            Some(argument) => assert_eq!(report_args, ["--policy-reports", argument], "{values:?}"),
            None => assert_eq!(report_args, Vec::<&str>::new(), "{values:?}"),
        }
        use clap::Parser as _;
        let cli = podgate::cli::Cli::try_parse_from(std::iter::once("podgate").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{values:?}: podgate rejects the auditor's arguments {args:?}: {e}"));
        assert!(matches!(cli.command, podgate::cli::Command::Audit(_)), "{values:?}");
        let mut expected = audit_reads();
        expected.extend(reports.iter().map(|grant| (*grant).to_owned()));
        assert_eq!(grants(r.named("ClusterRole", &name)), expected, "{values:?}");
    }
}

#[test]
fn docs_document_every_value() {
    let values: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap()).unwrap();
    let readme = std::fs::read_to_string(root().join("docs/install.md")).unwrap();
    let mut missing = Vec::new();
    let mut leaves = BTreeMap::new();
    flatten("", &values, &mut leaves);
    for key in leaves.keys() {
        if !readme.contains(&format!("| `{key}` |")) {
            missing.push(key.clone());
        }
    }
    assert!(missing.is_empty(), "docs/install.md's values table lacks rows for {missing:?}");
}

/// Leaf keys of the values: maps are walked, except empty ones and the
/// free-form Kubernetes structures, which are documented as a whole.
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    const WHOLE: [&str; 10] = [
        "grafana.labels",
        "resources",
        "audit.resources",
        "livenessProbe",
        "readinessProbe",
        "podSecurityContext",
        "securityContext",
        "updateStrategy",
        "topologySpreadConstraints",
        "exemptions",
    ];
    match value {
        Value::Object(map) if !map.is_empty() && !WHOLE.contains(&prefix) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned(), value.clone());
        }
    }
}

/// `deploy/podgate-vap.yaml` is `podgate export vap` of the policy the chart
/// renders with its defaults, and the chart carries the same file and the
/// sha256 of that policy (deploy/generate.sh writes all three).
#[test]
fn vap_export_is_in_sync() {
    let Some(tools) = scenario_tools("vap_export_is_in_sync") else { return };
    let defaults = render(&tools.helm, &[], &[]);
    let policy = podgate::config::Policy::from_yaml(&defaults.policy_text()).expect("the default policy is valid");
    let exported = podgate::export::vap::render(&policy).expect("the default policy exports");
    let checked_in = std::fs::read_to_string(root().join("deploy/podgate-vap.yaml")).unwrap();
    assert!(exported == checked_in, "deploy/podgate-vap.yaml is out of sync with the export: run deploy/generate.sh");
    let carried = std::fs::read_to_string(chart_dir().join("files/podgate-vap.yaml")).unwrap();
    assert!(carried == checked_in, "charts/podgate/files/podgate-vap.yaml differs: run deploy/generate.sh");
    let sha = std::fs::read_to_string(chart_dir().join("files/podgate-vap.policy.sha256")).unwrap();
    let checksum = &defaults.deployment()["spec"]["template"]["metadata"]["annotations"]["checksum/policy"];
    assert_eq!(checksum.as_str(), Some(sha.trim()), "files/podgate-vap.policy.sha256: run deploy/generate.sh");
}

/// `enforcement`: `vap` installs only the ValidatingAdmissionPolicies,
/// `both` adds them to the webhook; a policy other than the default needs
/// its export in `vap.manifest`.
#[test]
fn enforcement_vap_and_both() {
    let Some(tools) = scenario_tools("enforcement_vap_and_both") else { return };
    let vap = render(&tools.helm, &[], &["enforcement=vap"]);
    assert_eq!(
        vap.kinds(),
        ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"].map(String::from).into(),
        "{}",
        vap.text
    );
    let deny = vap.named("ValidatingAdmissionPolicy", "podgate-deny");
    assert_eq!(deny["spec"]["failurePolicy"], "Fail");
    // admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy is GA since 1.30.
    validate_builtin_kinds_for(&tools.kubernetes_validate, &vap, &["1.30.0", "1.37.0"]);

    let both = render(&tools.helm, &[], &["enforcement=both"]);
    assert!(both.kinds().contains("ValidatingWebhookConfiguration") && both.kinds().contains("Deployment"));
    assert!(both.kinds().contains("ValidatingAdmissionPolicy"));
    assert_eq!(render(&tools.helm, &[], &[]).maybe("ValidatingAdmissionPolicy"), None);

    // Another policy without its export: refused, saying what to do.
    let err = try_render(&tools.helm, &chart_dir(), NAMESPACE, &[], &["enforcement=vap", "mode=audit"]).unwrap_err();
    assert!(err.contains("podgate export vap --config"), "{err}");
    // With its export: installed as given.
    let audit = podgate::config::Policy::from_yaml(&render(&tools.helm, &[], &["mode=audit"]).policy_text()).unwrap();
    let manifest = scratch().join("vap-audit.yaml");
    std::fs::write(&manifest, podgate::export::vap::render(&audit).unwrap()).unwrap();
    let mut command = helm_command(&tools.helm);
    command.arg("template").arg(RELEASE).arg(chart_dir()).args(["--namespace", NAMESPACE]);
    command.args(["--set", "enforcement=vap", "--set", "mode=audit", "--set-file"]);
    command.arg(format!("vap.manifest={}", manifest.display()));
    let output = run(&mut command);
    assert!(output.status.success(), "{}", stderr(&output));
    let r = Rendering::parse("enforcement=vap mode=audit", stdout(&output));
    let binding = r.named("ValidatingAdmissionPolicyBinding", "podgate-audit");
    assert_eq!(binding["spec"]["validationActions"], serde_json::json!(["Warn", "Audit"]));
    assert!(r.maybe("Deployment").is_none());

    let schema = try_render(&tools.helm, &chart_dir(), NAMESPACE, &[], &["enforcement=cel"]).unwrap_err();
    assert!(schema.contains("enforcement"), "{schema}");
}

// ---------------------------------------------------------------------------
// The Grafana dashboard
// ---------------------------------------------------------------------------

/// The dashboard file the chart carries.
fn dashboard_file() -> String {
    std::fs::read_to_string(chart_dir().join("files/dashboards/podgate.json")).unwrap()
}

/// The dashboard's shape, checked statically (tests/dashboard.rs runs every
/// query against a real Prometheus): the datasource is a variable, every
/// panel and query uses it, podgate's series are selected by the job
/// variables only (podgate's metrics carry no namespace or name), and every
/// metric podgate exports is on a panel.
fn check_dashboard(what: &str, dashboard: &Value) {
    assert_eq!(dashboard["uid"], "podgate", "{what}");
    assert_eq!(dashboard["title"], "podgate", "{what}");
    let variables = dashboard["templating"]["list"].as_array().expect("templating.list");
    let datasource = variables.iter().find(|v| v["name"] == "datasource").expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource", "{what}");
    assert_eq!(datasource["query"], "prometheus", "{what}");
    let by_ds = json!({"type": "prometheus", "uid": "${datasource}"});
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        assert_eq!(variable["datasource"], by_ds, "{what}: variable {}", variable["name"]);
    }
    let names: BTreeSet<&str> = variables.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["audit_job", "datasource", "job"].into(), "{what}");

    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert!(ids.insert(panel["id"].as_u64().expect("panel id")), "{what}: panel id of {title} twice");
        let grid = &panel["gridPos"];
        assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24, "{what}: {title} is too wide");
        if panel["type"] == "row" {
            continue;
        }
        assert!(panel["description"].as_str().is_some_and(|d| !d.is_empty()), "{what}: {title} has no description");
        assert_eq!(panel["datasource"], by_ds, "{what}: {title}");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{what}: {title} has no queries"));
        assert!(!targets.is_empty(), "{what}: {title} has no queries");
        for target in targets {
            assert_eq!(target["datasource"], by_ds, "{what}: {title}");
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("{what}: {title}: no expr"));
            expr_sane(&format!("{what}: {title}"), expr);
            for forbidden in ["namespace", "pod=", "pod!", "name="] {
                assert!(!expr.contains(forbidden), "{what}: {title}: podgate's series have no {forbidden}: {expr}");
            }
            // Each series selector is scoped by its job variable.
            for (start, _) in expr.match_indices("podgate_").chain(expr.match_indices("up{")) {
                let name: String =
                    expr[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let selector = &expr[start + name.len()..];
                let job = if name.starts_with("podgate_audit_") { "$audit_job" } else { "$job" };
                assert!(
                    selector.starts_with(&format!("{{job=~\"{job}\"")),
                    "{what}: {title}: {name} is not selected by job=~\"{job}\": {expr}"
                );
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
                used.insert(base.to_owned());
            }
        }
    }
    for metric in METRICS {
        assert!(used.contains(metric), "{what}: no panel shows {metric}");
    }
}

/// `grafana.enabled`: a ConfigMap with the dashboard file, labelled for the
/// Grafana sidecar, in the release namespace, next to every other object
/// (the policy's ConfigMap stays the one the Deployment mounts); under the
/// 1 MiB a ConfigMap may hold.
#[test]
fn grafana_dashboard() {
    let Some(tools) = scenario_tools("grafana_dashboard") else { return };
    assert!(render(&tools.helm, &[], &[]).all("ConfigMap").len() == 1, "off by default");

    let r = render(&tools.helm, &[&fixture("everything.yaml")], &["grafana.enabled=true"]);
    check_rendering(&tools, &r);
    let label = &r.label;
    let cm = r.named("ConfigMap", &format!("{RELEASE}-dashboard"));
    keys(label, cm, &["apiVersion", "kind", "metadata", "data"], &["apiVersion", "kind", "metadata", "data"]);
    assert_eq!(cm["metadata"]["namespace"], NAMESPACE, "{label}");
    let labels = &cm["metadata"]["labels"];
    assert_eq!(labels["grafana_dashboard"], "1", "{label}: the kube-prometheus-stack sidecar's label");
    assert_eq!(labels["example.com/team"], "platform", "{label}: commonLabels too");
    assert_eq!(cm["metadata"]["annotations"]["example.com/contact"], "platform@example.com", "{label}");
    let data = cm["data"].as_object().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["podgate.json"], "{label}");
    let text = data["podgate.json"].as_str().unwrap();
    assert_eq!(text, dashboard_file().trim(), "{label}: the file, byte for byte");
    let dashboard: Value = serde_json::from_str(text).expect("the dashboard is JSON");
    check_dashboard(label, &dashboard);
    let raw = &r.docs.iter().find(|d| d.name() == format!("{RELEASE}-dashboard")).unwrap().raw;
    assert!(raw.len() < 1024 * 1024, "{label}: the ConfigMap is {} bytes; a ConfigMap holds at most 1 MiB", raw.len());
    // The Deployment mounts the policy, not the dashboard.
    let volumes = &r.deployment()["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[1]["configMap"]["name"], format!("{RELEASE}-policy"), "{label}");

    // Another namespace (where Grafana runs), other labels, a folder.
    let set = [
        "grafana.enabled=true",
        "grafana.namespace=monitoring",
        "grafana.labels.grafana_dashboard=null",
        "grafana.labels.dashboards=security",
        "grafana.annotations.grafana_folder=Security",
    ];
    let r = render(&tools.helm, &[], &set);
    validate_builtin_kinds(&tools.kubernetes_validate, &r);
    let cm = r.named("ConfigMap", &format!("{RELEASE}-dashboard"));
    assert_eq!(cm["metadata"]["namespace"], "monitoring", "{}", r.label);
    assert_eq!(cm["metadata"]["labels"]["dashboards"], "security", "{}", r.label);
    assert!(cm["metadata"]["labels"].get("grafana_dashboard").is_none(), "{}: the default label dropped", r.label);
    assert_eq!(cm["metadata"]["labels"]["app.kubernetes.io/instance"], RELEASE, "{}", r.label);
    assert_eq!(cm["metadata"]["annotations"], json!({"grafana_folder": "Security"}), "{}", r.label);
    assert_eq!(r.policy_config_map()["metadata"]["namespace"], NAMESPACE, "{}: only the dashboard moves", r.label);

    // No webhook, no metrics: no dashboard.
    let vap = render(&tools.helm, &[], &["enforcement=vap", "grafana.enabled=true"]);
    assert!(vap.all("ConfigMap").is_empty(), "{}", vap.label);

    for (set, expect) in [
        ("grafana.enabled=yes", "grafana.enabled: Invalid type. Expected: boolean, given: string"),
        ("grafana.namespace=Monitoring", "grafana.namespace: Does not match pattern"),
        ("grafana.labels.grafana_dashboard=1", "Invalid type. Expected: string, given: integer"),
        ("grafana.folder=Security", "Additional property folder is not allowed"),
    ] {
        let e = try_render(&tools.helm, &chart_dir(), NAMESPACE, &[], &[set]).expect_err(set);
        assert!(e.contains(expect), "--set {set}: expected {expect:?} in:\n{e}");
    }
}
