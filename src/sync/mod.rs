//! Synchronisation inside segments: locks and signals that work across processes, and
//! that tell the survivors when a process died holding one.
//!
//! Every object here is shmkit's own, made of plain 32-bit integers that are validated
//! on every read, with `FUTEX_WAIT`/`FUTEX_WAKE` ([`futex`]) for sleeping; none holds a
//! pointer or a glibc object (except [`NamedSemaphore`], for C interop). Owners are
//! recorded by their process's liveness token ([`crate::liveness`]: an OFD lock the
//! kernel releases when the process dies), never decided by pid.
//!
//! | type | object in shared memory | robust when a process dies? | worst a peer that writes the segment can do |
//! |------|-------------------------|-----------------------------|----------------------------------------------|
//! | [`Mutex<T>`], [`MutexArray<T>`] | [`RawRobustMutex`] (lock word = owner token \| waiters, consistency, diagnostic pid/tid) + data | **yes**: a dead owner *process* is detected within one sleep slice (≤ 32 ms); the next locker gets [`LockResult::OwnerDied`], and so does every locker after it until one repairs (no dead end) | errors (`Corrupt`, `Unrecoverable`, `EDEADLK`), a spurious `OwnerDied`, the caller's timeout; break mutual exclusion (data is `Pod`) |
//! | [`Condvar`] | [`RawCondvar`] (futex sequence word) | **yes**: a dead waiter never blocks a notify | spurious wake-ups; extra wake system calls. The relock after a wait is not bounded by the wait's timeout (as in `std`): a live peer that holds the mutex delays it |
//! | [`Event`] | [`RawEvent`] (futex word) | **yes**: nobody waits for waiters | spurious set/clear, timeouts |
//! | [`RwLock<T>`] | [`RawRwLock`] (state, writer token, diagnostics, sleepers, dirty flag) + data | **writers: yes** (taken over, reported by `writer_died()`); **readers: no** (the count stays, writers time out) | errors (`Corrupt`, `EDEADLK`), spurious takeover/`writer_died`, the caller's timeout |
//! | [`Barrier`] | [`RawBarrier`] (futex word) | **no**: a participant that dies before arriving stalls the rest; `wait_timeout` detects and withdraws cleanly | `Corrupt`, spurious release, the caller's timeout |
//! | [`Semaphore`], [`BoundedSemaphore`] | [`RawSemaphore`] (count + sleepers) | **no**: a dead holder's permit is lost; use a [`Mutex`] for ownership | `Corrupt` (count out of range), permits created or lost, the caller's timeout |
//! | [`NamedSemaphore`] | glibc `sem_t` (`sem_open`) | **no** | **trusts its peers**: garbage in `/dev/shm/sem.NAME` can abort the process inside glibc; for interop with trusted C/Python only |
//!
//! In every case except [`NamedSemaphore`]: no crash, no write through a pointer a peer
//! chose, no address of ours in shared memory, and no call blocks past the timeout it was
//! given (the unbounded forms can of course wait forever for a peer that never releases).
//!
//! Every type has a handle that owns its own segment (named `create`/`open`/
//! `open_or_create`, and `anonymous` for sharing with forked children) and a `Raw*`
//! object with an `init_at` initialiser, usable as a slot inside your own segment layout
//! (each documents its `SIZE` and `ALIGN`). The raw mutex takes the segment's
//! [`Liveness`](crate::liveness::Liveness): `raw.lock(seg.liveness())`.
//!
//! # fork()
//! Mutex ownership is per *process*: the lock word holds the process's liveness token,
//! and a forked child draws a token of its own on first use. If a process forks while
//! another of its threads holds a shmkit [`Mutex`], the child sees the lock held by the
//! parent, which is alive, so the child simply blocks until the parent unlocks: correct
//! mutual exclusion, no deadlock as long as the parent makes progress (and if the parent
//! dies, the child gets `OwnerDied`). Contrast a `std::sync::Mutex` (process private):
//! the child's copy stays locked forever, because the thread that would unlock it does
//! not exist in the child. A guard the forking thread itself holds is copied into the
//! child; dropping it there leaves the parent's lock alone (the child's token is not
//! the owner's), and the child can lock normally once the parent unlocks. What the user
//! must do: never rely on a *private* lock in the child of a multi-threaded parent. See
//! `tests/sync_fork.rs`.

