//! Last-value state: [`Latest<T>`], one `T` that one writer keeps replacing and any
//! number of readers copy, [`Board<T>`], a fixed table of such values indexed by slot,
//! and [`KeyedBoard<K, T>`], the same table named by keys fixed at creation (iceoryx2's
//! "blackboard"). All are seqlocks in a [`Segment`] of kind [`Kind::Latest`].
//!
//! - **Readers never block the writer** and never see a torn value: [`Latest::read`]
//!   copies the value and checks that no write overlapped the copy, retrying a bounded
//!   number of times ([`Latest::set_retries`], default [`DEFAULT_RETRIES`]). It returns
//!   the value with its *version* (the number of writes so far). A reader that faces a
//!   writer stuck in the middle of a write (killed, or hostile) or one that changes the
//!   value on every attempt gets an error after those retries, never a hang.
//! - **One writer at a time**: the first handle that writes claims the writer role in the
//!   segment with its liveness token ([`crate::liveness`]); another process's `write`
//!   fails with [`Error::WouldBlock`] while that holder lives, and takes the role over
//!   once the kernel says it is dead. `write` makes no system call and takes no lock.
//! - **Waiting for a change**: [`Latest::wait_for_update`] (and, with feature `async`,
//!   [`Latest::wait_for_update_async`]) sleep on a futex; a `write` issues `FUTEX_WAKE`
//!   only while somebody sleeps (a sleeper count, as in the queues).
//!
//! ```
//! use shmkit::latest::Latest;
//! use std::time::Duration;
//!
//! #[derive(Clone, Copy, Debug, PartialEq, shmkit::Pod, shmkit::Zeroable)]
//! #[bytemuck(crate = "shmkit::bytemuck")]
//! #[repr(C)]
//! struct Quote { bid: f64, ask: f64, ts: u64 }
//!
//! let name = format!("doc-latest-{}", std::process::id());
//! let mut w = Latest::<Quote>::create(&name, Quote { bid: 1.0, ask: 1.1, ts: 0 })?;
//! let r = Latest::<Quote>::open(&name)?;              // e.g. in another process
//! assert_eq!(r.read()?, (Quote { bid: 1.0, ask: 1.1, ts: 0 }, 0));
//! w.write(&Quote { bid: 1.2, ask: 1.3, ts: 1 })?;     // claims the writer role
//! w.update(|q| q.ts += 1)?;
//! let (q, version) = r.wait_for_update(1, Duration::from_secs(1))?;
//! assert_eq!((q.ts, version), (2, 2));
//! shmkit::Segment::unlink(&name)?;
//! # Ok::<(), shmkit::Error>(())
//! ```
//!
//! # The protocol and its memory-model argument
//!
//! `src/latest/cell.rs` holds the seqlock over raw memory with its layout table. Writer:
//! `seq += 1` (odd), release fence, store the value words, `seq += 1` (even, Release).
//! Reader: `s1 = seq` (Acquire; odd: retry), load the value words, acquire fence,
//! `s2 = seq`; equal: consistent. Every value word is copied with a *relaxed atomic*
//! 64-bit access, never with plain or volatile accesses: a reader racing a writer is then
//! not a data race, and the fences give exactly the ordering the check needs. This is the
//! discipline H.-J. Boehm derives in "Can seqlocks get along with programming language
//! memory models?" (MSPC 2012); the argument is spelled out in `cell.rs`, loom checks it
//! (`src/latest/loom.rs`) and Miri runs it on plain buffers. On x86-64 and aarch64 the
//! relaxed accesses compile to ordinary loads and stores, so a read costs a copy plus
//! two loads of `seq`.
//!
//! # A writer that dies
//!
//! A writer killed between its two `seq` stores leaves `seq` odd: readers get an error
//! after their retries ([`Error::Disconnected`], naming the dead writer) and never the
//! half-written value. The next process that writes takes the writer role over (the
//! kernel has dropped the dead writer's token lock) and *repairs* the slot by writing a
//! complete value: its write keeps `seq` odd until every word is written. Taking the role
//! over alone does not make the torn bytes readable; [`Latest::update`] refuses to start
//! from them.
//!
//! # Trust
//!
//! A process that can write the segment can make reads fail (after the bounded retries),
//! make them return any bytes (`T` is `Pod`, so any bytes are a `T`) and any version, make
//! waits last until their timeout, or take the writer role (a `write` of the legitimate
//! writer then fails with [`Error::WouldBlock`]: "writer role lost"). It cannot make a
//! read hang, panic or touch memory outside the segment: the table's geometry comes from
//! the validated header, never from shared words.
//!
// Without feature `async`, the link leads to the blocking form.
#![cfg_attr(
    not(feature = "async"),
    doc = "[`Latest::wait_for_update_async`]: Latest::wait_for_update"
)]

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::atomic::Ordering;
use std::time::Duration;
#[cfg(all(any(test, feature = "async"), not(shmkit_loom)))]
use std::time::Instant;

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::liveness::TOKEN_MAX;
use crate::queue::WaitStrategy;
use crate::queue::wait::{Next, Waiter};
use crate::segment::{ElemInfo, Kind, Layout, Segment, SegmentOptions};

