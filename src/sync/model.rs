//! Exhaustive interleaving check of the [`Mutex`]'s lock word (mutual exclusion, no lost
//! wake-up), on a small model that transcribes `lock_slow` and `unlock_in` step by step.
//! Every shared-memory access is one atomic step (the code uses `SeqCst` for all accesses
//! that matter, so interleaving semantics apply); `FUTEX_WAIT` is one step that compares
//! and enqueues atomically, as the kernel does. The checker explores every interleaving
//! of the threads and fails if any execution ends with a thread asleep forever. Pure code:
//! runs under Miri.
//!
//! A transcription, because the robust mutex's real code needs a liveness token and a
//! kernel thread id per thread, which loom's threads (one OS thread) cannot give. The
//! [`Event`] and [`Condvar`] handshakes are checked by loom on their real code instead
//! (`super::loom`).
//!
//! [`Event`]: super::Event
//! [`Condvar`]: super::Condvar
//! [`Mutex`]: super::Mutex

use std::collections::HashSet;

/// Runs every interleaving from `init`; `step(state, thread)` returns the possible next
/// states (several, e.g. which sleeper a `FUTEX_WAKE` of one wakes: every choice is
/// explored), none if the thread cannot move (finished, asleep, or blocked on a lock).
/// `ok(terminal)` must hold in every state where no thread can move.
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

const DONE: u8 = 99;

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