/// The constructors of a handle that owns a segment holding one parameterless object
/// (`$raw`, with `SIZE` and `unsafe fn init_at`): `layout`, `create`, `create_with`,
/// `open`, `open_or_create`, `anonymous`, `from_segment` and `raw`.
macro_rules! segment_object_handle {
    ($handle:ident, $raw:ident, $kind:expr, $tag:expr, $what:literal) => {
        impl $handle {
            /// The segment layout (kind, size and a format tag in the parameters).
            pub fn layout() -> $crate::segment::Layout {
                $crate::segment::Layout::new($kind, $crate::segment::ElemInfo::bytes(0))
                    .with_payload_len($raw::SIZE as u64)
                    .with_params([$tag, $raw::SIZE as u64, 0, 0])
            }

            fn init(payload: &mut [u8]) -> $crate::error::Result<()> {
                // SAFETY: the payload is 64-byte aligned, `SIZE` bytes (the layout) and
                // ours alone until the segment is published.
                unsafe { $raw::init_at(payload.as_mut_ptr().cast()) };
                Ok(())
            }

            #[doc = concat!("Creates a named ", $what, ".")]
            pub fn create(name: &str) -> $crate::error::Result<Self> {
                Self::create_with(&$crate::segment::Segment::options(), name)
            }

            /// [`create`](Self::create) with options (mode, timeout, RAII unlink).
            pub fn create_with(
                opts: &$crate::segment::SegmentOptions,
                name: &str,
            ) -> $crate::error::Result<Self> {
                Self::from_segment(opts.create(name, &Self::layout(), Self::init)?)
            }

            #[doc = concat!("Opens an existing named ", $what, ".")]
            pub fn open(name: &str) -> $crate::error::Result<Self> {
                Self::from_segment($crate::segment::Segment::open(name)?)
            }

            /// Opens or creates; returns whether this call created it.
            pub fn open_or_create(name: &str) -> $crate::error::Result<(Self, bool)> {
                let (seg, created) = $crate::segment::Segment::open_or_create(
                    name,
                    &Self::layout(),
                    Self::init,
                )?;
                Ok((Self::from_segment(seg)?, created))
            }

            #[doc = concat!("An anonymous ", $what, ", shared with children forked after this call.")]
            pub fn anonymous() -> $crate::error::Result<Self> {
                Self::from_segment($crate::segment::Segment::anonymous(
                    &Self::layout(),
                    Self::init,
                )?)
            }

            #[doc = concat!("Wraps a segment after checking that it holds ", $what, ".")]
            pub fn from_segment(seg: $crate::segment::Segment) -> $crate::error::Result<Self> {
                seg.check_layout(&Self::layout())?;
                Ok($handle { seg })
            }

            #[doc = concat!("The ", $what, " object in shared memory.")]
            pub fn raw(&self) -> &$raw {
                // SAFETY: check_layout verified the kind, size and format tag, so the
                // 64-aligned payload is a `$raw` (all bit patterns valid atomics); it
                // lives as long as the mapping.
                unsafe { &*(self.seg.payload_ptr() as *const $raw) }
            }
        }
    };
}

pub mod barrier;
pub mod condvar;
pub mod event;
pub mod futex;
#[cfg(test)]
mod model;
pub mod mutex;
pub mod rwlock;
pub mod semaphore;

use std::time::{Duration, Instant};

