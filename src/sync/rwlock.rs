//! [`RwLock<T>`]: a `T` guarded by shmkit's own process-shared reader-writer lock
//! ([`RawRwLock`], futex-based; not glibc's `pthread_rwlock_t`).
//!
//! # Design
//! Six 32-bit words, plain integers validated on every read:
//! - `state`: reader count (bits 0..=29) | `WRITE_WAITING` (bit 30) | `WRITE_LOCKED`
//!   (bit 31). Readers enter with a CAS that adds one only while neither writer bit is
//!   set; a writer takes the lock with a CAS from exactly `WRITE_WAITING` (no readers)
//!   to `WRITE_LOCKED`.
//! - `writer`: the liveness token of the process that owns the *writer role* (0: none).
//!   Writers first claim the role (CAS 0 → token), then set `WRITE_WAITING`, wait for
//!   the readers to drain and take the lock; unlock releases the role, then clears
//!   `WRITE_LOCKED`. Only the role owner ever sets a writer bit, so a writer bit without
//!   a live role owner is stale and may be cleared by whoever owns the role next.
//! - `writer_tid`, `writer_pid`: diagnostics (and "this thread holds it": re-locking
//!   from the writing thread is `EDEADLK`, not a self-deadlock).
//! - `sleepers`: registered sleepers; unlocks make a wake system call only if non-zero.
//! - `dirty`: 1 after a writer died holding the lock, until a writer calls
//!   [`RwLockWriteGuard::make_consistent`].
//!
//! **Writer preference**: once a writer waits (`WRITE_WAITING`), new readers wait too,
//! so a stream of readers cannot starve writers. Consequently a thread that takes a read
//! lock it already holds can deadlock against a waiting writer (as with `std`); use the
//! `_timeout` forms if that can happen.
//!
//! Waiters sleep on `state` with `FUTEX_WAIT` (registering in `sleepers` first, SeqCst,
//! as [`Event`](super::Event) does: no lost wake-up), in slices of at most 32 ms; between
//! slices a waiter asks the liveness API whether the writer's token is still held.
//!
//! # Robustness
//! - **A writer that dies** holding the lock (or waiting for it) is detected by the next
//!   waiter, reader or writer, within one slice: it takes the writer role over with a
//!   CAS on the dead token, clears the stale writer bits and proceeds. If the dead writer
//!   held the lock, the data may be half-written: `dirty` is set, and every guard reports
//!   it ([`RwLockReadGuard::writer_died`], [`RwLockWriteGuard::writer_died`]) until a
//!   writer repairs the data and calls [`RwLockWriteGuard::make_consistent`].
//! - **A reader that dies** holding the lock leaves the count one too high: it cannot be
//!   attributed to a process, so writers then wait until their timeout
//!   ([`Error::Timeout`]); readers still enter while no writer waits. `shmkit info`
//!   shows the count. Recreate the object if that happens.
//!
//! # Trust
//! Whatever a peer writes into the lock words, a call gives at worst an error
//! ([`Error::Corrupt`] for a reader count at its maximum, `EDEADLK` for a forged owner
//! thread), a spurious result (a lock taken over from a token that is not alive, a
//! `dirty` flag) or its timeout: never a crash, never a hang past a requested timeout.
//! Mutual exclusion itself obviously cannot survive a peer that writes the state word.
//! The data is `Pod` and accessed through the guards under the lock (a peer that ignores
//! the lock races with us on plain data, which only yields some bit pattern).

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytemuck::Pod;
use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::liveness::Liveness;
use crate::segment::{ElemInfo, Kind, Layout, Segment, SegmentOptions};

use super::futex::{self, WaitStatus};
use super::{Deadline, Slices, thread_ids};

const READERS: u32 = (1 << 30) - 1;
const WRITE_WAITING: u32 = 1 << 30;
const WRITE_LOCKED: u32 = 1 << 31;
const WRITER_BITS: u32 = WRITE_WAITING | WRITE_LOCKED;
/// Compare-and-swap attempts before a word that keeps changing is given up on.
const CAS_TRIES: u32 = 1 << 16;

/// The reader-writer lock in shared memory (see the [module docs](self)): six 32-bit
/// words, all zero when fresh.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawRwLock {
    state: AtomicU32,
    writer: AtomicU32,
    writer_tid: AtomicU32,
    writer_pid: AtomicU32,
    sleepers: AtomicU32,
    dirty: AtomicU32,
}