mod cell;
#[cfg(all(any(fuzzing, test), not(shmkit_loom)))]
mod fuzz;
mod keyed;
#[cfg(all(test, shmkit_loom))]
mod loom;

use cell::{Geometry, ReadFail, Table};
pub use cell::{MAX_SLOTS, MAX_VALUE};
/// The seqlock cell's fuzz driver (`fuzz/fuzz_targets/latest.rs`); built only for cargo fuzz
/// (`--cfg fuzzing`) and this crate's tests: not part of the API.
#[cfg(all(any(fuzzing, test), not(shmkit_loom)))]
pub use fuzz::fuzz_latest;
pub use keyed::KeyedBoard;

/// Payload offsets of the writer's owner word and of slot 0's sequence word, for the
/// `pread` snapshots of [`crate::inspect`].
pub(crate) fn snapshot_offsets() -> (usize, usize) {
    (cell::OFF_WRITER, cell::OFF_SLOTS)
}

/// Read attempts after the first before [`Latest::read`] gives up (changeable per handle
/// with [`Latest::set_retries`]). The first 64 retries spin; later ones yield the CPU, so
/// a writer preempted in the middle of a write can finish. Measured on a 2-vCPU VM at
/// load 8: against a writer rewriting the value in a tight loop on the other core, about
/// one read in a million gave up (8 B: 97 of 113 million; `cargo bench -p shmkit-compare
/// --bench latest`); against a writer stuck or dead mid-write, the error came after
/// 0.6 ms (median of 20; at most 5 ms).
pub const DEFAULT_RETRIES: u32 = 1000;

/// Layout version of the table (`params[1]` of the header).
const TABLE_VERSION: u64 = 1;

/// The untyped part of a handle: the segment, the table and the read retry limit.
#[derive(Debug)]
struct Core {
    seg: Segment,
    table: Table,
    retries: u32,
}

fn layout(geo: &Geometry, elem: ElemInfo) -> Layout {
    Layout::new(Kind::Latest, elem)
        .with_payload_len(geo.total as u64)
        .with_params([geo.slots as u64, TABLE_VERSION, 0, 0])
}

fn geometry<T: Pod>(resource: &str, slots: u64) -> Result<Geometry> {
    Geometry::new(slots, size_of::<T>() as u64, align_of::<T>() as u64).ok_or_else(|| {
        Error::invalid(
            resource,
            "create latest-value table",
            format!(
                "{slots} slots of {} bytes aligned to {}: out of range (1..={MAX_SLOTS} slots, \
                 1..={MAX_VALUE} bytes, alignment at most 64)",
                size_of::<T>(),
                align_of::<T>()
            ),
        )
    })
}

/// The initialiser of a fresh table: every slot holds `init`, version 0.
fn init_table<T: Pod>(geo: Geometry, init: T) -> impl FnOnce(&mut [u8]) -> Result<()> {
    move |payload| {
        // The segment guarantees `payload` holds `payload_len = geo.total` bytes, 64-aligned.
        if payload.len() < geo.total {
            return Err(Error::invalid(
                "latest",
                "initialise",
                "payload shorter than the table",
            ));
        }
        // SAFETY: `payload` is valid for geo.total bytes, 64-aligned, and nobody else can
        // see it before the segment is published.
        let table = unsafe { Table::new(payload.as_mut_ptr(), geo) };
        table.init();
        for s in 0..geo.slots {
            // SAFETY: `init` is a T of geo.size bytes; s < slots.
            unsafe { table.fill(s, bytemuck::bytes_of(&init).as_ptr()) };
        }
        Ok(())
    }
}

