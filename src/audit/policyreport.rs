//! Policy reports, the format `kubectl get policyreport`/`report` and Policy
//! Reporter read, in either of the two APIs clusters serve ([`ReportApi`]):
//! the Policy WG's `wgpolicyk8s.io/v1alpha2` PolicyReport and its successor
//! OpenReports' `openreports.io/v1alpha1` Report. Both carry the same
//! results and summary, so one model ([`PolicyReport`], built once a pass)
//! is rendered to each API the cluster serves ([`choose`]): one report per
//! namespace, split into `podgate`, `podgate-2`, ... so that no report
//! exceeds [`MAX_REPORT_BYTES`] whatever the namespace holds (etcd refuses
//! objects above 1.5 MiB). Every pass rewrites them whole: results of deleted
//! or fixed objects disappear, reports of namespaces left with nothing to
//! audit are deleted. podgate writes only reports labelled
//! `app.kubernetes.io/managed-by: podgate` and never touches another one: a
//! name taken by someone else's report is left alone and counted as an error.
//! Every audited kind is namespaced, so no cluster-scoped report
//! (ClusterPolicyReport, ClusterReport) is written.

use std::collections::{BTreeMap, HashMap};

use kube::Client;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::source::percent_encode;
use crate::checks::{Action, CheckId};
use crate::config::Policy;
use crate::report::{ObjectResult, Report, ViolationResult};

/// The label that marks a report as podgate's own.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "podgate");
/// Largest serialized report podgate writes: well under etcd's 1.5 MiB, with
/// room for the metadata the apiserver adds (managedFields, timestamps).
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// Budget for the results of one report (the rest of the object is small).
const RESULTS_BUDGET: usize = MAX_REPORT_BYTES - 16 * 1024;

/// A report API podgate writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportApi {
    /// `wgpolicyk8s.io/v1alpha2` PolicyReport (Kyverno before 1.15, Kubewarden
    /// before 2026, Policy Reporter).
    Wgpolicyk8s,
    /// `openreports.io/v1alpha1` Report (Kyverno 1.15+, Policy Reporter 3.2+).
    OpenReports,
}

impl ReportApi {
    pub const ALL: [ReportApi; 2] = [ReportApi::Wgpolicyk8s, ReportApi::OpenReports];

    pub fn group_version(self) -> &'static str {
        match self {
            ReportApi::Wgpolicyk8s => "wgpolicyk8s.io/v1alpha2",
            ReportApi::OpenReports => "openreports.io/v1alpha1",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            ReportApi::Wgpolicyk8s => "PolicyReport",
            ReportApi::OpenReports => "Report",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ReportApi::Wgpolicyk8s => "policyreports",
            ReportApi::OpenReports => "reports",
        }
    }

    /// The CRD that serves the reports, as errors name it.
    pub fn crd(self) -> String {
        format!("{}.{}", self.plural(), self.group_version().split('/').next().unwrap_or_default())
    }

    /// What errors call one report of this API.
    pub fn title(self) -> &'static str {
        match self {
            ReportApi::Wgpolicyk8s => "PolicyReport",
            ReportApi::OpenReports => "OpenReports Report",
        }
    }

    /// What logs and messages call these reports.
    pub fn label(self) -> &'static str {
        match self {
            ReportApi::Wgpolicyk8s => "PolicyReports",
            ReportApi::OpenReports => "OpenReports",
        }
    }

    /// The reports' collection in `namespace`, or in all namespaces.
    fn collection(self, namespace: Option<&str>) -> String {
        let scope = namespace.map(|ns| format!("/namespaces/{}", percent_encode(ns))).unwrap_or_default();
        format!("/apis/{}{scope}/{}", self.group_version(), self.plural())
    }

    /// The object written for `report`: the same results and summary in
    /// both APIs; an OpenReports Report also names its `source` at the top.
    /// Without a `scope`: a report covers a namespace's objects, and `scope`
    /// would name one object.
    pub fn render(self, report: &PolicyReport, resource_version: Option<&str>) -> Value {
        serde_json::to_value(self.body(report, resource_version)).unwrap_or_default()
    }

    fn body<'a>(self, report: &'a PolicyReport, resource_version: Option<&'a str>) -> Body<'a> {
        Body {
            api_version: self.group_version(),
            kind: self.kind(),
            metadata: BodyMeta {
                name: &report.name,
                namespace: &report.namespace,
                labels: BTreeMap::from([MANAGED_BY]),
                resource_version,
            },
            source: (self == ReportApi::OpenReports).then_some("podgate"),
            summary: &report.summary,
            results: &report.results,
        }
    }
}