/// A snapshot of a [`RawRwLock`] for diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RwLockState {
    /// Readers holding it (including any that died holding it).
    pub readers: u32,
    /// A writer holds it.
    pub write_locked: bool,
    /// A writer waits for the readers to leave (new readers wait too).
    pub write_waiting: bool,
    /// Liveness token of the writer role's owner (0: none).
    pub writer_token: u32,
    /// The writer's pid and kernel thread id as it wrote them (diagnostic only).
    pub writer_pid: u32,
    /// See [`RwLockState::writer_pid`].
    pub writer_tid: u32,
    /// A writer died holding the lock and nobody has marked the data consistent.
    pub writer_died: bool,
    /// Registered sleepers (including any killed while sleeping).
    pub sleepers: u32,
}

impl RwLockState {
    /// Decodes the six words of a [`RawRwLock`], in memory order, as read from memory or
    /// from a byte snapshot.
    pub(crate) fn from_words([s, writer, tid, pid, sleepers, dirty]: [u32; 6]) -> Self {
        RwLockState {
            readers: s & READERS,
            write_locked: s & WRITE_LOCKED != 0,
            write_waiting: s & WRITE_WAITING != 0,
            writer_token: writer,
            writer_pid: pid,
            writer_tid: tid,
            writer_died: dirty != 0,
            sleepers,
        }
    }
}

/// What a waiter sleeps for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Read,
    Write,
}

impl RawRwLock {
    /// Bytes a slot must have.
    pub const SIZE: usize = size_of::<RawRwLock>();
    /// Alignment a slot must have.
    pub const ALIGN: usize = align_of::<RawRwLock>();

    /// Initialises an unlocked lock at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for writes of [`Self::SIZE`] bytes, aligned to [`Self::ALIGN`],
    /// and not in use by anyone else during the call.
    pub unsafe fn init_at(ptr: *mut RawRwLock) {
        // SAFETY: guaranteed by the caller.
        unsafe { ptr.write(RawRwLock::default()) }
    }

    /// A racy snapshot of the words (diagnostics: `shmkit info`).
    pub fn state(&self) -> RwLockState {
        RwLockState::from_words(
            [
                &self.state,
                &self.writer,
                &self.writer_tid,
                &self.writer_pid,
                &self.sleepers,
                &self.dirty,
            ]
            .map(|w| w.load(Ordering::Relaxed)),
        )
    }

    /// `EDEADLK` if the calling thread holds the write lock (token and thread id match).
    fn check_self(&self, s: u32, live: &Liveness, resource: &str, op: &'static str) -> Result<()> {
        if s & WRITE_LOCKED != 0 {
            let w = self.writer.load(Ordering::Relaxed);
            if w != 0
                && self.writer_tid.load(Ordering::Relaxed) == thread_ids().1
                && live.token().ok() == Some(w)
            {
                return Err(Error::os_with_advice(
                    resource,
                    op,
                    Errno::EDEADLK,
                    "this thread already holds the write lock",
                ));
            }
        }
        Ok(())
    }