pub use barrier::{Barrier, BarrierWaitResult, RawBarrier};
pub use condvar::{Condvar, RawCondvar, WaitTimeoutResult};
pub use event::{Event, RawEvent};
pub use mutex::{LockResult, Mutex, MutexArray, MutexGuard, OwnerInfo, RawRobustMutex};
pub use rwlock::{RawRwLock, RwLock, RwLockReadGuard, RwLockState, RwLockWriteGuard};
pub use semaphore::{BoundedSemaphore, NamedSemaphore, RawSemaphore, Semaphore};

use crate::segment::{Kind, Segment};

/// An optional deadline on `Instant` (monotonic).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(Option<Instant>, Duration);

impl Deadline {
    /// `None`: no limit.
    #[inline]
    pub(crate) fn after(timeout: Option<Duration>) -> Self {
        Deadline(
            timeout.map(|t| Instant::now().checked_add(t).unwrap_or_else(far_future)),
            timeout.unwrap_or_default(),
        )
    }

    /// The timeout this deadline was made from (zero without limit), for errors.
    pub(crate) fn total(&self) -> Duration {
        self.1
    }

    /// `None` once expired; `Some(None)` without limit; `Some(Some(left))` otherwise.
    pub(crate) fn remaining(&self) -> Option<Option<Duration>> {
        match self.0 {
            None => Some(None),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                (!left.is_zero()).then_some(Some(left))
            }
        }
    }
}

/// Sleep slices of a lock waiter that must notice a dead holder: `FUTEX_WAIT` for at most
/// the current slice (1 ms, doubling up to 32 ms), then the caller asks the liveness API
/// whether the holder still lives. Nobody wakes the waiters of a process that died, so
/// the slice bounds how late a death is noticed; it is never longer than the deadline.
#[derive(Debug)]
pub(crate) struct Slices(Duration);

impl Slices {
    const FIRST: Duration = Duration::from_millis(1);
    const MAX: Duration = Duration::from_millis(32);

    pub(crate) fn new() -> Self {
        Slices(Self::FIRST)
    }

    /// The next slice, capped by what is `left` of the deadline (`None`: no deadline).
    pub(crate) fn next(&mut self, left: Option<Duration>) -> Duration {
        let s = self.0;
        self.0 = (s * 2).min(Self::MAX);
        left.map_or(s, |l| l.min(s))
    }
}

/// Process id and kernel thread id of the calling thread, cached per thread (no system
/// call after the first) and refreshed in the child after `fork` (a `pthread_atfork`
/// handler bumps a generation). Diagnostics, and "does this thread already hold it"
/// checks that are combined with the process's liveness token.
#[inline]
pub(crate) fn thread_ids() -> (u32, u32) {
    let generation = FORKS.load(std::sync::atomic::Ordering::Relaxed);
    let (g, pid, tid) = IDS.with(|c| c.get());
    if g == generation {
        return (pid, tid);
    }
    thread_ids_slow(generation)
}

/// Incremented in every forked child (by the handler `thread_ids_slow` registers).
static FORKS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

thread_local! {
    /// (fork generation, pid, tid) of this thread; generation `u32::MAX`: not yet known.
    static IDS: std::cell::Cell<(u32, u32, u32)> = const { std::cell::Cell::new((u32::MAX, 0, 0)) };
}

#[cold]
fn thread_ids_slow(generation: u32) -> (u32, u32) {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    extern "C" fn forked_child() {
        FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    REGISTER.call_once(|| {
        // SAFETY: registers a handler that only increments an atomic (async-signal-safe),
        // for the child side of every later fork; no prepare/parent handlers.
        unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    });
    let ids = (std::process::id(), nix::unistd::gettid().as_raw() as u32);
    IDS.with(|c| c.set((generation, ids.0, ids.1)));
    ids
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// `CLOCK_MONOTONIC` now + `timeout`, as a normalised absolute timespec (saturating).
pub(crate) fn monotonic_deadline(timeout: Duration) -> libc::timespec {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            Duration::new(
                t.tv_sec().max(0) as u64,
                t.tv_nsec().clamp(0, 999_999_999) as u32,
            )
        })
        .unwrap_or_default();
    futex::duration_to_timespec(now.saturating_add(timeout))
}

