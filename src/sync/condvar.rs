//! [`Condvar`]: a process-shared condition variable on a futex sequence word, used with
//! the robust [`Mutex`](super::Mutex).
//!
//! # Why not glibc's
//! glibc's `PTHREAD_PROCESS_SHARED` condvar keeps per-waiter group state inside the
//! `pthread_cond_t`; a waiter killed at the wrong moment leaves it inconsistent, and a
//! later `pthread_cond_broadcast` can block forever (glibc bug 21422). This one keeps no
//! per-waiter state that anybody waits for.
//!
//! # Design
//! Two words: `seq`, bumped by every notify, and `waiters`, the number of registered
//! waiters (only used to skip the wake system call when nobody waits).
//! - `wait`: (holding the mutex) `waiters += 1`, read `seq`, unlock the mutex,
//!   `FUTEX_WAIT(seq, read value)`, `waiters -= 1`, relock.
//! - `notify_*`: if `waiters == 0` return; else `seq += 1`, `FUTEX_WAKE(seq, 1 or all)`.
//!
//! A notifier that changed the condition under the mutex runs after the waiter released
//! it, so it sees `waiters > 0` and bumps `seq` after the waiter read it: the waiter's
//! `FUTEX_WAIT` either finds `seq` changed (returns at once) or is queued before the
//! wake. No wake-up is lost. Wake-ups may be spurious (as with every condvar): use
//! [`Condvar::wait_while`] / [`Condvar::wait_timeout_while`] or loop.
//!
//! loom checks this handshake on this code (`sync::loom`: `RawCondvar`'s waiter half and
//! its notifies, with loom's atomics, its model of the futex and a loom mutex in place of
//! the robust one, whose lock word `sync::model` checks).
//!
//! # Robustness
//! A waiter killed while waiting leaves `waiters` one too high: later notifies make a
//! harmless wake system call; nothing blocks. A mutex holder that dies is reported by the
//! relock as [`LockResult::OwnerDied`](super::LockResult), as with `lock`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::segment::{Kind, Segment};

use super::Deadline;
// loom's atomics in the loom build, where `super::loom` model-checks this code.
use super::futex::atomic::AtomicU32;
use super::futex::{self, WaitStatus};
use super::mutex::{LockResult, MutexGuard};

/// The condition variable in shared memory: two 32-bit words (8 bytes, align 4); all
/// zeros is a valid fresh condvar.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawCondvar {
    seq: AtomicU32,
    waiters: AtomicU32,
}

