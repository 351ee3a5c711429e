//! The lean decoder reads only what the checks need; these tests decode the
//! same documents with the upstream `k8s-openapi` / `kube-core` types and
//! assert that every field the checks use agrees.

use k8s_openapi::api::core::v1 as core;
use kube_core::admission::AdmissionReview as UpstreamReview;
use kube_core::DynamicObject;
use podgate::decode::model::{self, Port};
use podgate::decode::{manifest, review};

fn fixture(relative: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(relative)).unwrap()
}

fn assert_probe_matches(ours: Option<&model::Probe<'_>>, theirs: Option<&core::Probe>, what: &str) {
    match (ours, theirs) {
        (None, None) => {}
        (Some(p), Some(q)) => {
            assert_eq!(p.exec.is_some(), q.exec.is_some(), "{what}.exec");
            assert_eq!(p.http_get.is_some(), q.http_get.is_some(), "{what}.httpGet");
            assert_eq!(p.tcp_socket.is_some(), q.tcp_socket.is_some(), "{what}.tcpSocket");
            assert_eq!(p.grpc.is_some(), q.grpc.is_some(), "{what}.grpc");
            assert_eq!(p.timeout_seconds, q.timeout_seconds.map(i64::from), "{what}.timeoutSeconds");
            assert_eq!(p.period_seconds, q.period_seconds.map(i64::from), "{what}.periodSeconds");
            assert_eq!(p.initial_delay_seconds, q.initial_delay_seconds.map(i64::from), "{what}.initialDelaySeconds");
            if let (Some(ours), Some(theirs)) = (&p.http_get, &q.http_get) {
                match (ours.port.as_ref().unwrap(), &theirs.port) {
                    (Port::Number(n), k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(m)) => {
                        assert_eq!(*n, i64::from(*m), "{what}.httpGet.port")
                    }
                    (Port::Name(n), k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(m)) => {
                        assert_eq!(n.as_ref(), m.as_str(), "{what}.httpGet.port")
                    }
                    (a, b) => panic!("{what}.httpGet.port differs: {a:?} vs {b:?}"),
                }
            }
        }
        (a, b) => panic!("{what}: present in one decoder only: {:?} vs {:?}", a.is_some(), b.is_some()),
    }
}

