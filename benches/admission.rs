//! The webhook's whole admission step per review, as `podgate serve` runs it
//! for every request: `admission::admit` (UTF-8 check, decode, UPDATE template
//! comparison, evaluate) and `Admission::response` (encode the answer) — the
//! functions the HTTP handler calls, without TLS and HTTP around them.
//!
//! `pod-create` is the 9 KB Pod CREATE of `../shared/bench/pod-review.json`
//! (managedFields, env vars, three containers); target: under 10 us.
//! `bash bench/load.sh` measures the same review end to end over HTTPS.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use podgate::admission;
use podgate::config::Policy;

const FIXTURES: [(&str, &str); 5] = [
    ("pod-create", include_str!("../tests/fixtures/reviews/pod-create.json")),
    // The same review without whitespace, as the apiserver sends it.
    ("pod-create-compact", include_str!("../tests/fixtures/reviews/pod-create-compact.json")),
    ("deployment-create", include_str!("../tests/fixtures/reviews/deployment-create.json")),
    ("pod-update-labels", include_str!("../tests/fixtures/reviews/pod-update-labels.json")),
    ("pod-create-noncompliant", include_str!("../tests/fixtures/reviews/pod-create-noncompliant.json")),
];

fn admit_and_encode(policy: &Policy, body: &[u8]) -> usize {
    let admission = admission::admit(policy, body).expect("fixture is a valid review");
    admission.response().len()
}

fn admission(c: &mut Criterion) {
    let policy = Policy::default();
    let mut group = c.benchmark_group("admission");
    for (name, body) in FIXTURES {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| b.iter(|| admit_and_encode(&policy, black_box(body.as_bytes()))));
    }
    group.finish();
}

criterion_group!(benches, admission);
criterion_main!(benches);
