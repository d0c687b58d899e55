//! [`RwLock<T>`]: a `T` guarded by a glibc process-shared `pthread_rwlock_t`.
//!
//! glibc's default policy prefers readers: a steady stream of readers can starve a
//! writer.
//!
//! # Not robust (and how to detect it)
//! POSIX has no robust reader-writer lock: if a process dies holding it (as reader or
//! writer), the lock stays held forever. Use [`RwLock::read_timeout`] /
//! [`RwLock::write_timeout`] (`pthread_rwlock_clock*lock`, `CLOCK_MONOTONIC`) so a dead
//! holder becomes an [`Error::Timeout`], and `shmkit info` to see the writer's thread id
//! and whether it is alive. When a dead holder is possible and the data matters, prefer
//! the robust [`Mutex`](super::Mutex).

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

use bytemuck::Pod;
use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::segment::{ElemInfo, Kind, Layout, Segment, SegmentOptions};

use super::monotonic_deadline;

unsafe extern "C" {
    /// glibc ≥ 2.30; not bound by the `libc` crate.
    fn pthread_rwlock_clockrdlock(
        rwlock: *mut libc::pthread_rwlock_t,
        clockid: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
    /// glibc ≥ 2.30; not bound by the `libc` crate.
    fn pthread_rwlock_clockwrlock(
        rwlock: *mut libc::pthread_rwlock_t,
        clockid: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// A process-shared `pthread_rwlock_t` in shared memory.
#[repr(C)]
struct RawRwLock {
    inner: UnsafeCell<libc::pthread_rwlock_t>,
}

const RW_SIZE: usize = size_of::<RawRwLock>();
/// glibc (64-bit): `__readers` at 0 (count << 3), `__cur_writer` (TID) at 24.
const GLIBC_CUR_WRITER_OFFSET: usize = 24;
const GLIBC_READER_SHIFT: u32 = 3;
const _: () = assert!(RW_SIZE >= GLIBC_CUR_WRITER_OFFSET + 4);

const RW_PARAMS_TAG: u64 = 0x7277_6c6b_0001;

/// Data offset after the lock.
const fn data_offset(align: usize) -> usize {
    let a = if align > 64 { align } else { 64 };
    RW_SIZE.next_multiple_of(a)
}

fn rw_layout<T: Pod>() -> Layout {
    let off = data_offset(align_of::<T>()) as u64;
    Layout::new(Kind::RwLock, ElemInfo::of::<T>(1))
        .with_payload_len(off + size_of::<T>() as u64)
        .with_params([RW_PARAMS_TAG, RW_SIZE as u64, off, 0])
}

fn rw_init<T: Pod>(value: T) -> impl FnOnce(&mut [u8]) -> Result<()> {
    move |payload| {
        let off = data_offset(align_of::<T>());
        payload[off..off + size_of::<T>()].copy_from_slice(bytemuck::bytes_of(&value));
        let mut attr = MaybeUninit::<libc::pthread_rwlockattr_t>::uninit();
        // SAFETY: initialises the attribute object.
        let rc = unsafe { libc::pthread_rwlockattr_init(attr.as_mut_ptr()) };
        if rc != 0 {
            return Err(Error::os(
                "rwlock",
                "pthread_rwlockattr_init",
                Errno::from_raw(rc),
            ));
        }
        // SAFETY: attr initialised above.
        let rc = unsafe {
            libc::pthread_rwlockattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED)
        };
        let rc = if rc == 0 {
            // SAFETY: the payload is 64-byte aligned, at least RW_SIZE bytes, and ours
            // alone during initialisation; attr is initialised.
            unsafe { libc::pthread_rwlock_init(payload.as_mut_ptr().cast(), attr.as_ptr()) }
        } else {
            rc
        };
        // SAFETY: attr was initialised; destroyed exactly once.
        unsafe { libc::pthread_rwlockattr_destroy(attr.as_mut_ptr()) };
        if rc != 0 {
            return Err(Error::os(
                "rwlock",
                "pthread_rwlock_init",
                Errno::from_raw(rc),
            ));
        }
        Ok(())
    }
}

/// A `T` behind a process-shared reader-writer lock, in its own segment. Not robust:
/// see the [module docs](self).
///
/// ```
/// use shmkit::sync::RwLock;
/// use std::time::Duration;
/// let l = RwLock::<u64>::anonymous(1)?;
/// {
///     let r1 = l.read()?;
///     let r2 = l.try_read()?;
///     assert_eq!(*r1 + *r2, 2);
///     assert!(l.write_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
/// }
/// *l.write()? = 5;
/// assert_eq!(*l.read()?, 5);
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct RwLock<T> {
    seg: Segment,
    resource: String,
    _t: PhantomData<T>,
}

/// Shared access; unlocks on drop. Not `Send`.
pub struct RwLockReadGuard<'a, T> {
    lock: &'a RwLock<T>,
    _not_send: PhantomData<*const ()>,
}

/// Exclusive access; unlocks on drop. Not `Send`.
pub struct RwLockWriteGuard<'a, T> {
    lock: &'a RwLock<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T: Pod> RwLock<T> {
    /// The segment layout.
    pub fn layout() -> Layout {
        rw_layout::<T>()
    }

    /// Creates a named lock holding `value`.
    pub fn create(name: &str, value: T) -> Result<Self> {
        Self::create_with(&Segment::options(), name, value)
    }

    /// [`create`](Self::create) with options.
    pub fn create_with(opts: &SegmentOptions, name: &str, value: T) -> Result<Self> {
        Self::from_segment(opts.create(name, &Self::layout(), rw_init(value))?)
    }

    /// Opens a named lock.
    pub fn open(name: &str) -> Result<Self> {
        Self::from_segment(Segment::open(name)?)
    }

    /// Opens the lock or creates it holding `value`; returns whether it was created.
    pub fn open_or_create(name: &str, value: T) -> Result<(Self, bool)> {
        let (seg, created) = Segment::open_or_create(name, &Self::layout(), rw_init(value))?;
        Ok((Self::from_segment(seg)?, created))
    }

    /// An anonymous lock, shared with children forked after this call.
    pub fn anonymous(value: T) -> Result<Self> {
        Self::from_segment(Segment::anonymous(&Self::layout(), rw_init(value))?)
    }

    /// Wraps a segment after checking it holds an `RwLock<T>`.
    pub fn from_segment(seg: Segment) -> Result<Self> {
        seg.check_layout(&Self::layout())?;
        Ok(RwLock {
            resource: seg.resource(),
            seg,
            _t: PhantomData,
        })
    }

    fn raw(&self) -> *mut libc::pthread_rwlock_t {
        // The layout check guarantees an initialised rwlock at the 64-aligned payload.
        self.seg.payload_ptr().cast::<RawRwLock>().cast()
    }

    fn data(&self) -> *mut T {
        // SAFETY: the layout check guarantees a T at data_offset within the payload,
        // aligned (payload aligned to max(64, align_of T), offset a multiple of that).
        unsafe { self.seg.payload_ptr().add(data_offset(align_of::<T>())) }.cast()
    }

    fn result(&self, rc: libc::c_int, op: &'static str, timeout: Option<Duration>) -> Result<()> {
        match rc {
            0 => Ok(()),
            libc::EBUSY => Err(Error::WouldBlock {
                resource: self.resource.clone(),
                op,
            }),
            libc::ETIMEDOUT => Err(Error::Timeout {
                resource: self.resource.clone(),
                op,
                timeout: timeout.unwrap_or_default(),
            }),
            libc::EDEADLK => Err(Error::os_with_advice(
                &self.resource,
                op,
                Errno::EDEADLK,
                "this thread already holds the write lock",
            )),
            e => Err(Error::os(&self.resource, op, Errno::from_raw(e))),
        }
    }

    fn read_guard(&self) -> RwLockReadGuard<'_, T> {
        RwLockReadGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    fn write_guard(&self) -> RwLockWriteGuard<'_, T> {
        RwLockWriteGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Shared lock, blocking.
    pub fn read(&self) -> Result<RwLockReadGuard<'_, T>> {
        // SAFETY: initialised process-shared rwlock (type invariant).
        let rc = unsafe { libc::pthread_rwlock_rdlock(self.raw()) };
        self.result(rc, "pthread_rwlock_rdlock", None)
            .map(|()| self.read_guard())
    }

    /// Shared lock if available now; [`Error::WouldBlock`] otherwise.
    pub fn try_read(&self) -> Result<RwLockReadGuard<'_, T>> {
        // SAFETY: as in read.
        let rc = unsafe { libc::pthread_rwlock_tryrdlock(self.raw()) };
        self.result(rc, "pthread_rwlock_tryrdlock", None)
            .map(|()| self.read_guard())
    }

    /// Shared lock, waiting at most `timeout`; [`Error::Timeout`] after (a dead writer
    /// shows up this way).
    pub fn read_timeout(&self, timeout: Duration) -> Result<RwLockReadGuard<'_, T>> {
        let abs = monotonic_deadline(timeout);
        // SAFETY: as in read; abs is a normalised CLOCK_MONOTONIC timespec.
        let rc = unsafe { pthread_rwlock_clockrdlock(self.raw(), libc::CLOCK_MONOTONIC, &abs) };
        self.result(rc, "pthread_rwlock_clockrdlock", Some(timeout))
            .map(|()| self.read_guard())
    }

    /// Exclusive lock, blocking.
    pub fn write(&self) -> Result<RwLockWriteGuard<'_, T>> {
        // SAFETY: as in read.
        let rc = unsafe { libc::pthread_rwlock_wrlock(self.raw()) };
        self.result(rc, "pthread_rwlock_wrlock", None)
            .map(|()| self.write_guard())
    }

    /// Exclusive lock if available now; [`Error::WouldBlock`] otherwise.
    pub fn try_write(&self) -> Result<RwLockWriteGuard<'_, T>> {
        // SAFETY: as in read.
        let rc = unsafe { libc::pthread_rwlock_trywrlock(self.raw()) };
        self.result(rc, "pthread_rwlock_trywrlock", None)
            .map(|()| self.write_guard())
    }

    /// Exclusive lock, waiting at most `timeout`; [`Error::Timeout`] after.
    pub fn write_timeout(&self, timeout: Duration) -> Result<RwLockWriteGuard<'_, T>> {
        let abs = monotonic_deadline(timeout);
        // SAFETY: as in read_timeout.
        let rc = unsafe { pthread_rwlock_clockwrlock(self.raw(), libc::CLOCK_MONOTONIC, &abs) };
        self.result(rc, "pthread_rwlock_clockwrlock", Some(timeout))
            .map(|()| self.write_guard())
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}

