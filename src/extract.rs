//! Step 2 of the data flow: find the pod spec inside a submitted object and
//! the field path it sits at, so findings name the real path in that object.

use crate::decode::model::{Object, PodSpec};

/// The kinds podgate evaluates: Pods and every built-in kind with a pod template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Pod,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    ReplicationController,
}

impl WorkloadKind {
    /// Every supported kind, in a stable order (used for metric labels).
    pub const ALL: [WorkloadKind; 8] = [
        WorkloadKind::Pod,
        WorkloadKind::Deployment,
        WorkloadKind::ReplicaSet,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::Job,
        WorkloadKind::CronJob,
        WorkloadKind::ReplicationController,
    ];

    /// Recognises a kind by API group and kind name. A custom resource that
    /// reuses a built-in kind name in another group is not a workload.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Self> {
        Some(match (group, kind) {
            ("", "Pod") => WorkloadKind::Pod,
            ("", "ReplicationController") => WorkloadKind::ReplicationController,
            ("apps", "Deployment") => WorkloadKind::Deployment,
            ("apps", "ReplicaSet") => WorkloadKind::ReplicaSet,
            ("apps", "StatefulSet") => WorkloadKind::StatefulSet,
            ("apps", "DaemonSet") => WorkloadKind::DaemonSet,
            ("batch", "Job") => WorkloadKind::Job,
            ("batch", "CronJob") => WorkloadKind::CronJob,
            _ => return None,
        })
    }

    /// Recognises a kind from a manifest's `apiVersion` (`apps/v1`, `v1`) and `kind`.
    pub fn from_api_version_kind(api_version: &str, kind: &str) -> Option<Self> {
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        Self::from_group_kind(group, kind)
    }

    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "Pod",
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
            WorkloadKind::ReplicationController => "ReplicationController",
        }
    }

    /// Where this kind keeps its pod spec.
    pub fn pod_spec_path(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "spec",
            WorkloadKind::CronJob => "spec.jobTemplate.spec.template.spec",
            _ => "spec.template.spec",
        }
    }
}

/// A pod spec found in an object, with the path it was found at.
#[derive(Debug, Clone, Copy)]
pub struct PodTarget<'o, 'a> {
    pub kind: WorkloadKind,
    pub spec: &'o PodSpec<'a>,
    /// e.g. `spec.template.spec`; findings append `.containers[0]...`.
    pub path: &'static str,
}

static EMPTY_POD_SPEC: PodSpec<'static> = PodSpec {
    containers: Vec::new(),
    init_containers: Vec::new(),
    ephemeral_containers: Vec::new(),
    security_context: None,
    restart_policy: None,
    os: None,
    host_users: None,
};

/// Finds the pod spec of `object`, whose kind the caller already recognised.
/// A missing spec or template is an empty pod spec: nothing in it can violate.
pub fn pod_target<'o, 'a>(kind: WorkloadKind, object: &'o Object<'a>) -> PodTarget<'o, 'a> {
    let spec = object.spec.as_ref().and_then(|spec| match kind {
        WorkloadKind::Pod => Some(&spec.pod),
        WorkloadKind::CronJob => spec
            .job_template
            .as_ref()
            .and_then(|job| job.spec.as_ref())
            .and_then(|job| job.template.as_ref())
            .and_then(|template| template.spec.as_ref()),
        _ => spec.template.as_ref().and_then(|template| template.spec.as_ref()),
    });
    PodTarget { kind, spec: spec.unwrap_or(&EMPTY_POD_SPEC), path: kind.pod_spec_path() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_built_in_kinds_by_group() {
        assert_eq!(WorkloadKind::from_api_version_kind("apps/v1", "Deployment"), Some(WorkloadKind::Deployment));
        assert_eq!(WorkloadKind::from_api_version_kind("v1", "Pod"), Some(WorkloadKind::Pod));
        assert_eq!(WorkloadKind::from_api_version_kind("batch/v1", "CronJob"), Some(WorkloadKind::CronJob));
        assert_eq!(WorkloadKind::from_api_version_kind("example.com/v1", "Deployment"), None);
        assert_eq!(WorkloadKind::from_api_version_kind("v1", "Service"), None);
    }

    #[test]
    fn finds_the_pod_spec_of_each_kind() {
        let cronjob: Object = serde_json::from_str(
            r#"{"spec":{"schedule":"* * * * *","jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"c"}]}}}}}}"#,
        )
        .unwrap();
        let target = pod_target(WorkloadKind::CronJob, &cronjob);
        assert_eq!(target.spec.containers[0].name.0, "c");
        assert_eq!(target.path, "spec.jobTemplate.spec.template.spec");

        let deployment: Object =
            serde_json::from_str(r#"{"spec":{"replicas":3,"template":{"spec":{"containers":[{"name":"d"}]}}}}"#)
                .unwrap();
        assert_eq!(pod_target(WorkloadKind::Deployment, &deployment).spec.containers[0].name.0, "d");

        let pod: Object = serde_json::from_str(r#"{"spec":{"containers":[{"name":"p"}]}}"#).unwrap();
        assert_eq!(pod_target(WorkloadKind::Pod, &pod).spec.containers[0].name.0, "p");

        let empty: Object = serde_json::from_str(r#"{"kind":"Deployment"}"#).unwrap();
        assert!(pod_target(WorkloadKind::Deployment, &empty).spec.containers.is_empty());
    }
}
