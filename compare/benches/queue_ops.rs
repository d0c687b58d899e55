//! Single-process costs of the queue's error paths against its fast path
//! (`cargo bench -p shmkit-compare --bench queue_ops -- --noplot`): an empty `try_recv`
//! (no allocation, no system call) versus a successful `send` + `recv` pair, for
//! `Queue<u64>` in both modes and for `ByteQueue`; and draining 64 messages with a
//! `try_recv` loop versus one `try_recv_many` (the 64 sends are in both).

use criterion::{Criterion, criterion_group, criterion_main};
use shmkit::queue::{ByteQueue, Mode, Queue};
use std::hint::black_box;

mod common;

fn ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue-ops");
    for mode in [Mode::Spsc, Mode::Mpmc] {
        let q = common::must(
            Queue::<u64>::options().mode(mode).capacity(64).anonymous(),
            "queue",
        );
        let m = format!("{mode:?}").to_lowercase();
        g.bench_function(format!("empty_try_recv/{m}"), |b| {
            b.iter(|| black_box(q.try_recv().is_err()))
        });
        g.bench_function(format!("send_recv_pair/{m}"), |b| {
            b.iter(|| {
                q.try_send(black_box(7)).ok();
                black_box(q.try_recv().ok())
            })
        });
        let fill = |q: &Queue<u64>| {
            for i in 0..64 {
                q.try_send(black_box(i)).ok();
            }
        };
        g.bench_function(format!("drain64_try_recv_loop/{m}"), |b| {
            b.iter(|| {
                fill(&q);
                let mut sum = 0;
                while let Ok(v) = q.try_recv() {
                    sum += v;
                }
                black_box(sum)
            })
        });
        let mut buf = [0u64; 64];
        g.bench_function(format!("drain64_try_recv_many/{m}"), |b| {
            b.iter(|| {
                fill(&q);
                let mut sum = 0;
                while let Ok(n) = q.try_recv_many(&mut buf) {
                    sum += buf[..n].iter().sum::<u64>();
                }
                black_box(sum)
            })
        });
    }
    let q = common::must(ByteQueue::options().capacity(64).anonymous(64), "bq");
    let mut buf = Vec::with_capacity(64);
    g.bench_function("empty_try_recv/bytequeue", |b| {
        b.iter(|| black_box(q.try_recv(&mut buf).is_err()))
    });
    g.bench_function("send_recv_pair/bytequeue", |b| {
        b.iter(|| {
            q.try_send(black_box(b"0123456789abcdef")).ok();
            black_box(q.try_recv(&mut buf).ok())
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = ops }
criterion_main!(benches);
