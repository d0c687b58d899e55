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
#[cfg(all(test, shmkit_loom))]
mod loom;
#[cfg(test)]
mod model;
pub mod mutex;
pub mod raw_mutex;
pub mod rwlock;
pub mod semaphore;

use std::time::{Duration, Instant};

pub use barrier::{Barrier, BarrierWaitResult, RawBarrier};
pub use condvar::{Condvar, RawCondvar, WaitTimeoutResult};
pub use event::{Event, RawEvent};
pub use mutex::{LockResult, Mutex, MutexArray, MutexGuard, OwnerInfo, RawRobustMutex};
pub use rwlock::{RawRwLock, RwLock, RwLockReadGuard, RwLockState, RwLockWriteGuard};
pub use semaphore::{BoundedSemaphore, NamedSemaphore, RawSemaphore, Semaphore};

use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};
use crate::segment::{Header, Kind, Layout, Segment};

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

/// The state of a synchronisation object, decoded from its words by [`describe`] and
/// [`describe_bytes`]: typed fields, for tools to render (`shmkit info` builds its sentences
/// from them) or test. A racy snapshot: diagnostics, never a basis for recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncState {
    /// A [`Mutex`] or [`MutexArray`]: its owner as the words say, with
    /// [`OwnerInfo::owner_died`] filled in from the liveness query.
    Mutex(OwnerInfo),
    /// An [`Event`].
    Event {
        /// The flag is set.
        set: bool,
        /// Registered waiters.
        sleepers: u32,
    },
    /// A [`Condvar`].
    Condvar {
        /// Registered waiters (waiters killed while waiting stay counted).
        waiters: u32,
    },
    /// A [`Semaphore`] or [`BoundedSemaphore`].
    Semaphore {
        /// The count word as read.
        count: u32,
        /// The bound of a [`BoundedSemaphore`] (`None`: unbounded).
        bound: Option<u32>,
        /// Registered sleepers.
        sleepers: u32,
        /// The count is above `SEM_VALUE_MAX` or above the bound: waits fail with a
        /// corrupt-state error.
        corrupt: bool,
    },
    /// A [`Barrier`].
    Barrier {
        /// Parties arrived in the current generation.
        arrived: u32,
        /// Parties per generation.
        parties: u32,
        /// Generations completed.
        generation: u32,
    },
    /// An [`RwLock`].
    RwLock {
        /// The lock words.
        state: RwLockState,
        /// Whether the writer's token is held (meaningful while `state.write_locked`).
        writer_alive: bool,
    },
}

/// The most payload bytes [`describe_bytes`] looks at: every object it decodes lies in
/// the first `SNAPSHOT_LEN` bytes of its segment's payload.
pub const SNAPSHOT_LEN: usize = 32;

/// How many payload bytes to snapshot for [`describe_bytes`]: the payload length the
/// header gives, at most [`SNAPSHOT_LEN`].
pub fn snapshot_len(header: &Header) -> usize {
    header.raw.payload_len.min(SNAPSHOT_LEN as u64) as usize
}

/// Whether `h` describes exactly `layout` (kind, element type, payload length, flags and
/// parameters): [`Segment::check_layout`] on a bare header.
fn header_fits(h: &Header, layout: &Layout) -> bool {
    let raw = &h.raw;
    h.kind() == layout.kind
        && raw.elem_size == layout.elem.size
        && raw.elem_align == layout.elem.align
        && raw.elem_count == layout.elem.count
        && (raw.type_tag == 0 || layout.elem.tag == 0 || raw.type_tag == layout.elem.tag)
        && raw.payload_len == layout.payload_len
        && h.kind_flags() == layout.flags & !crate::segment::header::FLAG_PERSISTENT
        && raw.params == layout.params
}

/// The first `N` native-endian words of `b`.
fn words<const N: usize>(b: &[u8]) -> Option<[u32; N]> {
    let mut w = [0u32; N];
    for (i, c) in b.get(..N * 4)?.chunks_exact(4).enumerate() {
        w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
    }
    Some(w)
}

