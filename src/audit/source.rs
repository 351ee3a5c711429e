//! Where `podgate audit` gets its objects: the apiserver's list endpoints,
//! read page by page (`limit` / `continue`) as raw text and decoded with the
//! webhook's lean model, so memory holds one page at a time whatever the
//! cluster's size.

use std::fmt::Write as _;

use kube::Client;

use crate::decode::list::{decode_page, ListPage};
use crate::extract::WorkloadKind;

/// A listable resource: the kind and where its collection lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    pub kind: WorkloadKind,
    /// `api/v1` or `apis/GROUP/VERSION`.
    pub prefix: &'static str,
    /// The API group (`""` for the core group), for messages and RBAC.
    pub group: &'static str,
    /// The resource name in URLs and RBAC rules, e.g. `deployments`.
    pub plural: &'static str,
}

/// Every resource audited, owners before what they own: CronJobs before
/// Jobs, Deployments before ReplicaSets, all workloads before Pods, so that
/// an object's controller is known when the object is read.
pub const RESOURCES: [Resource; 8] = [
    Resource { kind: WorkloadKind::CronJob, prefix: "apis/batch/v1", group: "batch", plural: "cronjobs" },
    Resource { kind: WorkloadKind::Deployment, prefix: "apis/apps/v1", group: "apps", plural: "deployments" },
    Resource { kind: WorkloadKind::StatefulSet, prefix: "apis/apps/v1", group: "apps", plural: "statefulsets" },
    Resource { kind: WorkloadKind::DaemonSet, prefix: "apis/apps/v1", group: "apps", plural: "daemonsets" },
    Resource {
        kind: WorkloadKind::ReplicationController,
        prefix: "api/v1",
        group: "",
        plural: "replicationcontrollers",
    },
    Resource { kind: WorkloadKind::Job, prefix: "apis/batch/v1", group: "batch", plural: "jobs" },
    Resource { kind: WorkloadKind::ReplicaSet, prefix: "apis/apps/v1", group: "apps", plural: "replicasets" },
    Resource { kind: WorkloadKind::Pod, prefix: "api/v1", group: "", plural: "pods" },
];

impl Resource {
    /// The `apiVersion` of the kind, e.g. `apps/v1`.
    pub fn api_version(&self) -> &'static str {
        self.prefix.strip_prefix("apis/").or_else(|| self.prefix.strip_prefix("api/")).unwrap_or(self.prefix)
    }

    /// `deployments.apps`, `pods`: how RBAC messages name the resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The API path of one object: `apis/apps/v1/namespaces/shop/deployments/web`.
    pub fn object_path(&self, namespace: &str, name: &str) -> String {
        format!("{}/namespaces/{namespace}/{}/{name}", self.prefix, self.plural)
    }

    /// The URL of one page of the collection, in `namespace` or in all.
    fn page_url(&self, namespace: Option<&str>, limit: u32, continue_token: Option<&str>) -> String {
        let mut url = format!("/{}", self.prefix);
        if let Some(namespace) = namespace {
            let _ = write!(url, "/namespaces/{}", percent_encode(namespace));
        }
        let _ = write!(url, "/{}?limit={limit}", self.plural);
        if let Some(token) = continue_token {
            let _ = write!(url, "&continue={}", percent_encode(token));
        }
        url
    }
}

/// Why a listing failed; the message names the resource and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// RBAC refused: the message names the verb and the resource.
    #[error("permission denied: cannot list {resource} {scope} (grant the verbs get, list and watch on {resource}): {message}")]
    Forbidden { resource: String, scope: String, message: String },
    /// The `continue` token expired while paging (410 Gone): the listing
    /// took longer than the apiserver keeps a snapshot.
    #[error("listing {resource} took too long: the apiserver expired the page token ({message}); retry, or use a larger --page-size")]
    Expired { resource: String, message: String },
    /// Any other answer of the apiserver that is not a list.
    #[error("listing {resource} failed: {code} {reason}: {message}")]
    Api { resource: String, code: u16, reason: String, message: String },
    /// The apiserver could not be reached or the connection failed.
    #[error("listing {resource} failed: {message}")]
    Transport { resource: String, message: String },
    /// The answer was not a list of objects.
    #[error("listing {resource}: the apiserver's answer is not a valid list: {message}")]
    Decode { resource: String, message: String },
}

