//! wake: time from the notify call in one process to the sleeping waiter running in the
//! other (CLOCK_MONOTONIC stamps from both processes).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shmkit_compare::{Placement, measure, registry};

mod common;

fn wake(c: &mut Criterion) {
    let placement = Placement::detect();
    let mut g = c.benchmark_group("wake");
    for spec in registry::channels() {
        g.bench_function(BenchmarkId::from_parameter(spec.id), |b| {
            b.iter_custom(|iters| {
                let m = common::must(measure::wake(&spec, 2, iters, placement, None), spec.id);
                Duration::from_nanos(m.sum_ns as u64)
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = wake }
criterion_main!(benches);