    fn wake_all(&self) {
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            // A failed wake only costs a bounded waiter a slice.
            let _ = futex::wake(&self.state, i32::MAX);
        }
    }

    /// One read-lock attempt: `Ok(Some(()))` acquired, `Ok(None)` a writer is in the way.
    fn try_read_once(&self, resource: &str) -> Result<Option<u32>> {
        let mut s = self.state.load(Ordering::SeqCst);
        for _ in 0..CAS_TRIES {
            if s & WRITER_BITS != 0 {
                return Ok(Some(s));
            }
            if s & READERS == READERS {
                return Err(Error::corrupt(
                    resource,
                    format!("reader count at its maximum ({READERS})"),
                ));
            }
            match self
                .state
                .compare_exchange_weak(s, s + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Ok(None),
                Err(cur) => s = cur,
            }
        }
        Ok(Some(s))
    }

    /// Read lock, at most until `deadline` (`try_only`: no waiting at all). Returns
    /// whether a writer died holding the lock (the `dirty` flag).
    pub(crate) fn read_in(
        &self,
        live: &Liveness,
        deadline: Option<Deadline>,
        resource: &str,
        op: &'static str,
    ) -> Result<bool> {
        let mut sleeper = None;
        let r = loop {
            let s = match self.try_read_once(resource) {
                Ok(None) => break Ok(self.dirty.load(Ordering::Relaxed) != 0),
                Ok(Some(s)) => s,
                Err(e) => break Err(e),
            };
            if let Err(e) = self.check_self(s, live, resource, op) {
                break Err(e);
            }
            match self.sleep(s, Want::Read, live, deadline, &mut sleeper, resource, op) {
                Ok(()) => {}
                Err(e) => break Err(e),
            }
        };
        if sleeper.is_some() {
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        r
    }

    /// Sleeps one slice on `state == s` (registering as a sleeper once), then, if the
    /// slice ran out, recovers the writer role from a dead owner. `deadline` `None`:
    /// try only ([`Error::WouldBlock`]); an expired deadline: [`Error::Timeout`].
    #[allow(clippy::too_many_arguments)]
    fn sleep(
        &self,
        s: u32,
        want: Want,
        live: &Liveness,
        deadline: Option<Deadline>,
        sleeper: &mut Option<Slices>,
        resource: &str,
        op: &'static str,
    ) -> Result<()> {
        let Some(deadline) = deadline else {
            // try_*: a dead writer is still recovered, so a try never fails forever
            // because of a process that is gone.
            if self.recover_dead_writer(live, want)? {
                return Ok(());
            }
            return Err(Error::WouldBlock {
                resource: resource.to_owned(),
                op,
            });
        };
        let Some(left) = deadline.remaining() else {
            return Err(Error::Timeout {
                resource: resource.to_owned(),
                op,
                timeout: deadline.total(),
            });
        };
        let slices = sleeper.get_or_insert_with(|| {
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            Slices::new()
        });
        let slice = slices.next(left);
        // Re-check after registering: an unlock that ran before we registered changed the
        // word, so FUTEX_WAIT returns at once.
        match futex::wait(&self.state, s, Some(slice)) {
            Ok(WaitStatus::Woken) => Ok(()),
            Ok(WaitStatus::TimedOut) => self.recover_dead_writer(live, want).map(|_| ()),
            Err(e) => Err(Error::os(resource, "futex(FUTEX_WAIT)", e)),
        }
    }

    /// If writer bits are set and the writer role's owner is not alive (or there is
    /// none), takes the role over, clears the stale bits (marking the data dirty if the
    /// dead writer held the lock), releases the role and wakes everyone. A waiting
    /// writer that recovers keeps nothing: it competes for the role again like everyone.
    /// Returns whether anything was recovered.
    fn recover_dead_writer(&self, live: &Liveness, _want: Want) -> Result<bool> {
        let s = self.state.load(Ordering::SeqCst);
        if s & WRITER_BITS == 0 {
            return Ok(false);
        }
        let w = self.writer.load(Ordering::SeqCst);
        if w != 0 && live.token_alive(w) {
            return Ok(false);
        }
        let me = live.token()?;
        if w == me {
            // Our own process owns the role (another thread): alive by definition.
            return Ok(false);
        }
        if self
            .writer
            .compare_exchange(w, me, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Ok(false); // somebody else moved first
        }
        // We own the role: any writer bit is stale now.
        let mut cur = self.state.load(Ordering::SeqCst);
        for _ in 0..CAS_TRIES {
            if w != 0 && cur & WRITE_LOCKED != 0 {
                self.dirty.store(1, Ordering::SeqCst);
            }
            match self.state.compare_exchange_weak(
                cur,
                cur & !WRITER_BITS,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        self.writer_tid.store(0, Ordering::Relaxed);
        self.writer_pid.store(0, Ordering::Relaxed);
        let _ = self
            .writer
            .compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst);
        self.wake_all();
        Ok(true)
    }

    /// Write lock, at most until `deadline` (`None`: try only). Returns whether a writer
    /// died holding the lock (the `dirty` flag).
    pub(crate) fn write_in(
        &self,
        live: &Liveness,
        deadline: Option<Deadline>,
        resource: &str,
        op: &'static str,
    ) -> Result<bool> {
        let me = live.token()?;
        let mut sleeper = None;
        let r = self.write_loop(me, live, deadline, &mut sleeper, resource, op);
        if sleeper.is_some() {
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        r
    }

    fn write_loop(
        &self,
        me: u32,
        live: &Liveness,
        deadline: Option<Deadline>,
        sleeper: &mut Option<Slices>,
        resource: &str,
        op: &'static str,
    ) -> Result<bool> {
        // Phase 1: the writer role.
        loop {
            let s = self.state.load(Ordering::SeqCst);
            if self
                .writer
                .compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                break;
            }
            self.check_self(s, live, resource, op)?;
            self.sleep(s, Want::Write, live, deadline, sleeper, resource, op)?;
        }
        // Phase 2: announce, wait for the readers to leave, take the lock.
        let mut tries = 0;
        loop {
            let s = self.state.load(Ordering::SeqCst);
            let want = if s & READERS == 0 {
                WRITE_LOCKED
            } else {
                (s & READERS) | WRITE_WAITING
            };
            // A WRITE_LOCKED bit while we own the role is stale (its writer released the
            // role or died): replaced either way.
            if s != want
                && self
                    .state
                    .compare_exchange(s, want, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
            {
                tries += 1;
                if tries < CAS_TRIES {
                    continue;
                }
            }
            if want == WRITE_LOCKED && tries < CAS_TRIES {
                let (pid, tid) = thread_ids();
                self.writer_pid.store(pid, Ordering::Relaxed);
                self.writer_tid.store(tid, Ordering::Relaxed);
                return Ok(self.dirty.load(Ordering::SeqCst) != 0);
            }
            tries = 0;
            let r = match deadline {
                None => Err(Error::WouldBlock {
                    resource: resource.to_owned(),
                    op,
                }),
                Some(d) => match d.remaining() {
                    None => Err(Error::Timeout {
                        resource: resource.to_owned(),
                        op,
                        timeout: d.total(),
                    }),
                    Some(left) => {
                        let slices = sleeper.get_or_insert_with(|| {
                            self.sleepers.fetch_add(1, Ordering::SeqCst);
                            Slices::new()
                        });
                        let slice = slices.next(left);
                        match futex::wait(&self.state, want, Some(slice)) {
                            Ok(_) => Ok(()),
                            Err(e) => Err(Error::os(resource, "futex(FUTEX_WAIT)", e)),
                        }
                    }
                },
            };
            if let Err(e) = r {
                // Give up: withdraw the announcement and the role, let readers in.
                self.withdraw(me);
                return Err(e);
            }
        }
    }

    /// A writer that gave up (or unlocks): clears its writer bit(s), releases the role,
    /// wakes everyone. `bits` = the bits to clear.
    fn release_role(&self, me: u32, bits: u32) {
        self.writer_tid.store(0, Ordering::Relaxed);
        self.writer_pid.store(0, Ordering::Relaxed);
        // Role first, then the bit: a writer bit without a role owner is stale and the
        // next role owner replaces it (see write_loop).
        let _ = self
            .writer
            .compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst);
        self.state.fetch_and(!bits, Ordering::SeqCst);
        self.wake_all();
    }

    fn withdraw(&self, me: u32) {
        self.release_role(me, WRITE_WAITING);
    }

    /// Releases a write lock held by this process (`me`); does nothing if the role is no
    /// longer ours (a forked child's copy of a guard, or a peer overwrote it).
    pub(crate) fn write_unlock(&self, live: &Liveness) {
        let Ok(me) = live.token() else { return };
        if self.writer.load(Ordering::SeqCst) != me {
            return;
        }
        self.release_role(me, WRITE_LOCKED);
    }

    /// Releases a read lock. Never lets the count underflow into the writer bits (a peer
    /// may have zeroed it).
    pub(crate) fn read_unlock(&self) {
        let mut s = self.state.load(Ordering::SeqCst);
        for _ in 0..CAS_TRIES {
            if s & READERS == 0 {
                return;
            }
            match self
                .state
                .compare_exchange_weak(s, s - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    if (s - 1) & READERS == 0 && s & WRITE_WAITING != 0 {
                        self.wake_all();
                    }
                    return;
                }
                Err(cur) => s = cur,
            }
        }
    }

    /// Clears the `dirty` flag (the caller holds the write lock).
    fn make_consistent(&self) {
        self.dirty.store(0, Ordering::SeqCst);
    }
}

