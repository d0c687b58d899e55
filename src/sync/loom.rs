//! loom models of the [`Event`](super::Event) and [`Condvar`](super::Condvar) sleep/wake
//! handshakes, on their real code (run with
//! `RUSTFLAGS="--cfg shmkit_loom" cargo test --release --lib sync::loom`).
//!
//! In the loom build [`RawEvent`] and [`RawCondvar`] hold loom atomics
//! (`futex::atomic`), and `futex::wait`/`wake` on them run the futex model of
//! [`super::futex`]: compare-and-enqueue atomic with respect to wakers, no timeouts, no
//! spurious returns, so a lost wake-up leaves a thread asleep and loom reports the
//! deadlock. The condvar's mutex is a loom mutex: the handshake needs only that the
//! mutex orders the waiter's registration before the notifier's change of the condition
//! (the robust mutex's own lock word is checked by `super::model`). Preemption bound 4
//! (3 for the four-thread model): about 10 s in all.

use std::sync::Arc;

use loom::sync::Mutex;
use loom::thread;

use super::{RawCondvar, RawEvent};

fn bounded(n: usize) -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(n);
    b
}

/// A waiter and a setter: the waiter returns `true` whoever goes first (a `set` that
/// lands between the waiter's registration and its sleep is not lost), and leaves no
/// sleeper registered.
#[test]
fn event_set_wakes_a_waiter() {
    loom::model(|| {
        let ev = Arc::new(RawEvent::default());
        let e = ev.clone();
        let setter = thread::spawn(move || e.set());
        assert_eq!(ev.wait_for(None), Ok(true));
        setter.join().unwrap();
        assert_eq!(ev.state(), (true, 0));
    });
}

/// Two waiters, one `set`: it wakes both (a wake of all), and `clear` then resets the
/// flag for the next round.
#[test]
fn event_set_wakes_every_waiter_and_clear_resets() {
    bounded(4).check(|| {
        let ev = Arc::new(RawEvent::default());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let e = ev.clone();
                thread::spawn(move || e.wait_for(None))
            })
            .collect();
        ev.set();
        for w in waiters {
            assert_eq!(w.join().unwrap(), Ok(true));
        }
        ev.clear();
        assert_eq!(ev.state(), (false, 0));
    });
}

/// A setter that sets, clears and (once a racing clearer is done) sets again, against a
/// waiter: the waiter always returns `true` (set, or set and cleared while it slept: the
/// generation moved), whatever the clears interleave with, and leaves no sleeper behind.
#[test]
fn event_set_clear_set_races_a_waiter_and_a_clearer() {
    bounded(4).check(|| {
        let ev = Arc::new(RawEvent::default());
        let (e1, e2) = (ev.clone(), ev.clone());
        let clearer = thread::spawn(move || e2.clear());
        let setter = thread::spawn(move || {
            e1.set();
            e1.clear();
            clearer.join().unwrap();
            e1.set();
        });
        assert_eq!(ev.wait_for(None), Ok(true));
        setter.join().unwrap();
        assert_eq!(ev.state(), (true, 0));
    });
}

/// `lock; while !flag { wait } unlock`, with the condvar's real waiter half
/// (`RawCondvar::sleep_unlocked`) and a loom mutex.
fn wait_for_flag(m: &Mutex<bool>, cv: &RawCondvar) {
    let mut g = m.lock().unwrap();
    while !*g {
        let slept = cv.sleep_unlocked(|| drop(g), None);
        assert!(slept.is_ok());
        g = m.lock().unwrap();
    }
}

/// One waiter, a notifier that sets the flag under the mutex and calls `notify_one`
/// after unlocking (the harder case: the notify races the waiter's registration).
#[test]
fn condvar_notify_one_after_unlock_wakes_the_waiter() {
    loom::model(|| {
        let st = Arc::new((Mutex::new(false), RawCondvar::default()));
        let s = st.clone();
        let notifier = thread::spawn(move || {
            *s.0.lock().unwrap() = true;
            s.1.notify_one();
        });
        wait_for_flag(&st.0, &st.1);
        notifier.join().unwrap();
        assert_eq!(st.1.waiters(), 0);
    });
}

/// The same with the notify under the mutex.
#[test]
fn condvar_notify_one_under_the_lock_wakes_the_waiter() {
    loom::model(|| {
        let st = Arc::new((Mutex::new(false), RawCondvar::default()));
        let s = st.clone();
        let notifier = thread::spawn(move || {
            let mut g = s.0.lock().unwrap();
            *g = true;
            s.1.notify_one();
            drop(g);
        });
        wait_for_flag(&st.0, &st.1);
        notifier.join().unwrap();
    });
}

/// Two waiters and `notify_all` after unlocking: both wake (the notify bumps `seq` once
/// for every registered waiter, and the wake reaches each sleeper).
#[test]
fn condvar_notify_all_wakes_every_waiter() {
    bounded(4).check(|| {
        let st = Arc::new((Mutex::new(false), RawCondvar::default()));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = st.clone();
                thread::spawn(move || wait_for_flag(&s.0, &s.1))
            })
            .collect();
        *st.0.lock().unwrap() = true;
        st.1.notify_all();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(st.1.waiters(), 0);
    });
}

/// Two waiters for two tokens, each producer adds one under the mutex and calls
/// `notify_one`: every token is taken (a `notify_one` that wakes a waiter which then
/// finds nothing would strand the other; the loop re-checks, so none is stranded).
#[test]
fn condvar_two_notify_ones_wake_two_waiters() {
    bounded(3).check(|| {
        let st = Arc::new((Mutex::new(0u32), RawCondvar::default()));
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let s = st.clone();
                thread::spawn(move || {
                    let mut g = s.0.lock().unwrap();
                    while *g == 0 {
                        assert!(s.1.sleep_unlocked(|| drop(g), None).is_ok());
                        g = s.0.lock().unwrap();
                    }
                    *g -= 1;
                })
            })
            .collect();
        for _ in 0..2 {
            *st.0.lock().unwrap() += 1;
            st.1.notify_one();
        }
        for c in consumers {
            c.join().unwrap();
        }
        assert_eq!(*st.0.lock().unwrap(), 0);
    });
}
