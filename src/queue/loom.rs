//! loom models of the queue protocol (run with
//! `RUSTFLAGS="--cfg shmkit_loom" cargo test --release --lib queue::loom`).
//!
//! The ring code runs unchanged; under `cfg(shmkit_loom)` its control words are loom atomics
//! (see `Ring::new`), the futex is emulated with a loom mutex and condvar (compare and
//! sleep atomically, no timeout: a lost wake-up is a deadlock loom reports), and the
//! membarrier-based asymmetric fence is replaced by `SeqCst` fences on both sides (loom
//! cannot model `membarrier`; the light path relies on its documented semantics).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use loom::sync::atomic::{AtomicBool, AtomicU32};
use loom::thread;

use super::ring::{Blocked, EVER, Geometry, ROLE_RECEIVER, ROLE_SENDER, Ring};
use super::wait::WaitPoint;

/// A ring over a heap buffer kept alive by the returned Arc.
fn ring(cap: u64, handles: u64) -> (Arc<Vec<u64>>, Ring) {
    ring_stash(cap, handles, 0)
}

/// A ring with `depth` stash slots per entry.
fn ring_stash(cap: u64, handles: u64, depth: u64) -> (Arc<Vec<u64>>, Ring) {
    let geo = Geometry::new(cap, 8, 8, handles)
        .unwrap()
        .with_stash(depth)
        .unwrap();
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
    bounded_by(4)
}

fn bounded_by(n: usize) -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(n);
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
        let words = Arc::new((
            AtomicU32::new(0),
            AtomicU32::new(0),
            AtomicU32::new(0),
            AtomicU32::new(0),
        ));
        let w2 = words.clone();
        let t = thread::spawn(move || {
            let (word, sleepers, armed, flag) = &*w2;
            flag.store(1, Ordering::Release);
            WaitPoint {
                word,
                sleepers,
                armed,
                mode: None,
            }
            .wake();
        });
        let (word, sleepers, armed, flag) = &*words;
        let wp = WaitPoint {
            word,
            sleepers,
            armed,
            mode: None,
        };
        while wp
            .park(Duration::from_secs(1), || {
                (flag.load(Ordering::Acquire) == 1).then_some(())
            })
            .is_none()
        {}
        t.join().unwrap();
    });
}

/// Symmetric mode (`wait`, "Symmetric mode"): a parked sleeper on a wait point whose
/// `mode` word starts at 0 (it switches it) or at `SYMMETRIC` (it skips the heavy fence),
/// and a waker that loads `mode` after its publish. The sleeper must never sleep through
/// the waker's flag (the emulated futex has no timeout: a lost wake-up is a deadlock).
#[test]
fn parked_sleeper_with_a_fence_mode_word_is_never_lost() {
    use super::wait::SYMMETRIC;
    for start in [0, SYMMETRIC] {
        loom::model(move || {
            let words = Arc::new((
                AtomicU32::new(0),
                AtomicU32::new(0),
                AtomicU32::new(0),
                AtomicU32::new(start),
                AtomicU32::new(0),
            ));
            let w2 = words.clone();
            let t = thread::spawn(move || {
                let (word, sleepers, armed, mode, flag) = &*w2;
                flag.store(1, Ordering::Release);
                WaitPoint {
                    word,
                    sleepers,
                    armed,
                    mode: Some(mode),
                }
                .wake();
            });
            let (word, sleepers, armed, mode, flag) = &*words;
            let wp = WaitPoint {
                word,
                sleepers,
                armed,
                mode: Some(mode),
            };
            while wp
                .park_as(true, Duration::from_secs(1), || {
                    (flag.load(Ordering::Acquire) == 1).then_some(())
                })
                .is_none()
            {}
            t.join().unwrap();
            assert_eq!(mode.load(Ordering::Relaxed), SYMMETRIC);
        });
    }
}

