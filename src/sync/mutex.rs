//! The robust, process-shared mutex: [`RawRobustMutex`] (the object in shared memory),
//! [`Mutex<T>`] (one `T` guarded by it, in its own segment) and [`MutexArray<T>`]
//! (`[T; n]` guarded by it): Python's `Value(lock=True)` / `Array(lock=True)` with
//! `get_lock()`, made robust. The futex word protocol itself (locking, sleeping, the
//! takeover of a dead owner's lock) is in [`raw_mutex`](super::raw_mutex); this module
//! has the typed views, their guard and [`LockResult`].
//!
//! # Design
//! shmkit's own futex mutex (not glibc's `pthread_mutex_t`, whose robust-list links live
//! in the shared object: a peer could make our unlock write through pointers it chose,
//! make glibc abort on states it did not create, and read our TLS addresses). Its shared
//! state is four 32-bit integers:
//! - the **lock word**: 0 when free, else the owner's liveness token (30 bits, see
//!   [`crate::liveness`]) | `WAITERS` (bit 31, somebody may sleep on the word);
//! - the **consistency word**: consistent, inconsistent (an owner died, the new owner
//!   has not called [`MutexGuard::make_consistent`]) or unrecoverable; any other value is
//!   [`Error::Corrupt`];
//! - the owner's **pid** and **thread id**, written after acquiring: diagnostics, and
//!   "this thread already holds it" (with the token) so that re-locking is `EDEADLK`
//!   instead of a self-deadlock. A peer forging them can only cause that error or a wrong
//!   diagnostic.
//!
//! Locking is one CAS (0 → token) and unlocking one CAS (token → 0) when uncontended: no
//! system call, no allocation. A contended locker spins briefly, sets `WAITERS` and
//! sleeps with `FUTEX_WAIT` in slices (1 ms doubling to 32 ms, never past its deadline);
//! an unlock that finds `WAITERS` wakes one sleeper. Between slices a sleeper asks the
//! kernel whether the owner's token is still held ([`Liveness::token_alive`]: one
//! `fcntl(F_OFD_GETLK)`). A dead owner's lock is taken over with a CAS on the exact word
//! and handed out as [`LockResult::OwnerDied`]: the guard **and** the news. The data may
//! be half updated; the new owner repairs it and calls [`MutexGuard::make_consistent`]
//! ([`Mutex::lock_or_repair`] does both in one call: the form to use by default).
//!
//! # No dead end
//! A guard dropped *without* `make_consistent` (e.g. after [`LockResult::into_guard`])
//! leaves the mutex **inconsistent but recoverable**: the next locker gets `OwnerDied`
//! again, and so on until somebody repairs. Nobody silently builds on half-updated
//! data, and nobody is locked out because one process ignored the news. This departs
//! from POSIX robust mutexes (there, unlocking without `pthread_mutex_consistent` makes
//! the mutex `ENOTRECOVERABLE` for good): shmkit's mutex is not a `pthread_mutex_t`
//! and nothing outside shmkit reads its words, so there is no compatibility to keep, and
//! a permanent failure would only trade "someone ignored the news" for "everyone is
//! down until the segment is recreated".
//!
//! The POSIX state still exists for those who want it: [`MutexGuard::mark_unrecoverable`]
//! gives up explicitly (every later lock fails with [`Error::Unrecoverable`]), and
//! [`Mutex::reset_unrecoverable`] / [`RawRobustMutex::reset_unrecoverable`] (`shmkit
//! mutex repair` on the command line) undo it in place: they acquire the lock word like
//! any locker (so nobody else is inside), turn *unrecoverable* into *inconsistent* and
//! hand out an `OwnerDied` guard to repair the data with.
//!
//! # What "dies" means
//! Ownership is per **process** (its token on this segment), not per thread: a process
//! that dies (killed, crashed, exited) holding the lock is detected by the next locker
//! within one slice. A *thread* that exits holding the lock without unwinding (e.g.
//! `mem::forget` of the guard) is **not** detected while its process lives (a thread
//! that panics unwinds and drops the guard, which unlocks). Threads of one process
//! exclude each other normally (the owner thread id tells them apart for `EDEADLK`).
//!
//! # Trust
//! Whatever a peer writes into the four words, a call gives at worst an error
//! (`Corrupt`, `Unrecoverable`, `EDEADLK`), a spurious [`LockResult::OwnerDied`] (a word
//! naming a token that nobody holds is taken over) or the timeout the caller asked for:
//! never a crash, never a write through a pointer, never a hang past a requested
//! timeout, never an address of ours in shared memory. A peer that ignores the lock can
//! of course break mutual exclusion; the data is `Pod`, so it only yields some bit
//! pattern.
//!
//! # fork
//! A forked child draws its own token (see [`crate::liveness`]). A guard copied into the
//! child by `fork` does not own the lock there: dropping it leaves the parent's lock
//! alone. If another thread of the parent holds the lock at the fork, the child waits
//! for the parent to unlock (or to die: then it gets `OwnerDied`).
//!
//! Data is `Pod`: any bit pattern is a valid `T`, so even a torn update is memory-safe to
//! read; only its *meaning* needs repair.
//!
//! # References
//! - futex(2), futex(7); Ulrich Drepper, "Futexes Are Tricky" (2011) (the `WAITERS` bit);
//!   fcntl(2) open file description locks.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::liveness::Liveness;
use crate::segment::{ElemInfo, Kind, Layout, Segment, SegmentOptions};