/// A report as sent, borrowed from the model (the results are not copied).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: BodyMeta<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
    summary: &'a BTreeMap<&'static str, usize>,
    results: &'a [Value],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BodyMeta<'a> {
    name: &'a str,
    namespace: &'a str,
    labels: BTreeMap<&'static str, &'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_version: Option<&'a str>,
}

/// `--report-api`: which report APIs `--policy-reports` writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReportApiChoice {
    /// Whichever the cluster serves (discovery, every pass); both when both are.
    #[default]
    Auto,
    /// `wgpolicyk8s.io/v1alpha2` PolicyReports only.
    Wgpolicyk8s,
    /// `openreports.io/v1alpha1` Reports only.
    Openreports,
    /// Both (each must be served).
    Both,
}

impl ReportApiChoice {
    fn wanted(self) -> &'static [ReportApi] {
        match self {
            ReportApiChoice::Auto | ReportApiChoice::Both => &ReportApi::ALL,
            ReportApiChoice::Wgpolicyk8s => &[ReportApi::Wgpolicyk8s],
            ReportApiChoice::Openreports => &[ReportApi::OpenReports],
        }
    }
}

/// Where a pass writes: the APIs to write, and the wanted ones that are not
/// served (with `auto`: both, when neither is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    pub write: Vec<ReportApi>,
    pub missing: Vec<ReportApi>,
}

impl Targets {
    /// Why reports cannot all be written, naming the CRDs (None: nothing missing).
    pub fn missing_message(&self) -> Option<String> {
        let crd = |api: ReportApi| format!("the {} CRD ({})", api.title(), api.crd());
        match self.missing.as_slice() {
            [] => None,
            [one] => Some(format!("{} is not served", crd(*one))),
            [first, second] => Some(format!("neither {} nor {} is served", crd(*first), crd(*second))),
            more => Some(format!("{} CRDs are not served", more.len())),
        }
    }
}

/// The targets of `choice` in a cluster that serves `served`.
pub fn choose(choice: ReportApiChoice, served: &[ReportApi]) -> Targets {
    let wanted = choice.wanted();
    let write: Vec<ReportApi> = wanted.iter().copied().filter(|api| served.contains(api)).collect();
    let missing = match choice {
        ReportApiChoice::Auto if !write.is_empty() => Vec::new(),
        _ => wanted.iter().copied().filter(|api| !served.contains(api)).collect(),
    };
    Targets { write, missing }
}

/// [`choose`] after asking the cluster which of the wanted APIs it serves.
pub async fn targets(client: &Client, choice: ReportApiChoice) -> Result<Targets, ReportError> {
    let mut served = Vec::new();
    for &api in choice.wanted() {
        if self::served(client, api).await? {
            served.push(api);
        }
    }
    Ok(choose(choice, &served))
}

/// One namespace's report (or one part of it), whatever API it is written to.
#[derive(Debug, Clone)]
pub struct PolicyReport {
    pub namespace: String,
    pub name: String,
    /// Counts of the results by outcome (pass, fail, warn, error, skip).
    pub summary: BTreeMap<&'static str, usize>,
    pub results: Vec<Value>,
}

/// `severity` of a check's results.
fn severity(check: CheckId) -> &'static str {
    match check {
        CheckId::RunAsNonRoot | CheckId::RunAsUser | CheckId::AllowPrivilegeEscalation => "high",
        CheckId::LivenessProbe | CheckId::ReadinessProbe => "medium",
        CheckId::ProbeSettings => "low",
    }
}

/// `category` of a check's results.
fn category(check: CheckId) -> &'static str {
    match check {
        CheckId::RunAsNonRoot | CheckId::RunAsUser | CheckId::AllowPrivilegeEscalation => "Pod Security",
        _ => "Probes",
    }
}

fn resource_ref(result: &ObjectResult) -> Value {
    json!({
        "apiVersion": result.api_version,
        "kind": result.kind,
        "namespace": result.namespace,
        "name": result.name,
    })
}

