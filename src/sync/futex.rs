//! A thin wrapper over the Linux `futex(2)` wait and wake operations on a 32-bit word in
//! shared memory.
//!
//! The word may be shared between processes, so the operations are issued **without**
//! `FUTEX_PRIVATE_FLAG`: the kernel keys the wait queue on the physical page (inode and
//! offset for a shared file mapping), not on the address in one process. Timeouts of
//! `FUTEX_WAIT` are relative intervals measured against `CLOCK_MONOTONIC`, so changes of
//! the wall clock do not affect them.
//!
//! `nix` has no futex API, hence the raw `libc::syscall` calls below.
//!
//! # The loom build
//! With `RUSTFLAGS="--cfg shmkit_loom"`, the crate's `wait_on` and `wake_on` (the
//! generic forms of [`wait`] and [`wake`]) also accept loom's `AtomicU32` and then run a
//! model of the kernel's futex instead of the system call (`model` below): the compare and the enqueue are one step with respect to wakers (the
//! hash-bucket lock), a wake of `n` wakes at most `n` waiters of that address, and there
//! are no timeouts and no spurious returns, so a lost wake-up is a deadlock loom
//! reports. The primitives whose protocols loom checks take their atomics from
//! `futex::atomic` (std's, loom's in that build), so the models run their real code: the
//! queue's wait points (`crate::queue`), [`Event`](super::Event) and
//! [`Condvar`](super::Condvar) (`sync::loom`).
//!
//! ```
//! use std::sync::atomic::AtomicU32;
//! use std::time::Duration;
//! use shmkit::sync::futex::{self, WaitStatus};
//! let word = AtomicU32::new(0);
//! // The word is 0, not 1: the call returns at once.
//! assert_eq!(futex::wait(&word, 1, None).unwrap(), WaitStatus::Woken);
//! // Nobody wakes us: a bounded wait times out.
//! assert_eq!(futex::wait(&word, 0, Some(Duration::from_millis(1))).unwrap(), WaitStatus::TimedOut);
//! assert_eq!(futex::wake(&word, i32::MAX).unwrap(), 0);
//! ```
//!
//! # References
//! - futex(2), futex(7); Ulrich Drepper, "Futexes Are Tricky" (2011).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use nix::errno::Errno;

/// The atomic type of futex words whose protocol loom checks: `std`'s, and loom's in the
/// loom build (`cfg(shmkit_loom)`), where [`wait_on`] and [`wake_on`] model the futex.
pub(crate) mod atomic {
    #[cfg(shmkit_loom)]
    pub(crate) use loom::sync::atomic::AtomicU32;
    #[cfg(not(shmkit_loom))]
    pub(crate) use std::sync::atomic::AtomicU32;

    /// Between a `SeqCst` write of one word and a `SeqCst` read of another (each side of a
    /// Dekker-style sleep/wake handshake). Nothing in the real build: the single total
    /// order of `SeqCst` operations already forbids both sides reading the old value. A
    /// `fence(SeqCst)` in the loom build: loom treats `SeqCst` accesses as `AcqRel` (its
    /// README, "Unsupported features") and would report that outcome as a false alarm,
    /// while it models `SeqCst` fences exactly.
    #[inline(always)]
    pub(crate) fn seqcst_store_load() {
        #[cfg(shmkit_loom)]
        loom::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// A futex word: `std`'s [`AtomicU32`] (the system call) and, in the loom build, loom's
/// (the model below). [`wait_on`] and [`wake_on`] take either.
pub(crate) trait Word {
    fn futex_wait(&self, expected: u32, timeout: Option<Duration>) -> Result<WaitStatus, Errno>;
    fn futex_wake(&self, n: i32) -> Result<usize, Errno>;
}

impl Word for AtomicU32 {
    fn futex_wait(&self, expected: u32, timeout: Option<Duration>) -> Result<WaitStatus, Errno> {
        wait(self, expected, timeout)
    }
    fn futex_wake(&self, n: i32) -> Result<usize, Errno> {
        wake(self, n)
    }
}

#[cfg(shmkit_loom)]
impl Word for loom::sync::atomic::AtomicU32 {
    fn futex_wait(&self, expected: u32, _: Option<Duration>) -> Result<WaitStatus, Errno> {
        Ok(model::wait(self, expected))
    }
    fn futex_wake(&self, n: i32) -> Result<usize, Errno> {
        Ok(model::wake(self, n))
    }
}

/// [`wait`] on a word of [`atomic::AtomicU32`]: the system call, or the futex model in the
/// loom build (no timeout there).
pub(crate) fn wait_on<W: Word>(
    word: &W,
    expected: u32,
    timeout: Option<Duration>,
) -> Result<WaitStatus, Errno> {
    word.futex_wait(expected, timeout)
}

/// [`wake`] on a word of [`atomic::AtomicU32`]: the system call, or the futex model in the
/// loom build.
pub(crate) fn wake_on<W: Word>(word: &W, n: i32) -> Result<usize, Errno> {
    word.futex_wake(n)
}

/// How a [`wait`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStatus {
    /// Woken, interrupted by a signal, or the word no longer held `expected`. Callers
    /// re-check their condition (wake-ups can be spurious).
    Woken,
    /// The timeout elapsed.
    TimedOut,
}

/// Converts a duration to a `timespec`, saturating at the largest representable value.
pub(crate) fn duration_to_timespec(d: Duration) -> libc::timespec {
    let secs = libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX);
    libc::timespec {
        tv_sec: secs,
        // subsec_nanos() < 1e9, so the timespec is normalised.
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// `FUTEX_WAIT`: sleeps while `*word == expected`, at most `timeout` (`None`: no limit).
///
/// Returns [`WaitStatus::Woken`] when woken, when interrupted (`EINTR`) and when the word
/// did not hold `expected` (`EAGAIN`); [`WaitStatus::TimedOut`] when the timeout elapsed.
/// Other errors (`EFAULT`, `EINVAL`, `ENOSYS`) are returned as they are.
#[doc(alias("futex", "FUTEX_WAIT"))]
pub fn wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> Result<WaitStatus, Errno> {
    let ts = timeout.map(duration_to_timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // FUTEX_PRIVATE_FLAG is left out on purpose: the word may live in memory shared with
    // other processes.
    // SAFETY: `word` is a valid, aligned 32-bit word for the duration of the call (the
    // kernel only reads it); `ts_ptr` is null or points to a live timespec; uaddr2 and
    // val3 are ignored by FUTEX_WAIT.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc == 0 {
        return Ok(WaitStatus::Woken);
    }
    match Errno::last() {
        Errno::EAGAIN | Errno::EINTR => Ok(WaitStatus::Woken),
        Errno::ETIMEDOUT => Ok(WaitStatus::TimedOut),
        e => Err(e),
    }
}

/// `FUTEX_WAKE`: wakes at most `n` waiters sleeping on `word` (in any process) and returns
/// how many were woken.
#[doc(alias("futex", "FUTEX_WAKE"))]
pub fn wake(word: &AtomicU32, n: i32) -> Result<usize, Errno> {
    // SAFETY: `word` is a valid, aligned 32-bit word; FUTEX_WAKE does not dereference the
    // timeout, uaddr2 or val3 arguments. Not private: see `wait`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n.max(1),
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc as usize)
    }
}

