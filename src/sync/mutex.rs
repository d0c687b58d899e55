//! The robust, process-shared mutex: [`RawRobustMutex`] (the object in shared memory),
//! [`Mutex<T>`] (one `T` guarded by it, in its own segment) and [`MutexArray<T>`]
//! (`[T; n]` guarded by it): Python's `Value(lock=True)` / `Array(lock=True)` with
//! `get_lock()`, made robust.
//!
//! The lock is a glibc `pthread_mutex_t` initialised in place with
//! `PTHREAD_PROCESS_SHARED`, `PTHREAD_MUTEX_ROBUST` and `PTHREAD_MUTEX_ERRORCHECK`
//! (re-locking from the owning thread is an error, not a hang). When the owner dies, the
//! kernel walks its robust list, marks the lock word `FUTEX_OWNER_DIED` and wakes a waiter,
//! which gets [`LockResult::OwnerDied`]: the guard **and** the news. The data may be half
//! updated; the new owner repairs it and calls [`MutexGuard::make_consistent`]. A guard
//! dropped without that leaves the mutex *not recoverable*: every later `lock` fails with
//! [`Error::Unrecoverable`], so nobody silently builds on corrupt state.
//!
//! Data is `Pod`: any bit pattern is a valid `T`, so even a torn update is memory-safe to
//! read; only its *meaning* needs repair.
//!
//! # References
//! - pthread_mutexattr_setrobust(3), pthread_mutex_consistent(3), pthread_mutex_lock(3p),
//!   pthread_mutex_clocklock (glibc 2.30), futex(2) "Robust futexes".

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

use bytemuck::Pod;
use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::segment::{ElemInfo, Kind, Layout, Segment, SegmentOptions};

use super::monotonic_deadline;

unsafe extern "C" {
    /// glibc ≥ 2.30; not (yet) bound by the `libc` crate.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clockid: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// Resource label used by raw objects, which do not know their segment's name.
const RAW_RESOURCE: &str = "robust mutex";

/// A robust, process-shared `pthread_mutex_t`, to be placed in shared memory.
///
/// Use it directly as a slot inside your own segment layout: it needs
/// [`RawRobustMutex::SIZE`] bytes at an offset aligned to [`RawRobustMutex::ALIGN`]
/// (a multiple of 64 avoids false sharing with the data it guards), initialised exactly
/// once with [`RawRobustMutex::init_at`] inside the segment's init closure (before any
/// other process can see it). Never copy or move an initialised mutex: the kernel and
/// glibc identify it by its address in the mapping.
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
/// match m.lock()? {
///     LockResult::Acquired(_guard) => {} // unlocked when the guard drops
///     LockResult::OwnerDied(mut g) => g.make_consistent()?,
/// }
/// # Ok::<(), shmkit::Error>(())
/// ```
#[repr(C)]
pub struct RawRobustMutex {
    inner: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: the pthread mutex is designed for concurrent use from many threads (and, with
// PTHREAD_PROCESS_SHARED, processes); all access goes through pthread calls or atomics.
unsafe impl Sync for RawRobustMutex {}
// SAFETY: as above; it holds no thread-affine data (ownership is tracked by TID inside).
unsafe impl Send for RawRobustMutex {}

impl std::fmt::Debug for RawRobustMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = self.owner();
        f.debug_struct("RawRobustMutex").field("owner", &o).finish()
    }
}

/// What the lock word says about the owner (see [`RawRobustMutex::owner`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerInfo {
    /// Kernel thread id of the owner (0: unlocked).
    pub tid: u32,
    /// The kernel set `FUTEX_OWNER_DIED`: the previous owner died and nobody has
    /// acquired the lock since.
    pub owner_died: bool,
    /// A new owner received `OwnerDied` and has not (yet) called `make_consistent`.
    pub inconsistent: bool,
    /// The mutex was released without `make_consistent` and can never be locked again.
    pub unrecoverable: bool,
}

/// glibc's `PTHREAD_MUTEX_INCONSISTENT` and `PTHREAD_MUTEX_NOTRECOVERABLE` markers in
/// `__data.__owner`.
const GLIBC_OWNER_INCONSISTENT: i32 = i32::MAX;
const GLIBC_OWNER_NOTRECOVERABLE: i32 = i32::MAX - 1;
/// Offset of `__data.__owner` in glibc's `pthread_mutex_t` (after `__lock`, `__count`)
/// on every 64-bit glibc target.
const GLIBC_OWNER_OFFSET: usize = 8;