use super::Deadline;
use super::raw_mutex::UNRECOVERABLE;
pub use super::raw_mutex::{OwnerInfo, RawRobustMutex};

/// The outcome of acquiring a robust lock: the guard, and whether the previous owner died
/// while holding it (like iceoryx2's `LockAcquiredButOwnerDied`).
///
/// The easy, safe shape is [`or_repair`](LockResult::or_repair) (or
/// [`Mutex::lock_or_repair`]): the repair closure runs only after a death.
/// [`into_guard`](LockResult::into_guard) discards the news: the expert path.
#[derive(Debug)]
#[must_use = "an OwnerDied guard must be repaired and made consistent: see `or_repair`"]
pub enum LockResult<G> {
    /// Acquired normally.
    Acquired(G),
    /// Acquired, but an owner died holding the lock and nobody has repaired since: the
    /// protected data may be half-updated. Repair it, then call `make_consistent()` on
    /// the guard; dropping the guard without doing so leaves the data marked inconsistent
    /// and the next locker gets `OwnerDied` again.
    OwnerDied(G),
}

impl<G> LockResult<G> {
    pub(super) fn from_guard(g: G, died: bool) -> Self {
        if died {
            LockResult::OwnerDied(g)
        } else {
            LockResult::Acquired(g)
        }
    }

    /// The guard, whichever way it was acquired: the expert path, which **drops the
    /// news** that an owner died. The mutex does not forget: unless you call
    /// [`MutexGuard::make_consistent`], it stays inconsistent and the next locker gets
    /// `OwnerDied` in turn. Prefer [`or_repair`](LockResult::or_repair); use this when
    /// the data cannot be inconsistent (e.g. `Mutex<()>` used as a bare lock, or a
    /// single-word value written in one store) or after checking
    /// [`owner_died`](Self::owner_died) yourself.
    #[inline]
    pub fn into_guard(self) -> G {
        match self {
            LockResult::Acquired(g) | LockResult::OwnerDied(g) => g,
        }
    }

    /// True for [`LockResult::OwnerDied`].
    #[inline]
    pub fn owner_died(&self) -> bool {
        matches!(self, LockResult::OwnerDied(_))
    }

    /// Applies `f` to the guard, keeping the variant.
    #[inline]
    pub fn map<H>(self, f: impl FnOnce(G) -> H) -> LockResult<H> {
        match self {
            LockResult::Acquired(g) => LockResult::Acquired(f(g)),
            LockResult::OwnerDied(g) => LockResult::OwnerDied(f(g)),
        }
    }
}

impl<'a, T: ?Sized> LockResult<MutexGuard<'a, T>> {
    /// The guard; after an owner death, first runs `repair` on the data and marks it
    /// consistent. The safe way out of a `LockResult`.
    ///
    /// ```
    /// use shmkit::sync::{Mutex, RawRobustMutex};
    /// let m = Mutex::<[u64; 2]>::anonymous([0, 0])?;
    /// // Invariant: both halves are equal. A holder killed between the two writes breaks
    /// // it; the next locker restores it.
    /// let mut g = m.lock()?.or_repair(|v| v[1] = v[0]);
    /// g[0] += 1;
    /// g[1] += 1;
    /// // The raw lock guards `()`: repair whatever it protects in your own layout.
    /// let raw: &RawRobustMutex = m.raw();
    /// drop(g);
    /// let _g = raw.lock(m.segment().liveness())?.or_repair(|()| { /* fix your data */ });
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    #[inline]
    pub fn or_repair(self, repair: impl FnOnce(&mut T)) -> MutexGuard<'a, T> {
        match self {
            LockResult::Acquired(g) => g,
            LockResult::OwnerDied(g) => repair_cold(g, repair),
        }
    }
}

#[cold]
fn repair_cold<'a, T: ?Sized>(
    mut g: MutexGuard<'a, T>,
    repair: impl FnOnce(&mut T),
) -> MutexGuard<'a, T> {
    repair(&mut g);
    g.mark_consistent();
    g
}

