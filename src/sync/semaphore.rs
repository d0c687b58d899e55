//! Counting semaphores: [`Semaphore`] (a `sem_t` in a segment, `sem_init(pshared=1)`),
//! [`BoundedSemaphore`] (refuses to be released above its initial value, like Python's),
//! and [`NamedSemaphore`] (`sem_open`, shared by name with C programs and Python's
//! `posix_ipc`).
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
//! - sem_overview(7), sem_init(3), sem_open(3), sem_clockwait (glibc 2.30).

use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::time::Duration;

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::name::Name;
use crate::segment::{ElemInfo, Kind, Layout, Segment, SegmentOptions};

use super::monotonic_deadline;

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

/// Operations on a `sem_t` wherever it lives. Returns errno on failure.
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

/// A process-shared `sem_t`, to be placed in shared memory: [`Self::SIZE`] bytes aligned
/// to [`Self::ALIGN`], initialised once with [`init_at`](Self::init_at); never moved.
#[repr(C)]
pub struct RawSemaphore {
    inner: UnsafeCell<libc::sem_t>,
}

// SAFETY: sem_t operations are thread- and process-safe (atomics inside glibc).
unsafe impl Sync for RawSemaphore {}
// SAFETY: as above; no thread-affine state.
unsafe impl Send for RawSemaphore {}

impl std::fmt::Debug for RawSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSemaphore")
            .field("value", &self.value())
            .finish()
    }
}

impl RawSemaphore {
    /// Bytes a slot must have.
    pub const SIZE: usize = size_of::<RawSemaphore>();
    /// Alignment a slot must have.
    pub const ALIGN: usize = align_of::<RawSemaphore>();

    /// `sem_init(ptr, pshared = 1, value)`.
    ///
    /// # Safety
    /// `ptr` must be valid for writes of [`Self::SIZE`] bytes, aligned to [`Self::ALIGN`],
    /// in shared memory that stays mapped at this address while used, and not in use by
    /// anyone else during the call.
    pub unsafe fn init_at(ptr: *mut RawSemaphore, value: u32) -> Result<()> {
        if value > SEM_VALUE_MAX {
            return Err(Error::invalid(
                "semaphore",
                "sem_init",
                "value exceeds SEM_VALUE_MAX",
            ));
        }
        // SAFETY: guaranteed by the caller; RawSemaphore is repr(C) over sem_t.
        if unsafe { libc::sem_init(ptr.cast(), 1, value) } == 0 {
            Ok(())
        } else {
            Err(Error::os("semaphore", "sem_init", Errno::last()))
        }
    }

    fn ptr(&self) -> *mut libc::sem_t {
        self.inner.get()
    }

    /// Decrements, blocking while the count is 0 (`sem_wait`).
    pub fn wait(&self) -> Result<()> {
        ops::wait(self.ptr()).map_err(|e| map_wait("semaphore", "sem_wait", e, None))
    }

    /// Decrements if the count is positive; [`Error::WouldBlock`] otherwise.
    pub fn try_wait(&self) -> Result<()> {
        ops::try_wait(self.ptr()).map_err(|e| map_wait("semaphore", "sem_trywait", e, None))
    }

    /// [`wait`](Self::wait) for at most `timeout` (`sem_clockwait`, `CLOCK_MONOTONIC`).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        ops::wait_timeout(self.ptr(), timeout)
            .map_err(|e| map_wait("semaphore", "sem_clockwait", e, Some(timeout)))
    }

    /// Increments, waking one waiter (`sem_post`).
    pub fn post(&self) -> Result<()> {
        ops::post(self.ptr()).map_err(|e| map_post("semaphore", e))
    }

    /// The current count (a snapshot).
    pub fn value(&self) -> u32 {
        ops::value(self.ptr())
    }
}