/// Whether a timed wait ended by timing out (like `std::sync::WaitTimeoutResult`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait timed out.
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl RawCondvar {
    /// Bytes a slot must have.
    pub const SIZE: usize = size_of::<RawCondvar>();
    /// Alignment a slot must have.
    pub const ALIGN: usize = align_of::<RawCondvar>();

    /// Initialises a condvar at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for writes of [`Self::SIZE`] bytes, aligned to [`Self::ALIGN`],
    /// and not in use by anyone else during the call.
    pub unsafe fn init_at(ptr: *mut RawCondvar) {
        // SAFETY: guaranteed by the caller.
        unsafe { ptr.write(RawCondvar::default()) }
    }

    /// Releases the guard's mutex, sleeps until notified (or `timeout`), relocks.
    /// Returns (timed out, owner died during relock).
    fn wait_once<T: ?Sized>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        timeout: Option<Duration>,
    ) -> Result<(bool, bool)> {
        if !guard.is_consistent() {
            // Sleeping with unrepaired data would hand the repair to whoever locks next:
            // return at once (a spurious wake-up) and let the caller repair first.
            return Ok((false, true));
        }
        let slept = self.sleep_unlocked(|| guard.lock.unlock_in(guard.live, false), timeout);
        // Relock before anything else: the guard must hold the lock when we return, even
        // on error paths (it unlocks on drop).
        let relock = guard
            .lock
            .lock_in(guard.live, Some(Deadline::after(None)), guard.resource);
        let died = match relock {
            Ok(d) => d,
            Err(e) => {
                // Not re-acquired (unrecoverable): the guard must not unlock on drop.
                return Err(e);
            }
        };
        if died {
            guard.mark_inconsistent();
        }
        match slept {
            Ok(WaitStatus::Woken) => Ok((false, died)),
            Ok(WaitStatus::TimedOut) => Ok((true, died)),
            Err(e) => Err(Error::os(guard.resource, "futex(FUTEX_WAIT)", e)),
        }
    }

    /// The waiter's half of the handshake, from holding the mutex to before relocking it:
    /// registers, reads `seq`, releases the mutex (`unlock`), sleeps while `seq` is
    /// unchanged (at most `timeout`), deregisters. Any mutex works with it (the loom
    /// models, `super::loom`, run it with loom's).
    pub(crate) fn sleep_unlocked(
        &self,
        unlock: impl FnOnce(),
        timeout: Option<Duration>,
    ) -> std::result::Result<WaitStatus, Errno> {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let seen = self.seq.load(Ordering::SeqCst);
        unlock();
        let slept = futex::wait_on(&self.seq, seen, timeout);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        slept
    }

    /// Wakes one waiter (no system call if none is registered).
    #[doc(alias = "pthread_cond_signal")]
    pub fn notify_one(&self) {
        if self.waiters.load(Ordering::SeqCst) != 0 {
            self.seq.fetch_add(1, Ordering::SeqCst);
            let _ = futex::wake_on(&self.seq, 1);
        }
    }

    /// Wakes every waiter in every process (no system call if none is registered).
    #[doc(alias = "pthread_cond_broadcast")]
    pub fn notify_all(&self) {
        if self.waiters.load(Ordering::SeqCst) != 0 {
            self.seq.fetch_add(1, Ordering::SeqCst);
            let _ = futex::wake_on(&self.seq, i32::MAX);
        }
    }

    /// Registered waiters (including any that died while waiting), for diagnostics.
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Waits for a notification: unlocks the guard's mutex, sleeps, relocks.
    ///
    /// A guard that is not consistent (an `OwnerDied` not yet repaired) is handed back at
    /// once as `OwnerDied`, without unlocking: repair first (releasing it unrepaired would
    /// pass the repair to whoever locks next).
    ///
    /// `Err` means the mutex could not be re-acquired (e.g. [`Error::Unrecoverable`]);
    /// the guard is then consumed without unlocking.
    #[doc(alias = "pthread_cond_wait")]
    pub fn wait<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
    ) -> Result<LockResult<MutexGuard<'a, T>>> {
        let (g, _) = self.wait_timeout_inner(guard, None)?;
        Ok(g)
    }

    /// [`wait`](Self::wait) for at most `timeout`.
    ///
    /// As with `std`, the timeout bounds the sleep; re-acquiring the mutex afterwards is
    /// not bounded. A holder that *died* is reported at once (`OwnerDied`); only a live
    /// holder that never unlocks can delay the return.
    #[doc(alias("pthread_cond_timedwait", "pthread_cond_clockwait"))]
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> Result<(LockResult<MutexGuard<'a, T>>, WaitTimeoutResult)> {
        self.wait_timeout_inner(guard, Some(timeout))
    }

    fn wait_timeout_inner<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        timeout: Option<Duration>,
    ) -> Result<(LockResult<MutexGuard<'a, T>>, WaitTimeoutResult)> {
        match self.wait_once(&mut guard, timeout) {
            Ok((timed_out, died)) => Ok((wrap(guard, died), WaitTimeoutResult(timed_out))),
            Err(e) => {
                if !guard.lock.held_by_caller(guard.live) {
                    std::mem::forget(guard);
                }
                Err(e)
            }
        }
    }

    /// Waits while `condition` returns true (std's `wait_while`). Returns early with
    /// `OwnerDied` (condition not re-checked) if a mutex holder died, so the caller can
    /// repair first.
    pub fn wait_while<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        condition: impl FnMut(&mut T) -> bool,
    ) -> Result<LockResult<MutexGuard<'a, T>>> {
        Ok(self.wait_while_inner(guard, None, condition)?.0)
    }

    /// [`wait_while`](Self::wait_while) for at most `timeout` in total (std's
    /// `wait_timeout_while`): on timeout the guard comes back with `timed_out()` true
    /// and the condition still true.
    pub fn wait_timeout_while<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
        condition: impl FnMut(&mut T) -> bool,
    ) -> Result<(LockResult<MutexGuard<'a, T>>, WaitTimeoutResult)> {
        self.wait_while_inner(guard, Some(timeout), condition)
    }

    fn wait_while_inner<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        timeout: Option<Duration>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> Result<(LockResult<MutexGuard<'a, T>>, WaitTimeoutResult)> {
        let deadline = Deadline::after(timeout);
        if !guard.is_consistent() {
            return Ok((wrap(guard, true), WaitTimeoutResult(false)));
        }
        while condition(&mut *guard) {
            let Some(left) = deadline.remaining() else {
                return Ok((wrap(guard, false), WaitTimeoutResult(true)));
            };
            match self.wait_once(&mut guard, left) {
                Ok((_, true)) => return Ok((wrap(guard, true), WaitTimeoutResult(false))),
                Ok((_, false)) => {}
                Err(e) => {
                    if !guard.lock.held_by_caller(guard.live) {
                        std::mem::forget(guard);
                    }
                    return Err(e);
                }
            }
        }
        let consistent = guard.is_consistent();
        Ok((wrap(guard, !consistent), WaitTimeoutResult(false)))
    }
}