const RW_SIZE: usize = RawRwLock::SIZE;

/// Format tag in `Layout::params[0]`: v2 is the futex rwlock (v1 was glibc's).
const RW_PARAMS_TAG: u64 = 0x7277_6c6b_0002;

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
        // SAFETY: the payload is 64-byte aligned, at least RW_SIZE bytes, and ours alone
        // during initialisation.
        unsafe { RawRwLock::init_at(payload.as_mut_ptr().cast()) };
        Ok(())
    }
}

/// A `T` behind a process-shared reader-writer lock, in its own segment. Robust to a
/// writer's death, not to a reader's: see the [module docs](self).
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
#[doc(alias = "pthread_rwlock_t")]
pub struct RwLock<T> {
    seg: Segment,
    resource: String,
    _t: PhantomData<T>,
}

/// Shared access; unlocks on drop. Not `Send`.
#[must_use = "if unused the RwLock unlocks at once"]
pub struct RwLockReadGuard<'a, T> {
    lock: &'a RwLock<T>,
    writer_died: bool,
    _not_send: PhantomData<*const ()>,
}

/// Exclusive access; unlocks on drop. Not `Send`.
#[must_use = "if unused the RwLock unlocks at once"]
pub struct RwLockWriteGuard<'a, T> {
    lock: &'a RwLock<T>,
    writer_died: bool,
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

    fn raw(&self) -> &RawRwLock {
        // SAFETY: the layout check guarantees a RawRwLock (atomics, any bit pattern
        // valid) at the 64-aligned payload; it lives as long as the mapping.
        unsafe { &*(self.seg.payload_ptr() as *const RawRwLock) }
    }

    fn data(&self) -> *mut T {
        // SAFETY: the layout check guarantees a T at data_offset within the payload,
        // aligned (payload aligned to max(64, align_of T), offset a multiple of that).
        unsafe { self.seg.payload_ptr().add(data_offset(align_of::<T>())) }.cast()
    }

    fn read_with(&self, d: Option<Deadline>, op: &'static str) -> Result<RwLockReadGuard<'_, T>> {
        let died = self
            .raw()
            .read_in(self.seg.liveness(), d, &self.resource, op)?;
        Ok(RwLockReadGuard {
            lock: self,
            writer_died: died,
            _not_send: PhantomData,
        })
    }

    fn write_with(&self, d: Option<Deadline>, op: &'static str) -> Result<RwLockWriteGuard<'_, T>> {
        let died = self
            .raw()
            .write_in(self.seg.liveness(), d, &self.resource, op)?;
        Ok(RwLockWriteGuard {
            lock: self,
            writer_died: died,
            _not_send: PhantomData,
        })
    }

    /// Shared lock, blocking (a dead writer is taken over, see the [module docs](self)).
    #[doc(alias = "pthread_rwlock_rdlock")]
    pub fn read(&self) -> Result<RwLockReadGuard<'_, T>> {
        self.read_with(Some(Deadline::after(None)), "read")
    }

    /// Shared lock if available now; [`Error::WouldBlock`] otherwise.
    #[doc(alias = "pthread_rwlock_tryrdlock")]
    pub fn try_read(&self) -> Result<RwLockReadGuard<'_, T>> {
        self.read_with(None, "try_read")
    }

    /// Shared lock, waiting at most `timeout`; [`Error::Timeout`] after.
    #[doc(alias = "pthread_rwlock_timedrdlock")]
    pub fn read_timeout(&self, timeout: Duration) -> Result<RwLockReadGuard<'_, T>> {
        self.read_with(Some(Deadline::after(Some(timeout))), "read")
    }

    /// Exclusive lock, blocking (a dead reader makes this wait forever: prefer
    /// [`write_timeout`](Self::write_timeout)).
    #[doc(alias = "pthread_rwlock_wrlock")]
    pub fn write(&self) -> Result<RwLockWriteGuard<'_, T>> {
        self.write_with(Some(Deadline::after(None)), "write")
    }

    /// Exclusive lock if available now; [`Error::WouldBlock`] otherwise.
    #[doc(alias = "pthread_rwlock_trywrlock")]
    pub fn try_write(&self) -> Result<RwLockWriteGuard<'_, T>> {
        self.write_with(None, "try_write")
    }

    /// Exclusive lock, waiting at most `timeout`; [`Error::Timeout`] after (readers that
    /// died holding the lock show up this way).
    #[doc(alias = "pthread_rwlock_timedwrlock")]
    pub fn write_timeout(&self, timeout: Duration) -> Result<RwLockWriteGuard<'_, T>> {
        self.write_with(Some(Deadline::after(Some(timeout))), "write")
    }

    /// The lock words (e.g. for [`RawRwLock::state`]).
    pub fn raw_lock(&self) -> &RawRwLock {
        self.raw()
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}

