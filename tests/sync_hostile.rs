//! Hostile-peer tests for the locks, the semaphore and the barrier: a victim process
//! loops bounded operations on an object while this process (the hostile peer) writes
//! random and targeted values into every word of the object. The victim must exit
//! normally (never by a signal) within a bounded time, and no single call may take much
//! longer than its timeout. Errors and timeouts are allowed and counted.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shmkit::Segment;
use shmkit::liveness::TOKEN_MAX;
use shmkit::sync::{
    Barrier, LockResult, Mutex, RawBarrier, RawRobustMutex, RawRwLock, RawSemaphore, RwLock,
    Semaphore,
};

const TEST: &str = "victims_survive_hostile_writes";
/// Each victim call's timeout, and how far past it a call may return (generous: two
/// shared cores, debug build).
const CALL_TIMEOUT: Duration = Duration::from_millis(20);
const SLACK: Duration = Duration::from_millis(1500);
const VICTIM_RUN: Duration = Duration::from_millis(1500);

#[derive(Default, Debug)]
struct Counts {
    ok: u32,
    errors: u32,
    timeouts: u32,
    owner_died: u32,
}

impl Counts {
    fn record<T>(&mut self, r: shmkit::Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.ok += 1;
                Some(v)
            }
            Err(e) if e.is_timeout() => {
                self.timeouts += 1;
                None
            }
            Err(_) => {
                self.errors += 1;
                None
            }
        }
    }
}

/// Runs `op` repeatedly for VICTIM_RUN; exits the process with status 3 if a call takes
/// longer than its timeout + SLACK.
fn victim_loop(mut op: impl FnMut(&mut Counts)) -> Counts {
    let mut c = Counts::default();
    let start = Instant::now();
    while start.elapsed() < VICTIM_RUN {
        let t = Instant::now();
        op(&mut c);
        let took = t.elapsed();
        if took > CALL_TIMEOUT * 2 + SLACK {
            eprintln!("a call took {took:?}");
            std::process::exit(3);
        }
    }
    c
}

fn victim(kind: &str, name: &str) {
    let c = match kind {
        "mutex" => {
            let m = Mutex::<u64>::open(name).unwrap();
            victim_loop(|c| {
                let r = m.lock_timeout(CALL_TIMEOUT);
                if let Some(r) = c.record(r) {
                    match r {
                        LockResult::Acquired(mut g) => *g += 1,
                        LockResult::OwnerDied(mut g) => {
                            c.owner_died += 1;
                            let _ = g.make_consistent();
                        }
                    }
                }
                if let Some(r) = c.record(m.try_lock()) {
                    drop(r.into_guard());
                }
                // The reset path reads the same words: a forged "unrecoverable" is reset,
                // anything else is an error or a lock, never worse.
                if let Some(r) = c.record(m.reset_unrecoverable(CALL_TIMEOUT)) {
                    if r.owner_died() {
                        c.owner_died += 1;
                    }
                    let mut g = r.or_repair(|v| *v = 0);
                    *g += 1;
                    if *g % 16 == 0 {
                        g.mark_unrecoverable(); // give up now and then: reset undoes it
                    }
                }
            })
        }
        "rwlock" => {
            let l = RwLock::<u64>::open(name).unwrap();
            victim_loop(|c| {
                if let Some(g) = c.record(l.read_timeout(CALL_TIMEOUT)) {
                    std::hint::black_box(*g);
                }
                if let Some(mut g) = c.record(l.write_timeout(CALL_TIMEOUT)) {
                    if g.writer_died() {
                        c.owner_died += 1;
                        g.make_consistent();
                    }
                    *g += 1;
                }
                let _ = c.record(l.try_write().map(drop));
            })
        }
        "semaphore" => {
            let s = Semaphore::open(name).unwrap();
            victim_loop(|c| {
                let _ = c.record(s.wait_timeout(CALL_TIMEOUT));
                let _ = c.record(s.post());
                let _ = c.record(s.try_wait());
            })
        }
        "barrier" => {
            let b = Barrier::open(name).unwrap();
            victim_loop(|c| {
                let _ = c.record(b.wait_timeout(CALL_TIMEOUT));
            })
        }
        k => panic!("unknown kind {k}"),
    };
    eprintln!("victim {kind}: {c:?}");
}

/// Values a hostile peer likes: zero, all ones, small counts, flag bits alone, the
/// largest token, random tokens (nobody holds them), a live token (ours).
fn targeted(live_token: u32) -> Vec<u32> {
    vec![
        0,
        u32::MAX,
        1,
        2,
        3,
        0xffff,
        0x1_0000,
        1 << 30,
        1 << 31,
        (1 << 30) - 1,
        (1 << 31) - 1,
        TOKEN_MAX,
        TOKEN_MAX - 7,
        live_token,
        live_token | 1 << 31,
        i32::MAX as u32 + 1,
    ]
}

/// Writes into the `words` 32-bit words at the start of `seg`'s payload until the child
/// exits; returns its exit status.
fn attack(
    seg: &Segment,
    words: usize,
    child: &mut std::process::Child,
) -> std::process::ExitStatus {
    let live_token = seg.liveness().token().unwrap();
    let values = targeted(live_token);
    let base = seg.payload_ptr() as *const AtomicU32;
    let mut next = common::xorshift(0x2545_f491_4f6c_dd1d);
    let start = Instant::now();
    let mut writes = 0u64;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            eprintln!("{writes} hostile writes");
            return st;
        }
        assert!(
            start.elapsed() < VICTIM_RUN + Duration::from_secs(60),
            "victim did not finish: hung"
        );
        let r = next();
        let i = (r as usize >> 8) % words;
        let v = match r % 4 {
            0 => (next() >> 16) as u32,
            _ => values[(r as usize >> 24) % values.len()],
        };
        // SAFETY: `i < words`, and the caller passes the object's size in words, which
        // lies within the payload; atomics may alias memory the victim writes.
        unsafe { &*base.add(i) }.store(v, Ordering::SeqCst);
        writes += 1;
        if writes % 8 == 0 {
            // Let the victim make progress now and then (pacing, not synchronisation).
            std::thread::yield_now();
        }
    }
}

fn run(kind: &str, name: &str, seg: &Segment, words: usize) {
    let mut c = common::child(TEST, kind, &[kind, name]).spawn().unwrap();
    let st = attack(seg, words, &mut c);
    assert!(
        st.success(),
        "{kind} victim ended with {st:?} (a signal, a too-long call or a panic)"
    );
}

#[test]
fn victims_survive_hostile_writes() {
    if common::role().is_some() {
        let a = common::args();
        victim(&a[0], &a[1]);
        std::process::exit(0);
    }
    let n = common::unique("hostile-mutex");
    let _g = common::ShmGuard::new(&n);
    let m = Mutex::<u64>::create(&n, 0).unwrap();
    run("mutex", &n, m.segment(), RawRobustMutex::SIZE / 4);

    let n = common::unique("hostile-rw");
    let _g = common::ShmGuard::new(&n);
    let l = RwLock::<u64>::create(&n, 0).unwrap();
    run("rwlock", &n, l.segment(), RawRwLock::SIZE / 4);

    let n = common::unique("hostile-sem");
    let _g = common::ShmGuard::new(&n);
    let s = Semaphore::create(&n, 1).unwrap();
    run("semaphore", &n, s.segment(), RawSemaphore::SIZE / 4);

    let n = common::unique("hostile-bar");
    let _g = common::ShmGuard::new(&n);
    let b = Barrier::create(&n, 2).unwrap();
    run("barrier", &n, b.segment(), RawBarrier::SIZE / 4);
}