impl SourceError {
    /// The `reason` label of `podgate_audit_errors_total`.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            SourceError::Forbidden { .. } => "forbidden",
            SourceError::Expired { .. } => "expired",
            SourceError::Api { .. } => "api",
            SourceError::Transport { .. } => "transport",
            SourceError::Decode { .. } => "decode",
        }
    }
}

/// Lists `resource` in `namespace` (all namespaces when `None`), `page_size`
/// objects a request, and hands each decoded page to `visit`. The page's text
/// is dropped before the next one is fetched.
pub async fn for_each_page(
    client: &Client,
    resource: &Resource,
    namespace: Option<&str>,
    page_size: u32,
    mut visit: impl FnMut(&ListPage<'_>),
) -> Result<(), SourceError> {
    let mut continue_token: Option<String> = None;
    loop {
        let url = resource.page_url(namespace, page_size, continue_token.as_deref());
        let request = http::Request::get(url)
            .body(Vec::new())
            .map_err(|e| SourceError::Transport { resource: resource.qualified(), message: e.to_string() })?;
        let text = client.request_text(request).await.map_err(|e| classify(resource, namespace, e))?;
        let page = decode_page(&text)
            .map_err(|e| SourceError::Decode { resource: resource.qualified(), message: e.to_string() })?;
        visit(&page);
        continue_token = page.next().map(str::to_owned);
        if continue_token.is_none() {
            return Ok(());
        }
    }
}

fn classify(resource: &Resource, namespace: Option<&str>, error: kube::Error) -> SourceError {
    let qualified = resource.qualified();
    match error {
        kube::Error::Api(status) if status.code == 403 => SourceError::Forbidden {
            resource: qualified,
            scope: match namespace {
                Some(ns) => format!("in namespace {ns}"),
                None => "in all namespaces".to_owned(),
            },
            message: status.message.clone(),
        },
        kube::Error::Api(status) if status.code == 410 => {
            SourceError::Expired { resource: qualified, message: status.message.clone() }
        }
        kube::Error::Api(status) => SourceError::Api {
            resource: qualified,
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        other => SourceError::Transport { resource: qualified, message: other.to_string() },
    }
}

/// Percent-encodes everything but unreserved characters (a `continue`
/// token is base64, whose `+`, `/` and `=` must not reach the query raw).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        let deployments = RESOURCES[1];
        assert_eq!(deployments.page_url(None, 500, None), "/apis/apps/v1/deployments?limit=500");
        assert_eq!(
            deployments.page_url(Some("shop"), 2, Some("eyJ2Ijo+/=")),
            "/apis/apps/v1/namespaces/shop/deployments?limit=2&continue=eyJ2Ijo%2B%2F%3D"
        );
        assert_eq!(deployments.object_path("shop", "web"), "apis/apps/v1/namespaces/shop/deployments/web");
        assert_eq!(deployments.api_version(), "apps/v1");
        assert_eq!(RESOURCES[7].api_version(), "v1");
        assert_eq!(RESOURCES[7].qualified(), "pods");
        assert_eq!(RESOURCES[0].qualified(), "cronjobs.batch");
    }

    #[test]
    fn owners_are_listed_before_what_they_own() {
        let position = |kind| RESOURCES.iter().position(|r| r.kind == kind).unwrap();
        assert!(position(WorkloadKind::CronJob) < position(WorkloadKind::Job));
        assert!(position(WorkloadKind::Deployment) < position(WorkloadKind::ReplicaSet));
        assert_eq!(position(WorkloadKind::Pod), RESOURCES.len() - 1);
    }
}
