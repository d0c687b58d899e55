//! Counting semaphores: [`Semaphore`] (a futex counter in a segment),
//! [`BoundedSemaphore`] (refuses to be released above its initial value, like Python's,
//! exactly), and [`NamedSemaphore`] (glibc `sem_open`, shared by name with C programs and
//! Python's `posix_ipc`).
//!
//! # Trust
//! [`RawSemaphore`] (inside [`Semaphore`] and [`BoundedSemaphore`]) holds two plain
//! integers, validated on every read: a peer that writes into the segment can at worst
//! make a call fail ([`Error::Corrupt`] for a count out of range), take or refuse permits
//! it should not (a spurious result), or make a `wait_timeout` time out. It cannot crash
//! the process or hang a call past its timeout.
//!
//! [`NamedSemaphore`] is glibc's `sem_t` and **trusts its peers**: it exists for
//! interoperability with programs that need that exact object. A process that can write
//! `/dev/shm/sem.NAME` can make glibc abort inside `sem_wait` (observed) or spin; use it
//! only with peers you trust.
//!
//! # Not robust
//! A semaphore has no owner: a process killed between `wait` and `post` takes its permit
//! to the grave, and the count stays one lower forever. Nothing can detect that from the
//! semaphore alone. If a permit means "I own this resource", use the robust
//! [`Mutex`](super::Mutex) (one owner, `OwnerDied` on death) or a `MutexArray` of
//! per-slot owners instead; use semaphores for counting *things* (items produced, free
//! slots) where a dead consumer losing one is acceptable, and always prefer
//! [`Semaphore::wait_timeout`] so a lost permit becomes an error, not a hang.
//!
//! # References
//! - sem_overview(7), sem_open(3), sem_clockwait (glibc 2.30), futex(2).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::name::Name;
use crate::segment::{ElemInfo, Kind, Layout, Segment, SegmentOptions};

use super::futex;
use super::{Deadline, monotonic_deadline};

