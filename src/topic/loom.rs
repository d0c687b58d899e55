//! loom models of the topic protocol (run with
//! `RUSTFLAGS="--cfg shmkit_loom" cargo test --release --lib topic::loom`).
//!
//! As for the queue (`queue/loom.rs`): the ring code runs unchanged, its control words
//! are loom atomics, the asymmetric fence is a `SeqCst` fence on both sides. The slot
//! *data* is modelled by one loom atomic per slot accessed `Relaxed` (what the volatile
//! copies are on the hardware; loom does not track plain memory, so data left in the
//! buffer would let it pair a new value with a stale sequence word, which no CPU does and
//! which the seqlock's fences exclude for atomic data). Each message's value is its
//! position: a torn or stale read shows as a value that is not the cursor.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use loom::sync::atomic::AtomicU64;
use loom::thread;

use super::ring::{Geometry, ROLE_PUB, Ring, Slot};

/// The modelled slot data, one word per slot.
type Data = Arc<Vec<AtomicU64>>;

fn data(cap: u64) -> Data {
    Arc::new((0..cap).map(|_| AtomicU64::new(u64::MAX)).collect())
}

fn ring(cap: u64, entries: u64) -> (Arc<Vec<u64>>, Ring) {
    let geo = Geometry::new(cap, 8, 8, entries).unwrap();
    let mut buf = vec![0u64; geo.total / 8 + 16];
    let raw = buf.as_mut_ptr() as usize;
    let pad = (raw.next_multiple_of(128) - raw) / 8;
    let base = buf[pad..].as_mut_ptr() as *mut u8;
    // SAFETY: the buffer is kept alive by the Arc every thread holds; it is 128-aligned.
    let r = unsafe { Ring::new(base, geo) };
    r.init();
    (Arc::new(buf), r)
}

fn bounded() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b
}

/// The publisher's write of position `p` (value `p`), as `Core` does it.
fn publish(r: &Ring, d: &Data, p: u64) {
    r.begin_write(p);
    d[(p % r.geo.cap) as usize].store(p, Ordering::Relaxed);
    r.finish_write(p);
}

/// One read attempt at `c` as `Core::try_read` does it: `Ok(Some(v))` a message,
/// `Ok(None)` nothing yet, `Err(n)` lagged to `n`.
fn read(r: &Ring, d: &Data, me: usize, c: u64) -> Result<Option<u64>, u64> {
    loop {
        match r.look(c).expect("corrupt") {
            Slot::Ready(s) => {
                let v = d[(c % r.geo.cap) as usize].load(Ordering::Relaxed);
                if r.still(c, s) {
                    r.cursor(me).store(c + 1, Ordering::Release);
                    return Ok(Some(v));
                }
            }
            Slot::NotYet => return Ok(None),
            Slot::Overwritten(q) => {
                let n = r.recover(c, q);
                r.cursor(me).store(n, Ordering::Release);
                return Err(n);
            }
        }
    }
}

/// Overwrite: the publisher laps a subscriber that reads concurrently. Every message the
/// subscriber gets is the one at its cursor (never torn or stale); positions only move
/// forward; a lag skips to a message that exists.
#[test]
fn overwrite_reader_never_sees_a_rewritten_slot() {
    bounded().check(|| {
        let (buf, r) = ring(2, 2);
        let d = data(2);
        let d2 = d.clone();
        let s = r.register(3, &|_| true).unwrap();
        let c0 = r.subscribe(s, 0);
        assert_eq!(c0, 0);
        let b = buf.clone();
        let publisher = thread::spawn(move || {
            let _b = b;
            for p in 0..3 {
                publish(&r, &d2, p);
            }
        });
        let mut c = 0;
        for _ in 0..3 {
            match read(&r, &d, s, c) {
                Ok(Some(v)) => {
                    assert_eq!(v, c, "torn or stale message");
                    c += 1;
                }
                Ok(None) => thread::yield_now(),
                Err(n) => {
                    assert!(n > c && n <= 3);
                    c = n;
                }
            }
        }
        publisher.join().unwrap();
        drop(buf);
    });
}

/// Block: the publisher waits for the slowest subscriber (`room`), so the subscriber
/// receives every message in order, never lagging.
#[test]
fn block_delivers_everything_in_order() {
    bounded().check(|| {
        let (buf, r) = ring(2, 2);
        let d = data(2);
        let d2 = d.clone();
        let pe = r.register(1, &|_| true).unwrap();
        r.attach(pe, ROLE_PUB);
        let s = r.register(3, &|_| true).unwrap();
        r.subscribe(s, 0);
        let b = buf.clone();
        let publisher = thread::spawn(move || {
            let _b = b;
            for p in 0..3 {
                while r.room(p).is_err() {
                    thread::yield_now();
                }
                publish(&r, &d2, p);
            }
        });
        let mut c = 0;
        while c < 3 {
            match read(&r, &d, s, c) {
                Ok(Some(v)) => {
                    assert_eq!(v, c);
                    c += 1;
                }
                Ok(None) => thread::yield_now(),
                Err(n) => panic!("Block lagged {c} -> {n}"),
            }
        }
        publisher.join().unwrap();
        drop(buf);
    });
}

/// Block, a subscriber joining with history while the publisher streams (and may not
/// have seen the new subscriber yet): whatever the subscriber reads is intact; history
/// the publisher rewrote meanwhile is reported as a lag.
#[test]
fn block_late_joiner_history_is_never_torn() {
    bounded().check(|| {
        let (buf, r) = ring(2, 2);
        let d = data(2);
        let d2 = d.clone();
        let pe = r.register(1, &|_| true).unwrap();
        r.attach(pe, ROLE_PUB);
        publish(&r, &d, 0);
        let b = buf.clone();
        let publisher = thread::spawn(move || {
            let _b = b;
            let mut limit = 0;
            let mut epoch = u64::MAX;
            for p in 1..3 {
                // As `Core::try_claim`: rescan at the limit or on a new epoch.
                loop {
                    let e = r.epoch().load(Ordering::Acquire);
                    if p < limit && e == epoch {
                        break;
                    }
                    epoch = e;
                    match r.room(p) {
                        Ok(l) => {
                            limit = l;
                            break;
                        }
                        Err(_) => thread::yield_now(),
                    }
                }
                publish(&r, &d2, p);
            }
        });
        let s = r.register(3, &|_| true).unwrap();
        let start = r.start(1);
        let mut c = r.subscribe(s, start);
        for _ in 0..3 {
            match read(&r, &d, s, c) {
                Ok(Some(v)) => {
                    assert_eq!(v, c, "history read torn");
                    c += 1;
                }
                Ok(None) => thread::yield_now(),
                Err(n) => c = n,
            }
        }
        publisher.join().unwrap();
        drop(buf);
    });
}
