//! `podgate fix`: write the fixes that have one obvious answer into plain
//! manifests, and list what is left for a person.
//!
//! It reuses `podgate check`'s pipeline: [`crate::source`] walks the paths,
//! [`crate::decode::manifest`] splits and decodes documents,
//! [`crate::extract`] finds the pod spec of every workload kind, and the
//! planner below mirrors what [`crate::checks`] require. What it fixes:
//!
//! - `allowPrivilegeEscalation: false` on every container that leaves it
//!   unset (not on Windows pods, where the API forbids the field; not on a
//!   privileged container or one adding `CAP_SYS_ADMIN`, where the API
//!   refuses `false`);
//! - `runAsNonRoot: true` at pod level, when the pod leaves it unset and no
//!   container sets it false;
//! - liveness and readiness probes (and a startup probe for a start
//!   period) from a Dockerfile's `HEALTHCHECK` ([`healthcheck`]), or with
//!   `--tcp-probes` a `tcpSocket` probe on the container's one declared port.
//!
//! It never changes a value someone wrote. Edits are insertions of whole
//! lines ([`yaml`]); each is kept only if the edited document reads back as
//! the original plus exactly the planned values. What remains is
//! found by running the checks on the edited objects: those findings are
//! left for a person, with the field, the line and why fix left them.
//!
//! Exit codes, as `podgate check`: 0 nothing left for a person, 1 something
//! is, 2 an error (a file or Dockerfile that cannot be read or written, a
//! document that does not decode).

pub mod diff;
pub mod healthcheck;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jiff::Timestamp;
use serde_json::Value as Json;

use crate::checks::{ContainerList, PodView};
use crate::config::Policy;
use crate::decode::locate::Locator;
use crate::decode::manifest::{for_each_document_with_source, DocumentError, FoundObject, Syntax};
use crate::decode::model::Object;
use crate::exemption::Subject;
use crate::extract::{pod_target, WorkloadKind};
use crate::source::{self, HelmOptions, Input, RenderedDocument};
use crate::verdict::evaluate_object;
use healthcheck::HealthCheck;
use yaml::{Insertion, Node, Step, Value};

/// Arguments of `podgate fix`.
#[derive(Debug, clap::Args)]
pub struct FixArgs {
    /// Print a unified diff of the changes on standard output (the report
    /// goes to standard error) and write nothing.
    #[arg(long)]
    pub diff: bool,
    /// A Dockerfile whose HEALTHCHECK becomes liveness and readiness probes
    /// (and a startup probe for --start-period): `CONTAINER=Dockerfile` for
    /// the containers of that name (repeatable); `Dockerfile` alone for the
    /// only or first container, when the paths hold one workload.
    #[arg(long = "healthcheck", value_name = "[CONTAINER=]DOCKERFILE")]
    pub healthchecks: Vec<String>,
    /// Where no HEALTHCHECK gives a probe, add `tcpSocket` liveness and
    /// readiness probes on the container's one declared TCP port.
    #[arg(long)]
    pub tcp_probes: bool,
    /// Policy file (YAML): its settings (minimum UID, probe rules,
    /// exemptions) decide what is left for a person.
    #[arg(long, env = "PODGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Namespace assumed for objects that set none (for exemptions).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Render Helm charts with `helm template` and report what to change
    /// in their values or templates (charts are never edited).
    #[arg(long)]
    pub helm: bool,
    /// Render kustomizations and report what to patch (never edited).
    #[arg(long)]
    pub kustomize: bool,
    /// Files or directories, walked as `podgate check` walks them.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// A `--healthcheck` argument, read.
struct HealthSource {
    container: Option<String>,
    file: String,
    check: Option<HealthCheck>,
    /// Whether a container it names was found (a typo is warned about).
    used: std::cell::Cell<bool>,
}

/// Reads `--healthcheck [CONTAINER=]DOCKERFILE`: a path that exists is a
/// path even with a `=` in it.
fn load_healthchecks(args: &[String]) -> Result<Vec<HealthSource>, String> {
    let mut out: Vec<HealthSource> = Vec::new();
    for arg in args {
        let (container, file) = match arg.split_once('=') {
            Some((name, file)) if !Path::new(arg).exists() && !name.is_empty() => (Some(name.to_owned()), file),
            _ => (None, arg.as_str()),
        };
        if out.iter().any(|s| s.container == container) {
            return Err(match container {
                Some(name) => format!("--healthcheck: two Dockerfiles for container {name:?}"),
                None => {
                    "--healthcheck: two Dockerfiles without a container name; write CONTAINER=Dockerfile".to_owned()
                }
            });
        }
        let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: cannot read: {e}"))?;
        let check = healthcheck::parse(&text).map_err(|e| format!("{file}: {e}"))?;
        out.push(HealthSource { container, file: file.to_owned(), check, used: std::cell::Cell::new(false) });
    }
    Ok(out)
}

/// One insertion fix means to make: key `key` with `value` in the mapping at
/// `mapping` (created if missing), and why.
#[derive(Debug, Clone)]
struct Planned {
    mapping: String,
    key: String,
    value: Value,
    why: String,
}

impl Planned {
    fn field(&self) -> String {
        format!("{}.{}", self.mapping, self.key)
    }
}

/// Why a finding is left for a person, by field.
#[derive(Debug, Clone)]
struct Note {
    field: String,
    message: String,
}

/// What the planner decided for one object.
#[derive(Debug, Default)]
struct Plan {
    edits: Vec<Planned>,
    notes: Vec<Note>,
}

/// Settings of one run.
struct Fixer<'a> {
    policy: &'a Policy,
    namespace: Option<&'a str>,
    now: Timestamp,
    healthchecks: &'a [HealthSource],
    tcp_probes: bool,
}

