//! stream: one-way throughput at 64 B ... 1 MiB, every mechanism plus the single-process
//! memcpy ceiling as members of one group per size.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shmkit_compare::{Placement, measure, registry};

mod common;

fn stream(c: &mut Criterion) {
    let placement = Placement::detect();
    for size in shmkit_compare::suite::STREAM_SIZES {
        let mut g = c.benchmark_group(format!("stream-{size}B"));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::from_parameter("memcpy"), |b| {
            let src = vec![0x5au8; size];
            let mut dst = vec![0u8; size];
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            })
        });
        for spec in registry::channels() {
            // The floor is a ping-pong reference (strict alternation), not a stream; nor is
            // a request/response channel (one request in flight).
            if spec.id == shmkit_compare::suite::FLOOR
                || registry::RTT_ONLY.contains(&spec.id)
                || spec.max_msg.is_some_and(|m| size > m)
            {
                continue;
            }
            g.bench_function(BenchmarkId::from_parameter(spec.id), |b| {
                b.iter_custom(|iters| {
                    common::must(
                        measure::stream_total(&spec, size, iters, placement),
                        spec.id,
                    )
                })
            });
        }
        g.finish();
    }
}

criterion_group! { name = benches; config = common::config(); targets = stream }
criterion_main!(benches);