fn entry(check: CheckId, outcome: &str, message: &str, resources: Value, properties: Value, now: i64) -> Value {
    json!({
        "source": "podgate",
        "policy": "podgate",
        "rule": check.as_str(),
        "result": outcome,
        "severity": severity(check),
        "category": category(check),
        "scored": true,
        "message": message,
        "properties": properties,
        "resources": resources,
        "timestamp": {"seconds": now, "nanos": 0},
    })
}

fn finding_entry(v: &ViolationResult, resources: Value, extra: &[(&str, String)], now: i64) -> Value {
    let mut properties = serde_json::Map::new();
    properties.insert("field".into(), Value::from(v.field.clone()));
    if let Some(container) = &v.container {
        properties.insert("container".into(), Value::from(container.clone()));
    }
    if let Some(pods) = v.pods {
        properties.insert("pods".into(), Value::from(pods.to_string()));
    }
    for (key, value) in extra {
        properties.insert((*key).into(), Value::from(value.clone()));
    }
    let outcome = if v.would_deny() { "fail" } else { "warn" };
    entry(v.check, outcome, &v.message, resources, Value::Object(properties), now)
}

/// The PolicyReport results of one reported object: a `fail` (would be
/// denied) or `warn` per finding, a `pass` per enabled check without one, a
/// `skip` per check an exemption covers, and the findings of the objects
/// grouped under it that differ from it.
pub fn results_of(policy: &Policy, result: &ObjectResult, now: i64) -> Vec<Value> {
    let mut out = Vec::new();
    let resources = || json!([resource_ref(result)]);
    for check in CheckId::ALL {
        let (action, _) = policy.checks.rollout(check, policy.mode);
        if action == Action::Off {
            continue;
        }
        let mut found = false;
        for v in result.violations.iter().filter(|v| v.check == check) {
            found = true;
            out.push(finding_entry(v, resources(), &[], now));
        }
        if found {
            continue;
        }
        // Which rules applied is known by their reasons (`exempt` joins them).
        let exempted = result.fully_exempt
            || result.exempt.as_deref().is_some_and(|reasons| {
                policy.exemptions.iter().any(|e| e.covers(check) && reasons.split("; ").any(|r| r == e.reason))
            });
        let (outcome, message, properties) = match &result.exempt {
            Some(reason) if exempted => ("skip", format!("exempt: {reason}"), exemption_properties(result)),
            _ => ("pass", format!("{check} passed"), json!({})),
        };
        out.push(entry(check, outcome, &message, resources(), properties, now));
    }
    for group in &result.differing {
        let resources: Vec<Value> = group
            .examples
            .iter()
            .map(|source| {
                let name = source.rsplit('/').next().unwrap_or_default();
                json!({"apiVersion": api_version_of(&group.kind), "kind": group.kind,
                       "namespace": result.namespace, "name": name})
            })
            .collect();
        let owner = format!("{}/{}", result.kind, result.name.as_deref().unwrap_or_default());
        for v in &group.added {
            let extra = [("owner", owner.clone()), ("objects", group.count.to_string())];
            out.push(finding_entry(v, Value::Array(resources.clone()), &extra, now));
        }
    }
    out
}

/// What a `skip` result says about the waivers behind it, so a report
/// reader sees which rule, ticket and expiry keep the object unjudged.
/// PolicyReport properties are strings: several rules are joined by `; `.
fn exemption_properties(result: &ObjectResult) -> Value {
    let mut properties = serde_json::Map::new();
    let join = |values: Vec<&str>| values.join("; ");
    let rules: Vec<&str> = result.exemptions.iter().map(|e| e.rule.as_str()).collect();
    let tickets: Vec<&str> = result.exemptions.iter().filter_map(|e| e.ticket.as_deref()).collect();
    let expires: Vec<&str> = result.exemptions.iter().filter_map(|e| e.expires.as_deref()).collect();
    for (key, values) in [("exemptionRule", rules), ("ticket", tickets), ("expires", expires)] {
        if !values.is_empty() {
            properties.insert(key.into(), Value::from(join(values)));
        }
    }
    Value::Object(properties)
}

fn api_version_of(kind: &str) -> &'static str {
    super::source::RESOURCES.iter().find(|r| r.kind.as_str() == kind).map_or("v1", |r| r.api_version())
}