/// Wake-up once per sleep (`armed`): two sleepers, each waiting for its own flag, and two
/// wakers, each publishing one flag and waking. A waker that skips `FUTEX_WAKE` because
/// `armed` is older than `word` must never leave a sleeper asleep with its flag set (the
/// emulated futex has no timeout: a lost wake-up is a deadlock loom reports).
#[test]
fn armed_wake_skips_only_redundant_wake_ups() {
    type Words = (AtomicU32, AtomicU32, AtomicU32, [AtomicU32; 2]);
    fn wait_point(w: &Words) -> WaitPoint<'_> {
        WaitPoint {
            word: &w.0,
            sleepers: &w.1,
            armed: &w.2,
            mode: None,
        }
    }
    /// Sleeps on the wait point until flag `i` is set.
    fn sleep_for(w: &Words, i: usize) {
        while wait_point(w)
            .park(Duration::from_secs(1), || {
                (w.3[i].load(Ordering::Acquire) == 1).then_some(())
            })
            .is_none()
        {}
    }
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        let words: Arc<Words> = Arc::new((
            AtomicU32::new(0),
            AtomicU32::new(0),
            AtomicU32::new(0),
            [AtomicU32::new(0), AtomicU32::new(0)],
        ));
        let mut threads = Vec::new();
        for i in 0..2 {
            let w = words.clone();
            threads.push(thread::spawn(move || {
                w.3[i].store(1, Ordering::Release);
                wait_point(&w).wake();
            }));
        }
        let w = words.clone();
        let sleeper = thread::spawn(move || sleep_for(&w, 1));
        sleep_for(&words, 0);
        sleeper.join().unwrap();
        for t in threads {
            t.join().unwrap();
        }
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

// ---------------------------------------------------------------- disconnection

/// Spawns a model thread that keeps the ring's buffer alive while it runs.
fn spawn_keeping<R: 'static>(
    buf: &Arc<Vec<u64>>,
    f: impl FnOnce() -> R + 'static,
) -> thread::JoinHandle<R> {
    let keep = buf.clone();
    thread::spawn(move || {
        let _keep = keep;
        f()
    })
}

/// Registers one entry per owner word (nobody dead yet) and attaches the given roles.
fn entries(r: &Ring, owners: &[(u64, u64)]) -> Vec<usize> {
    owners
        .iter()
        .map(|&(owner, roles)| {
            let me = r.register(owner, &|_| true).unwrap();
            for role in [ROLE_SENDER, ROLE_RECEIVER] {
                if roles & role != 0 {
                    r.attach(me, role);
                }
            }
            me
        })
        .collect()
}

/// The receive side of `Core::check_gone` (src/queue/mod.rs), on the ring: after a failed
/// attempt, `Some(None)` if the queue is disconnected (every producer that attached is
/// gone by the count, one more attempt finds nothing and no claim is pending),
/// `Some(Some(v))` if the extra attempt found a message, `None` to keep waiting. `swept`:
/// the caller's sweep found no live producer (else the count decides). Keep in step with
/// `check_gone`.
fn recv_check_gone(r: &Ring, me: usize, swept: bool) -> Option<Option<u64>> {
    if !swept && !r.peers_gone(ROLE_SENDER) {
        return None;
    }
    if let Ok(v) = try_recv(r, me) {
        return Some(Some(v));
    }
    if r.tail().load(Ordering::Acquire) != r.head().load(Ordering::Acquire) {
        return None;
    }
    Some(None)
}

/// A blocking receive as `Core::wait_slow` does it with `WaitStrategy::Park`: parks on the
/// data wait point, re-checking for a message and for the disconnection after
/// registering as a sleeper. `None`: disconnected. A lost wake-up is a loom deadlock.
fn recv_blocking(r: &Ring, me: usize) -> Option<u64> {
    loop {
        if let Ok(v) = try_recv(r, me) {
            return Some(v);
        }
        if let Some(x) = recv_check_gone(r, me, false) {
            return x;
        }
        let got = r
            .data_wait()
            .park(Duration::from_secs(1), || match try_recv(r, me) {
                Ok(v) => Some(Some(v)),
                Err(_) => recv_check_gone(r, me, false),
            });
        if let Some(x) = got {
            return x;
        }
    }
}

