//! Runs the webhook's admission path (decode + evaluate + encode, the same
//! `service::admit` the server calls) in a loop, for profilers:
//! `valgrind --tool=callgrind target/release/examples/admit_loop FILE 1000`
//! or `perf record -g target/release/examples/admit_loop FILE 200000`.

use std::hint::black_box;

use podgate::config::Policy;
use podgate::server::service;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "tests/fixtures/reviews/pod-create.json".to_owned());
    let rounds: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let body = std::fs::read(&path).expect("read the review");
    let policy = Policy::default();
    let mut bytes = 0usize;
    for _ in 0..rounds {
        let admission = service::admit(&policy, black_box(&body)).expect("a valid review");
        bytes += black_box(admission.response()).len();
    }
    println!("{rounds} reviews of {path}, {bytes} response bytes");
}