/// Destroys a mutex attribute object when dropped.
struct MutexAttr(MaybeUninit<libc::pthread_mutexattr_t>);

impl MutexAttr {
    fn new() -> Result<Self> {
        let mut a = MutexAttr(MaybeUninit::uninit());
        // SAFETY: pthread_mutexattr_init initialises the object it is given.
        let rc = unsafe { libc::pthread_mutexattr_init(a.0.as_mut_ptr()) };
        check(rc, "pthread_mutexattr_init")?;
        Ok(a)
    }
    fn ptr(&mut self) -> *mut libc::pthread_mutexattr_t {
        self.0.as_mut_ptr()
    }
}

impl Drop for MutexAttr {
    fn drop(&mut self) {
        // SAFETY: constructed only after a successful pthread_mutexattr_init.
        unsafe { libc::pthread_mutexattr_destroy(self.0.as_mut_ptr()) };
    }
}

fn check(rc: libc::c_int, op: &'static str) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::os(RAW_RESOURCE, op, Errno::from_raw(rc)))
    }
}

impl RawRobustMutex {
    /// Bytes a slot must have.
    pub const SIZE: usize = size_of::<RawRobustMutex>();
    /// Alignment a slot must have.
    pub const ALIGN: usize = align_of::<RawRobustMutex>();

    /// Initialises a robust, process-shared, error-checking mutex at `ptr`
    /// (`pthread_mutexattr_init`, `setpshared(PTHREAD_PROCESS_SHARED)`,
    /// `setrobust(PTHREAD_MUTEX_ROBUST)`, `settype(PTHREAD_MUTEX_ERRORCHECK)`,
    /// `pthread_mutex_init`, `pthread_mutexattr_destroy`).
    ///
    /// # Safety
    /// `ptr` must be valid for writes of [`Self::SIZE`] bytes, aligned to [`Self::ALIGN`],
    /// in memory that stays mapped at this address while in use, and no other thread or
    /// process may use the memory during the call (run it in a segment's init closure).
    /// Initialising a mutex that is in use is undefined behaviour.
    pub unsafe fn init_at(ptr: *mut RawRobustMutex) -> Result<()> {
        if ptr.is_null() || (ptr as usize) % Self::ALIGN != 0 {
            return Err(Error::invalid(
                RAW_RESOURCE,
                "init",
                "null or misaligned slot pointer",
            ));
        }
        let mut attr = MutexAttr::new()?;
        check(
            // SAFETY: attr was initialised by pthread_mutexattr_init.
            unsafe { libc::pthread_mutexattr_setpshared(attr.ptr(), libc::PTHREAD_PROCESS_SHARED) },
            "pthread_mutexattr_setpshared",
        )?;
        check(
            // SAFETY: attr was initialised by pthread_mutexattr_init.
            unsafe { libc::pthread_mutexattr_setrobust(attr.ptr(), libc::PTHREAD_MUTEX_ROBUST) },
            "pthread_mutexattr_setrobust",
        )?;
        check(
            // SAFETY: attr was initialised by pthread_mutexattr_init.
            unsafe { libc::pthread_mutexattr_settype(attr.ptr(), libc::PTHREAD_MUTEX_ERRORCHECK) },
            "pthread_mutexattr_settype",
        )?;
        // UnsafeCell<pthread_mutex_t> is repr(transparent) over pthread_mutex_t and the
        // struct is repr(C) with it as the only field.
        check(
            // SAFETY: the caller guarantees exclusive, aligned, writable memory of the
            // right size for a pthread_mutex_t (see above).
            unsafe { libc::pthread_mutex_init(ptr.cast::<libc::pthread_mutex_t>(), attr.ptr()) },
            "pthread_mutex_init",
        )
    }

    fn raw(&self) -> *mut libc::pthread_mutex_t {
        self.inner.get()
    }

    /// Maps a pthread lock return code to a result.
    fn acquired(&self, rc: libc::c_int, resource: &str, op: &'static str) -> Result<bool> {
        match rc {
            0 => Ok(false),
            libc::EOWNERDEAD => Ok(true),
            libc::ENOTRECOVERABLE => Err(Error::Unrecoverable {
                resource: resource.to_owned(),
            }),
            libc::EBUSY => Err(Error::WouldBlock {
                resource: resource.to_owned(),
                op,
            }),
            libc::EDEADLK => Err(Error::os_with_advice(
                resource,
                op,
                Errno::EDEADLK,
                "this thread already holds the lock (robust mutexes are not recursive)",
            )),
            e => Err(Error::os(resource, op, Errno::from_raw(e))),
        }
    }