/// Two producers (attached before the race) each send one message and detach, racing a
/// receiver that blocks on the empty ring: it gets both messages, then `Disconnected` —
/// never `Disconnected` early (a message published before the last detach is seen), and
/// never a lost wake-up (the last detach wakes it). Three threads with parking: bound 2
/// (bound 3: 96 s, passes; bound 4 runs for over ten minutes).
#[test]
fn last_producer_detach_is_never_missed() {
    bounded_by(2).check(|| {
        let (buf, r) = ring(2, 3);
        let ids = entries(
            &r,
            &[(10, ROLE_SENDER), (11, ROLE_SENDER), (12, ROLE_RECEIVER)],
        );
        let producers: Vec<_> = [1u64, 2]
            .into_iter()
            .zip(ids.clone())
            .map(|(v, me)| {
                spawn_keeping(&buf, move || {
                    assert!(try_send(&r, me, v));
                    r.detach(me, ROLE_SENDER);
                })
            })
            .collect();
        let mut got = Vec::new();
        while let Some(v) = recv_blocking(&r, ids[2]) {
            got.push(v);
        }
        for p in producers {
            p.join().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, vec![1, 2]);
        assert_eq!(r.peers(ROLE_SENDER).load(Ordering::SeqCst), EVER);
        drop(buf);
    });
}

/// A producer attaches, sends and closes while a receiver blocks from the start (before
/// anybody attached: empty, not disconnected): the receiver gets the message, then
/// `Disconnected`, and is woken for each.
#[test]
fn attach_send_close_races_a_blocked_receiver() {
    bounded().check(|| {
        let (buf, r) = ring(1, 2);
        let [p, c] = entries(&r, &[(1, 0), (2, ROLE_RECEIVER)])[..] else {
            unreachable!()
        };
        let t = spawn_keeping(&buf, move || {
            r.attach(p, ROLE_SENDER);
            assert!(try_send(&r, p, 7));
            r.detach(p, ROLE_SENDER);
        });
        assert_eq!(recv_blocking(&r, c), Some(7));
        assert_eq!(recv_blocking(&r, c), None);
        t.join().unwrap();
        drop(buf);
    });
}

/// Sends `v` from entry `p`, sleeping on the space wait point while the ring is full (as
/// `Core::claim_send` does; the emulated futex has no timeout, so a sender nobody wakes
/// is a deadlock loom reports).
fn send_parked(r: &Ring, p: usize, v: u64) {
    while !try_send(r, p, v) {
        if r.space_wait()
            .park(Duration::from_secs(1), || try_send(r, p, v).then_some(()))
            .is_some()
        {
            break;
        }
    }
}

/// The space low-water mark (`Ring::wake_space`): a sender asleep on a full ring of 4 is
/// woken once two slots are free, whichever of two consumers releases last and in
/// whichever order they claimed and released (one single release and one batch release
/// of one message each: both paths).
#[test]
fn space_wakes_at_the_low_water_mark() {
    bounded_by(3).check(|| {
        let (buf, r) = ring(4, 3);
        let [p, c1, c2] = entries(
            &r,
            &[(1, ROLE_SENDER), (2, ROLE_RECEIVER), (3, ROLE_RECEIVER)],
        )[..] else {
            unreachable!()
        };
        assert_eq!(r.space_low_water(), 2);
        for v in 1..=4 {
            assert!(try_send(&r, p, v));
        }
        let single = spawn_keeping(&buf, move || try_recv(&r, c1).unwrap());
        let batch = spawn_keeping(&buf, move || {
            let (pos, k) = r.mpmc_claim_recv_many(c2, 1, false).unwrap().unwrap();
            // SAFETY: the claim gives this thread the slot's 8 data bytes.
            let v = unsafe { r.data(pos).cast::<u64>().read() };
            r.mpmc_release_many(c2, pos, k);
            v
        });
        send_parked(&r, p, 5);
        let mut got = [single.join().unwrap(), batch.join().unwrap()];
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        assert_eq!(r.len(), 3);
        drop(buf);
    });
}