fn wrap<T: ?Sized>(g: MutexGuard<'_, T>, died: bool) -> LockResult<MutexGuard<'_, T>> {
    if died || !g.is_consistent() {
        LockResult::OwnerDied(g)
    } else {
        LockResult::Acquired(g)
    }
}

/// A process-shared condition variable in its own segment, used with any shmkit
/// [`Mutex`](super::Mutex) / [`MutexArray`](super::MutexArray) (std's `Condvar` API,
/// robust results).
///
/// ```
/// use shmkit::sync::{Condvar, Mutex};
/// use std::time::Duration;
/// let m = Mutex::<u32>::anonymous(0)?;
/// let cv = Condvar::anonymous()?;
/// let g = m.lock()?.into_guard();
/// // Nobody notifies: the bounded wait times out and hands the guard back.
/// let (g, res) = cv.wait_timeout_while(g, Duration::from_millis(5), |v| *v == 0)?;
/// assert!(res.timed_out());
/// drop(g);
/// cv.notify_all(); // no waiter: no system call
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Condvar {
    seg: Segment,
}

segment_object_handle!(
    Condvar,
    RawCondvar,
    Kind::Condvar,
    0x636f_6e64_0001,
    "condition variable"
);

impl Condvar {
    /// See [`RawCondvar::wait`].
    #[doc(alias = "pthread_cond_wait")]
    pub fn wait<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
    ) -> Result<LockResult<MutexGuard<'a, T>>> {
        self.raw().wait(guard)
    }

    /// See [`RawCondvar::wait_timeout`].
    #[doc(alias("pthread_cond_timedwait", "pthread_cond_clockwait"))]
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> Result<(LockResult<MutexGuard<'a, T>>, WaitTimeoutResult)> {
        self.raw().wait_timeout(guard, timeout)
    }

    /// See [`RawCondvar::wait_while`].
    pub fn wait_while<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        condition: impl FnMut(&mut T) -> bool,
    ) -> Result<LockResult<MutexGuard<'a, T>>> {
        self.raw().wait_while(guard, condition)
    }

    /// See [`RawCondvar::wait_timeout_while`].
    pub fn wait_timeout_while<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
        condition: impl FnMut(&mut T) -> bool,
    ) -> Result<(LockResult<MutexGuard<'a, T>>, WaitTimeoutResult)> {
        self.raw().wait_timeout_while(guard, timeout, condition)
    }

    /// Wakes one waiter.
    #[doc(alias = "pthread_cond_signal")]
    pub fn notify_one(&self) {
        self.raw().notify_one()
    }

    /// Wakes every waiter.
    #[doc(alias = "pthread_cond_broadcast")]
    pub fn notify_all(&self) {
        self.raw().notify_all()
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}

#[cfg(all(test, not(shmkit_loom)))]
mod tests {
    use super::*;
    use crate::sync::Mutex;
    use std::sync::Arc;

    #[test]
    fn waiting_with_an_unrepaired_guard_returns_it_without_unlocking() {
        let m = Mutex::<u32>::anonymous(0).unwrap();
        m.raw().simulate_dead_owner();
        let cv = Condvar::anonymous().unwrap();
        let g = m.lock().unwrap().into_guard();
        let (r, t) = cv.wait_timeout(g, Duration::from_secs(20)).unwrap();
        assert!(r.owner_died() && !t.timed_out());
        let mut g = r.into_guard();
        g.make_consistent().unwrap();
        drop(g);
        assert!(!m.lock().unwrap().owner_died());
    }

    #[test]
    fn notify_all_wakes_every_thread() {
        let m = Arc::new(Mutex::<u32>::anonymous(0).unwrap());
        let cv = Arc::new(Condvar::anonymous().unwrap());
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let (m, cv) = (m.clone(), cv.clone());
                std::thread::spawn(move || {
                    let g = m.lock().unwrap().into_guard();
                    let (g, r) = cv
                        .wait_timeout_while(g, Duration::from_secs(20), |v| *v == 0)
                        .unwrap();
                    assert!(!r.timed_out());
                    assert_eq!(*g.into_guard(), 1);
                })
            })
            .collect();
        // Wait (bounded) until all three are registered, then flip and notify.
        let start = std::time::Instant::now();
        while cv.raw().waiters() < 3 {
            assert!(start.elapsed() < Duration::from_secs(20));
            std::thread::yield_now();
        }
        *m.lock().unwrap().into_guard() = 1;
        cv.notify_all();
        for h in hs {
            h.join().unwrap();
        }
    }
}