impl<T> RwLockReadGuard<'_, T> {
    /// True if a writer died holding the lock and no writer has marked the data
    /// consistent since: it may be half-written.
    pub fn writer_died(&self) -> bool {
        self.writer_died
    }
}

impl<T> RwLockWriteGuard<'_, T> {
    /// True if a writer died holding the lock and the data has not been marked
    /// consistent since: repair it, then call [`make_consistent`](Self::make_consistent).
    pub fn writer_died(&self) -> bool {
        self.writer_died
    }

    /// Marks the data consistent after a writer died (clears the shared flag).
    pub fn make_consistent(&mut self) {
        self.lock.raw_words().make_consistent();
        self.writer_died = false;
    }
}

impl<T> RwLock<T> {
    fn raw_words(&self) -> &RawRwLock {
        // SAFETY: as in raw(): checked at construction (from_segment).
        unsafe { &*(self.seg.payload_ptr() as *const RawRwLock) }
    }
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
        self.lock.raw_words().read_unlock();
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
        self.lock.raw_words().write_unlock(self.lock.seg.liveness());
    }
}

/// Whether an rwlock segment's header describes shmkit's lock (format tag, lock size)
/// and a payload that holds it (any element type).
pub(super) fn format_ok(h: &crate::segment::Header) -> bool {
    h.raw.params[0] == RW_PARAMS_TAG
        && h.raw.params[1] == RW_SIZE as u64
        && h.raw.payload_len >= RW_SIZE as u64
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn relocking_from_the_writing_thread_is_an_error_not_a_hang() {
        let l = RwLock::<u32>::anonymous(0).unwrap();
        let _w = l.write().unwrap();
        assert_eq!(l.read().unwrap_err().errno(), Some(Errno::EDEADLK));
        assert_eq!(l.write().unwrap_err().errno(), Some(Errno::EDEADLK));
    }

    #[test]
    fn writers_and_readers_from_threads_stay_exclusive() {
        let l = Arc::new(RwLock::<[u64; 2]>::anonymous([0, 0]).unwrap());
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if i % 2 == 0 {
                            let mut g = l.write_timeout(Duration::from_secs(20)).unwrap();
                            g[0] += 1;
                            g[1] += 1;
                        } else {
                            let g = l.read_timeout(Duration::from_secs(20)).unwrap();
                            assert_eq!(g[0], g[1]);
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(*l.read().unwrap(), [4000, 4000]);
        assert_eq!(l.raw_lock().state().readers, 0);
    }

    #[test]
    fn hostile_reader_count_makes_writers_time_out_in_time() {
        let l = RwLock::<u32>::anonymous(0).unwrap();
        l.raw().state.store(3, Ordering::SeqCst); // three readers that do not exist
        let t = Instant::now();
        assert!(
            l.write_timeout(Duration::from_millis(30))
                .unwrap_err()
                .is_timeout()
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        // The timed-out writer withdrew: readers still enter.
        drop(l.read_timeout(Duration::from_secs(1)).unwrap());
        l.raw().state.store(READERS, Ordering::SeqCst);
        assert!(matches!(
            l.read_timeout(Duration::from_millis(1)),
            Err(Error::Corrupt { .. })
        ));
        l.raw().state.store(0, Ordering::SeqCst);
        assert!(l.try_write().is_ok());
    }

    #[test]
    fn a_dead_writer_is_taken_over_and_reported_until_repaired() {
        let l = RwLock::<u32>::anonymous(0).unwrap();
        // A writer whose token nobody holds, holding the lock.
        l.raw()
            .writer
            .store(crate::liveness::TOKEN_MAX, Ordering::SeqCst);
        l.raw().state.store(WRITE_LOCKED, Ordering::SeqCst);
        let r = l.read_timeout(Duration::from_secs(5)).unwrap();
        assert!(r.writer_died());
        drop(r);
        let mut w = l.try_write().unwrap();
        assert!(w.writer_died());
        w.make_consistent();
        drop(w);
        assert!(!l.read().unwrap().writer_died());
        // A role owner without a token (garbage): recovered without the dirty flag.
        l.raw()
            .state
            .store(WRITE_LOCKED | WRITE_WAITING, Ordering::SeqCst);
        let w = l.write_timeout(Duration::from_secs(5)).unwrap();
        assert!(!w.writer_died());
    }
}