/// The same mark in SPSC mode, where the consumer counts from its own position: one
/// consumer frees two slots of four, one at a time, and the sleeping sender is woken.
#[test]
fn spsc_space_wakes_at_the_low_water_mark() {
    bounded().check(|| {
        let (buf, r) = ring(4, 2);
        for v in 0..4 {
            assert!(r.spsc_can_send(v, 0).unwrap());
            // SAFETY: the producer owns position `v`'s slot until it publishes it.
            unsafe { r.data(v).cast::<u64>().write(v) };
            r.spsc_publish(v);
        }
        let consumer = spawn_keeping(&buf, move || {
            for mut pos in 0..2 {
                assert!(r.spsc_can_recv(&mut pos).unwrap());
                r.spsc_release(pos);
            }
        });
        // The producer at position 4 waits for `head` to pass 0.
        let ready = || {
            r.spsc_can_send(4, r.head().load(Ordering::Acquire))
                .unwrap()
        };
        while !ready() {
            if r.space_wait()
                .park(Duration::from_secs(1), || ready().then_some(()))
                .is_some()
            {
                break;
            }
        }
        consumer.join().unwrap();
        drop(buf);
    });
}

/// A sender blocked on a full ring, a consumer that receives once and detaches: the
/// sender either gets the freed slot or sees `Disconnected` (no consumer left), and is
/// woken either way.
#[test]
fn last_consumer_detach_wakes_a_full_sender() {
    bounded().check(|| {
        let (buf, r) = ring(1, 2);
        let [p, c] = entries(&r, &[(1, ROLE_SENDER), (2, ROLE_RECEIVER)])[..] else {
            unreachable!()
        };
        assert!(try_send(&r, p, 1));
        let t = spawn_keeping(&buf, move || {
            assert_eq!(try_recv(&r, c), Ok(1));
            r.detach(c, ROLE_RECEIVER);
        });
        // `Core::claim_send`: the send side reports a disconnection by the count alone.
        let gone = || r.peers_gone(ROLE_RECEIVER).then_some(false);
        let sent = loop {
            if try_send(&r, p, 2) {
                break true;
            }
            if let Some(x) = gone() {
                break x;
            }
            let got = r.space_wait().park(Duration::from_secs(1), || {
                if try_send(&r, p, 2) {
                    Some(true)
                } else {
                    gone()
                }
            });
            if let Some(x) = got {
                break x;
            }
        };
        t.join().unwrap();
        assert_eq!(r.len(), u64::from(sent));
        drop(buf);
    });
}

// ---------------------------------------------------------------- dead participants

const DEAD: u64 = 1 << 32 | 5;
const LIVE: u64 = 2 << 32 | 6;
const NEW: u64 = 3 << 32 | 7;

fn alive(o: u64) -> bool {
    o != DEAD
}

/// Two sweepers find the same dead producer: its death is counted once and its sender
/// role discounted once (the live producer still counts), whoever wins.
#[test]
fn two_sweepers_note_a_death_once() {
    bounded().check(|| {
        let (buf, r) = ring(1, 2);
        entries(
            &r,
            &[(DEAD, ROLE_SENDER | ROLE_RECEIVER), (LIVE, ROLE_SENDER)],
        );
        let sweepers: Vec<_> = (0..2)
            .map(|_| spawn_keeping(&buf, move || r.sweep(ROLE_SENDER, &alive)))
            .collect();
        for s in sweepers {
            assert_eq!(s.join().unwrap(), 1, "the live producer is counted");
        }
        assert_eq!(r.peer_deaths().load(Ordering::SeqCst), 1);
        assert_eq!(r.last_dead_pid().load(Ordering::SeqCst), DEAD >> 32);
        assert_eq!(r.peers(ROLE_SENDER).load(Ordering::SeqCst), EVER | 1);
        assert_eq!(r.peers(ROLE_RECEIVER).load(Ordering::SeqCst), EVER);
        drop(buf);
    });
}