impl Core {
    /// Checks `seg` (kind, `elem(slots)`, table version, slot count) and maps the table.
    fn wrap(
        seg: Segment,
        elem: impl FnOnce(u64) -> ElemInfo,
        want_slots: Option<u64>,
    ) -> Result<Core> {
        let raw = &seg.header().raw;
        let slots = raw.params[0];
        seg.check_elements(Kind::Latest, &elem(slots), Some(slots))?;
        if raw.params[1] != TABLE_VERSION {
            return Err(Error::Mismatch {
                resource: seg.resource(),
                what: "latest table version",
                expected: TABLE_VERSION.to_string(),
                found: raw.params[1].to_string(),
            });
        }
        if let Some(want) = want_slots {
            if slots != want {
                return Err(Error::Mismatch {
                    resource: seg.resource(),
                    what: "slots",
                    expected: want.to_string(),
                    found: slots.to_string(),
                });
            }
        }
        let geo = Geometry::new(slots, raw.elem_size, raw.elem_align).ok_or_else(|| {
            Error::corrupt(
                seg.resource(),
                format!("latest table parameters {:?} out of range", raw.params),
            )
        })?;
        if seg.payload_len() < geo.total || seg.payload_ptr() as usize % 64 != 0 {
            return Err(Error::corrupt(
                seg.resource(),
                "latest table larger than its payload, or misaligned",
            ));
        }
        crate::queue::wait::init_fences();
        // SAFETY: the payload is mapped for at least geo.total bytes (checked) for as long
        // as `seg` lives (the Core owns both), 64-aligned (checked), and every process
        // accesses it through this module's atomics.
        let table = unsafe { Table::new(seg.payload_ptr(), geo) };
        Ok(Core {
            seg,
            table,
            retries: DEFAULT_RETRIES,
        })
    }

    fn slot(&self, slot: u32, op: &'static str) -> Result<usize> {
        let s = slot as usize;
        if s < self.table.geo.slots {
            Ok(s)
        } else {
            Err(Error::invalid(
                self.seg.resource(),
                op,
                format!("slot {slot} out of range (0..{})", self.table.geo.slots),
            ))
        }
    }

    fn read<T: Pod>(&self, slot: usize) -> Result<(T, u64)> {
        let mut v = MaybeUninit::<T>::uninit();
        // SAFETY: `v` has room for size_of::<T>() == geo.size bytes (checked on open).
        let version = unsafe { self.read_raw(slot, v.as_mut_ptr().cast()) }?;
        // SAFETY: `read_raw` wrote all geo.size bytes of `v`; any bytes are a T (Pod).
        Ok((unsafe { v.assume_init() }, version))
    }

    /// # Safety
    /// `dst` is valid for writes of `geo.size` bytes; `slot < geo.slots`.
    #[inline]
    unsafe fn read_raw(&self, slot: usize, dst: *mut u8) -> Result<u64> {
        // SAFETY: the caller's contract.
        unsafe { self.table.read(slot, dst, self.retries) }.map_err(|f| self.read_error(f))
    }

    #[cold]
    fn read_error(&self, f: ReadFail) -> Error {
        let owner = self.table.writer().load(Ordering::Acquire);
        if f == ReadFail::Odd && !self.owner_alive(owner) {
            let who = match owner >> 32 {
                0 => "no live process holds the writer role".to_owned(),
                pid => format!("the writer (pid {pid}) is gone"),
            };
            return Error::Disconnected {
                resource: self.seg.resource(),
                op: "read latest value",
                detail: Some(format!(
                    "{who} and the value was left half-written (a writer died in the middle of a \
                     write, or a hostile process wrote the sequence); it stays unreadable until \
                     a new writer writes it"
                )),
            };
        }
        Error::WouldBlock {
            resource: self.seg.resource(),
            op: "read latest value (no consistent copy within the retry limit: the writer \
                 rewrites it continuously or is stuck mid-write)",
        }
    }

    fn owner_alive(&self, owner: u64) -> bool {
        owner != 0 && self.seg.liveness().token_alive(owner as u32 & TOKEN_MAX)
    }

    /// Makes sure this handle holds the writer role: one atomic load and a compare when
    /// it does. Returns whether a dead writer's claim was taken over.
    fn ensure_writer(&self) -> Result<bool> {
        let me = self.seg.liveness().token()?;
        let w = self.table.writer();
        let mut cur = w.load(Ordering::Acquire);
        if cur != 0 && cur as u32 == me {
            return Ok(false);
        }
        self.claim(me, &mut cur)
    }

    #[cold]
    fn claim(&self, me: u32, cur: &mut u64) -> Result<bool> {
        let w = self.table.writer();
        let mine = u64::from(std::process::id()) << 32 | u64::from(me);
        loop {
            if *cur != 0 && self.owner_alive(*cur) {
                return Err(Error::WouldBlock {
                    resource: self.seg.resource(),
                    op: "claim the writer role of a latest value: another live process \
                         holds it (one writer at a time; it is taken over when that process dies)",
                });
            }
            match w.compare_exchange(*cur, mine, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(*cur != 0),
                Err(now) => *cur = now,
            }
        }
    }