/// The futex in the loom build, as the kernel implements it minus timeouts: one table of
/// wait queues keyed by the word's address under one lock (the kernel's hash-bucket
/// lock), so that a waiter's compare-and-enqueue is atomic with respect to wakers. A
/// waiter leaves only when a wake picked it (no spurious returns, no timeouts): a lost
/// wake-up leaves it asleep, which loom reports as a deadlock.
#[cfg(shmkit_loom)]
mod model {
    use std::collections::{HashMap, HashSet, VecDeque};
    use std::sync::atomic::Ordering;

    use loom::sync::atomic::AtomicU32;
    use loom::sync::{Condvar, Mutex};

    use super::WaitStatus;

    #[derive(Default)]
    struct Table {
        next_ticket: u64,
        /// Address -> tickets of its sleepers, in arrival order.
        queues: HashMap<usize, VecDeque<u64>>,
        /// Tickets a wake picked that have not left yet.
        woken: HashSet<u64>,
    }

    loom::lazy_static! {
        static ref FUTEX: (Mutex<Table>, Condvar) = (Mutex::new(Table::default()), Condvar::new());
    }

    fn key(word: &AtomicU32) -> usize {
        word as *const AtomicU32 as usize
    }

    pub(super) fn wait(word: &AtomicU32, expected: u32) -> WaitStatus {
        let (lock, cv) = &*FUTEX;
        let mut t = lock.lock().unwrap_or_else(|e| e.into_inner());
        // The kernel reads the word under the bucket lock, after a full barrier.
        if word.load(Ordering::SeqCst) != expected {
            return WaitStatus::Woken; // EAGAIN
        }
        let me = t.next_ticket;
        t.next_ticket += 1;
        t.queues.entry(key(word)).or_default().push_back(me);
        while !t.woken.remove(&me) {
            t = cv.wait(t).unwrap_or_else(|e| e.into_inner());
        }
        WaitStatus::Woken
    }

    pub(super) fn wake(word: &AtomicU32, n: i32) -> usize {
        let (lock, cv) = &*FUTEX;
        let mut t = lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(q) = t.queues.get_mut(&key(word)) else {
            return 0;
        };
        let k = q.len().min(n.max(1) as usize);
        let picked: Vec<u64> = q.drain(..k).collect();
        t.woken.extend(picked);
        if k > 0 {
            cv.notify_all();
        }
        k
    }
}

#[cfg(all(test, not(shmkit_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn wake_reaches_a_sleeping_thread() {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            while w2.load(std::sync::atomic::Ordering::Acquire) == 0 {
                let _ = wait(&w2, 0, Some(Duration::from_secs(10))).unwrap();
            }
        });
        w.store(1, std::sync::atomic::Ordering::Release);
        wake(&w, 1).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn timespec_is_normalised_and_saturates() {
        let t = duration_to_timespec(Duration::new(3, 999_999_999));
        assert_eq!((t.tv_sec, t.tv_nsec), (3, 999_999_999));
        let t = duration_to_timespec(Duration::MAX);
        assert_eq!(t.tv_sec, libc::time_t::MAX);
        assert!(t.tv_nsec < 1_000_000_000);
    }
}