/// A sweeper notes a dead producer while a new process takes its entry over and attaches
/// as a producer: the death is counted once, the dead role discounted once, and the new
/// owner's role is never discounted in its stead.
#[test]
fn sweep_races_takeover_of_the_dead_entry() {
    bounded().check(|| {
        let (buf, r) = ring(1, 2);
        let d = entries(&r, &[(DEAD, ROLE_SENDER), (LIVE, ROLE_SENDER)])[0];
        let t = spawn_keeping(&buf, move || {
            let me = r.register(NEW, &alive).unwrap();
            assert_eq!(me, d, "the only entry to take is the dead one");
            r.attach(me, ROLE_SENDER);
        });
        let live = r.sweep(ROLE_SENDER, &alive);
        assert!((1..=2).contains(&live));
        t.join().unwrap();
        assert_eq!(r.peer_deaths().load(Ordering::SeqCst), 1);
        assert_eq!(r.peers(ROLE_SENDER).load(Ordering::SeqCst), EVER | 2);
        assert_ne!(r.roles(d).load(Ordering::SeqCst) & ROLE_SENDER, 0);
        assert_eq!(r.sweep(ROLE_SENDER, &alive), 2);
        drop(buf);
    });
}

/// A producer attaches, sends and dies still attached, racing a receiver that polls as
/// `try_recv` does (`Core::peer_gone` with a sweep): the receiver gets the message, then
/// `Disconnected` once the sweep has found the producer dead — never before the message,
/// never while the producer lives.
#[test]
fn dead_producer_is_swept_and_receiver_disconnects() {
    bounded().check(|| {
        let (buf, r) = ring(2, 2);
        let [d, c] = entries(&r, &[(DEAD, 0), (LIVE, ROLE_RECEIVER)])[..] else {
            unreachable!()
        };
        let died = Arc::new(AtomicBool::new(false));
        let died1 = died.clone();
        let t = spawn_keeping(&buf, move || {
            r.attach(d, ROLE_SENDER);
            assert!(try_send(&r, d, 3));
            died1.store(true, Ordering::SeqCst);
        });
        let alive = |o: u64| !(o == DEAD && died.load(Ordering::SeqCst));
        let mut got = Vec::new();
        loop {
            if let Ok(v) = try_recv(&r, c) {
                got.push(v);
                continue;
            }
            let w = r.peers(ROLE_SENDER).load(Ordering::Acquire);
            let gone = w & EVER != 0 && (w == EVER || r.sweep(ROLE_SENDER, &alive) == 0);
            if gone {
                assert!(
                    died.load(Ordering::SeqCst),
                    "disconnected while the producer lives"
                );
                match recv_check_gone(&r, c, true) {
                    Some(Some(v)) => got.push(v),
                    Some(None) => break,
                    None => {}
                }
            }
            thread::yield_now();
        }
        t.join().unwrap();
        assert_eq!(got, vec![3]);
        assert_eq!(r.peer_deaths().load(Ordering::SeqCst), 1);
        assert_eq!(r.peers(ROLE_SENDER).load(Ordering::SeqCst), EVER);
        drop(buf);
    });
}

/// A `join` takes a dead consumer's abandoned tasks while a new process takes the dead
/// entry over and receives a task (counted in the entry's `outstanding`): the dead
/// consumer's task is reported exactly once (by `take_lost` with its pid, or as a
/// taken-over loss), and the new owner's task is never reported lost.
#[test]
fn take_lost_races_takeover_of_the_dead_entry() {
    bounded().check(|| {
        let (buf, r) = ring(2, 2);
        let [d, l] = entries(&r, &[(DEAD, 0), (LIVE, 0)])[..] else {
            unreachable!()
        };
        assert!(try_send(&r, l, 1));
        let pos = r.mpmc_claim_recv(d, true).unwrap().unwrap();
        r.mpmc_release(d, pos);
        assert!(try_send(&r, l, 2));
        // The dead consumer holds one task.
        let t = spawn_keeping(&buf, move || {
            let me = r.register(NEW, &alive).unwrap();
            assert_eq!(me, d);
            let p = r.mpmc_claim_recv(me, true).unwrap().unwrap();
            r.mpmc_release(me, p);
        });
        let mut out = Vec::new();
        r.take_lost(&alive, &mut out);
        t.join().unwrap();
        r.take_lost(&alive, &mut out);
        let reported: u64 = out.iter().map(|&(_, n)| n).sum();
        assert_eq!(reported, 1, "{out:?}");
        assert_eq!(r.tasks(d), 1, "{out:?}");
        drop(buf);
    });
}