const SEM_PARAMS_TAG: u64 = 0x7365_6d61_0001;

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
    pub fn create(name: &str, value: u32) -> Result<Self> {
        Self::create_with(&Segment::options(), name, value)
    }

    /// [`create`](Self::create) with options.
    pub fn create_with(opts: &SegmentOptions, name: &str, value: u32) -> Result<Self> {
        Self::wrap(opts.create(name, &sem_layout(0), sem_init(value))?, 0)
    }

    /// Opens a named semaphore.
    pub fn open(name: &str) -> Result<Self> {
        Self::wrap(Segment::open(name)?, 0)
    }

    /// Opens or creates with count `value`; returns whether it was created.
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
    pub fn wait(&self) -> Result<()> {
        ops::wait(self.raw().ptr()).map_err(|e| map_wait(&self.resource, "sem_wait", e, None))
    }

    /// Decrements if positive; [`Error::WouldBlock`] otherwise.
    pub fn try_wait(&self) -> Result<()> {
        ops::try_wait(self.raw().ptr())
            .map_err(|e| map_wait(&self.resource, "sem_trywait", e, None))
    }

    /// Decrements, waiting at most `timeout`; [`Error::Timeout`] after.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        ops::wait_timeout(self.raw().ptr(), timeout)
            .map_err(|e| map_wait(&self.resource, "sem_clockwait", e, Some(timeout)))
    }

    /// Increments, waking one waiter.
    pub fn post(&self) -> Result<()> {
        ops::post(self.raw().ptr()).map_err(|e| map_post(&self.resource, e))
    }

    /// The current count (a snapshot).
    pub fn value(&self) -> u32 {
        self.raw().value()
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    pub(super) fn describe_segment(seg: &Segment) -> Option<Vec<(String, String)>> {
        let raw = &seg.header().raw;
        let bound = u32::try_from(raw.params[2]).ok()?;
        seg.check_layout(&sem_layout(bound)).ok()?;
        // SAFETY: checked layout: an initialised sem_t at the payload.
        let v = unsafe { &*(seg.payload_ptr() as *const RawSemaphore) }.value();
        let mut out = vec![("count".to_string(), v.to_string())];
        if bound != 0 {
            out.push(("bound".into(), bound.to_string()));
        }
        out.push((
            "robustness".into(),
            "none: permits held by dead processes are lost".into(),
        ));
        Some(out)
    }
}

/// A semaphore that refuses `post` above its initial value (Python's
/// `BoundedSemaphore`): releasing more often than acquiring is a bug it reports.
///
/// The bound check reads the count and then posts, like CPython's; two racing `post`s
/// at `bound - 1` can both pass. It catches logic errors, it is not a hard limit.
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
    pub fn create(name: &str, value: u32) -> Result<Self> {
        Self::check_bound(name, value)?;
        let seg = Segment::create(name, &sem_layout(value), sem_init(value))?;
        Self::from_segment(seg)
    }

    /// Opens a named bounded semaphore (the bound is read from the segment).
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
    pub fn wait(&self) -> Result<()> {
        self.inner.wait()
    }

    /// See [`Semaphore::try_wait`].
    pub fn try_wait(&self) -> Result<()> {
        self.inner.try_wait()
    }

    /// See [`Semaphore::wait_timeout`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.inner.wait_timeout(timeout)
    }

    /// Increments unless the count is at the bound ([`Error::InvalidArgument`]: released
    /// too many times).
    pub fn post(&self) -> Result<()> {
        if self.inner.value() >= self.bound {
            return Err(Error::invalid(
                &self.inner.resource,
                "post",
                format!(
                    "released too many times (count is at its bound {})",
                    self.bound
                ),
            ));
        }
        self.inner.post()
    }

    /// The current count.
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
    pub fn create(name: &str, value: u32) -> Result<Self> {
        Self::create_with_mode(name, value, 0o600)
    }

    /// [`create`](Self::create) with permission bits (subject to the umask, as `sem_open`).
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
    pub fn open(name: &str) -> Result<Self> {
        Self::open_raw(name, 0, 0, 0, "sem_open")
    }

    /// Opens the semaphore, creating it with count `value` if it does not exist.
    pub fn open_or_create(name: &str, value: u32) -> Result<Self> {
        Self::open_raw(name, libc::O_CREAT, 0o600, value, "sem_open(O_CREAT)")
    }

    /// Removes the name (`sem_unlink`); open handles keep working.
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
    pub fn wait(&self) -> Result<()> {
        ops::wait(self.sem.as_ptr()).map_err(|e| map_wait(self.name.as_str(), "sem_wait", e, None))
    }

    /// Decrements if positive; [`Error::WouldBlock`] otherwise.
    pub fn try_wait(&self) -> Result<()> {
        ops::try_wait(self.sem.as_ptr())
            .map_err(|e| map_wait(self.name.as_str(), "sem_trywait", e, None))
    }

    /// Decrements, waiting at most `timeout`; [`Error::Timeout`] after.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        ops::wait_timeout(self.sem.as_ptr(), timeout)
            .map_err(|e| map_wait(self.name.as_str(), "sem_clockwait", e, Some(timeout)))
    }

    /// Increments, waking one waiter.
    pub fn post(&self) -> Result<()> {
        ops::post(self.sem.as_ptr()).map_err(|e| map_post(self.name.as_str(), e))
    }

    /// The current count.
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
        let rows = super::super::describe(b.segment()).unwrap();
        assert_eq!(rows[0], ("count".to_string(), "2".to_string()));
        assert_eq!(rows[1], ("bound".to_string(), "2".to_string()));
        Segment::unlink(&name).unwrap();
        assert!(BoundedSemaphore::anonymous(0).is_err());
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
