//! lock: lock + unlock uncontended (one process) and contended (two pinned processes
//! alternating on the same lock).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shmkit_compare::{Placement, measure, registry};

mod common;

fn locks(c: &mut Criterion) {
    let placement = Placement::detect();
    let mut g = c.benchmark_group("lock-uncontended");
    for spec in registry::locks() {
        let lock = common::must((spec.make)(), spec.id);
        g.bench_function(BenchmarkId::from_parameter(spec.id), |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    common::must(lock.critical(&mut || {}), spec.id);
                }
                t0.elapsed()
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("lock-contended");
    for spec in registry::locks() {
        g.bench_function(BenchmarkId::from_parameter(spec.id), |b| {
            b.iter_custom(|iters| {
                let m = common::must(measure::lock_contended(&spec, iters, placement), spec.id);
                Duration::from_nanos((m.median_ns * iters as f64) as u64)
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = locks }
criterion_main!(benches);
