//! Owners, not replicas: folds every Pod, ReplicaSet and Job that a listed
//! workload controls into that workload's result, so a Deployment with 50
//! replicas is one result that says how many of its Pods share each finding.
//! What differs from the workload's own findings (a sidecar injected by a
//! mutating webhook, an old ReplicaSet's template) is reported under it,
//! grouped by the difference so memory stays bounded.
//!
//! Relies on [`super::source::RESOURCES`] listing owners before what they
//! own: when an object is read, its controller is already known.

use std::collections::HashMap;

use crate::extract::WorkloadKind;
use crate::report::{Differing, ObjectResult, ViolationResult};

/// How many API paths a [`Differing`] group lists.
const EXAMPLES: usize = 3;

/// The reported results, built one object at a time.
#[derive(Debug, Default)]
pub struct Grouper {
    results: Vec<ObjectResult>,
    /// uid of every workload read -> index of the result it is reported under
    /// (itself, or its top-level owner).
    owner_of: HashMap<String, usize>,
}

/// What identifies a finding across an owner and what it controls: field
/// paths differ (`spec.template.spec...` vs `spec...`), messages do not.
fn same_finding(a: &ViolationResult, b: &ViolationResult) -> bool {
    a.check == b.check && a.effect == b.effect && a.message == b.message
}

impl Grouper {
    /// Adds the result of one object. `uid` is its uid, `controller` the uid
    /// of its controlling owner, if any.
    pub fn add(&mut self, kind: WorkloadKind, uid: Option<&str>, controller: Option<&str>, result: ObjectResult) {
        let owner = controller.and_then(|owner| self.owner_of.get(owner).copied());
        let Some(index) = owner else {
            // Top level: no controller, or one podgate does not list (a custom resource's).
            let index = self.results.len();
            if kind != WorkloadKind::Pod {
                if let Some(uid) = uid {
                    self.owner_of.insert(uid.to_owned(), index);
                }
            }
            let mut result = result;
            if kind != WorkloadKind::Pod {
                result.pods = Some(0);
                for violation in &mut result.violations {
                    violation.pods = Some(0);
                }
            }
            self.results.push(result);
            return;
        };
        if kind != WorkloadKind::Pod {
            if let Some(uid) = uid {
                self.owner_of.insert(uid.to_owned(), index);
            }
        }
        let owner = &mut self.results[index];
        if kind == WorkloadKind::Pod {
            *owner.pods.get_or_insert(0) += 1;
            for violation in &mut owner.violations {
                if result.violations.iter().any(|v| same_finding(v, violation)) {
                    *violation.pods.get_or_insert(0) += 1;
                }
            }
        }
        let added: Vec<ViolationResult> = result
            .violations
            .iter()
            .filter(|v| !owner.violations.iter().any(|o| same_finding(o, v)))
            .cloned()
            .collect();
        let missing: Vec<ViolationResult> = owner
            .violations
            .iter()
            .filter(|o| !result.violations.iter().any(|v| same_finding(o, v)))
            .map(|o| ViolationResult { pods: None, ..o.clone() })
            .collect();
        if added.is_empty() && missing.is_empty() {
            return;
        }
        let same_group = |group: &Differing| {
            group.kind == result.kind
                && group.added.len() == added.len()
                && group.missing.len() == missing.len()
                && group.added.iter().zip(&added).all(|(a, b)| same_finding(a, b))
                && group.missing.iter().zip(&missing).all(|(a, b)| same_finding(a, b))
        };
        match owner.differing.iter_mut().find(|group| same_group(group)) {
            Some(group) => {
                group.count += 1;
                if group.examples.len() < EXAMPLES {
                    group.examples.push(result.source);
                }
            }
            None => owner.differing.push(Differing {
                kind: result.kind,
                count: 1,
                examples: vec![result.source],
                allowed: result.allowed,
                added,
                missing,
            }),
        }
    }