    fn release_writer(&self) {
        if let Some(t) = self.seg.liveness().token_if_drawn() {
            let mine = u64::from(std::process::id()) << 32 | u64::from(t);
            let _ =
                self.table
                    .writer()
                    .compare_exchange(mine, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn write<T: Pod>(&self, slot: usize, v: &T) -> Result<u64> {
        // SAFETY: `v` is size_of::<T>() == geo.size bytes (checked on open).
        unsafe { self.write_raw(slot, bytemuck::bytes_of(v).as_ptr()) }
    }

    /// # Safety
    /// `src` is valid for reads of `geo.size` bytes; `slot < geo.slots`.
    #[inline]
    unsafe fn write_raw(&self, slot: usize, src: *const u8) -> Result<u64> {
        self.ensure_writer()?;
        // SAFETY: the caller's contract.
        let version = unsafe { self.table.write(slot, src) };
        self.table.wait_point().wake();
        Ok(version)
    }

    fn update<T: Pod>(&self, slot: usize, f: impl FnOnce(&mut T)) -> Result<u64> {
        self.ensure_writer()?;
        let mut v = MaybeUninit::<T>::uninit();
        // The writer is the only one writing, so one attempt suffices unless the slot is
        // torn (a dead writer's unfinished write) or a hostile process interferes.
        // SAFETY: as in `read`.
        match unsafe { self.table.read(slot, v.as_mut_ptr().cast(), 0) } {
            Ok(_) => {
                // SAFETY: fully written by `read`; any bytes are a T.
                let mut v = unsafe { v.assume_init() };
                f(&mut v);
                self.write(slot, &v)
            }
            Err(_) => Err(Error::invalid(
                self.seg.resource(),
                "update latest value",
                "the current value is torn (a writer died in the middle of a write): \
                 write a whole new value instead",
            )),
        }
    }

    fn version(&self, slot: usize) -> u64 {
        self.table.seq(slot).load(Ordering::Acquire) / 2
    }

    /// `read()` once `slot`'s version differs from `after` (`None`: not yet).
    fn updated<R>(&self, slot: usize, after: u64, read: impl FnOnce() -> R) -> Option<R> {
        let s = self.table.seq(slot).load(Ordering::Acquire);
        (s & 1 == 0 && s / 2 != after).then(read)
    }

    /// Waits until `slot`'s version differs from `after`, then returns `read()`.
    fn wait_for_update<R>(
        &self,
        slot: usize,
        after: u64,
        timeout: Duration,
        mut read: impl FnMut() -> Result<R>,
    ) -> Result<R> {
        let mut waiter = Waiter::new(WaitStrategy::default(), Some(timeout));
        loop {
            if let Some(r) = self.updated(slot, after, &mut read) {
                return r;
            }
            match waiter.next() {
                Next::Spin => {}
                Next::Park(d) => {
                    if let Some(r) = self
                        .table
                        .wait_point()
                        .park(d, || self.updated(slot, after, &mut read))
                    {
                        return r;
                    }
                }
                Next::TimedOut => {
                    return Err(Error::Timeout {
                        resource: self.seg.resource(),
                        op: "wait for an update of a latest value",
                        timeout,
                    });
                }
            }
        }
    }

    #[cfg(all(feature = "async", not(shmkit_loom)))]
    async fn wait_for_update_async<R>(
        &self,
        slot: usize,
        after: u64,
        timeout: Option<Duration>,
        mut read: impl FnMut() -> Result<R>,
    ) -> Result<R> {
        use crate::aio::{Parked, Spot};
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut parked = Parked::default();
        let r = std::future::poll_fn(|cx| {
            parked.poll(
                cx,
                || {
                    let wp = self.table.wait_point();
                    Spot {
                        word: wp.word,
                        sleepers: wp.sleepers,
                        begin: move || wp.begin_wait(),
                    }
                },
                || self.updated(slot, after, &mut read),
                || None,
                deadline,
                || self.seg.resource(),
            )
        })
        .await?;
        r.unwrap_or_else(|| {
            Err(Error::Timeout {
                resource: self.seg.resource(),
                op: "wait for an update of a latest value",
                timeout: timeout.unwrap_or_default(),
            })
        })
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.release_writer();
    }
}

/// One `T` in shared memory, written by one process at a time and read by any number
/// without locks: a seqlock (see the [module docs](self)).
///
/// Reading takes `&self` (a handle may be shared between threads); writing takes
/// `&mut self`, so one handle never writes from two threads at once.
#[derive(Debug)]
pub struct Latest<T> {
    core: Core,
    _t: PhantomData<T>,
}

impl<T: Pod> Latest<T> {
    fn from_core(core: Core) -> Self {
        Latest {
            core,
            _t: PhantomData,
        }
    }

    fn geometry(resource: &str) -> Result<Geometry> {
        geometry::<T>(resource, 1)
    }

    /// The layout of a `Latest<T>` segment.
    pub fn layout() -> Result<Layout> {
        Ok(layout(&Self::geometry("latest")?, ElemInfo::of::<T>(1)))
    }

    /// Creates a named value holding `init` (version 0). Nobody holds the writer role
    /// yet: the first `write` claims it.
    pub fn create(name: &str, init: T) -> Result<Self> {
        Self::create_with(&Segment::options(), name, init)
    }

    /// Creates a named value with the given options.
    pub fn create_with(opts: &SegmentOptions, name: &str, init: T) -> Result<Self> {
        let geo = Self::geometry(name)?;
        let seg = opts.create(name, &Self::layout()?, init_table(geo, init))?;
        Self::from_segment(seg)
    }

    /// Opens a named value, checking kind and type.
    pub fn open(name: &str) -> Result<Self> {
        Self::from_segment(Segment::open(name)?)
    }

    /// Opens the value or creates it holding `init`; returns whether this call created it.
    pub fn open_or_create(name: &str, init: T) -> Result<(Self, bool)> {
        let geo = Self::geometry(name)?;
        let (seg, created) =
            Segment::open_or_create(name, &Self::layout()?, init_table(geo, init))?;
        Ok((Self::from_segment(seg)?, created))
    }

    /// An anonymous value shared with children forked afterwards (a child that writes
    /// claims the writer role for itself, if the parent does not hold it).
    pub fn anonymous(init: T) -> Result<Self> {
        let geo = Self::geometry("<anonymous segment>")?;
        let seg = Segment::anonymous(&Self::layout()?, init_table(geo, init))?;
        Self::from_segment(seg)
    }

    /// Views an opened segment as a `Latest<T>`, checking kind, type and that it has one
    /// slot.
    pub fn from_segment(seg: Segment) -> Result<Self> {
        Ok(Self::from_core(Core::wrap(
            seg,
            ElemInfo::of::<T>,
            Some(1),
        )?))
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.core.seg
    }

    /// Sets how many times a read retries before giving up (default
    /// [`DEFAULT_RETRIES`]; 0: a single attempt).
    pub fn set_retries(&mut self, retries: u32) {
        self.core.retries = retries;
    }

    /// A consistent copy of the value and its version (the number of writes since
    /// creation). Never blocks the writer, never returns a torn value. Fails after the
    /// retry limit with [`Error::Disconnected`] if the writer died in the middle of a
    /// write, [`Error::WouldBlock`] if a live writer kept the value changing (or stuck
    /// half-written) for that long.
    #[inline]
    pub fn read(&self) -> Result<(T, u64)> {
        self.core.read(0)
    }

    /// The current version, without reading the value (one atomic load).
    pub fn version(&self) -> u64 {
        self.core.version(0)
    }

    /// Waits until the version differs from `after` (e.g. the one the last `read`
    /// returned), then reads: spins briefly, then sleeps on a futex. `Error::Timeout`
    /// after `timeout`; a write in progress whose writer died counts as no update.
    pub fn wait_for_update(&self, after: u64, timeout: Duration) -> Result<(T, u64)> {
        self.core
            .wait_for_update(0, after, timeout, || self.core.read(0))
    }

    /// The async form of [`wait_for_update`](Self::wait_for_update) (feature `async`;
    /// any executor, see [`crate::aio`]). `timeout: None` waits without limit.
    /// Cancellation-safe (nothing to undo).
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    pub async fn wait_for_update_async(
        &self,
        after: u64,
        timeout: Option<Duration>,
    ) -> Result<(T, u64)> {
        self.core
            .wait_for_update_async(0, after, timeout, || self.core.read(0))
            .await
    }

    /// Replaces the value and returns its version. Claims the writer role on first use
    /// ([`Error::WouldBlock`] while another live process holds it; a dead holder's role
    /// is taken over). No system call unless a reader sleeps in `wait_for_update`.
    #[inline]
    pub fn write(&mut self, v: &T) -> Result<u64> {
        self.core.write(0, v)
    }

    /// Reads the value, lets `f` change it, writes it back (as the writer: see
    /// [`write`](Self::write)). Fails if the value was left torn by a writer that died
    /// mid-write: write a whole value then.
    pub fn update(&mut self, f: impl FnOnce(&mut T)) -> Result<u64> {
        self.core.update(0, f)
    }

    /// Claims the writer role now (as the first `write` would): `Ok(true)` if a dead
    /// writer's role was taken over.
    pub fn claim_writer(&mut self) -> Result<bool> {
        self.core.ensure_writer()
    }

    /// Gives the writer role up, if this handle holds it (dropping the handle does too).
    pub fn release_writer(&mut self) {
        self.core.release_writer();
    }

    /// Test hook: claims the writer role, then starts a write of `v` and stops after
    /// `words` of its 64-bit words, leaving the sequence odd as a writer killed at that
    /// point would (kill tests call it, then get killed).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn write_torn_for_test(&mut self, v: &T, words: usize) -> Result<()> {
        self.core.ensure_writer()?;
        // SAFETY: `v` is geo.size bytes; slot 0 exists.
        unsafe {
            self.core
                .table
                .write_prefix(0, bytemuck::bytes_of(v).as_ptr(), words)
        };
        Ok(())
    }

    /// The pid recorded by the current holder of the writer role, if it is alive (one
    /// `fcntl` when somebody holds it).
    pub fn writer_pid(&self) -> Option<u32> {
        let o = self.core.table.writer().load(Ordering::Acquire);
        self.core.owner_alive(o).then_some((o >> 32) as u32)
    }
}

/// A fixed number of `T` slots in shared memory, each its own seqlock ([`Latest`] per
/// slot), with one writer for the whole board: iceoryx2's "blackboard", indexed by slot
/// number. The number of slots is fixed at creation.
///
/// ```
/// use shmkit::latest::Board;
/// let name = format!("doc-board-{}", std::process::id());
/// let mut b = Board::<u64>::create(&name, 4, 0)?;
/// b.write(2, &7)?;
/// let r = Board::<u64>::open(&name)?;
/// assert_eq!(r.len(), 4);
/// assert_eq!(r.read(2)?, (7, 1));
/// assert_eq!(r.read(3)?, (0, 0));
/// assert!(r.read(4).is_err()); // out of range: an error
/// shmkit::Segment::unlink(&name)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Board<T> {
    core: Core,
    _t: PhantomData<T>,
}

impl<T: Pod> Board<T> {
    /// The layout of a board of `slots` values.
    pub fn layout(slots: u32) -> Result<Layout> {
        let geo = geometry::<T>("board", u64::from(slots))?;
        Ok(layout(&geo, ElemInfo::of::<T>(u64::from(slots))))
    }