/// Every report of a pass: per namespace, split under the size limit.
pub fn build(policy: &Policy, report: &Report, now: i64) -> Vec<PolicyReport> {
    let mut by_namespace: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for result in &report.results {
        let Some(namespace) = result.namespace.as_deref() else { continue };
        by_namespace.entry(namespace).or_default().extend(results_of(policy, result, now));
    }
    let mut reports = Vec::new();
    for (namespace, results) in by_namespace {
        let mut chunk: Vec<Value> = Vec::new();
        let mut size = 0;
        let mut part = 1;
        for result in results {
            let bytes = serde_json::to_vec(&result).map_or(0, |b| b.len()) + 1;
            if !chunk.is_empty() && size + bytes > RESULTS_BUDGET {
                reports.push(assemble(namespace, part, std::mem::take(&mut chunk)));
                part += 1;
                size = 0;
            }
            size += bytes;
            chunk.push(result);
        }
        reports.push(assemble(namespace, part, chunk));
    }
    reports
}

fn assemble(namespace: &str, part: usize, results: Vec<Value>) -> PolicyReport {
    let name = if part == 1 { "podgate".to_owned() } else { format!("podgate-{part}") };
    let mut summary = BTreeMap::from([("pass", 0), ("fail", 0), ("warn", 0), ("error", 0), ("skip", 0)]);
    for result in &results {
        if let Some(count) = result["result"].as_str().and_then(|r| summary.get_mut(r)) {
            *count += 1;
        }
    }
    PolicyReport { namespace: namespace.to_owned(), name, summary, results }
}

/// Why reports could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A request failed; the text names the API and the step.
    #[error("{0}")]
    Api(String),
    /// A report of that name exists and is not podgate's: left alone.
    #[error("{0} exists and is not labelled as podgate's: left alone")]
    Conflict(String),
}

#[derive(Debug, Deserialize)]
struct ResourceList {
    #[serde(default, deserialize_with = "crate::decode::model::nullable_vec")]
    resources: Vec<ResourceName>,
}

#[derive(Debug, Deserialize)]
struct ResourceName {
    name: String,
}

/// Whether the cluster serves `api`'s reports (discovery of its group version).
pub async fn served(client: &Client, api: ReportApi) -> Result<bool, ReportError> {
    let group_version = api.group_version();
    let discovery = |e: &dyn std::fmt::Display| ReportError::Api(format!("discovery of {group_version}: {e}"));
    let request = http::Request::get(format!("/apis/{group_version}")).body(Vec::new()).map_err(|e| discovery(&e))?;
    match client.request::<ResourceList>(request).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == api.plural())),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(discovery(&e)),
    }
}

/// Writes `reports` to every API of `targets` in turn (a failure in one does
/// not keep the other from being written); one answer per API.
pub async fn write_all(
    client: &Client,
    targets: &[ReportApi],
    namespace: Option<&str>,
    reports: &[PolicyReport],
) -> Vec<(ReportApi, Result<Written, ReportError>)> {
    let mut answers = Vec::with_capacity(targets.len());
    for &api in targets {
        answers.push((api, write(client, api, namespace, reports).await));
    }
    answers
}

#[derive(Debug, Deserialize)]
struct MetaList {
    #[serde(default, deserialize_with = "crate::decode::model::nullable_vec")]
    items: Vec<MetaItem>,
}

#[derive(Debug, Deserialize)]
struct MetaItem {
    metadata: Meta,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    resource_version: String,
}

/// What a write did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    /// Total size of the reports written, serialized (bytes).
    pub bytes: usize,
}