// ---------------------------------------------------------------- stash (requeue_lost)

/// `Queue::recv_task` on the ring: claim (counted), copy into a free stash slot, mark it
/// full (moving the task from the count to the stash), release. `None`: nothing there.
fn stash_recv(r: &Ring, me: usize, owner: u64) -> Option<(u64, usize)> {
    let j = r.stash_free(me).expect("a free stash slot");
    let p = r.mpmc_claim_recv(me, true).unwrap().ok()?;
    // SAFETY: the claim gives this thread the slot's 8 data bytes; the free stash slot is
    // filled only by its entry's owner (this thread).
    unsafe {
        let v = r.data(p).cast::<u64>().read();
        r.stash_data(me, j).cast::<u64>().write(v);
    }
    r.stash_fill(me, j, owner);
    // SAFETY: as above.
    let v = unsafe { r.data(p).cast::<u64>().read() };
    r.mpmc_release(me, p);
    Some((v, j))
}

/// `bounded().check(f)`, printing how many executions loom explored (for the record).
fn check_counted(name: &str, f: impl Fn() + Sync + Send + 'static) {
    check_counted_by(4, name, f)
}

/// As [`check_counted`], with preemption bound `n`.
fn check_counted_by(n: usize, name: &str, f: impl Fn() + Sync + Send + 'static) {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    RUNS.store(0, Ordering::SeqCst);
    bounded_by(n).check(move || {
        RUNS.fetch_add(1, Ordering::SeqCst);
        f()
    });
    eprintln!("loom {name}: {} executions", RUNS.load(Ordering::SeqCst));
}

fn stash_is_empty(r: &Ring, handles: usize, depth: usize) -> bool {
    (0..handles).all(|i| (0..depth).all(|j| r.stash_state(i, j).load(Ordering::SeqCst) == 0))
}

/// A `join`'s re-queuing pass over a dead consumer's stash races a new process taking
/// the dead entry over, receiving a task into the same entry's stash and marking it done:
/// the dead task is moved back into the ring exactly once and reported with its pid, the
/// new owner's task is never touched, and nothing is reported lost.
#[test]
fn requeue_races_takeover_and_the_new_owners_task() {
    check_counted_by(8, "requeue_races_takeover_and_the_new_owners_task", || {
        let (buf, r) = ring_stash(2, 2, 2);
        let [d, l] = entries(&r, &[(DEAD, 0), (LIVE, 0)])[..] else {
            unreachable!()
        };
        assert!(try_send(&r, l, 1));
        assert_eq!(stash_recv(&r, d, DEAD).map(|x| x.0), Some(1));
        assert!(try_send(&r, l, 2));
        let t = spawn_keeping(&buf, move || {
            let me = r.register(NEW, &alive).unwrap();
            assert_eq!(me, d, "the only entry to take is the dead one");
            let (v, k) = stash_recv(&r, me, NEW).expect("task 2 is there");
            assert_eq!(v, 2);
            assert!(
                r.stash_clear(me, k, NEW),
                "a live owner's task is never taken"
            );
        });
        let mut out = Vec::new();
        assert_eq!(
            r.requeue_stashed(l, LIVE, false, 0..2, &alive, &mut out),
            Ok(false)
        );
        t.join().unwrap();
        assert_eq!(out, vec![((DEAD >> 32) as u32, 1)]);
        assert_eq!(try_recv(&r, l), Ok(1), "the dead task, back in the ring");
        assert!(try_recv(&r, l).is_err(), "once");
        assert!(stash_is_empty(&r, 2, 2));
        let mut lost = Vec::new();
        assert_eq!(r.take_lost(&alive, &mut lost), 0);
        assert!(lost.is_empty(), "{lost:?}");
        assert_eq!(r.unfinished(&alive), 0);
        drop(buf);
    });
}