    pub(crate) fn lock_in(&self, resource: &str) -> Result<bool> {
        // SAFETY: self points to a mutex initialised by init_at (type invariant of every
        // handle that hands out &RawRobustMutex).
        let rc = unsafe { libc::pthread_mutex_lock(self.raw()) };
        self.acquired(rc, resource, "pthread_mutex_lock")
    }

    pub(crate) fn try_lock_in(&self, resource: &str) -> Result<bool> {
        // SAFETY: as in lock_in.
        let rc = unsafe { libc::pthread_mutex_trylock(self.raw()) };
        self.acquired(rc, resource, "pthread_mutex_trylock")
    }

    pub(crate) fn lock_timeout_in(&self, timeout: Duration, resource: &str) -> Result<bool> {
        let abs = monotonic_deadline(timeout);
        loop {
            // SAFETY: as in lock_in; `abs` is a normalised timespec on CLOCK_MONOTONIC.
            let rc = unsafe { pthread_mutex_clocklock(self.raw(), libc::CLOCK_MONOTONIC, &abs) };
            match rc {
                libc::ETIMEDOUT => {
                    return Err(Error::Timeout {
                        resource: resource.to_owned(),
                        op: "lock",
                        timeout,
                    });
                }
                libc::EINTR => continue,
                rc => return self.acquired(rc, resource, "pthread_mutex_clocklock"),
            }
        }
    }

    /// Unlocks. Never panics; an error (EPERM: not the owner) is ignored because the only
    /// caller is a guard, which proves ownership.
    pub(crate) fn unlock(&self) {
        // SAFETY: as in lock_in; called only by the guard of the owning thread.
        let _ = unsafe { libc::pthread_mutex_unlock(self.raw()) };
    }

    pub(crate) fn make_consistent_in(&self, resource: &str) -> Result<()> {
        // SAFETY: as in lock_in; called by the owning thread's guard.
        let rc = unsafe { libc::pthread_mutex_consistent(self.raw()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(Error::os(
                resource,
                "pthread_mutex_consistent",
                Errno::from_raw(rc),
            ))
        }
    }

    /// Locks, blocking. See [`LockResult`] for the owner-died case.
    pub fn lock(&self) -> Result<LockResult<MutexGuard<'_, ()>>> {
        let died = self.lock_in(RAW_RESOURCE)?;
        Ok(self.guard((), died))
    }

    /// Locks if free now; [`Error::WouldBlock`] otherwise.
    pub fn try_lock(&self) -> Result<LockResult<MutexGuard<'_, ()>>> {
        let died = self.try_lock_in(RAW_RESOURCE)?;
        Ok(self.guard((), died))
    }

    /// Locks, waiting at most `timeout` (`CLOCK_MONOTONIC`); [`Error::Timeout`] after.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockResult<MutexGuard<'_, ()>>> {
        let died = self.lock_timeout_in(timeout, RAW_RESOURCE)?;
        Ok(self.guard((), died))
    }

    fn guard(&self, _unit: (), died: bool) -> LockResult<MutexGuard<'_, ()>> {
        // SAFETY: the lock is held by this thread (just acquired); a dangling pointer is
        // valid for the zero-sized ().
        let g = unsafe { MutexGuard::new(self, NonNull::dangling(), died, RAW_RESOURCE) };
        LockResult::from_guard(g, died)
    }

    /// Reads the lock state without locking (for diagnostics: `shmkit info`).
    ///
    /// The futex word (`__data.__lock`) of a robust mutex holds the owner's kernel thread
    /// id ORed with `FUTEX_WAITERS` and `FUTEX_OWNER_DIED`; glibc's `__data.__owner` marks
    /// the inconsistent and not-recoverable states. Both are read atomically; the answer
    /// may be stale by the time it is returned.
    pub fn owner(&self) -> OwnerInfo {
        let base = self.raw() as *const u8;
        // SAFETY: __lock is the first 32-bit field of glibc's pthread_mutex_t (futex word,
        // 4-byte aligned); other processes access it atomically, so reading it through an
        // atomic is sound.
        let word = unsafe { &*(base as *const AtomicU32) }.load(Ordering::Relaxed);
        // glibc writes __owner with plain stores while holding the lock; we only read it
        // atomically (a racy but tear-free snapshot).
        // SAFETY: __owner is an int at byte 8 on every 64-bit glibc target (checked by a
        // const assertion below on the size), 4-byte aligned, inside the mutex.
        let owner =
            unsafe { &*(base.add(GLIBC_OWNER_OFFSET) as *const AtomicI32) }.load(Ordering::Relaxed);
        OwnerInfo {
            tid: word & libc::FUTEX_TID_MASK,
            owner_died: word & libc::FUTEX_OWNER_DIED != 0,
            inconsistent: owner == GLIBC_OWNER_INCONSISTENT,
            unrecoverable: owner == GLIBC_OWNER_NOTRECOVERABLE,
        }
    }
}

