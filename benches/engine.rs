//! The policy engine alone, per review fixture: decode the AdmissionReview
//! (borrowed, lean model) as the webhook does (UTF-8 check, then the fast
//! deserializer of `decode::json`) and evaluate it. The end-to-end admission
//! bench (decode + evaluate + encode the response) is `benches/admission.rs`.
//! Baselines: the same model decoded by serde_json alone (`review::decode`),
//! and the common kube-rs idiom of decoding into
//! `AdmissionReview<DynamicObject>` and then a typed `Pod`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kube_core::admission::AdmissionReview as UpstreamReview;
use kube_core::DynamicObject;

use podgate::config::Policy;
use podgate::decode::review;
use podgate::exemption::Subject;
use podgate::extract::WorkloadKind;
use podgate::verdict::evaluate_object;

const FIXTURES: [(&str, &str); 3] = [
    ("pod-create", include_str!("../tests/fixtures/reviews/pod-create.json")),
    ("deployment-create", include_str!("../tests/fixtures/reviews/deployment-create.json")),
    ("pod-update-labels", include_str!("../tests/fixtures/reviews/pod-update-labels.json")),
];

fn decode_and_evaluate(body: &[u8], policy: &Policy, serde_json_only: bool) -> bool {
    let review = if serde_json_only {
        review::decode(body).expect("fixture decodes")
    } else {
        review::decode_str(std::str::from_utf8(body).expect("UTF-8")).expect("fixture decodes")
    };
    let request = review.request.as_ref().expect("request");
    let gvk = request.kind.as_ref().expect("kind");
    let kind = WorkloadKind::from_group_kind(&gvk.group, &gvk.kind).expect("workload");
    let subject = Subject {
        namespace: request.namespace.as_deref(),
        username: request.user_info.as_ref().and_then(|u| u.username.as_deref()),
        groups: request.user_info.as_ref().map_or(&[], |u| u.groups.as_slice()),
        ..Subject::default()
    };
    let object = request.object.as_ref().expect("object");
    evaluate_object(policy, &subject, kind, object, jiff::Timestamp::UNIX_EPOCH).allowed()
}

fn engine(c: &mut Criterion) {
    let policy = Policy::default();
    let mut group = c.benchmark_group("engine");
    for (name, body) in FIXTURES {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| b.iter(|| decode_and_evaluate(black_box(body.as_bytes()), &policy, false)));
    }
    group.finish();

    // Reference: the same model decoded by serde_json alone.
    let mut group = c.benchmark_group("engine_serde_json_decoder");
    for (name, body) in FIXTURES {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| b.iter(|| decode_and_evaluate(black_box(body.as_bytes()), &policy, true)));
    }
    group.finish();

    // Reference: what the usual kube-rs webhook pays before any check runs.
    let mut group = c.benchmark_group("kube_rs_idiom");
    let body = FIXTURES[0].1;
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("pod-create", |b| {
        b.iter(|| {
            let review: UpstreamReview<DynamicObject> = serde_json::from_slice(black_box(body.as_bytes())).unwrap();
            let object = review.request.unwrap().object.unwrap();
            let pod: k8s_openapi::api::core::v1::Pod =
                serde_json::from_value(serde_json::to_value(object).unwrap()).unwrap();
            black_box(pod.spec.map(|s| s.containers.len()))
        })
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