fn describe_mutex(m: &RawRobustMutex, live: &crate::liveness::Liveness) -> Vec<(String, String)> {
    let o = m.owner_status(live);
    let state = if o.corrupt {
        "CORRUPT consistency word (lockers get a corrupt-state error; recreate the object)"
            .to_string()
    } else if o.unrecoverable {
        "NOT RECOVERABLE (a holder gave up on the data with mark_unrecoverable; \
         `shmkit mutex repair` or Mutex::reset_unrecoverable resets it in place)"
            .into()
    } else if o.token == 0 {
        "unlocked".to_string()
    } else if o.owner_died {
        format!(
            "locked by pid {} (thread {}), but its process DIED (token {} no longer \
             held): the next locker gets OwnerDied and must repair",
            o.pid, o.tid, o.token
        )
    } else {
        format!("locked by pid {} (thread {}), alive", o.pid, o.tid)
    };
    let mut out = vec![("lock".to_string(), state)];
    if o.inconsistent {
        out.push((
            "consistency".into(),
            "inconsistent: an owner died and nobody has called make_consistent since; the \
             next locker gets OwnerDied"
                .into(),
        ));
    }
    out
}

/// Human-readable state of a synchronisation segment for `shmkit info`: lock owner pid
/// and whether it is alive, semaphore counts, event state... `None` if the segment is not
/// one of this module's kinds (or its layout does not match).
///
/// Reads are racy snapshots (atomic, never locking), so they are safe on a wedged object.
///
/// ```
/// let ev = shmkit::sync::Event::anonymous()?;
/// ev.set();
/// let rows = shmkit::sync::describe(ev.segment()).unwrap();
/// assert!(rows.iter().any(|(k, v)| k == "event" && v.starts_with("set")));
/// # Ok::<(), shmkit::Error>(())
/// ```
pub fn describe(seg: &Segment) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let p = seg.payload_ptr();
    let raw = &seg.header().raw;
    match seg.header().kind() {
        Kind::Mutex => {
            out.extend(describe_mutex(mutex::raw_mutex(seg).ok()?, seg.liveness()));
            out.push((
                "data".into(),
                format!(
                    "{} x {} ({} bytes each)",
                    raw.elem_count,
                    seg.header().type_name(),
                    raw.elem_size
                ),
            ));
        }
        Kind::Event => {
            seg.check_layout(&Event::layout()).ok()?;
            // SAFETY: checked layout: the payload is a RawEvent of atomics.
            let (set, sleepers) = unsafe { &*(p as *const RawEvent) }.state();
            out.push((
                "event".into(),
                format!(
                    "{}, {sleepers} registered waiter(s)",
                    if set { "set" } else { "clear" }
                ),
            ));
        }
        Kind::Condvar => {
            seg.check_layout(&Condvar::layout()).ok()?;
            // SAFETY: checked layout: the payload is a RawCondvar of atomics.
            let w = unsafe { &*(p as *const RawCondvar) }.waiters();
            out.push((
                "condvar".into(),
                format!("{w} registered waiter(s) (waiters killed while waiting stay counted)"),
            ));
        }
        Kind::Semaphore => {
            let sem = Semaphore::describe_segment(seg)?;
            out.extend(sem);
        }
        Kind::Barrier => {
            out.extend(Barrier::describe_segment(seg)?);
        }
        Kind::RwLock => {
            out.extend(rwlock::describe_segment(seg)?);
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_expires() {
        let d = Deadline::after(Some(Duration::ZERO));
        assert!(d.remaining().is_none());
        assert_eq!(Deadline::after(None).remaining(), Some(None));
        assert!(Deadline::after(Some(Duration::MAX)).remaining().is_some());
    }

    #[test]
    fn monotonic_deadline_is_normalised() {
        let t = monotonic_deadline(Duration::from_nanos(999_999_999));
        assert!((0..1_000_000_000).contains(&t.tv_nsec));
        let t = monotonic_deadline(Duration::MAX);
        assert!((0..1_000_000_000).contains(&t.tv_nsec));
    }

    /// The raw objects as slots of one user-defined layout, used from several threads.
    #[test]
    fn raw_objects_work_as_slots_in_a_custom_layout() {
        use crate::segment::{ElemInfo, Layout};
        const CV: usize = 64;
        const EV: usize = 128;
        const BAR: usize = 192;
        const SEM: usize = 256;
        const DATA: usize = 320;
        let layout = Layout::new(Kind::Custom, ElemInfo::bytes(DATA as u64 + 8));
        let seg = Segment::anonymous(&layout, |p| {
            let b = p.as_mut_ptr();
            // SAFETY: the payload is 64-aligned and DATA + 8 bytes long; every slot offset
            // is a multiple of 64 with room for its object; nobody else sees it yet.
            unsafe {
                RawRobustMutex::init_at(b.cast())?;
                RawCondvar::init_at(b.add(CV).cast());
                RawEvent::init_at(b.add(EV).cast());
                RawBarrier::init_at(b.add(BAR).cast(), 2)?;
                RawSemaphore::init_at(b.add(SEM).cast(), 0)
            }
        })
        .unwrap();
        let seg = std::sync::Arc::new(seg);
        struct Slots<'a> {
            m: &'a RawRobustMutex,
            cv: &'a RawCondvar,
            ev: &'a RawEvent,
            bar: &'a RawBarrier,
            sem: &'a RawSemaphore,
            data: *mut u64,
        }
        fn slots(seg: &Segment) -> Slots<'_> {
            let b = seg.payload_ptr();
            // SAFETY: initialised above at these offsets; they live as long as `seg`; the
            // data word is only accessed under the mutex.
            unsafe {
                Slots {
                    m: &*(b as *const RawRobustMutex),
                    cv: &*(b.add(CV) as *const RawCondvar),
                    ev: &*(b.add(EV) as *const RawEvent),
                    bar: &*(b.add(BAR) as *const RawBarrier),
                    sem: &*(b.add(SEM) as *const RawSemaphore),
                    data: b.add(DATA).cast(),
                }
            }
        }
        let seg2 = seg.clone();
        let t = std::thread::spawn(move || {
            let s = slots(&seg2);
            s.bar.wait_timeout(Duration::from_secs(20)).unwrap();
            let g = s.m.lock(seg2.liveness()).unwrap().into_guard();
            let (g, _) = s
                .cv
                // SAFETY: the data word is only accessed with the mutex held.
                .wait_timeout_while(g, Duration::from_secs(20), |_| unsafe { *s.data == 0 })
                .unwrap();
            drop(g);
            s.sem.post().unwrap();
            assert!(s.ev.wait_timeout(Duration::from_secs(20)).unwrap());
        });
        let s = slots(&seg);
        s.bar.wait_timeout(Duration::from_secs(20)).unwrap();
        {
            let _g = s.m.lock(seg.liveness()).unwrap().into_guard();
            // SAFETY: the mutex is held.
            unsafe { *s.data = 1 };
        }
        s.cv.notify_all();
        s.sem.wait_timeout(Duration::from_secs(20)).unwrap();
        s.ev.set();
        t.join().unwrap();
    }

    #[test]
    fn describe_mutex_shows_owner_pid_alive() {
        let m = Mutex::<u64>::anonymous(0).unwrap();
        let g = m.lock().unwrap().into_guard();
        let rows = describe(m.segment()).unwrap();
        let lock = &rows.iter().find(|(k, _)| k == "lock").unwrap().1;
        assert!(
            lock.contains(&format!("pid {}", std::process::id())),
            "{lock}"
        );
        assert!(lock.contains("alive"), "{lock}");
        drop(g);
        let rows = describe(m.segment()).unwrap();
        assert_eq!(rows[0].1, "unlocked");
    }
}