/// Two joins re-queue the same dead consumer's task at once: one moves it, the other
/// leaves it (marked moving by a live re-queuer); the ring holds it once.
#[test]
fn two_requeuers_move_a_task_once() {
    check_counted_by(8, "two_requeuers_move_a_task_once", || {
        let (buf, r) = ring_stash(2, 3, 1);
        const LIVE2: u64 = 4 << 32 | 8;
        let [d, l, l2] = entries(&r, &[(DEAD, 0), (LIVE, 0), (LIVE2, 0)])[..] else {
            unreachable!()
        };
        assert!(try_send(&r, l, 7));
        assert!(stash_recv(&r, d, DEAD).is_some());
        let t = spawn_keeping(&buf, move || {
            let mut out = Vec::new();
            assert_eq!(
                r.requeue_stashed(l2, LIVE2, false, 0..3, &alive, &mut out),
                Ok(false)
            );
            out
        });
        let mut out = Vec::new();
        assert_eq!(
            r.requeue_stashed(l, LIVE, false, 0..3, &alive, &mut out),
            Ok(false)
        );
        out.extend(t.join().unwrap());
        assert_eq!(out, vec![((DEAD >> 32) as u32, 1)]);
        assert_eq!(try_recv(&r, l), Ok(7));
        assert!(try_recv(&r, l).is_err(), "once");
        assert!(stash_is_empty(&r, 3, 1));
        drop(buf);
    });
}

/// A live consumer moves a task from the ring into its stash while a `join` counts:
/// `unfinished` never reads 0 (the task is counted by the claim, then by the stash slot,
/// with an overlap, never a gap), and reads 1 at the end.
#[test]
fn unfinished_counts_a_task_moving_into_the_stash() {
    check_counted("unfinished_counts_a_task_moving_into_the_stash", || {
        let (buf, r) = ring_stash(2, 2, 1);
        let [c, l] = entries(&r, &[(LIVE, 0), (NEW, 0)])[..] else {
            unreachable!()
        };
        assert!(try_send(&r, l, 3));
        let t = spawn_keeping(&buf, move || stash_recv(&r, c, LIVE).is_some());
        assert_ne!(r.unfinished(&alive), 0);
        assert_ne!(r.unfinished(&alive), 0);
        assert!(t.join().unwrap());
        assert_eq!(r.unfinished(&alive), 1);
        drop(buf);
    });
}

// ---------------------------------------------------------------- batch receive (recv_many)

/// A batch receive, as `Queue::recv_many` does it (nothing if blocked).
fn try_recv_many(r: &Ring, me: usize, max: u64) -> Vec<u64> {
    super::ring::tests::recv_many(r, me, max).unwrap()
}

/// A batch receive races a single receive and a producer refilling the ring: every
/// message arrives exactly once, and the producer, blocked by the batch's claims, never
/// recovers them while the batch's owner lives (its `recover` calls find the live
/// announcement, single or batch).
#[test]
fn batch_receive_races_a_receive_and_a_producer() {
    check_counted("batch_receive_races_a_receive_and_a_producer", || {
        let (buf, r) = ring(2, 3);
        let [p, b, s] = entries(&r, &[(LIVE, 0), (NEW, 0), (DEAD, 0)])[..] else {
            unreachable!()
        };
        assert!(try_send(&r, p, 1));
        assert!(try_send(&r, p, 2));
        let batch = spawn_keeping(&buf, move || try_recv_many(&r, b, 2));
        let single = spawn_keeping(&buf, move || try_recv(&r, s).ok());
        // The producer sends two more messages into the slots the batch may hold,
        // recovering nothing from live claimers (in particular not the batch's second
        // position, which only the batch announcement names).
        for v in [3, 4] {
            loop {
                match r.mpmc_claim_send(p).unwrap() {
                    Ok(pos) => {
                        // SAFETY: the claim gives this thread the slot's 8 data bytes.
                        unsafe { r.data(pos).cast::<u64>().write(v) };
                        r.mpmc_publish(p, pos);
                        break;
                    }
                    Err(blocked) => {
                        assert_eq!(r.recover(blocked, &|_| true), Ok(None));
                        thread::yield_now();
                    }
                }
            }
        }
        let mut got = batch.join().unwrap();
        got.extend(single.join().unwrap());
        loop {
            let v = try_recv_many(&r, p, 2);
            if v.is_empty() {
                break;
            }
            got.extend(v);
        }
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3, 4], "each message once");
        assert_eq!(r.peer_deaths().load(Ordering::SeqCst), 0);
        drop(buf);
    });
}