/// Writes `reports` as `api`'s objects, deletes podgate's reports that are
/// no longer wanted (in `namespace`, or in all namespaces), and never touches
/// reports without podgate's label. A name taken by another report is
/// skipped; the first such conflict is returned after everything else was
/// written.
pub async fn write(
    client: &Client,
    api: ReportApi,
    namespace: Option<&str>,
    reports: &[PolicyReport],
) -> Result<Written, ReportError> {
    let label = api.label();
    let failed = |step: &str, e: &dyn std::fmt::Display| ReportError::Api(format!("{label}: {step}: {e}"));
    let selector = percent_encode(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    // Metadata only: the reports themselves can be large.
    let list = http::Request::get(format!("{}?labelSelector={selector}", api.collection(namespace)))
        .header("Accept", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json")
        .body(Vec::new())
        .map_err(|e| failed("list", &e))?;
    let ours: MetaList = client.request(list).await.map_err(|e| failed("list", &e))?;
    let mut existing: HashMap<(String, String), String> = ours
        .items
        .into_iter()
        .map(|item| ((item.metadata.namespace, item.metadata.name), item.metadata.resource_version))
        .collect();

    let mut written = Written::default();
    let mut conflict = None;
    for report in reports {
        let key = (report.namespace.clone(), report.name.clone());
        let collection = api.collection(Some(&report.namespace));
        let resource_version = existing.remove(&key);
        let request = match &resource_version {
            Some(_) => {
                written.updated += 1;
                http::Request::put(format!("{collection}/{}", percent_encode(&report.name)))
            }
            None => {
                written.created += 1;
                http::Request::post(collection)
            }
        };
        let where_ = format!("write {}/{}", report.namespace, report.name);
        let bytes =
            serde_json::to_vec(&api.body(report, resource_version.as_deref())).map_err(|e| failed(&where_, &e))?;
        written.bytes += bytes.len();
        let request =
            request.header("Content-Type", "application/json").body(bytes).map_err(|e| failed(&where_, &e))?;
        match client.request_text(request).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 && status.reason == "AlreadyExists" => {
                written.created -= 1;
                conflict.get_or_insert(format!("{} {}/{}", api.title(), report.namespace, report.name));
            }
            Err(e) => return Err(failed(&where_, &e)),
        }
    }
    for ((ns, name), _) in existing {
        let path = format!("{}/{}", api.collection(Some(&ns)), percent_encode(&name));
        let where_ = format!("delete {ns}/{name}");
        let request = http::Request::delete(path).body(Vec::new()).map_err(|e| failed(&where_, &e))?;
        match client.request_text(request).await {
            Ok(_) => written.deleted += 1,
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(failed(&where_, &e)),
        }
    }
    match conflict {
        Some(name) => Err(ReportError::Conflict(name)),
        None => Ok(written),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ObjectResult;

    fn result(namespace: &str, name: &str, exempt: Option<&str>) -> ObjectResult {
        ObjectResult {
            source: format!("api/v1/namespaces/{namespace}/pods/{name}"),
            api_version: "v1".to_owned(),
            kind: "Pod".to_owned(),
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
            allowed: true,
            exempt: exempt.map(str::to_owned),
            exemptions: Vec::new(),
            notices: Vec::new(),
            violations: Vec::new(),
            pods: None,
            differing: Vec::new(),
            fully_exempt: exempt.is_some(),
            file: String::new(),
            line: None,
            rendered_by: Vec::new(),
            differs_from: None,
        }
    }

    #[test]
    fn skips_name_the_waiver_rule_ticket_and_expiry() {
        let policy = Policy::default();
        let mut waived = result("shop", "legacy", Some("legacy until Q3"));
        waived.exemptions.push(crate::report::ExemptionResult {
            rule: "legacy-billing".to_owned(),
            effect: "exempt",
            reason: "legacy until Q3".to_owned(),
            ticket: Some("SEC-123".to_owned()),
            owner: None,
            expires: Some("2027-03-31".to_owned()),
        });
        let results = results_of(&policy, &waived, 0);
        assert_eq!(results.len(), 6);
        assert_eq!(results[0]["result"], "skip");
        assert_eq!(
            results[0]["properties"],
            json!({"exemptionRule": "legacy-billing", "ticket": "SEC-123", "expires": "2027-03-31"})
        );
        assert_eq!(results_of(&policy, &result("shop", "other", Some("x")), 0)[0]["properties"], json!({}));
    }

    #[test]
    fn one_report_per_namespace_with_summary_and_skips_for_exempt_objects() {
        let policy = Policy::default();
        let report = Report {
            results: vec![result("a", "p", None), result("kube-system", "q", Some("system"))],
            ..Report::default()
        };
        let reports = build(&policy, &report, 7);
        assert_eq!(reports.len(), 2);
        assert_eq!((reports[0].namespace.as_str(), reports[0].name.as_str()), ("a", "podgate"));
        for api in ReportApi::ALL {
            let [a, system] = [&reports[0], &reports[1]].map(|r| api.render(r, None));
            assert_eq!(a["summary"], json!({"pass": 6, "fail": 0, "warn": 0, "error": 0, "skip": 0}));
            assert_eq!(system["summary"], json!({"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 6}));
            assert_eq!(system["results"][0]["message"], "exempt: system");
            assert_eq!(a["metadata"]["labels"]["app.kubernetes.io/managed-by"], "podgate");
            assert_eq!(a["metadata"]["namespace"], "a");
        }
    }

    /// The same results and summary in both APIs; OpenReports adds `source`.
    #[test]
    fn renders_the_same_model_to_both_apis() {
        let policy = Policy::default();
        let reports = build(&policy, &Report { results: vec![result("a", "p", None)], ..Report::default() }, 7);
        let policy_report = ReportApi::Wgpolicyk8s.render(&reports[0], Some("42"));
        let open_report = ReportApi::OpenReports.render(&reports[0], None);
        assert_eq!(policy_report["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(policy_report["kind"], "PolicyReport");
        assert_eq!(policy_report["metadata"]["resourceVersion"], "42");
        assert!(policy_report.get("source").is_none());
        assert_eq!(open_report["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(open_report["kind"], "Report");
        assert_eq!(open_report["source"], "podgate");
        assert!(open_report["metadata"].get("resourceVersion").is_none());
        assert!(open_report.get("scope").is_none());
        for key in ["summary", "results"] {
            assert_eq!(policy_report[key], open_report[key], "{key}");
        }
        assert_eq!(ReportApi::Wgpolicyk8s.crd(), "policyreports.wgpolicyk8s.io");
        assert_eq!(ReportApi::OpenReports.crd(), "reports.openreports.io");
    }

    #[test]
    fn chooses_what_is_served_and_names_what_is_missing() {
        use ReportApi::{OpenReports as Open, Wgpolicyk8s as Wg};
        use ReportApiChoice::*;
        let neither = "neither the PolicyReport CRD (policyreports.wgpolicyk8s.io) nor the OpenReports \
                       Report CRD (reports.openreports.io) is served";
        let no_open = "the OpenReports Report CRD (reports.openreports.io) is not served";
        let no_wg = "the PolicyReport CRD (policyreports.wgpolicyk8s.io) is not served";
        // choice, served, written, the error.
        type Case<'a> = (ReportApiChoice, &'a [ReportApi], &'a [ReportApi], Option<&'a str>);
        let cases: [Case; 12] = [
            (Auto, &[Wg, Open], &[Wg, Open], None),
            (Auto, &[Open], &[Open], None),
            (Auto, &[Wg], &[Wg], None),
            (Auto, &[], &[], Some(neither)),
            (Both, &[Wg, Open], &[Wg, Open], None),
            (Both, &[Wg], &[Wg], Some(no_open)),
            (Both, &[], &[], Some(neither)),
            (Openreports, &[Wg, Open], &[Open], None),
            (Openreports, &[Wg], &[], Some(no_open)),
            (Wgpolicyk8s, &[Wg, Open], &[Wg], None),
            (Wgpolicyk8s, &[Open], &[], Some(no_wg)),
            (Wgpolicyk8s, &[], &[], Some(no_wg)),
        ];
        for (choice, served, write, missing) in cases {
            let targets = choose(choice, served);
            assert_eq!(targets.write, write, "{choice:?} {served:?}");
            assert_eq!(targets.missing_message().as_deref(), missing, "{choice:?} {served:?}");
        }
    }

    #[test]
    fn a_large_namespace_is_split_under_the_limit() {
        let policy = Policy::default();
        let results = (0..3000).map(|i| result("big", &format!("pod-{i:05}-{}", "x".repeat(60)), None)).collect();
        let reports = build(&policy, &Report { results, ..Report::default() }, 7);
        assert!(reports.len() >= 2, "{} reports", reports.len());
        let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names[..2], ["podgate", "podgate-2"]);
        let mut total = 0;
        for report in &reports {
            for api in ReportApi::ALL {
                // With the largest resourceVersion etcd hands out.
                let body = api.render(report, Some("18446744073709551615"));
                assert!(serde_json::to_vec(&body).unwrap().len() < MAX_REPORT_BYTES);
            }
            total += report.results.len();
        }
        assert_eq!(total, 3000 * 6);
    }
}