    /// Creates a named board of `slots` values, each holding `init` (version 0).
    pub fn create(name: &str, slots: u32, init: T) -> Result<Self> {
        let geo = geometry::<T>(name, u64::from(slots))?;
        let seg = Segment::create(name, &Self::layout(slots)?, init_table(geo, init))?;
        Self::from_segment(seg)
    }

    /// Opens a named board of any number of slots, checking kind and type.
    pub fn open(name: &str) -> Result<Self> {
        Self::from_segment(Segment::open(name)?)
    }

    /// An anonymous board shared with children forked afterwards.
    pub fn anonymous(slots: u32, init: T) -> Result<Self> {
        let geo = geometry::<T>("<anonymous segment>", u64::from(slots))?;
        let seg = Segment::anonymous(&Self::layout(slots)?, init_table(geo, init))?;
        Self::from_segment(seg)
    }

    /// Views an opened segment as a board (a [`Latest`] segment is a board of one slot).
    pub fn from_segment(seg: Segment) -> Result<Self> {
        Ok(Board {
            core: Core::wrap(seg, ElemInfo::of::<T>, None)?,
            _t: PhantomData,
        })
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.core.table.geo.slots
    }

    /// Always false (a board has at least one slot).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.core.seg
    }

    /// As [`Latest::set_retries`].
    pub fn set_retries(&mut self, retries: u32) {
        self.core.retries = retries;
    }

