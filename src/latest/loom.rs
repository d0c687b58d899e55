//! loom models of the seqlock (run with
//! `RUSTFLAGS="--cfg shmkit_loom" cargo test --release --lib latest::loom`).
//!
//! The table code runs unchanged; under `cfg(shmkit_loom)` every word of it (sequence and
//! value words included) is a loom atomic, so loom explores the interleavings *and* the
//! weak-memory outcomes its model allows for the relaxed value accesses: a consistent
//! read that mixes two writes would be found.

use std::sync::Arc;

use loom::thread;

use super::cell::{Geometry, ReadFail, Table, heap_table};

/// A table of one slot holding a `[u64; 2]` (two value words, so that a torn copy is
/// visible as two different words).
fn table() -> (Arc<Vec<u64>>, Table) {
    let (buf, t) = heap_table(Geometry::new(1, 16, 8).unwrap());
    (Arc::new(buf), t)
}

fn write(t: &Table, v: u64) -> u64 {
    let val = [v, v];
    // SAFETY: 16 bytes; slot 0 exists.
    unsafe { t.write(0, val.as_ptr().cast()) }
}

fn read(t: &Table, retries: u32) -> Result<([u64; 2], u64), ReadFail> {
    let mut out = [0u64; 2];
    // SAFETY: 16 bytes; slot 0 exists.
    let v = unsafe { t.read(0, out.as_mut_ptr().cast(), retries) }?;
    Ok((out, v))
}

fn bounded() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b
}

/// A writer writes 1 then 2 while a reader reads twice: every successful read is a
/// whole write (both words equal), its version matches its value, and versions never go
/// back.
#[test]
fn reads_are_never_torn_and_versions_monotonic() {
    bounded().check(|| {
        let (buf, t) = table();
        let w = {
            let buf = buf.clone();
            thread::spawn(move || {
                let _keep = buf;
                assert_eq!(write(&t, 1), 1);
                assert_eq!(write(&t, 2), 2);
            })
        };
        let mut last = 0;
        for _ in 0..2 {
            if let Ok((v, version)) = read(&t, 1) {
                assert_eq!(v[0], v[1], "torn read {v:?}");
                assert_eq!(v[0], version);
                assert!(version >= last);
                last = version;
            }
        }
        w.join().unwrap();
        assert_eq!(read(&t, 0), Ok(([2, 2], 2)));
        drop(buf);
    });
}

/// A writer that stops in the middle of a write (killed): a reader gets `Odd` after its
/// retries, never the half-written value; a new writer's complete write repairs the slot.
#[test]
fn dead_writer_is_repaired_by_the_next_write() {
    bounded().check(|| {
        let (buf, t) = table();
        write(&t, 1);
        let dying = {
            let buf = buf.clone();
            thread::spawn(move || {
                let _keep = buf;
                let val = [7u64, 7];
                // SAFETY: 16 bytes; slot 0 exists.
                unsafe { t.write_prefix(0, val.as_ptr().cast(), 1) };
            })
        };
        let r = read(&t, 1);
        if let Ok((v, version)) = r {
            assert_eq!((v, version), ([1, 1], 1), "only the old value, whole");
        }
        dying.join().unwrap();
        assert_eq!(read(&t, 2), Err(ReadFail::Odd));
        // The new writer (after taking the role over).
        let reader = {
            let buf = buf.clone();
            thread::spawn(move || {
                let _keep = buf;
                if let Ok((v, _)) = read(&t, 1) {
                    assert_eq!(v, [9, 9], "the repairing write, whole");
                }
            })
        };
        assert_eq!(write(&t, 9), 2);
        reader.join().unwrap();
        drop(buf);
    });
}
