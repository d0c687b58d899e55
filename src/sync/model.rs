//! Exhaustive interleaving checks of the futex sleep/wake handshakes of [`Event`],
//! [`Condvar`] and the [`Mutex`]'s lock word (no lost wake-up, mutual exclusion), on small models that transcribe their algorithms step by
//! step. Every shared-memory access is one atomic step (the code uses `SeqCst` for all
//! accesses that matter, so interleaving semantics apply); `FUTEX_WAIT` is one step that
//! compares and enqueues atomically, as the kernel does. The checker explores every
//! interleaving of the threads and fails if any execution ends with a thread asleep
//! forever. Pure code: runs under Miri.
//!
//! [`Event`]: super::Event
//! [`Condvar`]: super::Condvar
//! [`Mutex`]: super::Mutex

use std::collections::HashSet;

/// Runs every interleaving from `init`; `step(state, thread)` returns the next state, or
/// `None` if the thread cannot move (finished, asleep, or blocked on a lock).
/// `ok(terminal)` must hold in every state where no thread can move.
fn explore<S: Clone + std::hash::Hash + Eq + std::fmt::Debug>(
    init: S,
    threads: usize,
    step: impl Fn(&S, usize) -> Option<S>,
    ok: impl Fn(&S) -> bool,
) -> usize {
    explore_many(init, threads, |s, t| step(s, t).into_iter().collect(), ok)
}

