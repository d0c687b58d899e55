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

#[cfg(test)]
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