/// A JSON value at a dotted path, for details the lean model does not keep
/// (capabilities, port protocols).
fn json_at<'j>(root: &'j Json, path: &[Step]) -> Option<&'j Json> {
    let mut node = root;
    for step in path {
        node = match step {
            Step::Key(key) => node.get(*key)?,
            Step::Index(index) => node.get(*index)?,
        };
    }
    Some(node)
}

impl Fixer<'_> {
    /// The health check for container `name`, at `position` in its list:
    /// a named one, else the unnamed one for the first regular container.
    fn healthcheck_for(&self, name: &str, list: ContainerList, index: usize) -> Option<&HealthSource> {
        self.healthchecks.iter().find(|s| s.container.as_deref() == Some(name)).or_else(|| {
            (list == ContainerList::Containers && index == 0)
                .then(|| self.healthchecks.iter().find(|s| s.container.is_none()))
                .flatten()
        })
    }

    /// Why probes with these timings would fail the policy's probe rules, if they would.
    fn out_of_bounds(&self, p: &healthcheck::Probes) -> Option<String> {
        let rule = &self.policy.checks.probe_settings;
        let (min, max) = (rule.min_period_seconds, rule.max_period_seconds);
        let fits = |n: u64, low: i64, high: i64| i64::try_from(n).is_ok_and(|n| (low..=high).contains(&n));
        for (what, period) in [("--interval", Some(p.period)), ("the startup probe's period", p.startup_period)] {
            let Some(period) = period else { continue };
            if !fits(period, min, max) {
                return Some(format!("{what} gives periodSeconds {period}, and the policy allows {min} to {max}"));
            }
            if p.timeout > period {
                return Some(format!(
                    "--timeout gives timeoutSeconds {} > periodSeconds {period} ({what}); a probe's timeout must fit in its period",
                    p.timeout
                ));
            }
        }
        if !fits(p.timeout, 0, rule.max_timeout_seconds) {
            return Some(format!(
                "--timeout gives timeoutSeconds {}, and the policy allows at most {}",
                p.timeout, rule.max_timeout_seconds
            ));
        }
        None
    }

    /// Plans the fixes for one workload object found at `prefix` in its
    /// document; `document` is the whole document as JSON.
    fn plan(&self, kind: WorkloadKind, object: &Object<'_>, prefix: &str, document: &Json) -> Plan {
        let mut plan = Plan::default();
        let target = pod_target(kind, object);
        let view = PodView::of(&target);
        let at = |rest: &str| if prefix.is_empty() { rest.to_owned() } else { format!("{prefix}.{rest}") };
        let pod_path = at(target.path);
        let windows = view.is_windows();
        for c in view.containers() {
            for source in self.healthchecks.iter().filter(|s| s.container.as_deref() == Some(&*c.container.name)) {
                source.used.set(true);
            }
        }
        let mut edit = |mapping: String, key: &str, value: Value, why: String| {
            plan.edits.push(Planned { mapping, key: key.to_owned(), value, why })
        };
        let mut notes = Vec::new();
        let mut note = |field: String, message: String| notes.push(Note { field, message });

        // allowPrivilegeEscalation, per container (Linux pods only).
        for c in view.containers() {
            let container_path = at(&c.field("")).trim_end_matches('.').to_owned();
            let sc = c.container.security_context.as_ref();
            if windows {
                continue;
            }
            match sc.and_then(|sc| sc.allow_privilege_escalation) {
                Some(false) => {}
                Some(true) => note(
                    at(&c.field("securityContext.allowPrivilegeEscalation")),
                    "set to true: fix never changes a value someone wrote".to_owned(),
                ),
                None if sc.and_then(|sc| sc.privileged) == Some(true) => note(
                    at(&c.field("securityContext.allowPrivilegeEscalation")),
                    "not added: the container is privileged, and the API refuses allowPrivilegeEscalation=false with privileged=true".to_owned(),
                ),
                None => {
                    let caps = json_at(document, &yaml::steps(&format!("{container_path}.securityContext.capabilities.add")));
                    let sys_admin = caps.and_then(Json::as_array).is_some_and(|caps| {
                        caps.iter().any(|c| matches!(c.as_str(), Some("SYS_ADMIN" | "CAP_SYS_ADMIN")))
                    });
                    if sys_admin {
                        note(
                            at(&c.field("securityContext.allowPrivilegeEscalation")),
                            "not added: the container adds SYS_ADMIN, which can escalate anyway (the API refuses allowPrivilegeEscalation=false with CAP_SYS_ADMIN)".to_owned(),
                        );
                    } else {
                        edit(
                            format!("{container_path}.securityContext"),
                            "allowPrivilegeEscalation",
                            Value::Bool(false),
                            "unset: false is the only value the check accepts".to_owned(),
                        );
                    }
                }
            }
            if sc.and_then(|sc| sc.privileged) == Some(true) {
                note(at(&c.field("securityContext.privileged")), "fix never changes a value someone wrote".to_owned());
            }
        }

        // runAsNonRoot at pod level, where the check asks for it: not when
        // the policy turns it off, nor for a user-namespaced pod it relaxes
        // (there root is an unprivileged host UID, and many such pods run
        // as UID 0 on purpose).
        let rule = &self.policy.checks.run_as_non_root;
        let required =
            rule.action != crate::checks::Action::Off && !view.relaxed_for_user_namespace(rule.user_namespaces);
        let pod_level = target.spec.security_context.as_ref().and_then(|sc| sc.run_as_non_root);
        let pod_uid = target.spec.security_context.as_ref().and_then(|sc| sc.run_as_user);
        let own = |c: &crate::checks::ContainerRef<'_, '_>| {
            c.container.security_context.as_ref().and_then(|sc| sc.run_as_non_root)
        };
        let setting_false: Vec<_> =
            if required { view.containers().filter(|c| own(c) == Some(false)).collect() } else { Vec::new() };
        let uncovered = required && view.containers().any(|c| own(&c).is_none());
        // A container that would run as UID 0 cannot start with
        // runAsNonRoot=true (the kubelet refuses it): adding it would turn a
        // finding into a Pod that never runs, so its UID needs a person first.
        let as_root: Vec<_> = view
            .containers()
            .filter(|c| own(c).is_none())
            .filter(|c| c.container.security_context.as_ref().and_then(|sc| sc.run_as_user).or(pod_uid) == Some(0))
            .collect();
        for c in &setting_false {
            note(
                at(&c.field("securityContext.runAsNonRoot")),
                "set to false: fix never changes a value someone wrote".to_owned(),
            );
        }
        match pod_level {
            Some(false) if required => note(
                format!("{pod_path}.securityContext.runAsNonRoot"),
                "the pod sets it false: fix never changes a value someone wrote".to_owned(),
            ),
            None if uncovered && !setting_false.is_empty() => {
                for c in view.containers().filter(|c| own(c).is_none()) {
                    note(
                        at(&c.field("securityContext.runAsNonRoot")),
                        format!(
                            "pod-level runAsNonRoot not added: {} sets it false",
                            setting_false.iter().map(|c| c.describe()).collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
            }
            None if uncovered && !as_root.is_empty() => {
                for c in &as_root {
                    note(
                        at(&c.field("securityContext.runAsNonRoot")),
                        format!(
                            "pod-level runAsNonRoot not added: {} runs as UID 0 (runAsUser=0), and the kubelet refuses to start it with runAsNonRoot=true; set a non-zero runAsUser first",
                            c.describe()
                        ),
                    );
                }
            }
            None if uncovered => edit(
                format!("{pod_path}.securityContext"),
                "runAsNonRoot",
                Value::Bool(true),
                "unset, and no container sets it false".to_owned(),
            ),
            _ => {}
        }

        // Probes, for the containers the probe checks require them of.
        let forbid_identical = self.policy.checks.probe_settings.forbid_identical_liveness_readiness;
        for c in view.containers().filter(|c| c.needs_probes(&view)) {
            let live = c.container.liveness_probe.is_none();
            let ready = c.container.readiness_probe.is_none();
            if !live && !ready {
                continue;
            }
            let container_path = at(&c.field("")).trim_end_matches('.').to_owned();
            let missing: Vec<&str> =
                [(live, "livenessProbe"), (ready, "readinessProbe")].iter().filter(|m| m.0).map(|m| m.1).collect();
            let mut leave = |message: String| {
                for probe in &missing {
                    note(at(&c.field(probe)), message.clone());
                }
            };
            let ports: Vec<(Option<String>, i64, String)> =
                json_at(document, &yaml::steps(&format!("{container_path}.ports")))
                    .and_then(Json::as_array)
                    .map(|ports| {
                        ports
                            .iter()
                            .filter_map(|p| {
                                Some((
                                    p.get("name").and_then(Json::as_str).map(str::to_owned),
                                    p.get("containerPort")?.as_i64()?,
                                    p.get("protocol").and_then(Json::as_str).unwrap_or("TCP").to_owned(),
                                ))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
            let source = self.healthcheck_for(&c.container.name, c.list, c.index);
            let (probe, startup, why) = match source.map(|s| (s, &s.check)) {
                Some((source, Some(check))) => {
                    let named: Vec<(Option<String>, i64)> = ports.iter().map(|(n, p, _)| (n.clone(), *p)).collect();
                    let target = healthcheck::Target { ports: &named, windows };
                    match healthcheck::probes(check, &target) {
                        Ok(p) if self.out_of_bounds(&p).is_some() => {
                            let why = self.out_of_bounds(&p).unwrap_or_default();
                            leave(format!(
                                "the HEALTHCHECK in {} line {} cannot be translated: {why}",
                                source.file, check.line
                            ));
                            continue;
                        }
                        Ok(p) => {
                            let from = format!("from the HEALTHCHECK in {} line {}", source.file, check.line);
                            let startup =
                                p.startup.zip(p.startup_summary).map(|(s, why)| (s, format!("{from}: {why}")));
                            (p.probe, startup, format!("{from}: {}", p.summary))
                        }
                        Err(e) => {
                            leave(format!(
                                "the HEALTHCHECK in {} line {} cannot be translated: {e}",
                                source.file, check.line
                            ));
                            continue;
                        }
                    }
                }
                other => {
                    let without = other.map(|(s, _)| format!("{} has no HEALTHCHECK in its final stage", s.file));
                    if !self.tcp_probes {
                        leave(without.unwrap_or_else(|| {
                            "no probe to derive: give --healthcheck [CONTAINER=]Dockerfile, or --tcp-probes".to_owned()
                        }));
                        continue;
                    }
                    let tcp: Vec<_> = ports.iter().filter(|(_, _, protocol)| protocol == "TCP").collect();
                    let [(name, number, _)] = tcp.as_slice() else {
                        leave(format!(
                            "--tcp-probes needs exactly one declared TCP port; the container declares {}",
                            tcp.len()
                        ));
                        continue;
                    };
                    let port = name.clone().map_or(Value::Int(*number), Value::Str);
                    let probe = Value::Map(vec![("tcpSocket".into(), Value::Map(vec![("port".into(), port)]))]);
                    (probe, None, format!("--tcp-probes: tcpSocket on the one declared TCP port, {number}"))
                }
            };
            if live && ready && forbid_identical {
                note(
                    at(&c.field("livenessProbe")),
                    "not added: the policy forbids a liveness probe identical to the readiness probe".to_owned(),
                );
            } else if live {
                edit(container_path.clone(), "livenessProbe", probe.clone(), why.clone());
            }
            if ready {
                edit(container_path.clone(), "readinessProbe", probe, why.clone());
            }
            if let Some((startup, why)) = startup.filter(|_| c.container.startup_probe.is_none()) {
                edit(container_path, "startupProbe", startup, why);
            }
        }
        plan.notes = notes;
        plan
    }
}

/// Whether an object found at `path` is an `AdmissionReview`'s.
fn is_review(path: &str) -> bool {
    path.starts_with("request.")
}

/// A workload object of a document and what the planner decided for it.
struct ObjectPlan<'a> {
    kind: WorkloadKind,
    object: Object<'a>,
    plan: Plan,
}

/// Whether a note about `note` (a field fix would have set) explains the
/// finding about `finding`: the same field, or pod-level `runAsNonRoot`
/// for each container's finding about it.
fn explains(note: &str, finding: &str) -> bool {
    const RUN_AS_NON_ROOT: &str = ".securityContext.runAsNonRoot";
    note == finding
        || note.strip_suffix(RUN_AS_NON_ROOT).is_some_and(|pod| {
            finding.ends_with(RUN_AS_NON_ROOT)
                && finding.strip_prefix(pod).is_some_and(|rest| {
                    ["containers[", "initContainers[", "ephemeralContainers["]
                        .iter()
                        .any(|list| rest.strip_prefix('.').is_some_and(|r| r.starts_with(list)))
                })
        })
}

/// The outcome of one object.
struct ObjectReport {
    header: String,
    fixed: Vec<Planned>,
    /// Findings left: (field, line, message, why fix left it).
    left: Vec<(String, Option<usize>, String, Vec<String>)>,
}

/// The outcome of one document: its objects, and the insertions to make.
struct DocumentOutcome {
    objects: Vec<ObjectReport>,
    insertions: Vec<Insertion>,
}

/// Where the line numbers of findings come from (as in `podgate check`).
#[derive(Clone, Copy)]
enum Lines<'f> {
    /// The document's own text, whose lines are the file's.
    Source,
    /// The template a chart's document was rendered from.
    Template(&'f dyn Fn(&str) -> usize),
    /// Nothing to map back to (a kustomize rendering).
    Unknown,
}

/// How a document may be changed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Editable<'t> {
    /// A plain YAML manifest: edited.
    Yes,
    /// Reported with this advice instead (JSON, a chart's template, a kustomization).
    No(&'t str),
}

impl Fixer<'_> {
    /// Plans, edits (when `editable`) and re-checks one document. `source`
    /// is its text, padded so its line numbers are the file's.
    fn document(
        &self,
        name: &str,
        source: &str,
        document: crate::decode::manifest::Document<'_>,
        editable: Editable<'_>,
        lines: Lines<'_>,
    ) -> DocumentOutcome {
        let json: Json =
            serde_yaml_ng::from_str(source).or_else(|_| serde_json::from_str(source)).unwrap_or(Json::Null);
        let mut plans = Vec::new();
        for found in document.into_objects() {
            let FoundObject { object, path, user_info, .. } = found;
            let kind = WorkloadKind::from_api_version_kind(
                object.api_version.as_deref().unwrap_or_default(),
                object.kind.as_deref().unwrap_or_default(),
            );
            // An AdmissionReview in a file is a request, not a manifest to fix.
            let Some(kind) = kind.filter(|_| user_info.is_none() && !is_review(&path)) else { continue };
            let plan = self.plan(kind, &object, &path, &json);
            plans.push(ObjectPlan { kind, object, plan });
        }

        // The edits, grouped by the mapping they go into.
        let mut insertions = Vec::new();
        let mut expected = json.clone();
        let mut failed: Vec<(String, String)> = Vec::new();
        let mut applied: Vec<Vec<bool>> = plans.iter().map(|p| vec![false; p.plan.edits.len()]).collect();
        if editable == Editable::Yes {
            let doc = yaml::Document::new(source);
            // By mapping, in the order planned: a container's securityContext before its probes.
            let mut groups: Vec<(&str, Vec<(usize, usize)>)> = Vec::new();
            for (o, plan) in plans.iter().enumerate() {
                for (e, planned) in plan.plan.edits.iter().enumerate() {
                    match groups.iter_mut().find(|(m, _)| *m == planned.mapping) {
                        Some((_, members)) => members.push((o, e)),
                        None => groups.push((planned.mapping.as_str(), vec![(o, e)])),
                    }
                }
            }
            // Each group is kept only if the document, edited with it and
            // the groups kept before it, reads back as the original plus
            // exactly the planned values; so one edit the scanner cannot
            // make (into a mapping an alias shares, say) costs only itself.
            for (mapping, members) in &groups {
                let entries: Vec<(String, Value)> =
                    members.iter().map(|&(o, e)| plans[o].plan.edits[e].clone()).map(|p| (p.key, p.value)).collect();
                let outcome = insertion(&doc, mapping, &entries).and_then(|insertion| {
                    let mut trial = insertions.clone();
                    trial.push(insertion);
                    diff::sort(&mut trial);
                    let mut intended = expected.clone();
                    expect(&mut intended, mapping, &entries);
                    let read_back: Option<Json> = serde_yaml_ng::from_str(&diff::apply(source, &trial)).ok();
                    if read_back.as_ref() == Some(&intended) {
                        Ok((trial, intended))
                    } else {
                        Err("not edited: the document did not read back as intended with it (fix edits only block-style YAML it understands)".to_owned())
                    }
                });
                match outcome {
                    Ok((trial, intended)) => {
                        insertions = trial;
                        expected = intended;
                        for &(o, e) in members {
                            applied[o][e] = true;
                        }
                    }
                    Err(why) => {
                        for &(o, e) in members {
                            failed.push((plans[o].plan.edits[e].field(), why.clone()));
                        }
                    }
                }
            }
        }
        let edited = diff::apply(source, &insertions);
        let final_text = if insertions.is_empty() { source.to_owned() } else { edited };
        let mut locator = Locator::new(source, Syntax::detect(name, source));
        let mut objects = Vec::new();
        let mut reparsed: Vec<Option<(WorkloadKind, OwnedVerdict)>> = Vec::new();
        for_each_document_with_source(&final_text, Syntax::detect(name, &final_text), |_, _, document| {
            let Ok(document) = document else { return };
            for found in document.into_objects() {
                let kind = WorkloadKind::from_api_version_kind(
                    found.object.api_version.as_deref().unwrap_or_default(),
                    found.object.kind.as_deref().unwrap_or_default(),
                )
                .filter(|_| found.user_info.is_none() && !is_review(&found.path));
                reparsed.push(kind.map(|kind| (kind, self.verdict(kind, &found))));
            }
        });
        let mut reparsed = reparsed.into_iter().flatten();
        for (o, ObjectPlan { kind, object, plan }) in plans.into_iter().enumerate() {
            let Some((_, violations)) = reparsed.next() else { continue };
            let metadata = object.metadata.as_ref();
            let name_of = metadata.and_then(|m| m.name.as_deref().or(m.generate_name.as_deref())).unwrap_or("-");
            let namespace = metadata.and_then(|m| m.namespace.as_deref()).or(self.namespace);
            let header = match namespace {
                Some(ns) => format!("{} {ns}/{name_of}", kind.as_str()),
                None => format!("{} {name_of}", kind.as_str()),
            };
            let mut fixed = Vec::new();
            let mut suggestions: Vec<(String, String)> = Vec::new();
            for (e, planned) in plan.edits.into_iter().enumerate() {
                if applied[o][e] {
                    fixed.push(planned);
                } else {
                    if let Editable::No(advice) = editable {
                        suggestions.push((
                            planned.field(),
                            format!("{advice}: set {}: {} ({})", planned.key, planned.value.brief(), planned.why),
                        ));
                    }
                }
            }
            let mut left = Vec::new();
            for (field, message) in violations {
                let line = match lines {
                    Lines::Source => locator.line_of(&field),
                    Lines::Template(template) => Some(template(&field)),
                    Lines::Unknown => None,
                };
                let mut why: Vec<String> = Vec::new();
                why.extend(plan.notes.iter().filter(|n| explains(&n.field, &field)).map(|n| n.message.clone()));
                why.extend(failed.iter().filter(|(f, _)| explains(f, &field)).map(|(_, m)| m.clone()));
                why.extend(suggestions.iter().filter(|(f, _)| explains(f, &field)).map(|(_, m)| m.clone()));
                left.push((field, line, message, why));
            }
            objects.push(ObjectReport { header, fixed, left });
        }
        DocumentOutcome { objects, insertions }
    }

    /// The findings the checks still make on `found`, as (field, message).
    fn verdict(&self, kind: WorkloadKind, found: &FoundObject<'_>) -> OwnedVerdict {
        let object = &found.object;
        let namespace = found
            .namespace
            .as_deref()
            .or_else(|| object.metadata.as_ref().and_then(|m| m.namespace.as_deref()))
            .or(self.namespace);
        let subject = Subject::stored(kind, object, namespace);
        let verdict = evaluate_object(self.policy, &subject, kind, object, self.now);
        verdict
            .violations
            .iter()
            .map(|v| {
                let field = if found.path.is_empty() {
                    v.finding.field.clone()
                } else {
                    format!("{}.{}", found.path, v.finding.field)
                };
                (field, v.finding.message.clone())
            })
            .collect()
    }
}

type OwnedVerdict = Vec<(String, String)>;

/// The insertion that adds `entries` to the mapping at `mapping`, creating
/// the mapping's own key in its parent when it is missing.
fn insertion(doc: &yaml::Document<'_>, mapping: &str, entries: &[(String, Value)]) -> Result<Insertion, String> {
    let path = yaml::steps(mapping);
    let keys = entries.iter().map(|(k, v)| format!("{k}: {}", v.brief())).collect::<Vec<_>>().join(", ");
    let style = match doc.find(&path) {
        Ok(node) => doc.style_near(node),
        Err(depth) => doc.find(&path[..depth]).map_or_else(|_| doc.style(), |node| doc.style_near(node)),
    };
    let render = |indent: usize| -> Vec<String> {
        entries.iter().flat_map(|(k, v)| yaml::render(k, v, indent, style)).collect()
    };
    let refuse = |at: &str, line: usize, what: &dyn std::fmt::Display| {
        format!("not edited: {at} (line {}) is {what}; add {keys} there by hand", line + 1)
    };
    match doc.find(&path) {
        Ok(node @ Node::Map { indent, .. }) => {
            Ok(Insertion { after: doc.last_line(node), indent, lines: render(indent) })
        }
        Ok(Node::Empty { line, indent }) => {
            let inner = indent + style.step;
            Ok(Insertion { after: line, indent: inner, lines: render(inner) })
        }
        Ok(Node::Other { line, what }) => Err(refuse(mapping, line, &what)),
        Ok(Node::Seq { start, .. }) => Err(refuse(mapping, start, &"a list")),
        Err(depth) if depth + 1 == path.len() => {
            let Some(Step::Key(key)) = path.last() else {
                return Err(format!("not edited: {mapping} was not found"));
            };
            let value = Value::Map(entries.to_vec());
            let parent = mapping.rsplit_once('.').map_or("", |(p, _)| p);
            match doc.find(&path[..depth]) {
                Ok(node @ Node::Map { indent, .. }) => Ok(Insertion {
                    after: doc.last_line(node),
                    indent,
                    lines: yaml::render(key, &value, indent, style),
                }),
                Ok(Node::Empty { line, indent }) => {
                    let inner = indent + style.step;
                    Ok(Insertion { after: line, indent: inner, lines: yaml::render(key, &value, inner, style) })
                }
                Ok(Node::Other { line, what }) => Err(refuse(parent, line, &what)),
                Ok(Node::Seq { start, .. }) => Err(refuse(parent, start, &"a list")),
                Err(_) => Err(format!("not edited: {parent} was not found in the document's block structure")),
            }
        }
        Err(_) => Err(format!("not edited: {mapping} was not found in the document's block structure")),
    }
}

/// `json` with `entries` added to the mapping at `mapping`, as the edit
/// should read back (a missing or null mapping becomes one).
fn expect(json: &mut Json, mapping: &str, entries: &[(String, Value)]) {
    let mut node = json;
    for step in yaml::steps(mapping) {
        if node.is_null() && matches!(step, Step::Key(_)) {
            *node = Json::Object(serde_json::Map::new());
        }
        node = match step {
            Step::Key(key) => match node.as_object_mut() {
                Some(map) => map.entry(key).or_insert(Json::Null),
                None => return,
            },
            Step::Index(index) => match node.get_mut(index) {
                Some(item) => item,
                None => return,
            },
        };
    }
    if node.is_null() {
        *node = Json::Object(serde_json::Map::new());
    }
    if let Some(map) = node.as_object_mut() {
        for (key, value) in entries {
            map.insert(key.clone(), value.to_json());
        }
    }
}

/// Counts for the summary line and the exit code.
#[derive(Debug, Default)]
struct Tally {
    fixes: usize,
    files: usize,
    left: usize,
    objects_left: usize,
    errors: usize,
}

/// One run: the settings, the report so far, and the diffs.
struct Run<'a> {
    fixer: Fixer<'a>,
    diff: bool,
    report: String,
    diffs: String,
    tally: Tally,
}

impl Run<'_> {
    fn error(&mut self, message: String) {
        eprintln!("podgate fix: {message}");
        self.tally.errors += 1;
    }

    fn note(&mut self, message: String) {
        self.report.push_str(&message);
        self.report.push('\n');
    }

    fn record(&mut self, label: &str, objects: Vec<ObjectReport>) {
        for object in objects {
            if object.fixed.is_empty() && object.left.is_empty() {
                continue;
            }
            let _ = writeln!(self.report, "{label} {}", object.header);
            for fixed in &object.fixed {
                let _ = writeln!(self.report, "  fixed  {}: {}", fixed.field(), fixed.value.brief());
                let _ = writeln!(self.report, "         {}", fixed.why);
            }
            for (field, line, message, why) in &object.left {
                let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
                let _ = writeln!(self.report, "  left   {at}{field}: {message}");
                for why in why {
                    let _ = writeln!(self.report, "         {why}");
                }
            }
            self.tally.fixes += object.fixed.len();
            self.tally.left += object.left.len();
            self.tally.objects_left += usize::from(!object.left.is_empty());
        }
    }

    fn file(&mut self, file: &Path) {
        let name = file.display().to_string();
        if file == Path::new("-") {
            return self.error("`-`: fix edits files in place; standard input is not supported".to_owned());
        }
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => return self.error(format!("{name}: cannot read: {e}")),
        };
        let FileOutcome { insertions, objects: outcomes, errors } = self.fixer.text(&name, &text);
        for message in errors {
            self.error(message);
        }
        for (label, objects) in outcomes {
            self.record(&label, objects);
        }
        if insertions.is_empty() {
            return;
        }
        self.tally.files += 1;
        if self.diff {
            // As given, without a leading `./` (which `git apply` refuses).
            let shown = name.strip_prefix("./").unwrap_or(&name);
            self.diffs.push_str(&diff::unified(shown, &text, &insertions));
        } else if let Err(e) = write_atomically(file, &diff::apply(&text, &insertions)) {
            self.error(format!("{name}: cannot write: {e}"));
        }
    }

    /// A rendered chart or kustomization: what would be fixed, reported.
    fn rendered(&mut self, documents: &[RenderedDocument], advice: &str) {
        let mut templates: BTreeMap<&Path, Option<String>> = BTreeMap::new();
        for document in documents {
            let name = document.file.display().to_string();
            let template = if document.from_template {
                templates.entry(&document.file).or_insert_with(|| std::fs::read_to_string(&document.file).ok()).clone()
            } else {
                None
            };
            let line_of = template.map(|t| move |field: &str| source::template_line(&t, field));
            let advice = format!("{advice} {name}");
            let mut outcomes = Vec::new();
            for_each_document_with_source(&document.text, Syntax::Yaml, |_, source, parsed| {
                let Ok(parsed) = parsed else { return };
                let lines = match &line_of {
                    Some(f) => Lines::Template(f),
                    None => Lines::Unknown,
                };
                let outcome = self.fixer.document(&name, source, parsed, Editable::No(&advice), lines);
                outcomes.push(outcome.objects);
            });
            for objects in outcomes {
                self.record(&name, objects);
            }
        }
    }
}

/// What fixing one file's text gave: the insertions (sorted), each
/// document's objects under its label, and the documents that do not decode.
struct FileOutcome {
    insertions: Vec<Insertion>,
    objects: Vec<(String, Vec<ObjectReport>)>,
    errors: Vec<String>,
}

impl Fixer<'_> {
    /// Plans and makes the fixes for the text of the file `name`.
    fn text(&self, name: &str, text: &str) -> FileOutcome {
        let syntax = Syntax::detect(name, text);
        let editable = match syntax {
            Syntax::Json => Editable::No("JSON manifests are not edited; in this file"),
            Syntax::Yaml => Editable::Yes,
        };
        let mut out = FileOutcome { insertions: Vec::new(), objects: Vec::new(), errors: Vec::new() };
        for_each_document_with_source(text, syntax, |index, source, document| match document {
            Ok(document) => {
                let outcome = self.document(name, source, document, editable, Lines::Source);
                out.insertions.extend(outcome.insertions);
                out.objects.push((format!("{name}#{index}"), outcome.objects));
            }
            Err(DocumentError::Skipped(_)) => {}
            Err(DocumentError::Invalid(message)) => out.errors.push(format!("{name}#{index}: {message}")),
        });
        diff::sort(&mut out.insertions);
        out
    }
}