    /// The results, in a stable order whatever the paging: by namespace,
    /// kind and name.
    pub fn finish(self) -> Vec<ObjectResult> {
        let mut results = self.results;
        results.sort_by(|a, b| {
            (a.namespace.as_deref(), kind_rank(&a.kind), a.name.as_deref()).cmp(&(
                b.namespace.as_deref(),
                kind_rank(&b.kind),
                b.name.as_deref(),
            ))
        });
        results
    }
}

fn kind_rank(kind: &str) -> usize {
    WorkloadKind::ALL.iter().position(|k| k.as_str() == kind).unwrap_or(usize::MAX)
}

/// Whether enforcing would deny `result` or some object grouped under it.
pub fn would_deny(result: &ObjectResult) -> bool {
    result.violations.iter().any(ViolationResult::would_deny)
        || result.differing.iter().any(|d| d.added.iter().any(ViolationResult::would_deny))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Effect;

    fn violation(check: crate::checks::CheckId, message: &str) -> ViolationResult {
        ViolationResult {
            check,
            action: "deny",
            field: "spec.containers[0]".to_owned(),
            container: Some("app".to_owned()),
            message: message.to_owned(),
            pods: None,
            effect: Effect::Deny,
            line: None,
            file: None,
        }
    }

    fn result(kind: &str, name: &str, violations: Vec<ViolationResult>) -> ObjectResult {
        ObjectResult {
            source: format!("x/{kind}/{name}"),
            api_version: "v1".to_owned(),
            kind: kind.to_owned(),
            namespace: Some("shop".to_owned()),
            name: Some(name.to_owned()),
            allowed: violations.is_empty(),
            exempt: None,
            exemptions: Vec::new(),
            notices: Vec::new(),
            violations,
            pods: None,
            differing: Vec::new(),
            fully_exempt: false,
            file: String::new(),
            line: None,
            rendered_by: Vec::new(),
            differs_from: None,
        }
    }

    #[test]
    fn pods_fold_into_their_top_level_owner_and_differences_are_grouped() {
        use crate::checks::CheckId::{LivenessProbe, RunAsNonRoot};
        let root = || violation(RunAsNonRoot, "root");
        let mut grouper = Grouper::default();
        grouper.add(WorkloadKind::Deployment, Some("d1"), None, result("Deployment", "web", vec![root()]));
        grouper.add(WorkloadKind::ReplicaSet, Some("rs1"), Some("d1"), result("ReplicaSet", "web-1", vec![root()]));
        grouper.add(WorkloadKind::Pod, Some("p1"), Some("rs1"), result("Pod", "web-1-a", vec![root()]));
        grouper.add(WorkloadKind::Pod, Some("p2"), Some("rs1"), result("Pod", "web-1-b", vec![root()]));
        // Two pods with an injected sidecar without probes: one group of two.
        for name in ["web-1-c", "web-1-d"] {
            let pod = result("Pod", name, vec![root(), violation(LivenessProbe, "sidecar")]);
            grouper.add(WorkloadKind::Pod, None, Some("rs1"), pod);
        }
        // A bare pod, and a pod whose controller is not listed.
        grouper.add(WorkloadKind::Pod, Some("p5"), None, result("Pod", "bare", vec![]));
        grouper.add(WorkloadKind::Pod, Some("p6"), Some("unknown"), result("Pod", "custom", vec![]));
        let results = grouper.finish();
        let names: Vec<_> = results.iter().map(|r| r.name.as_deref().unwrap()).collect();
        assert_eq!(names, ["bare", "custom", "web"]);
        let web = &results[2];
        assert_eq!(web.pods, Some(4));
        assert_eq!(web.violations[0].pods, Some(4));
        assert_eq!(web.differing.len(), 1);
        let group = &web.differing[0];
        assert_eq!((group.kind.as_str(), group.count, group.added.len(), group.missing.len()), ("Pod", 2, 1, 0));
        assert_eq!(group.examples, ["x/Pod/web-1-c", "x/Pod/web-1-d"]);
        assert_eq!(results[0].pods, None);
        assert!(would_deny(web));
    }
}
