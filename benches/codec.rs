//! Typed (serde/postcard) send + receive over a ByteQueue against the untyped bytes path,
//! one thread, one anonymous queue: the cost the codec adds per message, without any
//! cross-process wake-up.
//!
//! cargo bench -p shmkit --bench codec

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use shmkit::codec::Typed;
use shmkit::queue::{ByteQueue, Mode};

/// About 100 bytes encoded, no heap fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Sample {
    id: u64,
    timestamp_ns: u64,
    values: [f32; 20],
    flags: u32,
}

/// About 100 bytes encoded with a string and a vector (decoding allocates both).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Record {
    id: u64,
    name: String,
    samples: Vec<u16>,
    note: Option<String>,
}

fn sample() -> Sample {
    Sample {
        id: 123_456,
        timestamp_ns: 1_700_000_000_000_000_000,
        values: std::array::from_fn(|i| i as f32 * 0.5),
        flags: 7,
    }
}

fn record() -> Record {
    Record {
        id: 42,
        name: "worker-17/resize".into(),
        samples: (0..30).map(|i| i * 100).collect(),
        note: Some("ok".into()),
    }
}

fn queue() -> ByteQueue {
    ByteQueue::options()
        .mode(Mode::Spsc)
        .capacity(64)
        .anonymous(256)
        .unwrap()
}

fn typed<T>(v: &T, c: &mut Criterion, what: &str)
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let bytes = postcard::to_stdvec(v).unwrap();
    let mut g = c.benchmark_group(format!("codec/{what} ({} B encoded)", bytes.len()));

    let q = queue();
    let mut buf = Vec::with_capacity(256);
    g.bench_function("untyped send + recv", |b| {
        b.iter(|| {
            q.send(black_box(&bytes)).unwrap();
            q.recv(&mut buf).unwrap();
        })
    });

    let mut t: Typed<ByteQueue, T> = Typed::new(queue());
    g.bench_function("typed send + recv (copy out, decode)", |b| {
        b.iter(|| {
            t.send(black_box(v)).unwrap();
            black_box(t.recv().unwrap());
        })
    });
    g.bench_function("typed send + recv_in_place (decode from the slot)", |b| {
        b.iter(|| {
            t.send(black_box(v)).unwrap();
            // SAFETY: an anonymous queue only this process maps.
            let m = unsafe { t.recv_in_place(None) }.unwrap();
            black_box(m.decode().unwrap());
        })
    });
    // The alternative send path: encode into a private buffer, then the volatile copy.
    let mut enc = vec![0u8; 256];
    g.bench_function("encode to a buffer + untyped send, typed recv", |b| {
        b.iter(|| {
            let n = postcard::to_slice(black_box(v), &mut enc).unwrap().len();
            t.get_ref().send(&enc[..n]).unwrap();
            black_box(t.recv().unwrap());
        })
    });
    g.finish();
    assert_eq!(t.try_send(v).map(|_| t.recv().unwrap()).unwrap(), *v);
}

fn bench(c: &mut Criterion) {
    typed(&sample(), c, "Sample");
    typed(&record(), c, "Record");
}

criterion_group!(benches, bench);
criterion_main!(benches);
