//! loom models of the queue protocol (run with
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib queue::loom`).
//!
//! The ring code runs unchanged; under `cfg(loom)` its control words are loom atomics
//! (see `Ring::new`), the futex is emulated with a loom mutex and condvar (compare and
//! sleep atomically, no timeout: a lost wake-up is a deadlock loom reports), and the
//! membarrier-based asymmetric fence is replaced by `SeqCst` fences on both sides (loom
//! cannot model `membarrier`; the light path relies on its documented semantics).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use loom::sync::atomic::{AtomicBool, AtomicU32};
use loom::thread;

use super::ring::{Blocked, Geometry, Ring};
use super::wait::WaitPoint;

/// A ring over a heap buffer kept alive by the returned Arc.
fn ring(cap: u64, handles: u64) -> (Arc<Vec<u64>>, Ring) {
    let geo = Geometry::new(cap, 8, 8, handles).unwrap();
    let mut buf = vec![0u64; geo.total / 8 + 16];
    let raw = buf.as_mut_ptr() as usize;
    let pad = (raw.next_multiple_of(128) - raw) / 8;
    let base = buf[pad..].as_mut_ptr() as *mut u8;
    // SAFETY: the buffer is kept alive by the Arc every thread holds; it is 128-aligned.
    let r = unsafe { Ring::new(base, geo) };
    r.init();
    (Arc::new(buf), r)
}

fn try_send(r: &Ring, me: usize, v: u64) -> bool {
    match r.mpmc_claim_send(me).unwrap() {
        Ok(p) => {
            // SAFETY: the claim gives this thread the slot's 8 data bytes.
            unsafe { r.data(p).cast::<u64>().write(v) };
            r.mpmc_publish(me, p);
            true
        }
        Err(_) => false,
    }
}

fn try_recv(r: &Ring, me: usize) -> Result<u64, Blocked> {
    let p = match r.mpmc_claim_recv(me, false) {
        Ok(x) => x?,
        Err(c) => panic!(
            "{c:?}: head {} tail {} seq0 {} seq1 {}",
            r.head().load(Ordering::SeqCst),
            r.tail().load(Ordering::SeqCst),
            r.seq(0).load(Ordering::SeqCst),
            r.seq(1).load(Ordering::SeqCst)
        ),
    };
    // SAFETY: the claim gives this thread the slot's 8 data bytes.
    let v = unsafe { r.data(p).cast::<u64>().read() };
    r.mpmc_release(me, p);
    Ok(v)
}

fn bounded() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(4);
    b
}

/// Two producers, one consumer, capacity 2: both messages arrive exactly once.
#[test]
fn two_producers_one_consumer() {
    bounded().check(|| {
        let (buf, r) = ring(2, 3);
        let ids: Vec<usize> = (0..3)
            .map(|i| r.register(10 + i, &|_| true).unwrap())
            .collect();
        let producers: Vec<_> = [1u64, 2]
            .into_iter()
            .zip(ids.clone())
            .map(|(v, me)| {
                let buf = buf.clone();
                thread::spawn(move || {
                    let _keep = buf;
                    while !try_send(&r, me, v) {
                        thread::yield_now();
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        while got.len() < 2 {
            match try_recv(&r, ids[2]) {
                Ok(v) => got.push(v),
                Err(_) => thread::yield_now(),
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, vec![1, 2]);
        drop(buf);
    });
}

/// A cancelled reservation followed by two messages, then two consumers racing for
/// them: each message is received exactly once and the skipped slot by nobody (the
/// consumers race on `head`, including the help past the skipped slot).
#[test]
fn two_consumers_race_past_a_cancelled_slot() {
    bounded().check(|| {
        let (buf, r) = ring(2, 3);
        let ids: Vec<usize> = (0..3)
            .map(|i| r.register(10 + i, &|_| true).unwrap())
            .collect();
        let p = ids[0];
        let pos = r.mpmc_claim_send(p).unwrap().unwrap();
        r.mpmc_cancel(p, pos);
        assert!(try_send(&r, p, 1));
        assert!(try_send(&r, p, 2));
        let consumers: Vec<_> = [ids[1], ids[2]]
            .into_iter()
            .map(|me| {
                let buf = buf.clone();
                thread::spawn(move || {
                    let _keep = buf;
                    loop {
                        match try_recv(&r, me) {
                            Ok(v) => return v,
                            Err(_) => thread::yield_now(),
                        }
                    }
                })
            })
            .collect();
        let mut got: Vec<u64> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 2]);
        drop(buf);
    });
}

/// A producer dies between claim and publish: the consumer skips its slot (once the
/// owner is known dead) and still gets the other producer's message; nothing wedges.
#[test]
fn dead_producer_is_skipped() {
    bounded().check(|| {
        let (buf, r) = ring(2, 3);
        let dead = Arc::new(AtomicBool::new(false));
        let ids: Vec<usize> = (0..3)
            .map(|i| r.register(10 + i, &|_| true).unwrap())
            .collect();
        let (d, b1) = (dead.clone(), buf.clone());
        let victim = ids[0];
        let t1 = thread::spawn(move || {
            let _keep = b1;
            // Claim, then "die" before writing or publishing.
            let _ = r.mpmc_claim_send(victim).unwrap();
            d.store(true, Ordering::SeqCst);
        });
        let b2 = buf.clone();
        let other = ids[1];
        let t2 = thread::spawn(move || {
            let _keep = b2;
            while !try_send(&r, other, 2) {
                thread::yield_now();
            }
        });
        let alive = |owner: u64| !(owner == 10 && dead.load(Ordering::SeqCst));
        loop {
            match try_recv(&r, ids[2]) {
                Ok(v) => {
                    assert_eq!(v, 2);
                    break;
                }
                Err(b) => {
                    r.recover(b, &alive).unwrap();
                    thread::yield_now();
                }
            }
        }
        t1.join().unwrap();
        t2.join().unwrap();
        drop(buf);
    });
}

/// The sleep/wake handshake: a waker that publishes and then finds nobody asleep, and a
/// sleeper that registers and re-checks, never both miss each other.
#[test]
fn no_lost_wake_up() {
    loom::model(|| {
        let words = Arc::new((AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)));
        let w2 = words.clone();
        let t = thread::spawn(move || {
            let (word, sleepers, flag) = &*w2;
            flag.store(1, Ordering::Release);
            WaitPoint { word, sleepers }.wake();
        });
        let (word, sleepers, flag) = &*words;
        let wp = WaitPoint { word, sleepers };
        while wp
            .park(Duration::from_secs(1), || {
                (flag.load(Ordering::Acquire) == 1).then_some(())
            })
            .is_none()
        {}
        t.join().unwrap();
    });
}

/// The same handshake through the ring: a consumer parked on the data wait point is woken
/// by the producer's publish.
#[test]
fn parked_consumer_is_woken_by_publish() {
    loom::model(|| {
        let (buf, r) = ring(1, 2);
        let p = r.register(1, &|_| true).unwrap();
        let c = r.register(2, &|_| true).unwrap();
        let b1 = buf.clone();
        let t = thread::spawn(move || {
            let _keep = b1;
            assert!(try_send(&r, p, 7));
        });
        let v = loop {
            if let Some(v) = r
                .data_wait()
                .park(Duration::from_secs(1), || try_recv(&r, c).ok())
            {
                break v;
            }
        };
        assert_eq!(v, 7);
        t.join().unwrap();
        drop(buf);
    });
}