/// Proof that this thread holds a robust mutex, with access to the data it guards
/// (`T` may be a slice, `()` for a bare lock). Unlocks on drop.
///
/// Not `Send`: the owner thread id recorded in the mutex is the locking thread's.
#[must_use = "if unused the Mutex unlocks at once"]
pub struct MutexGuard<'a, T: ?Sized> {
    pub(crate) lock: &'a RawRobustMutex,
    pub(crate) live: &'a Liveness,
    data: NonNull<T>,
    /// False from an owner-died acquisition until `make_consistent`.
    consistent: bool,
    pub(crate) resource: &'a str,
    _not_send: PhantomData<*const ()>,
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// # Safety
    /// The calling thread holds `lock`; `data` is valid for reads and writes for `'a` and
    /// only accessed under `lock`.
    #[inline]
    pub(super) unsafe fn new(
        lock: &'a RawRobustMutex,
        live: &'a Liveness,
        data: NonNull<T>,
        died: bool,
        resource: &'a str,
    ) -> Self {
        MutexGuard {
            lock,
            live,
            data,
            consistent: !died,
            resource,
            _not_send: PhantomData,
        }
    }

    /// Marks the state consistent after an owner died (the data has been repaired).
    /// A no-op when it already is. Never fails (the `Result` is kept for API stability).
    #[doc(alias = "pthread_mutex_consistent")]
    pub fn make_consistent(&mut self) -> Result<()> {
        self.mark_consistent();
        Ok(())
    }

    fn mark_consistent(&mut self) {
        if !self.consistent {
            self.lock.make_consistent_in();
            self.consistent = true;
        }
    }

    /// Gives up on the data, POSIX style: unlocks and leaves the mutex *unrecoverable*,
    /// so that every later lock fails with [`Error::Unrecoverable`] until somebody
    /// calls [`Mutex::reset_unrecoverable`] (or `shmkit mutex repair`). For the rare
    /// case where nobody must touch the data again before a human looks; merely
    /// dropping an unrepaired guard already keeps the next locker informed.
    pub fn mark_unrecoverable(self) {
        let g = std::mem::ManuallyDrop::new(self);
        if g.lock.owned_by_this_process(g.live).is_some() {
            g.lock.consistency.store(UNRECOVERABLE, Ordering::Relaxed);
        }
        g.lock.unlock_in(g.live, false);
    }

    /// False while an owner-died state has not been repaired.
    pub fn is_consistent(&self) -> bool {
        self.consistent
    }

    /// Called by the condvar after re-acquiring: records an owner death seen then.
    pub(crate) fn mark_inconsistent(&mut self) {
        self.consistent = false;
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: constructor contract: valid while the lock is held, which it is.
        unsafe { self.data.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref; &mut self gives exclusive access within this process and
        // the lock gives it across processes.
        unsafe { self.data.as_mut() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // An unrepaired guard leaves the data marked inconsistent: the next locker gets
        // OwnerDied (see the module docs, "No dead end").
        self.lock.unlock_in(self.live, !self.consistent);
    }
}

impl<T: ?Sized + std::fmt::Debug> std::fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutexGuard")
            .field("data", &&**self)
            .field("consistent", &self.consistent)
            .finish()
    }
}

/// The lock of any mutex segment ([`Mutex<T>`] or [`MutexArray<T>`], whatever `T`), for
/// tools that do not know the element type (`shmkit mutex repair`). Checks kind, format
/// tag, lock size and bounds.
///
/// ```
/// let m = shmkit::sync::Mutex::<[u8; 3]>::anonymous([0; 3])?;
/// let raw = shmkit::sync::mutex::raw_mutex(m.segment())?;
/// assert_eq!(raw.owner().token, 0);
/// # Ok::<(), shmkit::Error>(())
/// ```
pub fn raw_mutex(seg: &Segment) -> Result<&RawRobustMutex> {
    let raw = &seg.header().raw;
    if seg.header().kind() != Kind::Mutex {
        return Err(Error::Mismatch {
            resource: seg.resource(),
            what: "kind",
            expected: Kind::Mutex.name(),
            found: seg.header().kind().name(),
        });
    }
    if !format_ok(seg.header()) {
        return Err(Error::Mismatch {
            resource: seg.resource(),
            what: "mutex format",
            expected: format!(
                "tag {MUTEX_PARAMS_TAG:#x}, lock of {} bytes",
                RawRobustMutex::SIZE
            ),
            found: format!("tag {:#x}, lock of {} bytes", raw.params[0], raw.params[1]),
        });
    }
    // SAFETY: a mutex segment of this format starts with a RawRobustMutex (four atomics,
    // any bit pattern valid) at the 64-byte aligned payload (checked in bounds above); it
    // lives as long as the borrowed segment.
    Ok(unsafe { &*(seg.payload_ptr() as *const RawRobustMutex) })
}

/// Whether a mutex segment's header describes shmkit's lock (format tag, lock size) and
/// a payload that holds it.
pub(super) fn format_ok(h: &crate::segment::Header) -> bool {
    h.raw.params[0] == MUTEX_PARAMS_TAG
        && h.raw.params[1] == RawRobustMutex::SIZE as u64
        && h.raw.payload_len >= RawRobustMutex::SIZE as u64
}

/// Format tag in `Layout::params[0]` of mutex segments.
/// v2 is shmkit's futex mutex (v1 was glibc's robust `pthread_mutex_t`).
pub(crate) const MUTEX_PARAMS_TAG: u64 = 0x6d75_7478_0002; // "mutx" v2

/// Offset of the data after the lock in a mutex segment's payload.
const fn data_offset(align: usize) -> usize {
    let a = if align > 64 { align } else { 64 };
    RawRobustMutex::SIZE.next_multiple_of(a)
}

