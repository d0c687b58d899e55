//! rtt: round trip of a 64 B and a 4 KiB message between two pinned processes, every
//! mechanism as one member of the group (`cargo bench -p shmkit-compare --bench latency`).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shmkit_compare::{Placement, measure, registry};

mod common;

fn rtt(c: &mut Criterion) {
    let placement = Placement::detect();
    for size in shmkit_compare::suite::RTT_SIZES {
        let mut g = c.benchmark_group(format!("rtt-{size}B"));
        for spec in registry::channels() {
            if spec.max_msg.is_some_and(|m| size > m) {
                continue;
            }
            g.bench_function(BenchmarkId::from_parameter(spec.id), |b| {
                b.iter_custom(|iters| {
                    common::must(
                        measure::rtt_total(&spec, size, 100, iters, placement),
                        spec.id,
                    )
                })
            });
        }
        g.finish();
    }
}

criterion_group! { name = benches; config = common::config(); targets = rtt }
criterion_main!(benches);