unsafe extern "C" {
    /// glibc ≥ 2.30; not bound by the `libc` crate.
    fn sem_clockwait(
        sem: *mut libc::sem_t,
        clockid: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// Largest count a semaphore can hold (`SEM_VALUE_MAX` on Linux).
pub const SEM_VALUE_MAX: u32 = i32::MAX as u32;

/// Operations on a glibc `sem_t` (only [`NamedSemaphore`]'s). Returns errno on failure.
mod ops {
    use super::*;

    pub(super) fn wait(s: *mut libc::sem_t) -> std::result::Result<(), Errno> {
        loop {
            // SAFETY: callers pass a pointer to an initialised, live sem_t.
            if unsafe { libc::sem_wait(s) } == 0 {
                return Ok(());
            }
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
    }

    pub(super) fn try_wait(s: *mut libc::sem_t) -> std::result::Result<(), Errno> {
        loop {
            // SAFETY: as in wait.
            if unsafe { libc::sem_trywait(s) } == 0 {
                return Ok(());
            }
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
    }

    pub(super) fn wait_timeout(s: *mut libc::sem_t, t: Duration) -> std::result::Result<(), Errno> {
        let abs = monotonic_deadline(t);
        loop {
            // SAFETY: as in wait; `abs` is a normalised CLOCK_MONOTONIC timespec.
            if unsafe { sem_clockwait(s, libc::CLOCK_MONOTONIC, &abs) } == 0 {
                return Ok(());
            }
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
    }

    pub(super) fn post(s: *mut libc::sem_t) -> std::result::Result<(), Errno> {
        // SAFETY: as in wait.
        if unsafe { libc::sem_post(s) } == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }

    pub(super) fn value(s: *mut libc::sem_t) -> u32 {
        let mut v: libc::c_int = 0;
        // SAFETY: as in wait; `v` is a valid out-pointer.
        if unsafe { libc::sem_getvalue(s, &mut v) } == 0 {
            v.max(0) as u32
        } else {
            0
        }
    }
}

fn map_wait(resource: &str, op: &'static str, e: Errno, timeout: Option<Duration>) -> Error {
    match (e, timeout) {
        (Errno::EAGAIN, _) => Error::WouldBlock {
            resource: resource.to_owned(),
            op,
        },
        (Errno::ETIMEDOUT, Some(t)) => Error::Timeout {
            resource: resource.to_owned(),
            op,
            timeout: t,
        },
        (e, _) => Error::os(resource, op, e),
    }
}

fn map_post(resource: &str, e: Errno) -> Error {
    if e == Errno::EOVERFLOW {
        Error::os_with_advice(
            resource,
            "sem_post",
            e,
            "the count would exceed SEM_VALUE_MAX",
        )
    } else {
        Error::os(resource, "sem_post", e)
    }
}

/// Compare-and-swap attempts before a count that keeps changing under us is given up
/// on (each failure means another process wrote the word; a legitimate contender
/// succeeds long before this).
const CAS_TRIES: u32 = 1 << 16;

/// A process-shared counting semaphore, to be placed in shared memory: two 32-bit words
/// (the count and the number of registered sleepers), [`Self::SIZE`] bytes aligned to
/// [`Self::ALIGN`], initialised once with [`init_at`](Self::init_at).
///
/// Not glibc's `sem_t`: the words are plain integers, validated on every read (a count
/// above [`SEM_VALUE_MAX`] is [`Error::Corrupt`]), and waiters sleep on the count with
/// `FUTEX_WAIT` through [`super::futex`]. `post` makes a system call only when a sleeper
/// is registered. Whatever a peer writes into the two words, a call gives at worst an
/// error, a spurious result (a permit taken or refused) or its timeout: never a crash or
/// a hang past the timeout.
///
/// Sleep/wake handshake (no lost wake-up): a waiter registers in `sleepers` (SeqCst),
/// re-reads the count and sleeps only while it is 0 (`FUTEX_WAIT` compares in the
/// kernel); `post` increments the count (SeqCst) and then reads `sleepers`. Sequential
/// consistency forbids both missing each other (the handshake of [`RawEvent`](super::RawEvent),
/// which loom checks in `sync::loom`; this copy of it is not model-checked).
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawSemaphore {
    count: AtomicU32,
    sleepers: AtomicU32,
}

impl RawSemaphore {
    /// Bytes a slot must have.
    pub const SIZE: usize = size_of::<RawSemaphore>();
    /// Alignment a slot must have.
    pub const ALIGN: usize = align_of::<RawSemaphore>();

    /// Initialises a semaphore with count `value` at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for writes of [`Self::SIZE`] bytes, aligned to [`Self::ALIGN`],
    /// and not in use by anyone else during the call.
    pub unsafe fn init_at(ptr: *mut RawSemaphore, value: u32) -> Result<()> {
        if value > SEM_VALUE_MAX {
            return Err(Error::invalid(
                "semaphore",
                "init",
                "value exceeds SEM_VALUE_MAX",
            ));
        }
        // SAFETY: guaranteed by the caller.
        unsafe {
            ptr.write(RawSemaphore {
                count: AtomicU32::new(value),
                sleepers: AtomicU32::new(0),
            })
        };
        Ok(())
    }

    /// Takes a permit if one is available: `Ok(false)` if the count is 0 (or kept
    /// changing for [`CAS_TRIES`] attempts), [`Error::Corrupt`] if it is out of range.
    fn try_take(&self, resource: &str) -> Result<bool> {
        let mut c = self.count.load(Ordering::SeqCst);
        for _ in 0..CAS_TRIES {
            if c > SEM_VALUE_MAX {
                return Err(Error::corrupt(resource, format!("semaphore count {c}")));
            }
            if c == 0 {
                return Ok(false);
            }
            match self
                .count
                .compare_exchange_weak(c, c - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Ok(true),
                Err(cur) => c = cur,
            }
        }
        Ok(false)
    }

    /// Takes a permit, sleeping while there is none, at most `timeout` (`None`: no
    /// limit).
    pub(crate) fn wait_in(&self, timeout: Option<Duration>, resource: &str) -> Result<()> {
        if self.try_take(resource)? {
            return Ok(());
        }
        let deadline = Deadline::after(timeout);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let r = loop {
            match self.try_take(resource) {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(e) => break Err(e),
            }
            let Some(left) = deadline.remaining() else {
                break Err(Error::Timeout {
                    resource: resource.to_owned(),
                    op: "semaphore wait",
                    timeout: timeout.unwrap_or_default(),
                });
            };
            // Sleeps only while the count is still 0; any change (a post, or a peer's
            // write) returns at once and is re-validated above.
            if let Err(e) = futex::wait(&self.count, 0, left) {
                break Err(Error::os(resource, "futex(FUTEX_WAIT)", e));
            }
        };
        // Wrapping on purpose: a peer may have zeroed the count while we slept; the
        // count only decides whether `post` makes a wake system call.
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        r
    }

    pub(crate) fn try_wait_in(&self, resource: &str) -> Result<()> {
        if self.try_take(resource)? {
            Ok(())
        } else {
            Err(Error::WouldBlock {
                resource: resource.to_owned(),
                op: "semaphore try_wait",
            })
        }
    }

    /// Increments unless the count is at `limit`; wakes one sleeper if any is
    /// registered.
    pub(crate) fn post_in(&self, limit: u32, resource: &str) -> Result<()> {
        let mut c = self.count.load(Ordering::SeqCst);
        let mut tries = 0;
        loop {
            if c > limit {
                return Err(Error::corrupt(
                    resource,
                    format!("semaphore count {c} above its limit {limit}"),
                ));
            }
            if c == limit {
                return Err(if limit == SEM_VALUE_MAX {
                    Error::os_with_advice(
                        resource,
                        "semaphore post",
                        Errno::EOVERFLOW,
                        "the count would exceed SEM_VALUE_MAX",
                    )
                } else {
                    Error::invalid(
                        resource,
                        "post",
                        format!("released too many times (count is at its bound {limit})"),
                    )
                });
            }
            match self
                .count
                .compare_exchange_weak(c, c + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(cur) => c = cur,
            }
            tries += 1;
            if tries >= CAS_TRIES {
                return Err(Error::corrupt(
                    resource,
                    "the semaphore count keeps changing (another process writes it)",
                ));
            }
        }
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            // A failed wake only costs a bounded waiter a spurious timeout.
            let _ = futex::wake(&self.count, 1);
        }
        Ok(())
    }

    /// The count and the sleeper count, for the async waiters (`crate::aio`).
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    pub(crate) fn wait_words(&self) -> (&AtomicU32, &AtomicU32) {
        (&self.count, &self.sleepers)
    }

    /// Decrements, blocking while the count is 0.
    pub fn wait(&self) -> Result<()> {
        self.wait_in(None, "semaphore")
    }

    /// Decrements if the count is positive; [`Error::WouldBlock`] otherwise.
    pub fn try_wait(&self) -> Result<()> {
        self.try_wait_in("semaphore")
    }

    /// [`wait`](Self::wait) for at most `timeout` (`CLOCK_MONOTONIC`);
    /// [`Error::Timeout`] after.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_in(Some(timeout), "semaphore")
    }

    /// Increments, waking one waiter (a system call only if one sleeps).
    pub fn post(&self) -> Result<()> {
        self.post_in(SEM_VALUE_MAX, "semaphore")
    }

    /// The current count (a snapshot; a value above [`SEM_VALUE_MAX`] is corrupt).
    pub fn value(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Registered sleepers (including any killed while sleeping), for diagnostics.
    pub fn sleepers(&self) -> u32 {
        self.sleepers.load(Ordering::Relaxed)
    }
}

/// Format tag in `Layout::params[0]`: v2 is the futex counter (v1 was a glibc `sem_t`).
const SEM_PARAMS_TAG: u64 = 0x7365_6d61_0002;

fn sem_layout(bound: u32) -> Layout {
    Layout::new(Kind::Semaphore, ElemInfo::bytes(0))
        .with_payload_len(RawSemaphore::SIZE as u64)
        .with_params([SEM_PARAMS_TAG, RawSemaphore::SIZE as u64, bound as u64, 0])
}

fn sem_init(value: u32) -> impl FnOnce(&mut [u8]) -> Result<()> {
    move |payload| {
        // SAFETY: 64-byte aligned payload of RawSemaphore::SIZE bytes, exclusively ours.
        unsafe { RawSemaphore::init_at(payload.as_mut_ptr().cast(), value) }
    }
}

/// A counting semaphore in its own segment (`multiprocessing.Semaphore`). Not robust:
/// see the [module docs](self).
///
/// ```
/// use shmkit::sync::Semaphore;
/// use std::time::Duration;
/// let s = Semaphore::anonymous(1)?;
/// s.wait()?;
/// assert!(s.try_wait().is_err());
/// assert!(s.wait_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
/// s.post()?;
/// assert_eq!(s.value(), 1);
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Semaphore {
    seg: Segment,
    resource: String,
}

impl Semaphore {
    /// The segment layout (bound 0 = unbounded).
    pub fn layout() -> Layout {
        sem_layout(0)
    }

    /// Creates a named semaphore with count `value`.
    #[doc(alias = "sem_open")]
    pub fn create(name: &str, value: u32) -> Result<Self> {
        Self::create_with(&Segment::options(), name, value)
    }

    /// [`create`](Self::create) with options.
    pub fn create_with(opts: &SegmentOptions, name: &str, value: u32) -> Result<Self> {
        Self::wrap(opts.create(name, &sem_layout(0), sem_init(value))?, 0)
    }

    /// Opens a named semaphore.
    #[doc(alias = "sem_open")]
    pub fn open(name: &str) -> Result<Self> {
        Self::wrap(Segment::open(name)?, 0)
    }

    /// Opens or creates with count `value`; returns whether it was created.
    #[doc(alias = "sem_open")]
    pub fn open_or_create(name: &str, value: u32) -> Result<(Self, bool)> {
        let (seg, created) = Segment::open_or_create(name, &sem_layout(0), sem_init(value))?;
        Ok((Self::wrap(seg, 0)?, created))
    }

    /// An anonymous semaphore, shared with children forked after this call.
    pub fn anonymous(value: u32) -> Result<Self> {
        Self::wrap(Segment::anonymous(&sem_layout(0), sem_init(value))?, 0)
    }

    /// Wraps a segment after checking it holds an (unbounded) semaphore.
    pub fn from_segment(seg: Segment) -> Result<Self> {
        Self::wrap(seg, 0)
    }

    fn wrap(seg: Segment, bound: u32) -> Result<Self> {
        seg.check_layout(&sem_layout(bound))?;
        Ok(Semaphore {
            resource: seg.resource(),
            seg,
        })
    }

    /// The semaphore object.
    pub fn raw(&self) -> &RawSemaphore {
        // SAFETY: check_layout verified a semaphore segment whose payload is an
        // initialised RawSemaphore (64-aligned); it lives as long as the mapping.
        unsafe { &*(self.seg.payload_ptr() as *const RawSemaphore) }
    }

    /// Decrements, blocking while the count is 0.
    #[doc(alias = "sem_wait")]
    pub fn wait(&self) -> Result<()> {
        self.raw().wait_in(None, &self.resource)
    }

    /// Decrements if positive; [`Error::WouldBlock`] otherwise.
    #[doc(alias = "sem_trywait")]
    pub fn try_wait(&self) -> Result<()> {
        self.raw().try_wait_in(&self.resource)
    }

    /// Decrements, waiting at most `timeout`; [`Error::Timeout`] after.
    #[doc(alias("sem_timedwait", "sem_clockwait"))]
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.raw().wait_in(Some(timeout), &self.resource)
    }

    /// Increments, waking one waiter (a system call only if one sleeps).
    #[doc(alias = "sem_post")]
    pub fn post(&self) -> Result<()> {
        self.raw().post_in(SEM_VALUE_MAX, &self.resource)
    }

    /// The current count (a snapshot).
    #[doc(alias = "sem_getvalue")]
    pub fn value(&self) -> u32 {
        self.raw().value()
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The layout of the semaphore segment `h` claims to be (its bound from the
    /// parameters), to check the header against.
    pub(super) fn layout_of(h: &crate::segment::Header) -> Option<Layout> {
        Some(sem_layout(u32::try_from(h.raw.params[2]).ok()?))
    }

    /// The state `shmkit info` shows, from the words of a [`RawSemaphore`] (count,
    /// sleepers) and the bound in the header (0: none).
    pub(super) fn state_of_words(bound: u32, [v, sleepers]: [u32; 2]) -> super::SyncState {
        super::SyncState::Semaphore {
            count: v,
            bound: (bound != 0).then_some(bound),
            sleepers,
            corrupt: v > SEM_VALUE_MAX || (bound != 0 && v > bound),
        }
    }
}

/// A semaphore that refuses `post` above its initial value (Python's
/// `BoundedSemaphore`): releasing more often than acquiring is a bug it reports.
///
/// The bound is exact: `post` increments with a compare-and-swap only while the count is
/// below it, so racing releases cannot push the count past the bound.
///
/// ```
/// use shmkit::sync::BoundedSemaphore;
/// let s = BoundedSemaphore::anonymous(2)?;
/// assert!(s.post().is_err()); // already at its bound
/// s.wait()?;
/// s.post()?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct BoundedSemaphore {
    inner: Semaphore,
    bound: u32,
}

impl BoundedSemaphore {
    /// The semaphore object, for the async waiters (`crate::aio`).
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    pub(crate) fn raw_hook(&self) -> &RawSemaphore {
        self.inner.raw()
    }

    /// The segment layout for a bound (= initial value).
    pub fn layout(bound: u32) -> Layout {
        sem_layout(bound)
    }

    fn check_bound(name: &str, bound: u32) -> Result<()> {
        if bound == 0 || bound > SEM_VALUE_MAX {
            return Err(Error::invalid(
                name,
                "create",
                "bound must be 1..=SEM_VALUE_MAX",
            ));
        }
        Ok(())
    }

    /// Creates a named semaphore with count and bound `value`.
    #[doc(alias = "sem_open")]
    pub fn create(name: &str, value: u32) -> Result<Self> {
        Self::check_bound(name, value)?;
        let seg = Segment::create(name, &sem_layout(value), sem_init(value))?;
        Self::from_segment(seg)
    }

    /// Opens a named bounded semaphore (the bound is read from the segment).
    #[doc(alias = "sem_open")]
    pub fn open(name: &str) -> Result<Self> {
        Self::from_segment(Segment::open(name)?)
    }

    /// An anonymous bounded semaphore.
    pub fn anonymous(value: u32) -> Result<Self> {
        Self::check_bound("<anonymous segment>", value)?;
        Self::from_segment(Segment::anonymous(&sem_layout(value), sem_init(value))?)
    }

    /// Wraps a segment after checking it holds a bounded semaphore.
    pub fn from_segment(seg: Segment) -> Result<Self> {
        let bound = u32::try_from(seg.header().raw.params[2]).unwrap_or(0);
        if bound == 0 {
            return Err(Error::Mismatch {
                resource: seg.resource(),
                what: "semaphore bound",
                expected: "a bounded semaphore".into(),
                found: "an unbounded one".into(),
            });
        }
        Ok(BoundedSemaphore {
            inner: Semaphore::wrap(seg, bound)?,
            bound,
        })
    }

    /// The bound.
    pub fn bound(&self) -> u32 {
        self.bound
    }

    /// See [`Semaphore::wait`].
    #[doc(alias = "sem_wait")]
    pub fn wait(&self) -> Result<()> {
        self.inner.wait()
    }

    /// See [`Semaphore::try_wait`].
    #[doc(alias = "sem_trywait")]
    pub fn try_wait(&self) -> Result<()> {
        self.inner.try_wait()
    }

    /// See [`Semaphore::wait_timeout`].
    #[doc(alias("sem_timedwait", "sem_clockwait"))]
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.inner.wait_timeout(timeout)
    }

    /// Increments unless the count is at the bound ([`Error::InvalidArgument`]: released
    /// too many times).
    #[doc(alias = "sem_post")]
    pub fn post(&self) -> Result<()> {
        self.inner.raw().post_in(self.bound, &self.inner.resource)
    }

    /// The current count.
    #[doc(alias = "sem_getvalue")]
    pub fn value(&self) -> u32 {
        self.inner.value()
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        self.inner.segment()
    }
}

/// A POSIX named semaphore (`sem_open`), visible as `/dev/shm/sem.NAME`, shared by name
/// with any program: C (`sem_open("/NAME", 0)`), Python (`posix_ipc.Semaphore("/NAME")`).
/// Not robust: see the [module docs](self).
///
/// **Trusts its peers.** The object is glibc's `sem_t`: a process that can write
/// `/dev/shm/sem.NAME` can make glibc abort this process inside `sem_wait`/`sem_post`
/// (its internal assertions) or make a wait spin. Use it only for interoperability with
/// trusted C/Python programs; between shmkit processes use [`Semaphore`], which keeps
/// the trust model of the [module docs](self).
///
/// ```
/// use shmkit::sync::NamedSemaphore;
/// let name = format!("doc-nsem-{}", std::process::id());
/// let a = NamedSemaphore::create(&name, 0)?;
/// let b = NamedSemaphore::open(&name)?;
/// b.post()?;
/// a.wait()?;
/// NamedSemaphore::unlink(&name)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
#[doc(alias = "sem_t")]
pub struct NamedSemaphore {
    sem: NonNull<libc::sem_t>,
    name: Name,
}

// SAFETY: a sem_open handle may be used from any thread; operations are thread-safe.
unsafe impl Send for NamedSemaphore {}
// SAFETY: as above.
unsafe impl Sync for NamedSemaphore {}

impl NamedSemaphore {
    fn open_raw(
        name: &str,
        oflag: libc::c_int,
        mode: u32,
        value: u32,
        op: &'static str,
    ) -> Result<Self> {
        let n = Name::sem(name)?;
        if value > SEM_VALUE_MAX {
            return Err(Error::invalid(
                n.to_string(),
                op,
                "value exceeds SEM_VALUE_MAX",
            ));
        }
        let c = n.to_slashed();
        // SAFETY: `c` is a NUL-terminated validated name; the variadic mode and value
        // arguments are passed as the C ABI promotes them (unsigned int).
        let p = unsafe {
            libc::sem_open(
                c.as_ptr(),
                oflag,
                mode as libc::c_uint,
                value as libc::c_uint,
            )
        };
        if p == libc::SEM_FAILED {
            return Err(Error::os(n.to_string(), op, Errno::last()));
        }
        let sem = NonNull::new(p).ok_or_else(|| Error::os(n.to_string(), op, Errno::EINVAL))?;
        Ok(NamedSemaphore { sem, name: n })
    }

    /// Creates a new named semaphore with count `value` (`O_CREAT|O_EXCL`, mode 0600).
    #[doc(alias = "sem_open")]
    pub fn create(name: &str, value: u32) -> Result<Self> {
        Self::create_with_mode(name, value, 0o600)
    }

    /// [`create`](Self::create) with permission bits (subject to the umask, as `sem_open`).
    #[doc(alias = "sem_open")]
    pub fn create_with_mode(name: &str, value: u32, mode: u32) -> Result<Self> {
        Self::open_raw(
            name,
            libc::O_CREAT | libc::O_EXCL,
            mode & 0o777,
            value,
            "sem_open(O_CREAT|O_EXCL)",
        )
    }

    /// Opens an existing named semaphore.
    #[doc(alias = "sem_open")]
    pub fn open(name: &str) -> Result<Self> {
        Self::open_raw(name, 0, 0, 0, "sem_open")
    }

    /// Opens the semaphore, creating it with count `value` if it does not exist.
    #[doc(alias = "sem_open")]
    pub fn open_or_create(name: &str, value: u32) -> Result<Self> {
        Self::open_raw(name, libc::O_CREAT, 0o600, value, "sem_open(O_CREAT)")
    }

    /// Removes the name (`sem_unlink`); open handles keep working.
    #[doc(alias = "sem_unlink")]
    pub fn unlink(name: &str) -> Result<()> {
        let n = Name::sem(name)?;
        let c = n.to_slashed();
        // SAFETY: `c` is a NUL-terminated string.
        if unsafe { libc::sem_unlink(c.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(Error::os(n.to_string(), "sem_unlink", Errno::last()))
        }
    }

    /// The validated name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Decrements, blocking while the count is 0.
    #[doc(alias = "sem_wait")]
    pub fn wait(&self) -> Result<()> {
        ops::wait(self.sem.as_ptr()).map_err(|e| map_wait(self.name.as_str(), "sem_wait", e, None))
    }

    /// Decrements if positive; [`Error::WouldBlock`] otherwise.
    #[doc(alias = "sem_trywait")]
    pub fn try_wait(&self) -> Result<()> {
        ops::try_wait(self.sem.as_ptr())
            .map_err(|e| map_wait(self.name.as_str(), "sem_trywait", e, None))
    }

    /// Decrements, waiting at most `timeout`; [`Error::Timeout`] after.
    #[doc(alias("sem_timedwait", "sem_clockwait"))]
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        ops::wait_timeout(self.sem.as_ptr(), timeout)
            .map_err(|e| map_wait(self.name.as_str(), "sem_clockwait", e, Some(timeout)))
    }

    /// Increments, waking one waiter.
    #[doc(alias = "sem_post")]
    pub fn post(&self) -> Result<()> {
        ops::post(self.sem.as_ptr()).map_err(|e| map_post(self.name.as_str(), e))
    }

    /// The current count.
    #[doc(alias = "sem_getvalue")]
    pub fn value(&self) -> u32 {
        ops::value(self.sem.as_ptr())
    }
}

impl Drop for NamedSemaphore {
    fn drop(&mut self) {
        // SAFETY: `sem` came from a successful sem_open and is closed exactly once.
        unsafe { libc::sem_close(self.sem.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_semaphore_refuses_over_release_and_checks_kind_on_open() {
        let name = format!("shmkit-unit-bsem-{}", std::process::id());
        let b = BoundedSemaphore::create(&name, 2).unwrap();
        assert!(matches!(b.post(), Err(Error::InvalidArgument { .. })));
        b.wait().unwrap();
        b.post().unwrap();
        assert_eq!(BoundedSemaphore::open(&name).unwrap().bound(), 2);
        // A bounded semaphore is not an unbounded one.
        assert!(matches!(
            Semaphore::open(&name),
            Err(Error::Mismatch { .. })
        ));
        assert_eq!(
            super::super::describe(b.segment()),
            Some(super::super::SyncState::Semaphore {
                count: 2,
                bound: Some(2),
                sleepers: 0,
                corrupt: false
            })
        );
        Segment::unlink(&name).unwrap();
        assert!(BoundedSemaphore::anonymous(0).is_err());
    }

    #[test]
    fn bounded_semaphore_bound_is_exact_under_racing_posts() {
        let b = std::sync::Arc::new(BoundedSemaphore::anonymous(4).unwrap());
        for _ in 0..4 {
            b.wait().unwrap();
        }
        // 8 threads race to release 4 permits each: exactly 4 releases succeed overall.
        let ok: usize = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..4).filter(|_| b.post().is_ok()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(ok, 4);
        assert_eq!(b.value(), 4);
    }

    #[test]
    fn hostile_counts_give_errors_or_timeouts() {
        let s = Semaphore::anonymous(0).unwrap();
        let raw = s.raw();
        for bad in [SEM_VALUE_MAX + 1, u32::MAX] {
            raw.count.store(bad, Ordering::SeqCst);
            assert!(matches!(
                s.wait_timeout(Duration::from_millis(1)),
                Err(Error::Corrupt { .. })
            ));
            assert!(matches!(s.try_wait(), Err(Error::Corrupt { .. })));
            assert!(matches!(s.post(), Err(Error::Corrupt { .. })));
        }
        raw.count.store(SEM_VALUE_MAX, Ordering::SeqCst);
        assert_eq!(s.post().unwrap_err().errno(), Some(Errno::EOVERFLOW));
        s.wait().unwrap();
        // Garbage sleepers only cost a wake system call.
        raw.sleepers.store(u32::MAX, Ordering::SeqCst);
        s.post().unwrap();
        raw.count.store(0, Ordering::SeqCst);
        let t = std::time::Instant::now();
        assert!(
            s.wait_timeout(Duration::from_millis(20))
                .unwrap_err()
                .is_timeout()
        );
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn post_wakes_a_sleeping_thread() {
        let s = std::sync::Arc::new(Semaphore::anonymous(0).unwrap());
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait_timeout(Duration::from_secs(20)));
        while s.raw().sleepers() == 0 {
            std::thread::yield_now();
        }
        s.post().unwrap();
        t.join().unwrap().unwrap();
        assert_eq!((s.value(), s.raw().sleepers()), (0, 0));
    }

    #[test]
    fn named_semaphore_rejects_bad_names_before_any_syscall() {
        assert!(matches!(
            NamedSemaphore::create("a/b", 0),
            Err(Error::InvalidName { .. })
        ));
        assert!(
            NamedSemaphore::open("shmkit-unit-no-such-sem")
                .unwrap_err()
                .is_not_found()
        );
    }
}