fn mutex_layout<T: Pod>(count: u64) -> Layout {
    let off = data_offset(align_of::<T>()) as u64;
    let data = (size_of::<T>() as u64).saturating_mul(count);
    Layout::new(Kind::Mutex, ElemInfo::of::<T>(count))
        .with_payload_len(off.saturating_add(data))
        .with_params([MUTEX_PARAMS_TAG, RawRobustMutex::SIZE as u64, off, 0])
}

fn mutex_init<T: Pod>(fill: impl Iterator<Item = T>) -> impl FnOnce(&mut [u8]) -> Result<()> {
    move |payload| {
        let off = data_offset(align_of::<T>());
        for (chunk, v) in payload[off..]
            .chunks_exact_mut(size_of::<T>().max(1))
            .zip(fill)
        {
            chunk.copy_from_slice(bytemuck::bytes_of(&v));
        }
        // SAFETY: the payload is 64-byte aligned (≥ ALIGN), at least SIZE bytes (the
        // layout puts the data after it), and exclusively ours during initialisation.
        unsafe { RawRobustMutex::init_at(payload.as_mut_ptr().cast()) }
    }
}

/// A segment holding a robust mutex followed by `len` elements of `T`.
#[derive(Debug)]
struct Locked<T> {
    seg: Segment,
    resource: String,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> Locked<T> {
    fn wrap(seg: Segment, len: Option<usize>) -> Result<Self> {
        let count = match len {
            Some(n) => n as u64,
            None => {
                seg.check_elements(Kind::Mutex, &ElemInfo::of::<T>(0), None)?;
                seg.header().raw.elem_count
            }
        };
        seg.check_layout(&mutex_layout::<T>(count))?;
        // check_layout matched payload_len = off + count * size, and the header was
        // validated against the mapping, so `count` elements fit and count fits usize.
        let len =
            usize::try_from(count).map_err(|_| Error::corrupt(seg.resource(), "element count"))?;
        Ok(Locked {
            resource: seg.resource(),
            seg,
            len,
            _t: PhantomData,
        })
    }

    #[inline]
    fn raw(&self) -> &RawRobustMutex {
        // SAFETY: check_layout verified this is a mutex segment made by mutex_init, whose
        // payload starts with an initialised RawRobustMutex (64-byte aligned); it lives
        // as long as the segment mapping, i.e. as long as &self.
        unsafe { &*(self.seg.payload_ptr() as *const RawRobustMutex) }
    }

    #[inline]
    fn data(&self) -> NonNull<[T]> {
        // SAFETY: the layout check guarantees `len` elements of T at data_offset, aligned
        // for T (payload aligned to max(64, align_of T) and the offset is a multiple).
        let p = unsafe { self.seg.payload_ptr().add(data_offset(align_of::<T>())) } as *mut T;
        NonNull::slice_from_raw_parts(NonNull::new(p).unwrap_or(NonNull::dangling()), self.len)
    }

    #[inline(always)]
    fn guard(&self, died: bool) -> LockResult<MutexGuard<'_, [T]>> {
        // SAFETY: the lock was just acquired by this thread; the data is valid for the
        // lifetime of &self and only accessed under the lock by well-behaved peers.
        let g = unsafe {
            MutexGuard::new(
                self.raw(),
                self.seg.liveness(),
                self.data(),
                died,
                &self.resource,
            )
        };
        LockResult::from_guard(g, died)
    }

    #[inline(always)]
    fn lock_in(&self, deadline: Option<Deadline>) -> Result<LockResult<MutexGuard<'_, [T]>>> {
        let died = self
            .raw()
            .lock_in(self.seg.liveness(), deadline, &self.resource)?;
        Ok(self.guard(died))
    }

    fn reset(&self, timeout: Duration) -> Result<LockResult<MutexGuard<'_, [T]>>> {
        let died = self.raw().lock_mode(
            self.seg.liveness(),
            Some(Deadline::after(Some(timeout))),
            &self.resource,
            true,
        )?;
        Ok(self.guard(died))
    }
}

#[inline]
fn first<'a, T>(g: MutexGuard<'a, [T]>) -> MutexGuard<'a, T> {
    let g = std::mem::ManuallyDrop::new(g);
    MutexGuard {
        lock: g.lock,
        live: g.live,
        data: g.data.cast::<T>(),
        consistent: g.consistent,
        resource: g.resource,
        _not_send: PhantomData,
    }
}

/// One `T` guarded by a robust, process-shared mutex, in its own segment: Python's
/// `multiprocessing.Value(typecode, lock=True)` where `with v.get_lock(): v.value += 1`
/// becomes `*m.lock_or_repair(|v| ...)? += 1`: the closure says what to do with the data
/// if a holder died in the middle of an update (it runs only then).
///
/// ```
/// use shmkit::sync::Mutex;
/// let name = format!("doc-mutex-{}", std::process::id());
/// let m = Mutex::<[u64; 2]>::create(&name, [0, 0])?;
/// let other = Mutex::<[u64; 2]>::open(&name)?; // e.g. in another process
/// {
///     // Invariant: both halves equal. If a holder died between the two writes, restore it.
///     let mut g = other.lock_or_repair(|v| v[1] = v[0])?;
///     g[0] += 1;
///     g[1] += 1;
/// }
/// assert_eq!(*m.lock_or_repair(|v| v[1] = v[0])?, [1, 1]);
/// shmkit::Segment::unlink(&name)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
///
/// To handle the death yourself, match the [`LockResult`] of [`lock`](Self::lock)
/// (`Acquired(g)` / `OwnerDied(g)`, then `g.make_consistent()`). A guard dropped without
/// repair leaves the mutex inconsistent, never locked out: the next locker is told in turn
/// (module docs, "No dead end").
#[derive(Debug)]
#[doc(alias = "pthread_mutex_t")]
pub struct Mutex<T> {
    inner: Locked<T>,
}