fn unlock(p: *mut libc::pthread_rwlock_t) {
    // SAFETY: called by a guard of this thread, which holds the lock. Errors are ignored
    // so that dropping a guard never panics.
    let _ = unsafe { libc::pthread_rwlock_unlock(p) };
}

impl<T: Pod> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the read lock is held; writers are excluded; data valid and aligned.
        unsafe { &*self.lock.data() }
    }
}

impl<T> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        unlock(self.lock.seg.payload_ptr().cast());
    }
}

impl<T: Pod> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the write lock is held: exclusive access; data valid and aligned.
        unsafe { &*self.lock.data() }
    }
}

impl<T: Pod> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref, and &mut self makes the reference unique in-process.
        unsafe { &mut *self.lock.data() }
    }
}

impl<T> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        unlock(self.lock.seg.payload_ptr().cast());
    }
}

/// Rows for `shmkit info` (any element type).
pub(super) fn describe_segment(seg: &Segment) -> Option<Vec<(String, String)>> {
    let raw = &seg.header().raw;
    if raw.params[0] != RW_PARAMS_TAG
        || raw.params[1] != RW_SIZE as u64
        || seg.payload_len() < RW_SIZE
    {
        return None;
    }
    let p = seg.payload_ptr();
    // SAFETY: in bounds (checked); glibc's __readers word, read atomically.
    let readers =
        unsafe { &*(p as *const AtomicU32) }.load(Ordering::Relaxed) >> GLIBC_READER_SHIFT;
    // SAFETY: in bounds (const assertion); glibc's __cur_writer int, read atomically.
    let writer =
        unsafe { &*(p.add(GLIBC_CUR_WRITER_OFFSET) as *const AtomicI32) }.load(Ordering::Relaxed);
    let state = if writer > 0 {
        let (tgid, alive) = super::thread_owner(writer as u32);
        format!(
            "write-locked by {} ({})",
            tgid.map_or(format!("thread {writer}"), |p| format!("pid {p}")),
            if alive {
                "alive"
            } else {
                "DEAD: the lock is wedged; recreate it"
            }
        )
    } else if readers > 0 {
        format!("read-locked by {readers} reader(s)")
    } else {
        "unlocked".into()
    };
    Some(vec![
        ("lock".into(), state),
        (
            "robustness".into(),
            "none: a dead holder wedges it (use the _timeout forms)".into(),
        ),
    ])
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RwLockReadGuard").field(&**self).finish()
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RwLockWriteGuard").field(&**self).finish()
    }
}