/// Replaces `path` (the file a symlink points to) with `text` by writing a
/// temporary file beside it and renaming it over, keeping its permissions.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let path = std::fs::canonicalize(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = dir.join(format!(".{file_name}.podgate-fix"));
    std::fs::write(&temporary, text)?;
    if let Ok(metadata) = std::fs::metadata(&path) {
        std::fs::set_permissions(&temporary, metadata.permissions())?;
    }
    std::fs::rename(&temporary, &path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

/// Runs `podgate fix` and returns its exit code.
pub fn run(args: &FixArgs) -> ExitCode {
    let policy = match &args.config {
        Some(path) => match Policy::load(path) {
            Ok(policy) => policy,
            Err(e) => {
                eprintln!("podgate fix: invalid configuration: {e}");
                return ExitCode::from(2);
            }
        },
        None => Policy::default(),
    };
    let healthchecks = match load_healthchecks(&args.healthchecks) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("podgate fix: {e}");
            return ExitCode::from(2);
        }
    };
    let fixer = Fixer {
        policy: &policy,
        namespace: args.namespace.as_deref(),
        now: Timestamp::now(),
        healthchecks: &healthchecks,
        tcp_probes: args.tcp_probes,
    };
    let mut run = Run { fixer, diff: args.diff, report: String::new(), diffs: String::new(), tally: Tally::default() };
    let helm = HelmOptions {
        release_name: "release".to_owned(),
        namespace: args.namespace.clone(),
        values: Vec::new(),
        set: Vec::new(),
    };
    let walk = source::walk(&args.paths);
    // One image's HEALTHCHECK is one workload's: without a container name,
    // it cannot say which of several workloads it belongs to.
    if healthchecks.iter().any(|h| h.container.is_none()) {
        let workloads = count_workloads(&walk.inputs);
        if workloads > 1 {
            eprintln!(
                "podgate fix: --healthcheck without a container name is for one workload, and these paths hold {workloads}; write CONTAINER=Dockerfile"
            );
            return ExitCode::from(2);
        }
    }
    for (source, message) in walk.errors {
        run.error(format!("{source}: {message}"));
    }
    for input in &walk.inputs {
        let shown = input.path().display().to_string();
        match input {
            Input::File(file) => run.file(file),
            Input::Patch(_) => run.note(format!(
                "{shown}: a kustomize patch, not edited (fix renders its kustomization with --kustomize)"
            )),
            Input::Chart(dir) if args.helm => match source::render_chart(dir, &helm, source::DEFAULT_RENDER_TIMEOUT) {
                Ok(documents) => {
                    run.rendered(&documents, "a Helm chart is not edited: change its values or the template")
                }
                Err(message) => run.error(format!("{shown}: {message}")),
            },
            Input::Chart(_) => run.note(format!(
                "{shown}: a Helm chart, not edited (use --helm to see what to change in its values or templates)"
            )),
            Input::Kustomization(dir) if args.kustomize => {
                match source::render_kustomization(dir, source::DEFAULT_RENDER_TIMEOUT) {
                    Ok(documents) => run.rendered(&documents, "a kustomization is not edited: add a patch for it in"),
                    Err(message) => run.error(format!("{shown}: {message}")),
                }
            }
            Input::Kustomization(_) => {
                run.note(format!("{shown}: a kustomization, not edited (use --kustomize to see what to patch)"))
            }
        }
    }
    for source in healthchecks.iter().filter(|s| s.container.is_some() && !s.used.get()) {
        let name = source.container.as_deref().unwrap_or_default();
        eprintln!("podgate fix: warning: --healthcheck {name}={}: no container is named {name:?}", source.file);
    }
    let Run { report, diffs, tally, .. } = run;
    let written = match (tally.files, args.diff) {
        (0, _) => "nothing to change".to_owned(),
        (files, true) => format!(
            "{} in {files} {} (--diff: nothing written)",
            plural(tally.fixes, "fix", "fixes"),
            plural_word(files, "file")
        ),
        (files, false) => {
            format!("{} written to {files} {}", plural(tally.fixes, "fix", "fixes"), plural_word(files, "file"))
        }
    };
    let left = match tally.left {
        0 => "nothing left for a person".to_owned(),
        n => format!(
            "{} in {} left for a person",
            plural(n, "finding", "findings"),
            plural(tally.objects_left, "object", "objects")
        ),
    };
    let mut summary = format!("{report}podgate fix: {written}; {left}");
    if tally.errors > 0 {
        summary.push_str(&format!("; {}", plural(tally.errors, "error", "errors")));
    }
    summary.push('\n');
    // A closed pipe (`| head`) is not an error worth a panic.
    if args.diff {
        let _ = std::io::stdout().write_all(diffs.as_bytes());
        let _ = std::io::stderr().write_all(summary.as_bytes());
    } else {
        let _ = std::io::stdout().write_all(summary.as_bytes());
    }
    if tally.errors > 0 {
        ExitCode::from(2)
    } else if tally.left > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The workload objects in the plain manifest files among `inputs`.