impl<T: Pod> Mutex<T> {
    /// The segment layout (kind `mutex`, one `T`, params: format tag, lock size, data
    /// offset).
    pub fn layout() -> Layout {
        mutex_layout::<T>(1)
    }

    /// Creates a named mutex holding `init` (`O_EXCL`, mode 0600).
    pub fn create(name: &str, init: T) -> Result<Self> {
        Self::create_with(&Segment::options(), name, init)
    }

    /// [`create`](Self::create) with options (mode, RAII unlink).
    pub fn create_with(opts: &SegmentOptions, name: &str, init: T) -> Result<Self> {
        Self::from_segment(opts.create(name, &Self::layout(), mutex_init(std::iter::once(init)))?)
    }

    /// Opens an existing named mutex; kind, `T` and parameters are checked.
    pub fn open(name: &str) -> Result<Self> {
        Self::from_segment(Segment::open(name)?)
    }

    /// Opens the mutex or creates it holding `init`; returns whether it was created.
    pub fn open_or_create(name: &str, init: T) -> Result<(Self, bool)> {
        let (seg, created) =
            Segment::open_or_create(name, &Self::layout(), mutex_init(std::iter::once(init)))?;
        Ok((Self::from_segment(seg)?, created))
    }

    /// Creates a file-backed mutex at `path` (`O_EXCL`, `O_NOFOLLOW`); the mutex works in
    /// any `MAP_SHARED` mapping, the futex is keyed by the file.
    pub fn create_file(path: impl AsRef<std::path::Path>, init: T) -> Result<Self> {
        Self::from_segment(Segment::options().create_file(
            path,
            &Self::layout(),
            mutex_init(std::iter::once(init)),
        )?)
    }

    /// Opens a file-backed mutex (`O_NOFOLLOW`).
    pub fn open_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::from_segment(Segment::options().open_file(path)?)
    }

    /// An anonymous mutex, shared with children forked after this call.
    pub fn anonymous(init: T) -> Result<Self> {
        Self::from_segment(Segment::anonymous(
            &Self::layout(),
            mutex_init(std::iter::once(init)),
        )?)
    }

    /// Wraps an opened segment after checking it holds a `Mutex<T>`.
    pub fn from_segment(seg: Segment) -> Result<Self> {
        Ok(Mutex {
            inner: Locked::wrap(seg, Some(1))?,
        })
    }

    /// Locks (blocking). `OwnerDied` hands over the guard of a lock whose holder died;
    /// [`lock_or_repair`](Self::lock_or_repair) is the shorter, safe form.
    #[inline(always)]
    #[doc(alias = "pthread_mutex_lock")]
    pub fn lock(&self) -> Result<LockResult<MutexGuard<'_, T>>> {
        Ok(self.inner.lock_in(Some(Deadline::after(None)))?.map(first))
    }

    /// Locks; if a holder died mid-update, runs `repair` on the data and marks it
    /// consistent before handing over the guard. The shape of Python's
    /// `with v.get_lock():`, with the repair step Python does not have, and the form to
    /// use unless you need to tell the two cases apart.
    ///
    /// ```
    /// use shmkit::sync::Mutex;
    /// let m = Mutex::<u64>::anonymous(1)?;
    /// *m.lock_or_repair(|v| *v = 0)? += 1; // `repair` runs only after an owner died
    /// assert_eq!(*m.lock_or_repair(|v| *v = 0)?, 2);
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    #[inline(always)]
    pub fn lock_or_repair(&self, repair: impl FnOnce(&mut T)) -> Result<MutexGuard<'_, T>> {
        Ok(self.lock()?.or_repair(repair))
    }

    /// Locks if free now; [`Error::WouldBlock`] if another thread or process holds it.
    #[inline]
    #[doc(alias = "pthread_mutex_trylock")]
    pub fn try_lock(&self) -> Result<LockResult<MutexGuard<'_, T>>> {
        Ok(self.inner.lock_in(None)?.map(first))
    }

    /// Locks, waiting at most `timeout` on `CLOCK_MONOTONIC`; [`Error::Timeout`] after.
    #[inline]
    #[doc(alias("pthread_mutex_timedlock", "pthread_mutex_clocklock"))]
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockResult<MutexGuard<'_, T>>> {
        Ok(self
            .inner
            .lock_in(Some(Deadline::after(Some(timeout))))?
            .map(first))
    }

    /// Makes an unrecoverable mutex usable again in place, safely while others use it:
    /// see [`RawRobustMutex::reset_unrecoverable`] (waits at most `timeout`; returns
    /// `OwnerDied` with the guard when it did reset, to repair the data with).
    pub fn reset_unrecoverable(&self, timeout: Duration) -> Result<LockResult<MutexGuard<'_, T>>> {
        Ok(self.inner.reset(timeout)?.map(first))
    }

    /// The lock itself (e.g. to inspect its [`owner`](RawRobustMutex::owner)).
    pub fn raw(&self) -> &RawRobustMutex {
        self.inner.raw()
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.inner.seg
    }
}

