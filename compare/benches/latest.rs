//! Cost of `shmkit::latest::Latest<T>` (`cargo bench -p shmkit-compare --bench latest`):
//! - `read/uncontended/N`: a reader's consistent copy of an N-byte value nobody writes;
//! - `read/while-writing/N`: the same while a writer process on another core rewrites the
//!   value in a loop (the reader retries when a write overlaps its copy; reads that give
//!   up after the retry limit are counted and printed, not hidden);
//! - `write/N`: the writer's `write` with nobody waiting (no system call).
//!
//! Every value is written as N/8 equal words (a counter); every read checks that the
//! words are equal, so a torn read would abort the bench.

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shmkit::Value;
use shmkit::latest::Latest;
use shmkit_compare::Placement;
use shmkit_compare::proc::{Peer, Pinned};

mod common;

fn intact<const W: usize>(v: &[u64; W]) -> bool {
    v[0] == v[W - 1]
}

fn sized<const W: usize>(c: &mut Criterion, placement: Placement) {
    let bytes = W * 8;
    let _pin = common::must(Pinned::to(placement.parent), "pin");
    let mut g = c.benchmark_group("latest");

    let mut l = common::must(Latest::<[u64; W]>::anonymous([0; W]), "latest");
    g.bench_function(BenchmarkId::new("write", bytes), |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            common::must(l.write(black_box(&[i; W])), "write")
        })
    });
    g.bench_function(BenchmarkId::new("read/uncontended", bytes), |b| {
        b.iter(|| {
            let (v, ver) = common::must(l.read(), "read");
            assert!(intact(&v));
            black_box(ver)
        })
    });
    l.release_writer();

    // A writer process rewrites the value until the stop flag is raised.
    let v0 = l.version();
    let stop = common::must(Value::<u32>::anonymous(0), "flag");
    let peer = common::must(
        Peer::spawn(placement.child, || {
            let mut i = 0u64;
            while stop.atomic().load(Ordering::Relaxed) == 0 {
                i += 1;
                l.write(&[i; W])?;
            }
            Ok(())
        }),
        "writer peer",
    );
    // Wait (bounded) until the writer has started writing.
    let t = std::time::Instant::now();
    while l.version() == v0 && t.elapsed() < Duration::from_secs(10) {
        std::hint::spin_loop();
    }
    let (mut ok, mut gave_up) = (0u64, 0u64);
    g.bench_function(BenchmarkId::new("read/while-writing", bytes), |b| {
        b.iter(|| match l.read() {
            Ok((v, ver)) => {
                assert!(intact(&v), "torn read");
                ok += 1;
                black_box(ver);
            }
            Err(_) => gave_up += 1,
        })
    });
    stop.store(1);
    common::must(peer.join(Duration::from_secs(30)), "writer peer");
    eprintln!(
        "latest read/while-writing/{bytes}: {ok} reads, {gave_up} gave up after {} retries",
        shmkit::latest::DEFAULT_RETRIES
    );
    g.finish();
}

fn latest(c: &mut Criterion) {
    let placement = Placement::detect();
    sized::<1>(c, placement);
    sized::<8>(c, placement);
    sized::<128>(c, placement);
}

criterion_group! { name = benches; config = common::config(); targets = latest }
criterion_main!(benches);