const _: () = assert!(size_of::<libc::pthread_mutex_t>() >= GLIBC_OWNER_OFFSET + 4);

/// The outcome of acquiring a robust lock: the guard, and whether the previous owner died
/// while holding it (like iceoryx2's `LockAcquiredButOwnerDied`).
#[derive(Debug)]
#[must_use = "an OwnerDied guard must be repaired and made consistent"]
pub enum LockResult<G> {
    /// Acquired normally.
    Acquired(G),
    /// Acquired, but the previous owner died holding the lock: the protected data may be
    /// half-updated. Repair it, then call `make_consistent()` on the guard; dropping the
    /// guard without doing so makes the mutex unrecoverable.
    OwnerDied(G),
}

impl<G> LockResult<G> {
    fn from_guard(g: G, died: bool) -> Self {
        if died {
            LockResult::OwnerDied(g)
        } else {
            LockResult::Acquired(g)
        }
    }

    /// The guard, whichever way it was acquired.
    pub fn into_guard(self) -> G {
        match self {
            LockResult::Acquired(g) | LockResult::OwnerDied(g) => g,
        }
    }

    /// True for [`LockResult::OwnerDied`].
    pub fn owner_died(&self) -> bool {
        matches!(self, LockResult::OwnerDied(_))
    }

    /// Applies `f` to the guard, keeping the variant.
    pub fn map<H>(self, f: impl FnOnce(G) -> H) -> LockResult<H> {
        match self {
            LockResult::Acquired(g) => LockResult::Acquired(f(g)),
            LockResult::OwnerDied(g) => LockResult::OwnerDied(f(g)),
        }
    }
}