/// `[T; n]` guarded by one robust mutex, in its own segment: Python's
/// `multiprocessing.Array(typecode, n, lock=True)`. The guard derefs to `[T]`.
///
/// ```
/// use shmkit::sync::MutexArray;
/// let a = MutexArray::<f64>::anonymous(3, 1.5)?;
/// {
///     // If a holder died halfway through, start over from a known state.
///     let mut g = a.lock_or_repair(|v| v.fill(1.5))?;
///     for x in g.iter_mut() { *x *= 2.0; }
/// }
/// assert_eq!(&*a.lock_or_repair(|v| v.fill(1.5))?, &[3.0, 3.0, 3.0]);
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct MutexArray<T> {
    inner: Locked<T>,
}

impl<T: Pod> MutexArray<T> {
    /// The segment layout for `len` elements.
    pub fn layout(len: usize) -> Layout {
        mutex_layout::<T>(len as u64)
    }

    /// Creates a named array of `len` copies of `fill`.
    pub fn create(name: &str, len: usize, fill: T) -> Result<Self> {
        Self::create_with(&Segment::options(), name, len, fill)
    }

    /// [`create`](Self::create) with options.
    pub fn create_with(opts: &SegmentOptions, name: &str, len: usize, fill: T) -> Result<Self> {
        let seg = opts.create(
            name,
            &Self::layout(len),
            mutex_init(std::iter::repeat_n(fill, len)),
        )?;
        Self::from_segment(seg)
    }

    /// Creates a named array holding a copy of `values`.
    pub fn from_slice(name: &str, values: &[T]) -> Result<Self> {
        let seg = Segment::create(
            name,
            &Self::layout(values.len()),
            mutex_init(values.iter().copied()),
        )?;
        Self::from_segment(seg)
    }

    /// Opens an existing array (any length; see [`len`](Self::len)).
    pub fn open(name: &str) -> Result<Self> {
        Self::from_segment(Segment::open(name)?)
    }

    /// Opens the array (which must have `len` elements) or creates it.
    pub fn open_or_create(name: &str, len: usize, fill: T) -> Result<(Self, bool)> {
        let (seg, created) = Segment::open_or_create(
            name,
            &Self::layout(len),
            mutex_init(std::iter::repeat_n(fill, len)),
        )?;
        Ok((
            MutexArray {
                inner: Locked::wrap(seg, Some(len))?,
            },
            created,
        ))
    }

    /// An anonymous array, shared with children forked after this call.
    pub fn anonymous(len: usize, fill: T) -> Result<Self> {
        let seg = Segment::anonymous(
            &Self::layout(len),
            mutex_init(std::iter::repeat_n(fill, len)),
        )?;
        Self::from_segment(seg)
    }

    /// Wraps an opened segment after checking it holds a `MutexArray<T>`.
    pub fn from_segment(seg: Segment) -> Result<Self> {
        Ok(MutexArray {
            inner: Locked::wrap(seg, None)?,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// True if there are no elements.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// Locks (blocking). See [`lock_or_repair`](Self::lock_or_repair).
    #[inline(always)]
    #[doc(alias = "pthread_mutex_lock")]
    pub fn lock(&self) -> Result<LockResult<MutexGuard<'_, [T]>>> {
        self.inner.lock_in(Some(Deadline::after(None)))
    }

    /// Locks; if a holder died mid-update, runs `repair` on the data and marks it
    /// consistent first. See [`Mutex::lock_or_repair`].
    #[inline(always)]
    pub fn lock_or_repair(&self, repair: impl FnOnce(&mut [T])) -> Result<MutexGuard<'_, [T]>> {
        Ok(self.lock()?.or_repair(repair))
    }

    /// Locks if free now; [`Error::WouldBlock`] otherwise.
    #[inline]
    #[doc(alias = "pthread_mutex_trylock")]
    pub fn try_lock(&self) -> Result<LockResult<MutexGuard<'_, [T]>>> {
        self.inner.lock_in(None)
    }