/// A batch receiver dies holding two claimed positions while a producer waits for the
/// first slot and another receiver takes what is left: the producer recovers each
/// position of the batch (the batch announcement names both), the death is counted
/// once, and the ring keeps working.
#[test]
fn dead_batch_receiver_is_recovered_position_by_position() {
    check_counted(
        "dead_batch_receiver_is_recovered_position_by_position",
        || {
            let (buf, r) = ring(2, 3);
            let [p, d, c] = entries(&r, &[(LIVE, 0), (DEAD, 0), (NEW, 0)])[..] else {
                unreachable!()
            };
            assert!(try_send(&r, p, 1));
            assert!(try_send(&r, p, 2));
            let dies = spawn_keeping(&buf, move || {
                // Claims both, then "dies" (never releases).
                r.mpmc_claim_recv_many(d, 2, false).unwrap().ok()
            });
            let claimed = dies.join().unwrap();
            let t = spawn_keeping(&buf, move || {
                let mut sent = 0;
                while sent < 2 {
                    match r.mpmc_claim_send(p).unwrap() {
                        Ok(pos) => {
                            // SAFETY: as above.
                            unsafe { r.data(pos).cast::<u64>().write(10 + sent) };
                            r.mpmc_publish(p, pos);
                            sent += 1;
                        }
                        Err(b) => {
                            let _ = r.recover(b, &alive);
                            thread::yield_now();
                        }
                    }
                }
            });
            let mut got = Vec::new();
            while got.len() < 2 {
                let v = try_recv_many(&r, c, 2);
                if v.is_empty() {
                    thread::yield_now();
                }
                got.extend(v);
            }
            t.join().unwrap();
            assert_eq!(claimed.map(|x| x.1), Some(2));
            assert_eq!(got, vec![10, 11]);
            assert_eq!(r.peer_deaths().load(Ordering::SeqCst), 1);
            drop(buf);
        },
    );
}

/// A handle giving its stashed task back on drop (`mine`) races a `join`'s pass over a
/// dead consumer's stash in the same entry table: each task is moved exactly once, the
/// live handle's by itself (the join leaves a live owner's task alone), the dead one's by
/// whichever gets it first.
#[test]
fn drop_gives_back_while_a_join_requeues() {
    check_counted_by(8, "drop_gives_back_while_a_join_requeues", || {
        let (buf, r) = ring_stash(4, 3, 1);
        let [d, h, j] = entries(&r, &[(DEAD, 0), (NEW, 0), (LIVE, 0)])[..] else {
            unreachable!()
        };
        assert!(try_send(&r, j, 1));
        assert!(try_send(&r, j, 2));
        assert!(stash_recv(&r, d, DEAD).is_some());
        assert!(stash_recv(&r, h, NEW).is_some());
        let t = spawn_keeping(&buf, move || {
            let mut out = Vec::new();
            assert_eq!(
                r.requeue_stashed(h, NEW, true, h..h + 1, &alive, &mut out),
                Ok(false)
            );
            out
        });
        let mut out = Vec::new();
        assert_eq!(
            r.requeue_stashed(j, LIVE, false, 0..3, &alive, &mut out),
            Ok(false)
        );
        let mine = t.join().unwrap();
        assert_eq!(mine, vec![((NEW >> 32) as u32, 1)]);
        assert_eq!(out, vec![((DEAD >> 32) as u32, 1)]);
        let mut got = try_recv_many(&r, j, 4);
        got.sort_unstable();
        assert_eq!(got, vec![1, 2]);
        assert!(stash_is_empty(&r, 3, 1));
        drop(buf);
    });
}