fn assert_containers_match(ours: &[model::Container<'_>], theirs: &[core::Container], list: &str) {
    assert_eq!(ours.len(), theirs.len(), "{list}: count");
    for (i, (c, d)) in ours.iter().zip(theirs).enumerate() {
        let what = format!("{list}[{i}]");
        assert_eq!(&*c.name, d.name.as_str(), "{what}.name");
        let sc = c.security_context.as_ref();
        let dsc = d.security_context.as_ref();
        assert_eq!(sc.and_then(|s| s.run_as_non_root), dsc.and_then(|s| s.run_as_non_root), "{what} runAsNonRoot");
        assert_eq!(sc.and_then(|s| s.run_as_user), dsc.and_then(|s| s.run_as_user), "{what} runAsUser");
        assert_eq!(
            sc.and_then(|s| s.allow_privilege_escalation),
            dsc.and_then(|s| s.allow_privilege_escalation),
            "{what} allowPrivilegeEscalation"
        );
        assert_eq!(sc.and_then(|s| s.privileged), dsc.and_then(|s| s.privileged), "{what} privileged");
        assert_eq!(c.restart_policy.as_deref(), d.restart_policy.as_deref(), "{what}.restartPolicy");
        let ports: Vec<(Option<&str>, Option<i64>)> =
            c.ports.iter().map(|p| (p.name.as_deref(), p.container_port)).collect();
        let their_ports: Vec<(Option<&str>, Option<i64>)> =
            d.ports.iter().flatten().map(|p| (p.name.as_deref(), Some(i64::from(p.container_port)))).collect();
        assert_eq!(ports, their_ports, "{what}.ports");
        assert_probe_matches(c.liveness_probe.as_deref(), d.liveness_probe.as_ref(), &format!("{what}.livenessProbe"));
        assert_probe_matches(
            c.readiness_probe.as_deref(),
            d.readiness_probe.as_ref(),
            &format!("{what}.readinessProbe"),
        );
        assert_probe_matches(c.startup_probe.as_deref(), d.startup_probe.as_ref(), &format!("{what}.startupProbe"));
    }
}

#[test]
fn lean_review_decoder_agrees_with_upstream_types() {
    let body = fixture("reviews/pod-create.json");

    let ours = review::decode(&body).expect("our decoder");
    let theirs: UpstreamReview<DynamicObject> = serde_json::from_slice(&body).expect("kube-core decoder");
    let their_request = theirs.request.expect("request");
    let our_request = ours.request.as_ref().expect("request");

    assert_eq!(our_request.uid.as_deref(), Some(their_request.uid.as_str()));
    assert_eq!(our_request.kind.as_ref().map(|k| &*k.kind), Some(their_request.kind.kind.as_str()));
    assert_eq!(our_request.namespace.as_deref(), their_request.namespace.as_deref());
    assert_eq!(
        our_request.user_info.as_ref().and_then(|u| u.username.as_deref()),
        their_request.user_info.username.as_deref()
    );

    let their_object = their_request.object.expect("object");
    let their_pod: core::Pod =
        serde_json::from_value(serde_json::to_value(&their_object).unwrap()).expect("typed Pod from DynamicObject");
    let their_spec = their_pod.spec.expect("spec");
    let our_object = our_request.object.as_ref().expect("object");
    let our_spec = &our_object.spec.as_ref().expect("spec").pod;

    assert_eq!(our_object.metadata.as_ref().and_then(|m| m.name.as_deref()), their_pod.metadata.name.as_deref());
    // ownerReferences, which exemptions naming a workload read.
    let ours_owners: Vec<(&str, &str, &str, Option<bool>)> = our_object
        .metadata
        .as_ref()
        .map(|m| m.owner_references.iter().map(|r| (&*r.api_version, &*r.kind, &*r.name, r.controller)).collect())
        .unwrap_or_default();
    let their_owners: Vec<(&str, &str, &str, Option<bool>)> = their_pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|r| (r.api_version.as_str(), r.kind.as_str(), r.name.as_str(), r.controller))
        .collect();
    assert_eq!(ours_owners, their_owners);
    assert!(!ours_owners.is_empty(), "the fixture has an ownerReference");
    let psc = our_spec.security_context.as_ref();
    let their_psc = their_spec.security_context.as_ref();
    assert_eq!(psc.and_then(|s| s.run_as_non_root), their_psc.and_then(|s| s.run_as_non_root));
    assert_eq!(psc.and_then(|s| s.run_as_user), their_psc.and_then(|s| s.run_as_user));
    assert_eq!(our_spec.restart_policy.as_deref(), their_spec.restart_policy.as_deref());

    assert_containers_match(&our_spec.containers, &their_spec.containers, "containers");
    assert_containers_match(
        &our_spec.init_containers,
        their_spec.init_containers.as_deref().unwrap_or_default(),
        "initContainers",
    );
    assert_eq!(our_spec.ephemeral_containers.len(), their_spec.ephemeral_containers.map_or(0, |e| e.len()));
    // The fixture is realistic: it really exercises these fields.
    assert!(!our_spec.containers.is_empty() && !our_spec.init_containers.is_empty());
}

