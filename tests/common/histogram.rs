//! The apiserver's Prometheus histograms, read from its `/metrics` text:
//! cumulative buckets summed over matching series, deltas between two
//! readings, and quantiles computed as Prometheus' `histogram_quantile`
//! does. Shared by the latency tests (`e2e_latency`, `vap_latency`).

use std::time::{Duration, Instant};

use super::apiserver::{create, manifest, Cluster};

/// A histogram's cumulative bucket counts (`le`, count), summed over the
/// series of `name` whose labels include every `label="value"` of `filter`.
pub fn buckets(metrics: &str, name: &str, filter: &[&str]) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut sums: Vec<(f64, f64)> = Vec::new();
    for line in metrics.lines().filter(|line| line.starts_with(&prefix)) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        if !filter.iter().all(|label| series.contains(label)) {
            continue;
        }
        let le = series.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
        let count: f64 = value.parse().unwrap();
        match sums.iter_mut().find(|(bound, _)| *bound == le) {
            Some((_, sum)) => *sum += count,
            None => sums.push((le, count)),
        }
    }
    sums.sort_by(|a, b| a.0.total_cmp(&b.0));
    sums
}

/// `after - before`, bucket by bucket.
pub fn delta(after: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, count)| {
            let earlier = before.iter().find(|(b, _)| b == le).map_or(0.0, |(_, c)| *c);
            (*le, count - earlier)
        })
        .collect()
}

/// The observations in a delta histogram (its `+Inf` bucket).
pub fn count(histogram: &[(f64, f64)]) -> f64 {
    histogram.last().map_or(0.0, |(_, c)| *c)
}

/// `histogram_quantile` as Prometheus computes it: linear interpolation
/// inside the bucket where the rank falls (from 0 in the first bucket).
pub fn quantile(q: f64, histogram: &[(f64, f64)]) -> Option<f64> {
    let total = count(histogram);
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, cumulative) in histogram {
        if cumulative >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let inside = cumulative - lower.1;
            return Some(lower.0 + (le - lower.0) * if inside > 0.0 { (rank - lower.1) / inside } else { 1.0 });
        }
        lower = (le, cumulative);
    }
    None
}

/// The exact quantile of a sample.
pub fn exact(q: f64, sorted: &[Duration]) -> Duration {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Creates `n` compliant Pods in `namespace` one after the other and
/// returns the latencies the client saw, sorted; `snapshot` reads the
/// histograms of interest before and after, and their deltas are returned.
pub async fn timed_pod_creations<const N: usize, F, Fut>(
    cluster: &Cluster,
    namespace: &str,
    n: usize,
    snapshot: F,
) -> ([Vec<(f64, f64)>; N], Vec<Duration>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = [Vec<(f64, f64)>; N]>,
{
    let admin = cluster.admin();
    let before = snapshot().await;
    let mut latencies = Vec::with_capacity(n);
    let mut pod = manifest("pod-compliant.yaml");
    pod["metadata"] = serde_json::json!({"generateName": "web-", "labels": pod["metadata"]["labels"]});
    for _ in 0..n {
        let start = Instant::now();
        let answer = create(&admin, namespace, &pod).await;
        latencies.push(start.elapsed());
        assert_eq!(answer.status, 201, "{answer:#?}");
    }
    let after = snapshot().await;
    latencies.sort();
    (std::array::from_fn(|i| delta(&after[i], &before[i])), latencies)
}
