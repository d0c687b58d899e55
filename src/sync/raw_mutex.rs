//! The robust futex word protocol behind [`Mutex<T>`](super::Mutex) and
//! [`MutexArray<T>`](super::MutexArray): [`RawRobustMutex`], four 32-bit words in shared
//! memory (lock word with the owner's liveness token and the `WAITERS` bit, consistency
//! word, owner pid and thread id), the uncontended CAS paths, the sleeping slow path and
//! the takeover of a dead owner's lock. The design and the trust model are in the
//! [`mutex` module docs](super::mutex); the typed guard and `LockResult` live there too.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::liveness::Liveness;

use super::futex::{self, WaitStatus};
use super::mutex::{LockResult, MutexGuard};
use super::{Deadline, Slices, thread_ids};

/// Resource label used by raw objects, which do not know their segment's name.
pub(super) const RAW_RESOURCE: &str = "robust mutex";

/// Somebody may sleep on the lock word: the unlocker must wake one.
pub(super) const WAITERS: u32 = 1 << 31;
/// The owner part of the lock word (a value above `TOKEN_MAX` is nobody's token).
pub(super) const OWNER_MASK: u32 = !WAITERS;
pub(super) const CONSISTENT: u32 = 0;
pub(super) const INCONSISTENT: u32 = 1;
pub(super) const UNRECOVERABLE: u32 = 2;
/// Read-only spins before a contended locker sleeps.
pub(super) const SPINS: u32 = 64;
/// Failed compare-and-swaps between deadline checks.
pub(super) const CAS_BETWEEN_CHECKS: u32 = 64;

/// A robust, process-shared mutex, to be placed in shared memory (see the
/// [module docs](super::mutex) for the design and trust model).
///
/// Use it directly as a slot inside your own segment layout: it needs
/// [`RawRobustMutex::SIZE`] bytes at an offset aligned to [`RawRobustMutex::ALIGN`]
/// (a multiple of 64 avoids false sharing with the data it guards), initialised once with
/// [`RawRobustMutex::init_at`] inside the segment's init closure (all-zero bytes are a
/// valid unlocked mutex too). Locking needs the segment's [`Liveness`]
/// ([`Segment::liveness`](crate::Segment::liveness)): it supplies this process's token and tells whether an owner
/// is alive.
///
/// ```
/// use shmkit::sync::{RawRobustMutex, LockResult};
/// use shmkit::{ElemInfo, Layout, Segment, segment::Kind};
/// let layout = Layout::new(Kind::Custom, ElemInfo::bytes(128));
/// let seg = Segment::anonymous(&layout, |payload| {
///     // SAFETY: the payload is 64-byte aligned, large enough, and not yet shared.
///     unsafe { RawRobustMutex::init_at(payload.as_mut_ptr().cast()) }
/// })?;
/// // SAFETY: initialised above; the segment outlives the reference.
/// let m = unsafe { &*(seg.payload_ptr() as *const RawRobustMutex) };
/// match m.lock(seg.liveness())? {
///     LockResult::Acquired(_guard) => {} // unlocked when the guard drops
///     LockResult::OwnerDied(mut g) => g.make_consistent()?,
/// }
/// # Ok::<(), shmkit::Error>(())
/// ```
#[repr(C)]
#[derive(Default)]
#[doc(alias = "pthread_mutex_t")]
pub struct RawRobustMutex {
    pub(super) word: AtomicU32,
    pub(super) consistency: AtomicU32,
    pub(super) owner_pid: AtomicU32,
    pub(super) owner_tid: AtomicU32,
}

impl std::fmt::Debug for RawRobustMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = self.owner();
        f.debug_struct("RawRobustMutex").field("owner", &o).finish()
    }
}