    /// Locks, waiting at most `timeout`; [`Error::Timeout`] after.
    #[inline]
    #[doc(alias("pthread_mutex_timedlock", "pthread_mutex_clocklock"))]
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockResult<MutexGuard<'_, [T]>>> {
        self.inner.lock_in(Some(Deadline::after(Some(timeout))))
    }

    /// Makes an unrecoverable mutex usable again in place: see
    /// [`Mutex::reset_unrecoverable`].
    pub fn reset_unrecoverable(
        &self,
        timeout: Duration,
    ) -> Result<LockResult<MutexGuard<'_, [T]>>> {
        self.inner.reset(timeout)
    }

    /// The lock itself.
    pub fn raw(&self) -> &RawRobustMutex {
        self.inner.raw()
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.inner.seg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::raw_mutex::{CONSISTENT, INCONSISTENT, OWNER_MASK, WAITERS};
    use crate::sync::thread_ids;
    use nix::errno::Errno;

    #[test]
    fn relock_in_same_thread_is_an_error_not_a_hang() {
        let m = Mutex::<u32>::anonymous(0).unwrap();
        let _g = m.lock().unwrap().into_guard();
        let e = m.lock().unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EDEADLK), "{e}");
        assert_eq!(m.try_lock().unwrap_err().errno(), Some(Errno::EDEADLK));
        let e = m.lock_timeout(Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EDEADLK), "{e}");
    }

    #[test]
    fn owner_is_visible_while_locked() {
        let m = Mutex::<u32>::anonymous(0).unwrap();
        assert_eq!(m.raw().owner().token, 0);
        let g = m.lock().unwrap().into_guard();
        let o = m.raw().owner_status(m.segment().liveness());
        assert_eq!(o.tid, nix::unistd::gettid().as_raw() as u32);
        assert_eq!(o.pid, std::process::id());
        assert_eq!(o.token, m.segment().liveness().token().unwrap());
        assert!(!o.owner_died);
        drop(g);
        assert_eq!(m.raw().owner().token, 0);
    }

    #[test]
    fn lock_timeout_times_out_when_held_by_another_thread() {
        let m = std::sync::Arc::new(Mutex::<u32>::anonymous(0).unwrap());
        let _g = m.lock().unwrap().into_guard();
        let m2 = m.clone();
        let r = std::thread::spawn(move || m2.lock_timeout(Duration::from_millis(20)).map(|_| ()))
            .join()
            .unwrap();
        assert!(r.unwrap_err().is_timeout());
        // Another thread of the same process is not "this thread": WouldBlock.
        let m2 = m.clone();
        let r = std::thread::spawn(move || m2.try_lock().map(|_| ()))
            .join()
            .unwrap();
        assert!(matches!(r, Err(Error::WouldBlock { .. })));
    }

    fn leave_dead_owner(m: &RawRobustMutex) {
        m.simulate_dead_owner();
    }

    #[test]
    fn dead_owner_gives_owner_died_until_somebody_repairs() {
        let m = Mutex::<u32>::anonymous(7).unwrap();
        leave_dead_owner(m.raw());
        let r = m.lock_timeout(Duration::from_secs(10)).unwrap();
        assert!(r.owner_died());
        assert!(m.raw().owner().inconsistent);
        drop(r.into_guard()); // not repaired
        assert!(m.raw().owner().inconsistent);
        assert!(!m.raw().owner().unrecoverable);
        assert_eq!(m.raw().owner().token, 0, "unlocked");
        // The next lockers are told in turn, until one repairs.
        assert!(m.try_lock().unwrap().owner_died());
        assert!(m.lock().unwrap().owner_died());
        let mut g = m.lock().unwrap().or_repair(|v| *v = 0);
        *g += 1;
        drop(g);
        assert!(!m.raw().owner().inconsistent);
        assert_eq!(*m.lock().unwrap().into_guard(), 1);
    }

    #[test]
    fn lock_or_repair_repairs_only_after_a_death() {
        let m = Mutex::<u32>::anonymous(7).unwrap();
        *m.lock_or_repair(|_| panic!("nobody died")).unwrap() += 1;
        leave_dead_owner(m.raw());
        // try_lock takes a dead owner's lock over too.
        assert!(m.try_lock().unwrap().owner_died());
        leave_dead_owner(m.raw());
        assert_eq!(*m.lock_or_repair(|v| *v = 100).unwrap(), 100);
        assert!(!m.lock().unwrap().owner_died());
    }

    #[test]
    fn mark_unrecoverable_locks_everyone_out_until_reset() {
        let m = Mutex::<u32>::anonymous(7).unwrap();
        m.lock().unwrap().into_guard().mark_unrecoverable();
        assert!(matches!(m.lock(), Err(Error::Unrecoverable { .. })));
        assert!(matches!(m.try_lock(), Err(Error::Unrecoverable { .. })));
        assert!(m.raw().owner().unrecoverable);
        assert_eq!(m.raw().owner().token, 0, "an error leaves it unlocked");
        let r = m.reset_unrecoverable(Duration::from_secs(5)).unwrap();
        assert!(r.owner_died(), "a reset hands out OwnerDied");
        assert!(m.raw().owner().inconsistent);
        drop(r); // unrepaired: inconsistent, still recoverable
        let g = m.reset_unrecoverable(Duration::from_secs(5)).unwrap();
        assert!(g.owner_died());
        let _ = g.or_repair(|v| *v = 1);
        let r = m.reset_unrecoverable(Duration::from_secs(5)).unwrap();
        assert!(!r.owner_died(), "on a consistent mutex it is a plain lock");
        assert_eq!(*r.into_guard(), 1);
        // Held by a live thread: the reset waits for it like a lock.
        let g = m.lock().unwrap().into_guard();
        let m2 = &m;
        std::thread::scope(|s| {
            let e = s
                .spawn(|| m2.reset_unrecoverable(Duration::from_millis(20)).map(drop))
                .join()
                .unwrap();
            assert!(e.unwrap_err().is_timeout());
        });
        drop(g);
        // A corrupt consistency word is not "unrecoverable": still an error.
        m.raw().consistency.store(77, Ordering::SeqCst);
        let e = m.reset_unrecoverable(Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }

    #[test]
    fn forked_copy_of_a_guard_never_marks_the_parents_mutex() {
        let m = Mutex::<u32>::anonymous(0).unwrap();
        let g = m.lock().unwrap().into_guard();
        // A peer's token in the word: mark_unrecoverable on our (stale) guard is a no-op.
        m.raw().word.store(12345, Ordering::SeqCst);
        g.mark_unrecoverable();
        assert_eq!(m.raw().word.load(Ordering::SeqCst), 12345);
        assert!(!m.raw().owner().unrecoverable);
    }

    #[test]
    fn hostile_words_give_errors_or_owner_died_never_a_hang() {
        let m = Mutex::<u32>::anonymous(0).unwrap();
        let raw = m.raw();
        let t = std::time::Instant::now();
        for w in [WAITERS, u32::MAX, OWNER_MASK, 3 | WAITERS] {
            raw.word.store(w, Ordering::SeqCst);
            raw.consistency.store(CONSISTENT, Ordering::SeqCst);
            match m.lock_timeout(Duration::from_millis(50)) {
                Ok(r) => drop(r.into_guard()),
                Err(e) => assert!(e.is_timeout(), "{w:#x}: {e}"),
            }
        }
        raw.word.store(0, Ordering::SeqCst);
        raw.consistency.store(77, Ordering::SeqCst);
        assert!(matches!(m.lock(), Err(Error::Corrupt { .. })));
        // Forged states under a forged (dead) owner: the reset path stays bounded and
        // gives a lock, an OwnerDied or an error.
        for (w, c) in [
            (u32::MAX, UNRECOVERABLE),
            (OWNER_MASK, UNRECOVERABLE),
            (WAITERS, UNRECOVERABLE),
            (3 | WAITERS, INCONSISTENT),
            (0, u32::MAX),
            (0, UNRECOVERABLE + 1),
        ] {
            raw.word.store(w, Ordering::SeqCst);
            raw.consistency.store(c, Ordering::SeqCst);
            match m.reset_unrecoverable(Duration::from_millis(50)) {
                Ok(r) => drop(r.or_repair(|_| ())),
                Err(e) => assert!(
                    e.is_timeout() || matches!(e, Error::Corrupt { .. }),
                    "{w:#x}/{c}: {e}"
                ),
            }
        }
        raw.word.store(0, Ordering::SeqCst);
        raw.consistency.store(CONSISTENT, Ordering::SeqCst);
        // A forged owner thread id with our token: EDEADLK, nothing worse.
        let me = m.segment().liveness().token().unwrap();
        raw.word.store(me, Ordering::SeqCst);
        raw.owner_tid.store(thread_ids().1, Ordering::SeqCst);
        assert_eq!(m.lock().unwrap_err().errno(), Some(Errno::EDEADLK));
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn guard_unlocks_only_its_own_lock() {
        let m = Mutex::<u32>::anonymous(0).unwrap();
        let g = m.lock().unwrap().into_guard();
        // A peer (or a forked child's copy of the guard) sees another token: the word
        // is left alone on drop.
        m.raw().word.store(12345, Ordering::SeqCst);
        drop(g);
        assert_eq!(m.raw().word.load(Ordering::SeqCst), 12345);
    }

    #[test]
    fn file_backed_mutex_round_trip() {
        let dir = std::env::temp_dir().join(format!("shmkit-unit-fmx-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let m = Mutex::<u64>::create_file(&dir, 3).unwrap();
        let other = Mutex::<u64>::open_file(&dir).unwrap();
        *other.lock().unwrap().into_guard() += 1;
        assert_eq!(*m.lock().unwrap().into_guard(), 4);
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn unit_mutex_is_a_plain_lock() {
        let m = Mutex::<()>::anonymous(()).unwrap();
        let g = m.lock().unwrap().into_guard();
        assert!(m.try_lock().is_err());
        drop(g);
        assert!(m.try_lock().is_ok());
    }

    #[test]
    fn mutex_array_round_trip_and_type_checks() {
        let name = format!("shmkit-unit-marr-{}", std::process::id());
        let a = MutexArray::<u16>::from_slice(&name, &[1, 2, 3]).unwrap();
        let b = MutexArray::<u16>::open(&name).unwrap();
        assert_eq!(b.len(), 3);
        b.lock().unwrap().into_guard()[2] = 9;
        assert_eq!(&*a.lock().unwrap().into_guard(), &[1, 2, 9]);
        assert!(MutexArray::<u32>::open(&name).is_err());
        assert!(Mutex::<u16>::open(&name).is_err()); // length 3, not 1
        Segment::unlink(&name).unwrap();
    }
}