/// [`explore`] for steps with several possible outcomes (e.g. which sleeper a
/// `FUTEX_WAKE` of one wakes: every choice is explored).
fn explore_many<S: Clone + std::hash::Hash + Eq + std::fmt::Debug>(
    init: S,
    threads: usize,
    step: impl Fn(&S, usize) -> Vec<S>,
    ok: impl Fn(&S) -> bool,
) -> usize {
    let mut seen = HashSet::new();
    let mut stack = vec![init];
    while let Some(s) = stack.pop() {
        if !seen.insert(s.clone()) {
            continue;
        }
        let next: Vec<S> = (0..threads).flat_map(|t| step(&s, t)).collect();
        if next.is_empty() {
            assert!(ok(&s), "bad terminal state (lost wake-up?): {s:?}");
        }
        stack.extend(next);
    }
    seen.len()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct EventState {
    word: u32,
    sleepers: u32,
    pc: [u8; 4],
    local: [u32; 4],
    asleep: [bool; 4],
}

const DONE: u8 = 99;

/// Threads 0, 1: waiters; 2: setter; 3: clearer.
fn event_step(s: &EventState, t: usize) -> Option<EventState> {
    if s.pc[t] == DONE || s.asleep[t] {
        return None;
    }
    let mut n = s.clone();
    match t {
        0 | 1 => match s.pc[t] {
            // wait_for: fast path
            0 => {
                n.local[t] = s.word;
                n.pc[t] = if s.word & 1 != 0 { DONE } else { 1 };
            }
            1 => {
                n.sleepers += 1;
                n.pc[t] = 2;
            }
            2 => {
                let cur = s.word;
                if cur & 1 != 0 || cur >> 1 != n.local[t] >> 1 {
                    n.pc[t] = 4;
                } else {
                    n.local[t] = (n.local[t] & !0xffff_0000) | (cur << 16); // remember cur
                    n.pc[t] = 3;
                }
            }
            3 => {
                // FUTEX_WAIT(word, cur): sleeps only if the word still equals cur.
                if s.word == n.local[t] >> 16 {
                    n.asleep[t] = true;
                }
                n.pc[t] = 2;
            }
            4 => {
                n.sleepers -= 1;
                n.pc[t] = DONE;
            }
            _ => unreachable!(),
        },
        2 => match s.pc[t] {
            0 => {
                if s.word & 1 != 0 {
                    n.pc[t] = DONE;
                } else {
                    n.word = ((s.word & !1) + 2) | 1;
                    n.pc[t] = 1;
                }
            }
            1 => n.pc[t] = if s.sleepers != 0 { 2 } else { DONE },
            2 => {
                n.asleep = [false; 4];
                n.pc[t] = DONE;
            }
            _ => unreachable!(),
        },
        _ => {
            n.word &= !1;
            n.pc[t] = DONE;
        }
    }
    Some(n)
}

#[test]
fn event_handshake_never_loses_a_wake_up() {
    let init = EventState {
        word: 0,
        sleepers: 0,
        pc: [0, 0, 0, 0],
        local: [0; 4],
        asleep: [false; 4],
    };
    // A waiter may legitimately sleep forever only if no `set` happened after it began
    // (it started after set + clear): same generation, flag clear.
    let ok = |s: &EventState| {
        (0..2)
            .all(|t| !s.asleep[t] || (s.word & 1 == 0 && s.word >> 1 == (s.local[t] & 0xffff) >> 1))
    };
    let states = explore(init.clone(), 4, event_step, ok);
    assert!(states > 100, "explored only {states} states");
    // Without a clearer as well.
    let mut no_clear = init;
    no_clear.pc[3] = DONE;
    explore(no_clear, 4, event_step, |s| {
        s.asleep.iter().all(|a| !a) && s.sleepers == 0 && s.pc[..3].iter().all(|&p| p == DONE)
    });
}

#[test]
fn a_broken_event_without_the_sleeper_recheck_is_caught() {
    // Mutant: the setter reads `sleepers` *before* setting the word. The checker must
    // find the lost wake-up, which shows it can fail.
    let mutant = |s: &EventState, t: usize| -> Option<EventState> {
        if t == 2 && s.pc[2] == 0 {
            let mut n = s.clone();
            n.pc[2] = if s.sleepers != 0 { 10 } else { 11 };
            return Some(n);
        }
        if t == 2 && (s.pc[2] == 10 || s.pc[2] == 11) {
            let mut n = s.clone();
            n.word = ((s.word & !1) + 2) | 1;
            if s.pc[2] == 10 {
                n.asleep = [false; 4];
            }
            n.pc[2] = DONE;
            return Some(n);
        }
        event_step(s, t)
    };
    let init = EventState {
        word: 0,
        sleepers: 0,
        pc: [0, DONE, 0, DONE],
        local: [0; 4],
        asleep: [false; 4],
    };
    let r = std::panic::catch_unwind(|| explore(init, 4, mutant, |s| !s.asleep[0]));
    assert_lost_wake_up_found(r);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct CvState {
    /// Mutex owner: 0 free, t + 1 held by thread t.
    owner: u8,
    flag: bool,
    seq: u32,
    waiters: u32,
    pc: [u8; 3],
    seen: [u32; 3],
    asleep: [bool; 3],
}

/// Threads 0, 1: `lock; while !flag { wait } unlock`; 2: `lock; flag = true; unlock;
/// notify_all` (notify outside the lock, the harder case).
fn cv_step(s: &CvState, t: usize) -> Option<CvState> {
    if s.pc[t] == DONE || s.asleep[t] {
        return None;
    }
    let me = t as u8 + 1;
    let mut n = s.clone();
    if t < 2 {
        match s.pc[t] {
            0 | 5 => {
                // lock (blocks while held)
                if s.owner != 0 {
                    return None;
                }
                n.owner = me;
                n.pc[t] = 1;
            }
            1 => n.pc[t] = if s.flag { 6 } else { 2 },
            2 => {
                // wait_once: register and read seq (holding the mutex)
                n.waiters += 1;
                n.seen[t] = s.seq;
                n.owner = 0; // unlock
                n.pc[t] = 3;
            }
            3 => {
                if s.seq == s.seen[t] {
                    n.asleep[t] = true;
                }
                n.pc[t] = 4;
            }
            4 => {
                n.waiters -= 1;
                n.pc[t] = 5; // relock, then re-check the predicate
            }
            6 => {
                n.owner = 0;
                n.pc[t] = DONE;
            }
            _ => unreachable!(),
        }
    } else {
        match s.pc[t] {
            0 => {
                if s.owner != 0 {
                    return None;
                }
                n.owner = me;
                n.pc[t] = 1;
            }
            1 => {
                n.flag = true;
                n.owner = 0;
                n.pc[t] = 2;
            }
            2 => n.pc[t] = if s.waiters != 0 { 3 } else { DONE },
            3 => {
                n.seq += 1;
                n.pc[t] = 4;
            }
            4 => {
                n.asleep = [false; 3];
                n.pc[t] = DONE;
            }
            _ => unreachable!(),
        }
    }
    // Wake-ups resume after the FUTEX_WAIT step (pc 4), which is where pc already is.
    Some(n)
}

#[test]
fn condvar_handshake_never_loses_a_wake_up() {
    let init = CvState {
        owner: 0,
        flag: false,
        seq: 0,
        waiters: 0,
        pc: [0; 3],
        seen: [0; 3],
        asleep: [false; 3],
    };
    let states = explore(init, 3, cv_step, |s| {
        s.pc.iter().all(|&p| p == DONE) && s.waiters == 0 && s.owner == 0
    });
    assert!(states > 100, "explored only {states} states");
}

#[test]
fn a_broken_condvar_registering_after_unlock_is_caught() {
    // Mutant: the waiter registers in `waiters` only after releasing the mutex, so the
    // notifier can see no waiter and skip the wake. The checker must find it.
    let mutant = |s: &CvState, t: usize| -> Option<CvState> {
        if t < 2 && s.pc[t] == 2 && !s.asleep[t] {
            let mut n = s.clone();
            n.seen[t] = s.seq;
            n.owner = 0;
            n.pc[t] = 10;
            return Some(n);
        }
        if t < 2 && s.pc[t] == 10 {
            let mut n = s.clone();
            n.waiters += 1;
            n.pc[t] = 3;
            return Some(n);
        }
        cv_step(s, t)
    };
    let init = CvState {
        owner: 0,
        flag: false,
        seq: 0,
        waiters: 0,
        pc: [0, DONE, 0],
        seen: [0; 3],
        asleep: [false; 3],
    };
    let r =
        std::panic::catch_unwind(|| explore(init, 3, mutant, |s| s.pc.iter().all(|&p| p == DONE)));
    assert_lost_wake_up_found(r);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct MxState {
    /// Lock word: owner token (thread + 1) | WAITERS (8).
    word: u8,
    pc: [u8; 3],
    cur: [u8; 3],
    slept: [bool; 3],
    asleep: [bool; 3],
    /// Threads in the critical section; > 1 is a violation, kept to the terminal state.
    inside: u8,
    violated: bool,
}

const MX_WAITERS: u8 = 8;

/// Each thread: `lock; critical section; unlock`, transcribing `lock_slow` (without the
/// spin and the liveness slices: an untimed FUTEX_WAIT, so only a wake can end a sleep)
/// and `unlock_in`/`unlock_contended`. `broken_unlock`: the mutant that stores 0 without
/// looking at the WAITERS bit.
fn mx_step(s: &MxState, t: usize, broken_unlock: bool) -> Vec<MxState> {
    if s.pc[t] == DONE || s.asleep[t] {
        return vec![];
    }
    let me = t as u8 + 1;
    let mut n = s.clone();
    match s.pc[t] {
        // lock: read the word
        0 => {
            n.cur[t] = s.word;
            n.pc[t] = if s.word & !MX_WAITERS == 0 { 1 } else { 2 };
        }
        // free: CAS(cur → me | WAITERS if we slept or it was set)
        1 => {
            if s.word == s.cur[t] {
                let w = if s.slept[t] {
                    MX_WAITERS
                } else {
                    s.cur[t] & MX_WAITERS
                };
                n.word = me | w;
                n.inside += 1;
                n.violated |= n.inside > 1;
                n.pc[t] = 5;
            } else {
                n.pc[t] = 0;
            }
        }
        // held: set WAITERS by CAS (or go straight to sleep if set)
        2 => {
            if s.cur[t] & MX_WAITERS != 0 {
                n.pc[t] = 3;
            } else if s.word == s.cur[t] {
                n.word = s.cur[t] | MX_WAITERS;
                n.pc[t] = 3;
            } else {
                n.pc[t] = 0;
            }
        }
        // FUTEX_WAIT(word, cur | WAITERS)
        3 => {
            if s.word == s.cur[t] | MX_WAITERS {
                n.asleep[t] = true;
            }
            n.slept[t] = true;
            n.pc[t] = 0;
        }
        // critical section done: unlock
        5 => {
            n.inside -= 1;
            if broken_unlock {
                let waiters = s.word & MX_WAITERS != 0;
                n.word = 0;
                n.pc[t] = if waiters && t == 0 { 7 } else { DONE };
            } else if s.word == me {
                n.word = 0;
                n.pc[t] = DONE;
            } else {
                n.pc[t] = 6;
            }
        }
        // CAS(me | WAITERS → 0), then wake one
        6 => {
            if s.word == me | MX_WAITERS {
                n.word = 0;
                n.pc[t] = 7;
            } else {
                n.pc[t] = DONE;
            }
        }
        // FUTEX_WAKE(1): any one sleeper (every choice explored), or nobody
        7 => {
            n.pc[t] = DONE;
            let sleepers: Vec<usize> = (0..3).filter(|&u| s.asleep[u]).collect();
            if sleepers.is_empty() {
                return vec![n];
            }
            return sleepers
                .into_iter()
                .map(|u| {
                    let mut m = n.clone();
                    m.asleep[u] = false;
                    m
                })
                .collect();
        }
        _ => unreachable!(),
    }
    vec![n]
}

fn mx_init() -> MxState {
    MxState {
        word: 0,
        pc: [0; 3],
        cur: [0; 3],
        slept: [false; 3],
        asleep: [false; 3],
        inside: 0,
        violated: false,
    }
}

#[test]
fn mutex_lock_word_excludes_and_never_loses_a_wake_up() {
    let states = explore_many(
        mx_init(),
        3,
        |s, t| mx_step(s, t, false),
        |s| {
            assert!(!s.violated, "mutual exclusion violated: {s:?}");
            s.pc.iter().all(|&p| p == DONE) && s.word & !MX_WAITERS == 0
        },
    );
    assert!(states > 100, "explored only {states} states");
}

#[test]
fn a_broken_mutex_unlock_ignoring_waiters_is_caught() {
    // Mutant: only thread 0 wakes after a plain store of 0; the others never do.
    let r = std::panic::catch_unwind(|| {
        explore_many(
            mx_init(),
            3,
            |s, t| mx_step(s, t, true),
            |s| s.pc.iter().all(|&p| p == DONE),
        )
    });
    assert_lost_wake_up_found(r);
}

fn assert_lost_wake_up_found(r: std::thread::Result<usize>) {
    let e = r.expect_err("the checker missed a lost wake-up");
    let msg = e
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains("lost wake-up"),
        "failed for another reason: {msg}"
    );
}