fn count_workloads(inputs: &[Input]) -> usize {
    let mut count = 0;
    for input in inputs {
        let Input::File(file) = input else { continue };
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        let name = file.display().to_string();
        crate::decode::manifest::for_each_document(&text, Syntax::detect(&name, &text), |_, document| {
            let Ok(document) = document else { return };
            for found in document.into_objects() {
                let api_version = found.object.api_version.as_deref().unwrap_or_default();
                let kind = found.object.kind.as_deref().unwrap_or_default();
                count += usize::from(WorkloadKind::from_api_version_kind(api_version, kind).is_some());
            }
        });
    }
    count
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn plural_word(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURES: [&str; 4] = [
        include_str!("../../tests/fixtures/fix/multi.yaml"),
        include_str!("../../tests/fixtures/fix/kinds.yaml"),
        include_str!("../../tests/fixtures/fix/sidecars.yaml"),
        include_str!("../../tests/fixtures/fix/person.yaml"),
    ];

    /// Fixes `text` as `podgate fix --tcp-probes` would; the fixed text.
    fn fixed(text: &str) -> String {
        let policy = Policy::default();
        let fixer =
            Fixer { policy: &policy, namespace: None, now: Timestamp::UNIX_EPOCH, healthchecks: &[], tcp_probes: true };
        diff::apply(text, &fixer.text("x.yaml", text).insertions)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Manifests with lines dropped, re-indented or duplicated (valid
        /// YAML or not): fix never panics, only inserts lines, and a second
        /// run changes nothing.
        #[test]
        fn only_inserts_and_settles_on_mangled_manifests(
            which in 0..FIXTURES.len(),
            edits in proptest::collection::vec((0usize..200, 0u8..4, 0usize..6), 0..6),
        ) {
            let mut lines: Vec<String> = FIXTURES[which].lines().map(str::to_owned).collect();
            for (at, what, n) in edits {
                if lines.is_empty() {
                    break;
                }
                let at = at % lines.len();
                match what {
                    0 => { lines.remove(at); }
                    1 => lines[at] = format!("{}{}", " ".repeat(n), lines[at].trim_start()),
                    2 => { let line = lines[at].clone(); lines.insert(at, line); }
                    _ => {
                        let keep = n.min(lines[at].len());
                        lines[at].truncate(keep);
                    }
                }
            }
            let text = lines.join("\n") + "\n";
            let once = fixed(&text);
            let mut rest = once.split_inclusive('\n');
            for line in text.split_inclusive('\n') {
                prop_assert!(rest.any(|l| l == line), "line {line:?} lost from:\n{text}\n---\n{once}");
            }
            prop_assert_eq!(fixed(&once), once.clone());
        }
    }

    #[test]
    fn pod_level_notes_explain_each_containers_finding() {
        let pod = "spec.template.spec.securityContext.runAsNonRoot";
        assert!(explains(pod, "spec.template.spec.containers[1].securityContext.runAsNonRoot"));
        assert!(explains(pod, "spec.template.spec.initContainers[0].securityContext.runAsNonRoot"));
        assert!(!explains(pod, "spec.template.spec.containers[1].securityContext.runAsUser"));
        assert!(!explains(pod, "items[1].spec.template.spec.containers[0].securityContext.runAsNonRoot"));
        let field = "spec.containers[0].livenessProbe";
        assert!(explains(field, field));
        assert!(!explains(field, "spec.containers[0].readinessProbe"));
    }

    #[test]
    fn expects_the_planned_values_in_new_or_empty_mappings() {
        let mut json = serde_json::json!({"spec": {"containers": [{"name": "a", "securityContext": null}]}});
        expect(
            &mut json,
            "spec.containers[0].securityContext",
            &[("allowPrivilegeEscalation".into(), Value::Bool(false))],
        );
        expect(&mut json, "spec.securityContext", &[("runAsNonRoot".into(), Value::Bool(true))]);
        assert_eq!(
            json,
            serde_json::json!({"spec": {
                "securityContext": {"runAsNonRoot": true},
                "containers": [{"name": "a", "securityContext": {"allowPrivilegeEscalation": false}}]
            }})
        );
    }
}