/// Proof that this thread holds a robust mutex, with access to the data it guards
/// (`T` may be a slice, `()` for a bare lock). Unlocks on drop.
///
/// Not `Send`: a pthread mutex must be unlocked by the thread that locked it.
pub struct MutexGuard<'a, T: ?Sized> {
    pub(crate) lock: &'a RawRobustMutex,
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
    unsafe fn new(
        lock: &'a RawRobustMutex,
        data: NonNull<T>,
        died: bool,
        resource: &'a str,
    ) -> Self {
        MutexGuard {
            lock,
            data,
            consistent: !died,
            resource,
            _not_send: PhantomData,
        }
    }

    /// Marks the state consistent after an owner died (`pthread_mutex_consistent`).
    /// A no-op when it already is.
    pub fn make_consistent(&mut self) -> Result<()> {
        if !self.consistent {
            self.lock.make_consistent_in(self.resource)?;
            self.consistent = true;
        }
        Ok(())
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
    fn deref(&self) -> &T {
        // SAFETY: constructor contract: valid while the lock is held, which it is.
        unsafe { self.data.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref; &mut self gives exclusive access within this process and
        // the lock gives it across processes.
        unsafe { self.data.as_mut() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // An inconsistent guard is released as is: glibc then marks the mutex not
        // recoverable and every later lock fails with ENOTRECOVERABLE.
        self.lock.unlock();
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
/// assert_eq!(raw.owner().tid, 0);
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
    if raw.params[0] != MUTEX_PARAMS_TAG
        || raw.params[1] != RawRobustMutex::SIZE as u64
        || seg.payload_len() < RawRobustMutex::SIZE
    {
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
    // SAFETY: a mutex segment of this format and ABI starts with an initialised
    // RawRobustMutex at the 64-byte aligned payload (checked in bounds above); it lives as
    // long as the borrowed segment.
    Ok(unsafe { &*(seg.payload_ptr() as *const RawRobustMutex) })
}

/// Format tag in `Layout::params[0]` of mutex segments.
pub(crate) const MUTEX_PARAMS_TAG: u64 = 0x6d75_7478_0001; // "mutx" v1

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

    fn raw(&self) -> &RawRobustMutex {
        // SAFETY: check_layout verified this is a mutex segment made by mutex_init, whose
        // payload starts with an initialised RawRobustMutex (64-byte aligned); it lives
        // as long as the segment mapping, i.e. as long as &self.
        unsafe { &*(self.seg.payload_ptr() as *const RawRobustMutex) }
    }

    fn data(&self) -> NonNull<[T]> {
        // SAFETY: the layout check guarantees `len` elements of T at data_offset, aligned
        // for T (payload aligned to max(64, align_of T) and the offset is a multiple).
        let p = unsafe { self.seg.payload_ptr().add(data_offset(align_of::<T>())) } as *mut T;
        NonNull::slice_from_raw_parts(NonNull::new(p).unwrap_or(NonNull::dangling()), self.len)
    }

    fn guard(&self, died: bool) -> LockResult<MutexGuard<'_, [T]>> {
        // SAFETY: the lock was just acquired by this thread; the data is valid for the
        // lifetime of &self and only accessed under the lock by well-behaved peers.
        let g = unsafe { MutexGuard::new(self.raw(), self.data(), died, &self.resource) };
        LockResult::from_guard(g, died)
    }
}

fn repaired<'a, T: ?Sized>(
    r: LockResult<MutexGuard<'a, T>>,
    repair: impl FnOnce(&mut T),
) -> Result<MutexGuard<'a, T>> {
    match r {
        LockResult::Acquired(g) => Ok(g),
        LockResult::OwnerDied(mut g) => {
            repair(&mut g);
            g.make_consistent()?;
            Ok(g)
        }
    }
}

fn first<'a, T>(g: MutexGuard<'a, [T]>) -> MutexGuard<'a, T> {
    let g = std::mem::ManuallyDrop::new(g);
    MutexGuard {
        lock: g.lock,
        data: g.data.cast::<T>(),
        consistent: g.consistent,
        resource: g.resource,
        _not_send: PhantomData,
    }
}