#[test]
fn lean_decoder_reads_windows_fields_as_upstream_does() {
    let yaml = fixture("manifests/bad/windows-hostprocess.yaml");
    let value: serde_json::Value = serde_yaml_ng::from_slice(&yaml).expect("fixture is YAML");
    let json = serde_json::to_string(&value).unwrap();

    let ours: model::Object = serde_json::from_str(&json).expect("our decoder");
    let theirs: k8s_openapi::api::apps::v1::DaemonSet = serde_json::from_str(&json).expect("k8s-openapi decoder");
    let our_spec = ours.spec.as_ref().unwrap().template.as_ref().unwrap().spec.as_ref().unwrap();
    let their_spec = theirs.spec.unwrap().template.spec.unwrap();

    assert!(our_spec.is_windows());
    assert_eq!(their_spec.os.as_ref().map(|os| os.name.as_str()), Some("windows"));
    let our_pod = our_spec.security_context.as_ref().and_then(|sc| sc.windows_options.as_deref()).unwrap();
    let their_pod = their_spec.security_context.as_ref().and_then(|sc| sc.windows_options.as_ref()).unwrap();
    assert_eq!(our_pod.host_process, their_pod.host_process);
    assert_eq!(our_pod.run_as_user_name, their_pod.run_as_user_name);
    let ours = our_spec.containers[0].security_context.as_ref().and_then(|sc| sc.windows_options.as_deref()).unwrap();
    let theirs = their_spec.containers[0].security_context.as_ref().and_then(|sc| sc.windows_options.as_ref()).unwrap();
    assert_eq!(ours.host_process, theirs.host_process);
    assert_eq!(ours.run_as_user_name, theirs.run_as_user_name);
    assert_eq!(ours.run_as_user_name.as_deref(), Some("containeradministrator"));
}

#[test]
fn lean_decoder_reads_host_users_as_upstream_does() {
    // The webhook's fast decoder and serde_json (the review path), and the
    // manifest path (`podgate check`, YAML), against k8s-openapi's PodSpec.
    let body = fixture("reviews/pod-create-user-namespace.json");
    let ours = review::decode(&body).expect("our decoder");
    let fast = podgate::decode::json::from_str::<review::AdmissionReview<'_>>(std::str::from_utf8(&body).unwrap())
        .expect("the fast decoder reads the fixture");
    let theirs: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let their_pod: core::Pod = serde_json::from_value(theirs["request"]["object"].clone()).unwrap();
    let their_spec = their_pod.spec.unwrap();
    assert_eq!(their_spec.host_users, Some(false));
    for decoded in [&ours, &fast] {
        let spec = &decoded.request.as_ref().unwrap().object.as_ref().unwrap().spec.as_ref().unwrap().pod;
        assert_eq!(spec.host_users, their_spec.host_users);
        assert!(spec.user_namespaced());
    }

    let yaml = fixture("manifests/good/deployment-user-namespace.yaml");
    let value: serde_json::Value = serde_yaml_ng::from_slice(&yaml).expect("fixture is YAML");
    let theirs: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(value).unwrap();
    let their_host_users = theirs.spec.unwrap().template.spec.unwrap().host_users;
    let mut read = Vec::new();
    let text = std::str::from_utf8(&yaml).unwrap();
    manifest::for_each_document_with_source(text, manifest::Syntax::Yaml, |_, _, document| {
        for found in document.expect("the fixture parses").into_objects() {
            let spec = found.object.spec.as_ref().unwrap().template.as_ref().unwrap().spec.as_ref().unwrap();
            read.push(spec.host_users);
        }
    });
    assert_eq!(read, [their_host_users]);
    assert_eq!(their_host_users, Some(false));

    // Unset, true and null are the host's user namespace, as upstream decodes them.
    for (json, expected) in [("{}", None), (r#"{"hostUsers":true}"#, Some(true)), (r#"{"hostUsers":null}"#, None)] {
        let ours: model::PodSpec = serde_json::from_str(json).unwrap();
        let theirs: core::PodSpec =
            serde_json::from_str(&json.replace('}', r#","containers":[]}"#).replace("{,", "{")).unwrap();
        assert_eq!(ours.host_users, expected, "{json}");
        assert_eq!(ours.host_users, theirs.host_users, "{json}");
        assert!(!ours.user_namespaced(), "{json}");
    }
}