/// The state of a synchronisation object ([`SyncState`]), decoded from a *snapshot* of its
/// payload's first bytes: lock owner pid and whether it is alive, semaphore count, event
/// state... A pure function (no mapping, no system call of its own), for tools that read
/// the bytes with `pread` (`shmkit info`), so that a process resizing the object cannot
/// kill them with `SIGBUS`.
///
/// - `header`: the object's validated header ([`Header::parse`]);
/// - `payload`: the payload's first [`snapshot_len`]`(header)` bytes (extra bytes are
///   ignored);
/// - `token_alive`: whether a liveness token is held (for a lock's owner), e.g.
///   [`liveness::token_held`](crate::liveness::token_held) on the object's file.
///
/// `Ok(None)` if the header is not one of this module's kinds or its layout does not
/// match. A `payload` shorter than the header promises (the object shrank while being
/// read) is [`Error::Corrupt`] ("changed while reading").
///
/// ```
/// use shmkit::segment::Header;
/// let ev = shmkit::sync::Event::anonymous()?;
/// ev.set();
/// let h: &Header = ev.segment().header();
/// let payload = [1u8, 0, 0, 0, 0, 0, 0, 0]; // the flag word set, no sleepers
/// let state = shmkit::sync::describe_bytes("ev", h, &payload, |_| true)?;
/// assert_eq!(state, Some(shmkit::sync::SyncState::Event { set: true, sleepers: 0 }));
/// assert!(shmkit::sync::describe_bytes("ev", h, &payload[..3], |_| true).is_err());
/// # Ok::<(), shmkit::Error>(())
/// ```
pub fn describe_bytes(
    resource: &str,
    header: &Header,
    payload: &[u8],
    token_alive: impl Fn(u32) -> bool,
) -> Result<Option<SyncState>> {
    let want = snapshot_len(header);
    let Some(b) = payload.get(..want) else {
        return Err(Error::corrupt(
            resource,
            format!(
                "the object changed while being read: {} of the {want} payload bytes its \
                 header promises",
                payload.len()
            ),
        ));
    };
    let state = match header.kind() {
        Kind::Mutex if mutex::format_ok(header) => {
            let Some(w) = words::<4>(b) else {
                return Ok(None);
            };
            let mut o = OwnerInfo::from_words(w);
            o.owner_died = o.token != 0 && !token_alive(o.token);
            SyncState::Mutex(o)
        }
        Kind::Event if header_fits(header, &Event::layout()) => {
            let Some(w) = words::<2>(b) else {
                return Ok(None);
            };
            let (set, sleepers) = RawEvent::decode(w);
            SyncState::Event { set, sleepers }
        }
        Kind::Condvar if header_fits(header, &Condvar::layout()) => {
            let Some([_seq, waiters]) = words::<2>(b) else {
                return Ok(None);
            };
            SyncState::Condvar { waiters }
        }
        Kind::Semaphore => match Semaphore::layout_of(header) {
            Some(l) if header_fits(header, &l) => {
                let Some(w) = words::<2>(b) else {
                    return Ok(None);
                };
                Semaphore::state_of_words(header.raw.params[2] as u32, w)
            }
            _ => return Ok(None),
        },
        Kind::Barrier => match Barrier::layout_of(header) {
            Some(l) if header_fits(header, &l) => {
                let Some(w) = words::<3>(b) else {
                    return Ok(None);
                };
                let (arrived, parties, generation) = RawBarrier::decode(w);
                SyncState::Barrier {
                    arrived,
                    parties,
                    generation,
                }
            }
            _ => return Ok(None),
        },
        Kind::RwLock if rwlock::format_ok(header) => {
            let Some(w) = words::<6>(b) else {
                return Ok(None);
            };
            let state = RwLockState::from_words(w);
            SyncState::RwLock {
                state,
                writer_alive: !state.write_locked || token_alive(state.writer_token),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(state))
}

/// The state of a synchronisation segment ([`SyncState`], see [`describe_bytes`]): lock
/// owner pid and whether it is alive, semaphore counts, event state... `None` if the segment is
/// not one of this module's kinds (or its layout does not match).
///
/// Reads are racy snapshots (atomic word loads through the mapping, never locking), so
/// they are safe on a wedged object. Tools that must survive a peer resizing the object
/// read the bytes with `pread` instead and call [`describe_bytes`] (`shmkit info` does).
///
/// ```
/// let ev = shmkit::sync::Event::anonymous()?;
/// ev.set();
/// let state = shmkit::sync::describe(ev.segment());
/// assert_eq!(state, Some(shmkit::sync::SyncState::Event { set: true, sleepers: 0 }));
/// # Ok::<(), shmkit::Error>(())
/// ```
pub fn describe(seg: &Segment) -> Option<SyncState> {
    let n = snapshot_len(seg.header()).min(seg.payload_len()) / 4;
    let mut snap = [0u8; SNAPSHOT_LEN];
    let base = seg.payload_ptr() as *const AtomicU32;
    for (i, c) in snap.chunks_exact_mut(4).take(n).enumerate() {
        // An atomic load is the sanctioned way to read words peers may write
        // concurrently (any bit pattern is a valid u32).
        // SAFETY: the payload is 64-byte aligned and mapped for `payload_len` bytes, of
        // which word `i` lies within the first `n * 4`; used only for this load.
        let w = unsafe { &*base.add(i) }.load(Ordering::Relaxed);
        c.copy_from_slice(&w.to_ne_bytes());
    }
    let payload = &snap[..n * 4];
    describe_bytes(&seg.resource(), seg.header(), payload, |t| {
        seg.liveness().token_alive(t)
    })
    .ok()
    .flatten()
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
        let Some(SyncState::Mutex(o)) = describe(m.segment()) else {
            panic!("not a mutex state");
        };
        assert_eq!(o.pid, std::process::id());
        assert!(o.token != 0 && !o.owner_died, "{o:?}");
        drop(g);
        let Some(SyncState::Mutex(o)) = describe(m.segment()) else {
            panic!("not a mutex state");
        };
        assert_eq!(o.token, 0, "{o:?}");
    }

    /// The snapshot of `words` (then zeros up to `len` bytes).
    fn bytes(words: &[u32], len: usize) -> Vec<u8> {
        let mut b: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        b.resize(len.max(b.len()), 0);
        b
    }

    /// The byte form decodes a snapshot like the mapped form, asks the liveness query
    /// about the owner, and turns a snapshot shorter than the header promises into an
    /// error.
    #[test]
    fn describe_bytes_decodes_snapshots_and_refuses_short_ones() {
        let m = Mutex::<u64>::anonymous(0).unwrap();
        let h = m.segment().header();
        let locked = bytes(&[42 | 1 << 31, 1, 1234, 5678], SNAPSHOT_LEN);
        let mutex = |bytes: &[u8], alive: &dyn Fn(u32) -> bool| match describe_bytes(
            "m", h, bytes, alive,
        ) {
            Ok(Some(SyncState::Mutex(o))) => o,
            other => panic!("{other:?}"),
        };
        let o = mutex(&locked, &|t| t != 42);
        assert!(
            o.pid == 1234 && o.tid == 5678 && o.owner_died && o.inconsistent,
            "{o:?}"
        );
        let o = mutex(&locked, &|_| true);
        assert!(!o.owner_died, "{o:?}");
        assert!(mutex(&bytes(&[0, 9, 0, 0], SNAPSHOT_LEN), &|_| true).corrupt);
        for short in [0, 3, 16, 31] {
            let e = describe_bytes("m", h, &locked[..short], |_| true).unwrap_err();
            assert!(
                matches!(e, Error::Corrupt { .. }) && e.to_string().contains("changed"),
                "{e}"
            );
        }

        let rw = RwLock::<u32>::anonymous(0).unwrap();
        let w = bytes(&[1 << 31 | 1 << 30, 7, 8, 9, 0, 1], SNAPSHOT_LEN);
        let Some(SyncState::RwLock {
            state,
            writer_alive,
        }) = describe_bytes("rw", rw.segment().header(), &w, |_| false).unwrap()
        else {
            panic!("not an rwlock state");
        };
        assert!(
            state.write_locked && state.write_waiting && !writer_alive,
            "{state:?}"
        );
        assert_eq!((state.writer_pid, state.writer_tid), (9, 8));

        let s = BoundedSemaphore::anonymous(3).unwrap();
        assert_eq!(
            describe_bytes("s", s.segment().header(), &bytes(&[5, 2], 0), |_| true).unwrap(),
            Some(SyncState::Semaphore {
                count: 5,
                bound: Some(3),
                sleepers: 2,
                corrupt: true
            })
        );

        let b = Barrier::anonymous(3).unwrap();
        assert_eq!(
            describe_bytes(
                "b",
                b.segment().header(),
                &bytes(&[2 | 4 << 16, 0, 3], 0),
                |_| true,
            )
            .unwrap(),
            Some(SyncState::Barrier {
                arrived: 2,
                parties: 3,
                generation: 4
            })
        );

        // Not a synchronisation kind: no state, whatever the bytes.
        let v = crate::Value::<u64>::anonymous(0).unwrap();
        assert!(
            describe_bytes("v", v.segment().header(), &[0; 8], |_| true)
                .unwrap()
                .is_none()
        );
        // The mapped form agrees with the byte form.
        let c = Condvar::anonymous().unwrap();
        assert_eq!(
            describe(c.segment()),
            describe_bytes("c", c.segment().header(), &bytes(&[0, 0], 0), |_| true).unwrap()
        );
    }
}
