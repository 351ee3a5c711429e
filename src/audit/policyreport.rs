//! PolicyReports (`wgpolicyk8s.io/v1alpha2`), the format `kubectl get
//! policyreport` and Policy Reporter read: one report per namespace, split
//! into `podgate`, `podgate-2`, ... so that no report exceeds
//! [`MAX_REPORT_BYTES`] whatever the namespace holds (etcd refuses objects
//! above 1.5 MiB). Every pass rewrites them whole: results of deleted or
//! fixed objects disappear, reports of namespaces left with nothing to audit
//! are deleted. podgate writes only reports labelled
//! `app.kubernetes.io/managed-by: podgate` and never touches another one: a
//! name taken by someone else's report is left alone and counted as an error.

use std::collections::{BTreeMap, HashMap};

use kube::Client;
use serde::Deserialize;
use serde_json::{json, Value};

use super::source::percent_encode;
use crate::checks::{Action, CheckId};
use crate::config::Policy;
use crate::report::{ObjectResult, Report, ViolationResult};

/// The collection the reports live in.
pub const API: &str = "apis/wgpolicyk8s.io/v1alpha2";
/// The label that marks a report as podgate's own.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "podgate");
/// Largest serialized report podgate writes: well under etcd's 1.5 MiB, with
/// room for the metadata the apiserver adds (managedFields, timestamps).
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// Budget for the results of one report (the rest of the object is small).
const RESULTS_BUDGET: usize = MAX_REPORT_BYTES - 16 * 1024;

/// A report to write: namespace, name and the whole object.
#[derive(Debug, Clone)]
pub struct PolicyReport {
    pub namespace: String,
    pub name: String,
    pub body: Value,
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
    let body = json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY.0: MANAGED_BY.1},
        },
        "summary": summary,
        "results": results,
    });
    PolicyReport { namespace: namespace.to_owned(), name, body }
}

/// Why reports could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("PolicyReports: {0}")]
    Api(String),
    /// A report of that name exists and is not podgate's: left alone.
    #[error("PolicyReport {0} exists and is not labelled as podgate's: left alone")]
    Conflict(String),
}

/// Whether the PolicyReport CRD is installed (discovery of its group version).
pub async fn installed(client: &Client) -> Result<bool, ReportError> {
    let request =
        http::Request::get(format!("/{API}")).body(Vec::new()).map_err(|e| ReportError::Api(e.to_string()))?;
    match client.request_text(request).await {
        Ok(text) => Ok(text.contains("\"policyreports\"")),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(ReportError::Api(format!("discovery of {API}: {e}"))),
    }
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

/// Writes `reports`, deletes podgate's reports that are no longer wanted (in
/// `namespace`, or in all namespaces), and never touches reports without
/// podgate's label. A name taken by another report is skipped; the first
/// such conflict is returned after everything else was written.
pub async fn write(client: &Client, namespace: Option<&str>, reports: &[PolicyReport]) -> Result<Written, ReportError> {
    let scope = namespace.map(|ns| format!("/namespaces/{}", percent_encode(ns))).unwrap_or_default();
    let selector = percent_encode(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    // Metadata only: the reports themselves can be large.
    let list = http::Request::get(format!("/{API}{scope}/policyreports?labelSelector={selector}"))
        .header("Accept", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json")
        .body(Vec::new())
        .map_err(|e| ReportError::Api(e.to_string()))?;
    let ours: MetaList = client.request(list).await.map_err(|e| ReportError::Api(format!("list: {e}")))?;
    let mut existing: HashMap<(String, String), String> = ours
        .items
        .into_iter()
        .map(|item| ((item.metadata.namespace, item.metadata.name), item.metadata.resource_version))
        .collect();

    let mut written = Written::default();
    let mut conflict = None;
    for report in reports {
        let mut body = report.body.clone();
        let key = (report.namespace.clone(), report.name.clone());
        let collection = format!("/{API}/namespaces/{}/policyreports", percent_encode(&report.namespace));
        let request = match existing.remove(&key) {
            Some(resource_version) => {
                body["metadata"]["resourceVersion"] = Value::from(resource_version);
                written.updated += 1;
                http::Request::put(format!("{collection}/{}", percent_encode(&report.name)))
            }
            None => {
                written.created += 1;
                http::Request::post(collection)
            }
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| ReportError::Api(e.to_string()))?;
        written.bytes += bytes.len();
        let request = request
            .header("Content-Type", "application/json")
            .body(bytes)
            .map_err(|e| ReportError::Api(e.to_string()))?;
        match client.request_text(request).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 && status.reason == "AlreadyExists" => {
                written.created -= 1;
                conflict.get_or_insert(format!("{}/{}", report.namespace, report.name));
            }
            Err(e) => return Err(ReportError::Api(format!("write {}/{}: {e}", report.namespace, report.name))),
        }
    }
    for ((ns, name), _) in existing {
        let path = format!("/{API}/namespaces/{}/policyreports/{}", percent_encode(&ns), percent_encode(&name));
        let request = http::Request::delete(path).body(Vec::new()).map_err(|e| ReportError::Api(e.to_string()))?;
        match client.request_text(request).await {
            Ok(_) => written.deleted += 1,
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(ReportError::Api(format!("delete {ns}/{name}: {e}"))),
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
        assert_eq!(reports[0].body["summary"], json!({"pass": 6, "fail": 0, "warn": 0, "error": 0, "skip": 0}));
        assert_eq!(reports[1].body["summary"], json!({"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 6}));
        assert_eq!(reports[1].body["results"][0]["message"], "exempt: system");
        assert_eq!(reports[0].body["metadata"]["labels"]["app.kubernetes.io/managed-by"], "podgate");
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
            assert!(serde_json::to_vec(&report.body).unwrap().len() < MAX_REPORT_BYTES);
            total += report.body["results"].as_array().unwrap().len();
        }
        assert_eq!(total, 3000 * 6);
    }
}