/// What the mutex words say about the owner (see [`RawRobustMutex::owner`]): a racy
/// snapshot for diagnostics; pids and thread ids are whatever the owner (or a peer)
/// wrote, never used for recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerInfo {
    /// The owner's liveness token (0: unlocked).
    pub token: u32,
    /// The owner's pid as it wrote it (0: unknown or unlocked).
    pub pid: u32,
    /// The owner's kernel thread id as it wrote it (0: unknown or unlocked).
    pub tid: u32,
    /// Somebody sleeps (or slept) waiting for it.
    pub waiters: bool,
    /// The owner's token is not held by any process: it died holding the lock and the
    /// next locker gets `OwnerDied`. Only [`RawRobustMutex::owner_status`] can tell (it
    /// asks the kernel); [`RawRobustMutex::owner`] leaves it false.
    pub owner_died: bool,
    /// A new owner received `OwnerDied` and has not (yet) called `make_consistent`.
    pub inconsistent: bool,
    /// The mutex was released without `make_consistent` and can never be locked again.
    pub unrecoverable: bool,
    /// The consistency word holds a value shmkit never writes (a corrupt peer).
    pub corrupt: bool,
}

impl OwnerInfo {
    /// Decodes the four words of a [`RawRobustMutex`] (lock word, consistency word,
    /// owner pid, owner tid) as read from memory or from a byte snapshot; `owner_died`
    /// is left false.
    pub(crate) fn from_words([w, c, pid, tid]: [u32; 4]) -> OwnerInfo {
        let token = w & OWNER_MASK;
        OwnerInfo {
            token,
            pid: if token == 0 { 0 } else { pid },
            tid: if token == 0 { 0 } else { tid },
            waiters: w & WAITERS != 0,
            owner_died: false,
            inconsistent: c == INCONSISTENT,
            unrecoverable: c == UNRECOVERABLE,
            corrupt: c > UNRECOVERABLE,
        }
    }
}

impl RawRobustMutex {
    /// Bytes a slot must have.
    pub const SIZE: usize = size_of::<RawRobustMutex>();
    /// Alignment a slot must have.
    pub const ALIGN: usize = align_of::<RawRobustMutex>();

    /// Initialises an unlocked, consistent mutex at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for writes of [`Self::SIZE`] bytes, aligned to [`Self::ALIGN`],
    /// and no other thread or process may use the memory during the call (run it in a
    /// segment's init closure). Initialising a mutex that is in use breaks its mutual
    /// exclusion (not memory safety: the words are plain integers).
    pub unsafe fn init_at(ptr: *mut RawRobustMutex) -> Result<()> {
        if ptr.is_null() || (ptr as usize) % Self::ALIGN != 0 {
            return Err(Error::invalid(
                RAW_RESOURCE,
                "init",
                "null or misaligned slot pointer",
            ));
        }
        // SAFETY: guaranteed by the caller (valid, aligned, exclusive).
        unsafe { ptr.write(RawRobustMutex::default()) };
        Ok(())
    }

    /// Acquires (`deadline` `None`: try only). Returns whether the data may be
    /// inconsistent (the caller hands out `OwnerDied`).
    #[inline(always)]
    pub(crate) fn lock_in(
        &self,
        live: &Liveness,
        deadline: Option<Deadline>,
        resource: &str,
    ) -> Result<bool> {
        self.lock_mode(live, deadline, resource, false)
    }