/// One `T` guarded by a robust, process-shared mutex, in its own segment: Python's
/// `multiprocessing.Value(typecode, lock=True)` where `with v.get_lock(): v.value += 1`
/// becomes `*m.lock()?.into_guard() += 1`... after deciding what to do if a holder died.
///
/// ```
/// use shmkit::sync::{Mutex, LockResult};
/// let name = format!("doc-mutex-{}", std::process::id());
/// let m = Mutex::<[u64; 2]>::create(&name, [0, 0])?;
/// let other = Mutex::<[u64; 2]>::open(&name)?; // e.g. in another process
/// match other.lock()? {
///     LockResult::Acquired(mut g) => { g[0] += 1; g[1] += 1; }
///     LockResult::OwnerDied(mut g) => { g[1] = g[0]; g.make_consistent()?; }
/// }
/// assert_eq!(*m.lock()?.into_guard(), [1, 1]);
/// shmkit::Segment::unlink(&name)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
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

    /// Creates a file-backed mutex at `path` (`O_EXCL`, `O_NOFOLLOW`); robust mutexes
    /// work in any `MAP_SHARED` mapping, the futex is keyed by the file.
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

    /// Locks (blocking). `OwnerDied` hands over the guard of a lock whose holder died.
    pub fn lock(&self) -> Result<LockResult<MutexGuard<'_, T>>> {
        let died = self.inner.raw().lock_in(&self.inner.resource)?;
        Ok(self.inner.guard(died).map(first))
    }

    /// Locks; if the previous holder died, runs `repair` on the data and marks it
    /// consistent before handing over the guard. The shape of Python's
    /// `with v.get_lock():`, with the repair step Python does not have.
    ///
    /// ```
    /// use shmkit::sync::Mutex;
    /// let m = Mutex::<u64>::anonymous(1)?;
    /// *m.lock_or_repair(|v| *v = 0)? += 1; // `repair` runs only after an owner died
    /// assert_eq!(*m.lock()?.into_guard(), 2);
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    pub fn lock_or_repair(&self, repair: impl FnOnce(&mut T)) -> Result<MutexGuard<'_, T>> {
        repaired(self.lock()?, repair)
    }

    /// Locks if free now; [`Error::WouldBlock`] if another thread or process holds it.
    pub fn try_lock(&self) -> Result<LockResult<MutexGuard<'_, T>>> {
        let died = self.inner.raw().try_lock_in(&self.inner.resource)?;
        Ok(self.inner.guard(died).map(first))
    }

    /// Locks, waiting at most `timeout` on `CLOCK_MONOTONIC`; [`Error::Timeout`] after.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockResult<MutexGuard<'_, T>>> {
        let died = self
            .inner
            .raw()
            .lock_timeout_in(timeout, &self.inner.resource)?;
        Ok(self.inner.guard(died).map(first))
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
///     let mut g = a.lock()?.into_guard();
///     for x in g.iter_mut() { *x *= 2.0; }
/// }
/// assert_eq!(&*a.lock()?.into_guard(), &[3.0, 3.0, 3.0]);
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

    /// Locks (blocking).
    pub fn lock(&self) -> Result<LockResult<MutexGuard<'_, [T]>>> {
        let died = self.inner.raw().lock_in(&self.inner.resource)?;
        Ok(self.inner.guard(died))
    }

    /// Locks; if the previous holder died, runs `repair` on the data and marks it
    /// consistent first. See [`Mutex::lock_or_repair`].
    pub fn lock_or_repair(&self, repair: impl FnOnce(&mut [T])) -> Result<MutexGuard<'_, [T]>> {
        repaired(self.lock()?, repair)
    }

    /// Locks if free now; [`Error::WouldBlock`] otherwise.
    pub fn try_lock(&self) -> Result<LockResult<MutexGuard<'_, [T]>>> {
        let died = self.inner.raw().try_lock_in(&self.inner.resource)?;
        Ok(self.inner.guard(died))
    }

    /// Locks, waiting at most `timeout`; [`Error::Timeout`] after.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockResult<MutexGuard<'_, [T]>>> {
        let died = self
            .inner
            .raw()
            .lock_timeout_in(timeout, &self.inner.resource)?;
        Ok(self.inner.guard(died))
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

    #[test]
    fn relock_in_same_thread_is_an_error_not_a_hang() {
        let m = Mutex::<u32>::anonymous(0).unwrap();
        let _g = m.lock().unwrap().into_guard();
        let e = m.lock().unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EDEADLK), "{e}");
        // glibc's trylock reports the owning thread's own attempt as EDEADLK too.
        assert!(m.try_lock().is_err());
    }

    #[test]
    fn owner_is_visible_while_locked() {
        let m = Mutex::<u32>::anonymous(0).unwrap();
        assert_eq!(m.raw().owner().tid, 0);
        let g = m.lock().unwrap().into_guard();
        assert_eq!(m.raw().owner().tid, nix::unistd::gettid().as_raw() as u32);
        drop(g);
        assert_eq!(m.raw().owner().tid, 0);
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
    }

    #[test]
    fn thread_death_gives_owner_died_then_unrecoverable_if_not_repaired() {
        let m = std::sync::Arc::new(Mutex::<u32>::anonymous(7).unwrap());
        let m2 = m.clone();
        // A thread that exits holding a robust mutex counts as a dead owner.
        std::thread::spawn(move || std::mem::forget(m2.lock().unwrap().into_guard()))
            .join()
            .unwrap();
        let r = m.lock().unwrap();
        assert!(r.owner_died());
        drop(r); // not repaired
        assert!(matches!(m.lock(), Err(Error::Unrecoverable { .. })));
        assert!(m.raw().owner().unrecoverable);
    }

    #[test]
    fn lock_or_repair_repairs_only_after_a_death() {
        let m = std::sync::Arc::new(Mutex::<u32>::anonymous(7).unwrap());
        *m.lock_or_repair(|_| panic!("nobody died")).unwrap() += 1;
        let m2 = m.clone();
        std::thread::spawn(move || std::mem::forget(m2.lock().unwrap().into_guard()))
            .join()
            .unwrap();
        assert_eq!(*m.lock_or_repair(|v| *v = 100).unwrap(), 100);
        assert!(!m.lock().unwrap().owner_died());
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