    /// As [`Latest::read`], for `slot`.
    pub fn read(&self, slot: u32) -> Result<(T, u64)> {
        self.core.read(self.core.slot(slot, "read board slot")?)
    }

    /// As [`Latest::version`], for `slot`.
    pub fn version(&self, slot: u32) -> Result<u64> {
        Ok(self
            .core
            .version(self.core.slot(slot, "board slot version")?))
    }

    /// As [`Latest::wait_for_update`], for `slot` (writes of other slots wake the waiter,
    /// which goes back to sleep).
    pub fn wait_for_update(&self, slot: u32, after: u64, timeout: Duration) -> Result<(T, u64)> {
        let s = self.core.slot(slot, "wait for a board slot")?;
        self.core
            .wait_for_update(s, after, timeout, || self.core.read(s))
    }

    /// As [`Latest::wait_for_update_async`], for `slot`.
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    pub async fn wait_for_update_async(
        &self,
        slot: u32,
        after: u64,
        timeout: Option<Duration>,
    ) -> Result<(T, u64)> {
        let s = self.core.slot(slot, "wait for a board slot")?;
        self.core
            .wait_for_update_async(s, after, timeout, || self.core.read(s))
            .await
    }

    /// As [`Latest::write`], for `slot` (one writer for the whole board).
    pub fn write(&mut self, slot: u32, v: &T) -> Result<u64> {
        let s = self.core.slot(slot, "write board slot")?;
        self.core.write(s, v)
    }

