//! Runs the webhook's admission path (decode + evaluate + encode, the same
//! `admission::admit` and `Admission::response` the server calls) in a loop,
//! for profilers and for a noise-resistant timing:
//!
//! ```sh
//! valgrind --tool=callgrind target/release/examples/admit_loop FILE 1000   # instructions
//! perf record -g target/release/examples/admit_loop FILE 200000            # profile
//! target/release/examples/admit_loop FILE --time                           # fastest batch
//! ```
//!
//! `--time` runs 50 batches of 2,000 reviews and prints the time per review
//! of the fastest batch: on a shared machine the minimum is what the code
//! costs, the rest is other processes.

use std::hint::black_box;
use std::time::Instant;

use podgate::admission;
use podgate::config::Policy;

fn admit(policy: &Policy, body: &[u8]) -> usize {
    let admission = admission::admit(policy, black_box(body)).expect("a valid review");
    black_box(admission.response()).len()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "tests/fixtures/reviews/pod-create.json".to_owned());
    let body = std::fs::read(&path).expect("read the review");
    let policy = Policy::default();
    match args.next().as_deref() {
        Some("--time") => {
            let mut best = f64::MAX;
            for _ in 0..50 {
                let start = Instant::now();
                for _ in 0..2_000 {
                    admit(&policy, &body);
                }
                best = best.min(start.elapsed().as_secs_f64() / 2_000.0);
            }
            println!("{path}: {:.2} us per review (fastest of 50 batches of 2,000)", best * 1e6);
        }
        rounds => {
            let rounds: u64 = rounds.and_then(|n| n.parse().ok()).unwrap_or(1000);
            let bytes: usize = (0..rounds).map(|_| admit(&policy, &body)).sum();
            println!("{rounds} reviews of {path}, {bytes} response bytes");
        }
    }
}