    /// [`lock_in`](Self::lock_in); with `reset`, an unrecoverable mutex is turned into an
    /// inconsistent one (reported as an owner death) instead of failing.
    #[inline(always)]
    pub(super) fn lock_mode(
        &self,
        live: &Liveness,
        deadline: Option<Deadline>,
        resource: &str,
        reset: bool,
    ) -> Result<bool> {
        let me = live.token()?;
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return self.acquired(false, reset, resource);
        }
        self.lock_slow(me, live, deadline, resource, reset)
    }

    #[cold]
    fn lock_slow(
        &self,
        me: u32,
        live: &Liveness,
        deadline: Option<Deadline>,
        resource: &str,
        reset: bool,
    ) -> Result<bool> {
        let op = if deadline.is_some() {
            "lock"
        } else {
            "try_lock"
        };
        let mut spins = 0;
        let mut failed_cas = 0;
        let mut slept = false;
        let mut slices = Slices::new();
        loop {
            let cur = self.word.load(Ordering::Relaxed);
            let owner = cur & OWNER_MASK;
            if owner == 0 {
                // Free (perhaps with a WAITERS bit left for sleepers): take it, keeping the
                // bit when others may sleep.
                let new = me | if slept { WAITERS } else { cur & WAITERS };
                if self
                    .word
                    .compare_exchange(cur, new, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return self.acquired(false, reset, resource);
                }
                failed_cas += 1;
                if failed_cas % CAS_BETWEEN_CHECKS == 0 {
                    self.check_deadline(deadline, resource, op)?;
                }
                continue;
            }
            if owner == me && self.owner_tid.load(Ordering::Relaxed) == thread_ids().1 {
                return Err(Error::os_with_advice(
                    resource,
                    op,
                    Errno::EDEADLK,
                    "this thread already holds the lock (robust mutexes are not recursive)",
                ));
            }
            let Some(d) = deadline else {
                // try_lock: a dead owner is still taken over (one liveness query).
                if owner != me && !live.token_alive(owner) {
                    if let Some(r) = self.take_over(cur, me, resource, reset) {
                        return r;
                    }
                    continue;
                }
                return Err(Error::WouldBlock {
                    resource: resource.to_owned(),
                    op,
                });
            };
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let Some(left) = d.remaining() else {
                return Err(timeout(resource, op, d));
            };
            if cur & WAITERS == 0
                && self
                    .word
                    .compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            slept = true;
            match futex::wait(&self.word, cur | WAITERS, Some(slices.next(left))) {
                Ok(WaitStatus::Woken) => {}
                Ok(WaitStatus::TimedOut) => {
                    // Nobody wakes the sleepers of a process that died: ask the kernel.
                    if owner != me && !live.token_alive(owner) {
                        if let Some(r) = self.take_over(cur | WAITERS, me, resource, reset) {
                            return r;
                        }
                    }
                }
                Err(e) => return Err(Error::os(resource, "futex(FUTEX_WAIT)", e)),
            }
        }
    }

    /// Takes the lock from a dead owner if the word still holds exactly `seen`.
    fn take_over(&self, seen: u32, me: u32, resource: &str, reset: bool) -> Option<Result<bool>> {
        self.word
            .compare_exchange(seen, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| self.acquired(true, reset, resource))
    }

    fn check_deadline(&self, d: Option<Deadline>, resource: &str, op: &'static str) -> Result<()> {
        match d {
            Some(d) if d.remaining().is_none() => Err(timeout(resource, op, d)),
            _ => Ok(()),
        }
    }

    /// Just acquired the lock word: record the owner, apply the consistency state.
    #[inline]
    fn acquired(&self, took_over: bool, reset: bool, resource: &str) -> Result<bool> {
        let (pid, tid) = thread_ids();
        self.owner_pid.store(pid, Ordering::Relaxed);
        self.owner_tid.store(tid, Ordering::Relaxed);
        let c = self.consistency.load(Ordering::Relaxed);
        if c == CONSISTENT && !took_over {
            return Ok(false);
        }
        self.acquired_slow(c, took_over, reset, resource)
    }

    #[cold]
    fn acquired_slow(&self, c: u32, took_over: bool, reset: bool, resource: &str) -> Result<bool> {
        match c {
            CONSISTENT if !took_over => Ok(false),
            // An owner died (maybe one that had itself received OwnerDied), or an earlier
            // owner released without repairing; or `reset` found it given up: in every
            // case this owner is told, and must repair.
            CONSISTENT | INCONSISTENT => {
                self.consistency.store(INCONSISTENT, Ordering::Relaxed);
                Ok(true)
            }
            UNRECOVERABLE if reset => {
                self.consistency.store(INCONSISTENT, Ordering::Relaxed);
                Ok(true)
            }
            UNRECOVERABLE => {
                self.release();
                Err(Error::Unrecoverable {
                    resource: resource.to_owned(),
                })
            }
            v => {
                self.release();
                Err(Error::corrupt(
                    resource,
                    format!("mutex consistency word {v}"),
                ))
            }
        }
    }

    /// Releases the lock word (the caller owns it) and wakes one sleeper if flagged.
    #[inline]
    fn release(&self) {
        self.owner_tid.store(0, Ordering::Relaxed);
        self.owner_pid.store(0, Ordering::Relaxed);
        let old = self.word.swap(0, Ordering::Release);
        if old & WAITERS != 0 {
            // A failed wake only costs a sleeper the rest of its slice.
            let _ = futex::wake(&self.word, 1);
        }
    }

    /// Whether the lock word names this process's token and the owner thread id is the
    /// calling thread's.
    pub(crate) fn held_by_caller(&self, live: &Liveness) -> bool {
        live.token().is_ok_and(|me| {
            self.word.load(Ordering::Relaxed) & OWNER_MASK == me
                && self.owner_tid.load(Ordering::Relaxed) == thread_ids().1
        })
    }

    /// Whether the lock word names this process's token (no system call).
    #[inline]
    pub(super) fn owned_by_this_process(&self, live: &Liveness) -> Option<u32> {
        // A token not drawn in this process (a forked child that never locked) owns
        // nothing.
        let me = live.token_if_drawn()?;
        (self.word.load(Ordering::Relaxed) & OWNER_MASK == me).then_some(me)
    }

    /// Unlocks if this process owns the lock (a guard copied into a forked child does
    /// not: the child's token differs, and the parent's lock is left alone). With
    /// `unrepaired`, (re)marks the data inconsistent first, so that the next locker gets
    /// `OwnerDied`. Never panics, never a system call unless somebody sleeps.
    #[inline]
    pub(crate) fn unlock_in(&self, live: &Liveness, unrepaired: bool) {
        let Some(me) = self.owned_by_this_process(live) else {
            return;
        };
        if unrepaired {
            self.consistency.store(INCONSISTENT, Ordering::Relaxed);
        }
        // The thread id must go before the word is released (a thread of this process
        // that locks next must not take a stale id for its own: false EDEADLK); the pid
        // may stay (`owner()` ignores it once the word is 0).
        self.owner_tid.store(0, Ordering::Relaxed);
        if self
            .word
            .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        self.unlock_contended(me);
    }

    #[cold]
    fn unlock_contended(&self, me: u32) {
        if self
            .word
            .compare_exchange(me | WAITERS, 0, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            // A failed wake only costs a sleeper the rest of its slice.
            let _ = futex::wake(&self.word, 1);
        }
        // Anything else: not ours (a forked child's copy of a guard, or a peer wrote the
        // word); leave it.
    }

    pub(crate) fn make_consistent_in(&self) {
        self.consistency.store(CONSISTENT, Ordering::Relaxed);
    }

    /// Locks, blocking. See [`LockResult`] for the owner-died case. `live` is the
    /// liveness context of the segment holding this mutex ([`Segment::liveness`](crate::Segment::liveness)).
    #[inline]
    #[doc(alias = "pthread_mutex_lock")]
    pub fn lock<'a>(&'a self, live: &'a Liveness) -> Result<LockResult<MutexGuard<'a, ()>>> {
        let died = self.lock_in(live, Some(Deadline::after(None)), RAW_RESOURCE)?;
        Ok(self.guard(live, died))
    }

    /// Locks if free now (or if its owner died); [`Error::WouldBlock`] otherwise.
    #[inline]
    #[doc(alias = "pthread_mutex_trylock")]
    pub fn try_lock<'a>(&'a self, live: &'a Liveness) -> Result<LockResult<MutexGuard<'a, ()>>> {
        let died = self.lock_in(live, None, RAW_RESOURCE)?;
        Ok(self.guard(live, died))
    }

    /// Locks, waiting at most `timeout` (monotonic); [`Error::Timeout`] after.
    #[inline]
    #[doc(alias = "pthread_mutex_timedlock")]
    pub fn lock_timeout<'a>(
        &'a self,
        live: &'a Liveness,
        timeout: Duration,
    ) -> Result<LockResult<MutexGuard<'a, ()>>> {
        let died = self.lock_in(live, Some(Deadline::after(Some(timeout))), RAW_RESOURCE)?;
        Ok(self.guard(live, died))
    }

    /// Makes an *unrecoverable* mutex usable again, in place: locks like
    /// [`lock_timeout`](Self::lock_timeout) (so nobody else is inside while it changes
    /// state), and if the mutex had been given up ([`MutexGuard::mark_unrecoverable`], or a
    /// peer wrote that state), turns it into *inconsistent* and returns
    /// [`LockResult::OwnerDied`]: repair the data, then
    /// [`make_consistent`](MutexGuard::make_consistent) (dropping the guard unrepaired
    /// leaves it inconsistent, not unrecoverable). On a mutex that was not unrecoverable
    /// it is exactly `lock_timeout`. A consistency word shmkit never writes is still
    /// [`Error::Corrupt`].
    ///
    /// ```
    /// use shmkit::sync::{Mutex, LockResult};
    /// let m = Mutex::<u32>::anonymous(5)?;
    /// m.lock()?.into_guard().mark_unrecoverable(); // give up, POSIX style
    /// assert!(matches!(m.lock(), Err(shmkit::Error::Unrecoverable { .. })));
    /// let t = std::time::Duration::from_secs(1);
    /// match m.reset_unrecoverable(t)? {
    ///     LockResult::OwnerDied(mut g) => { *g = 0; g.make_consistent()?; }
    ///     LockResult::Acquired(_) => unreachable!(),
    /// }
    /// assert_eq!(*m.lock_or_repair(|_| ())?, 0);
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    pub fn reset_unrecoverable<'a>(
        &'a self,
        live: &'a Liveness,
        timeout: Duration,
    ) -> Result<LockResult<MutexGuard<'a, ()>>> {
        let died = self.lock_mode(
            live,
            Some(Deadline::after(Some(timeout))),
            RAW_RESOURCE,
            true,
        )?;
        Ok(self.guard(live, died))
    }

    #[inline]
    fn guard<'a>(&'a self, live: &'a Liveness, died: bool) -> LockResult<MutexGuard<'a, ()>> {
        // SAFETY: the lock is held by this thread (just acquired); a dangling pointer is
        // valid for the zero-sized ().
        let g = unsafe { MutexGuard::new(self, live, NonNull::dangling(), died, RAW_RESOURCE) };
        LockResult::from_guard(g, died)
    }

    /// Reads the words without locking (for diagnostics). Racy: the answer may be stale
    /// by the time it is returned. `owner_died` is left false: see
    /// [`owner_status`](Self::owner_status).
    pub fn owner(&self) -> OwnerInfo {
        OwnerInfo::from_words([
            self.word.load(Ordering::Relaxed),
            self.consistency.load(Ordering::Relaxed),
            self.owner_pid.load(Ordering::Relaxed),
            self.owner_tid.load(Ordering::Relaxed),
        ])
    }

    /// Test helper: leaves a lock word naming a token nobody holds (what a process that
    /// died holding the lock leaves behind).
    #[cfg(test)]
    pub(crate) fn simulate_dead_owner(&self) {
        self.word
            .store(crate::liveness::TOKEN_MAX, Ordering::SeqCst);
    }

    /// [`owner`](Self::owner), plus whether the owner's token is still held (one
    /// `fcntl(F_OFD_GETLK)` through `live`).
    pub fn owner_status(&self, live: &Liveness) -> OwnerInfo {
        let mut o = self.owner();
        o.owner_died = o.token != 0 && !live.token_alive(o.token);
        o
    }
}

fn timeout(resource: &str, op: &'static str, d: Deadline) -> Error {
    Error::Timeout {
        resource: resource.to_owned(),
        op,
        timeout: d.total(),
    }
}