    /// As [`Latest::update`], for `slot`.
    pub fn update(&mut self, slot: u32, f: impl FnOnce(&mut T)) -> Result<u64> {
        let s = self.core.slot(slot, "update board slot")?;
        self.core.update(s, f)
    }

    /// As [`Latest::claim_writer`].
    pub fn claim_writer(&mut self) -> Result<bool> {
        self.core.ensure_writer()
    }

    /// As [`Latest::release_writer`].
    pub fn release_writer(&mut self) {
        self.core.release_writer();
    }
}

/// The type name a [`LatestBytes`] segment records.
pub const BYTES_TYPE: &str = "latest-bytes";

fn bytes_elem(value_size: u64) -> ElemInfo {
    let mut e = ElemInfo::of::<u8>(1).named(BYTES_TYPE);
    e.size = value_size;
    e
}

/// [`Latest`] for a byte string of at most `max_len` bytes fixed at creation (the CLI's
/// `shmkit latest create --type bytes`). The slot holds the length (a `u64`) and
/// `max_len` bytes; a write copies the whole slot.
///
/// ```
/// use shmkit::latest::LatestBytes;
/// let mut l = LatestBytes::anonymous(16)?;
/// l.write(b"hello")?;
/// let mut buf = Vec::new();
/// assert_eq!(l.read(&mut buf)?, 1);
/// assert_eq!(buf, b"hello");
/// assert!(l.write(&[0; 17]).is_err()); // longer than max_len
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct LatestBytes {
    core: Core,
    /// The writer's staging copy of the slot (length word + bytes).
    scratch: Vec<u8>,
}

impl LatestBytes {
    fn plan(resource: &str, max_len: usize) -> Result<(Geometry, Layout)> {
        let size = (max_len as u64).saturating_add(8);
        let geo = Geometry::new(1, size, 1).ok_or_else(|| {
            Error::invalid(
                resource,
                "create latest byte string",
                format!(
                    "max_len {max_len} out of range (at most {} bytes)",
                    MAX_VALUE - 8
                ),
            )
        })?;
        Ok((geo, layout(&geo, bytes_elem(size))))
    }

    fn empty_init(geo: Geometry) -> impl FnOnce(&mut [u8]) -> Result<()> {
        move |payload| {
            if payload.len() < geo.total {
                return Err(Error::invalid("latest", "initialise", "payload too short"));
            }
            // SAFETY: as in `init_table`: geo.total bytes, 64-aligned, not yet shared.
            unsafe { Table::new(payload.as_mut_ptr(), geo) }.init();
            Ok(())
        }
    }

    /// Creates a named, empty byte string of at most `max_len` bytes (version 0).
    pub fn create_with(opts: &SegmentOptions, name: &str, max_len: usize) -> Result<Self> {
        let (geo, layout) = Self::plan(name, max_len)?;
        Self::from_segment(opts.create(name, &layout, Self::empty_init(geo))?)
    }

    /// An anonymous byte string shared with children forked afterwards.
    pub fn anonymous(max_len: usize) -> Result<Self> {
        let (geo, layout) = Self::plan("<anonymous segment>", max_len)?;
        Self::from_segment(Segment::anonymous(&layout, Self::empty_init(geo))?)
    }

    /// Opens a named byte string.
    pub fn open(name: &str) -> Result<Self> {
        Self::from_segment(Segment::open(name)?)
    }

    /// Views an opened segment as a byte string, checking kind and type.
    pub fn from_segment(seg: Segment) -> Result<Self> {
        let size = seg.header().raw.elem_size;
        let core = Core::wrap(seg, |_| bytes_elem(size), Some(1))?;
        Ok(LatestBytes {
            core,
            scratch: Vec::new(),
        })
    }

    /// The longest string this holds.
    pub fn max_len(&self) -> usize {
        self.core.table.geo.size - 8
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.core.seg
    }

    /// Copies the current string into `buf` (replacing its contents) and returns its
    /// version, as [`Latest::read`]. A length over `max_len` (written by a hostile
    /// process) is [`Error::Corrupt`].
    pub fn read(&self, buf: &mut Vec<u8>) -> Result<u64> {
        let size = self.core.table.geo.size;
        buf.clear();
        buf.resize(size, 0);
        // SAFETY: `buf` holds geo.size bytes; slot 0 exists.
        let version = unsafe { self.core.read_raw(0, buf.as_mut_ptr()) }?;
        let mut len = [0u8; 8];
        len.copy_from_slice(&buf[..8]);
        let len = u64::from_ne_bytes(len);
        if len > (size - 8) as u64 {
            buf.clear();
            return Err(Error::corrupt(
                self.core.seg.resource(),
                format!("byte string length {len} exceeds its maximum {}", size - 8),
            ));
        }
        buf.drain(..8);
        buf.truncate(len as usize);
        Ok(version)
    }

    /// As [`Latest::wait_for_update`], into `buf`.
    pub fn wait_for_update(&self, buf: &mut Vec<u8>, after: u64, timeout: Duration) -> Result<u64> {
        self.core
            .wait_for_update(0, after, timeout, || self.read(buf))
    }

    /// Replaces the string (at most `max_len` bytes) and returns its version, as
    /// [`Latest::write`].
    pub fn write(&mut self, msg: &[u8]) -> Result<u64> {
        let size = self.core.table.geo.size;
        if msg.len() > size - 8 {
            return Err(Error::MessageTooLarge {
                resource: self.core.seg.resource(),
                op: "write latest byte string",
                len: msg.len(),
                max: size - 8,
                advice: Some("create it with a larger --max-len".into()),
            });
        }
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&(msg.len() as u64).to_ne_bytes());
        self.scratch.extend_from_slice(msg);
        self.scratch.resize(size, 0);
        // SAFETY: `scratch` holds geo.size bytes; slot 0 exists.
        unsafe { self.core.write_raw(0, self.scratch.as_ptr()) }
    }
}

#[cfg(all(test, not(shmkit_loom)))]
mod tests {
    use super::*;

    #[test]
    fn anonymous_roundtrip_and_writer_role() {
        let mut a = Latest::<[u32; 3]>::anonymous([1, 2, 3]).unwrap();
        assert_eq!(a.read().unwrap(), ([1, 2, 3], 0));
        assert_eq!(a.writer_pid(), None);
        assert!(!a.claim_writer().unwrap());
        assert_eq!(a.writer_pid(), Some(std::process::id()));
        assert_eq!(a.write(&[4, 5, 6]).unwrap(), 1);
        assert_eq!(a.update(|v| v[0] = 9).unwrap(), 2);
        assert_eq!(a.read().unwrap(), ([9, 5, 6], 2));
        assert_eq!(a.version(), 2);
        // The wait returns at once for an old version, times out for the current one.
        assert_eq!(a.wait_for_update(0, Duration::from_millis(1)).unwrap().1, 2);
        let t = Instant::now();
        assert!(
            a.wait_for_update(2, Duration::from_millis(30))
                .unwrap_err()
                .is_timeout()
        );
        assert!(t.elapsed() >= Duration::from_millis(30));
        a.release_writer();
        assert_eq!(a.writer_pid(), None);
    }

    #[test]
    fn wrong_type_or_shape_is_refused() {
        let name = format!("shmkit-test-latest-unit-{}", std::process::id());
        let _l = Latest::<u64>::create(&name, 5).unwrap();
        assert!(Latest::<u32>::open(&name).is_err());
        assert!(Board::<u32>::open(&name).is_err());
        let b = Board::<u64>::open(&name).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b.read(0).unwrap(), (5, 0));
        assert!(LatestBytes::open(&name).is_err());
        Segment::unlink(&name).unwrap();
        assert!(Board::<u64>::create(&name, 0, 0).is_err());
        assert!(Latest::<()>::anonymous(()).is_err());
    }

    #[test]
    fn bytes_roundtrip_and_hostile_length() {
        let mut l = LatestBytes::anonymous(10).unwrap();
        assert_eq!(l.max_len(), 10);
        let mut buf = vec![1, 2, 3];
        assert_eq!(l.read(&mut buf).unwrap(), 0);
        assert!(buf.is_empty());
        assert_eq!(l.write(b"0123456789").unwrap(), 1);
        l.read(&mut buf).unwrap();
        assert_eq!(buf, b"0123456789");
        assert!(matches!(
            l.write(b"0123456789a"),
            Err(Error::MessageTooLarge { .. })
        ));
        // A hostile process writes a consistent slot with a length beyond the maximum.
        let mut raw = 1000u64.to_ne_bytes().to_vec();
        raw.resize(18, 0);
        // SAFETY: 18 = geo.size bytes; slot 0 exists.
        unsafe { l.core.write_raw(0, raw.as_ptr()) }.unwrap();
        assert!(matches!(l.read(&mut buf), Err(Error::Corrupt { .. })));
    }
}
