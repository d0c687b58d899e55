//! Shared-memory queues: shmkit's fast path.
//!
//! - [`Queue<T>`]: a bounded ring of fixed-size slots holding `T: Pod`;
//! - [`ByteQueue`]: variable-length byte messages up to a fixed maximum;
//!
//! both in a [`Segment`] of kind [`Kind::Queue`] / [`Kind::ByteQueue`], in one of two
//! [`Mode`]s (`Spsc`, `Mpmc`, recorded in the header and checked on open), with blocking,
//! `try_` and `_timeout` forms, zero-copy slots ([`Queue::reserve`], [`Queue::recv_ref`]),
//! batch receives ([`Queue::recv_many`]), Python's `JoinableQueue` semantics
//! ([`Queue::task_done`], [`Queue::join`]; see "Joinable queues") and a configurable
//! [`WaitStrategy`] (spin, then sleep on a futex).
//!
//! # Joinable queues
//!
//! Created with [`QueueOptions::joinable`]: every message received is a task, counted
//! until the receiving handle marks it done ([`Queue::task_done`], or [`Task::done`] on
//! the guard [`Queue::recv_task`] returns); [`Queue::join`] waits until every task sent
//! has been received and done. A consumer that dies holding tasks does not make `join`
//! wait forever: its tasks are not waited for, and the [`JoinOutcome`] says what
//! happened to them, with the pids:
//!
//! - **lost** (the default): a received message is released from the ring before it is
//!   processed, so its contents died with the consumer; the producer must send it again
//!   if it matters;
//! - **re-queued**, with [`QueueOptions::requeue_lost`]`(depth)` (MPMC `Queue<T>`):
//!   [`Queue::recv_task`] keeps a copy of each task in the consumer's *stash* (`depth`
//!   slots per handle, in the segment) until [`Task::done`], and `join` sends the tasks
//!   of consumers that died back into the queue, then waits for others to do them.
//!   Delivery is **at least once**: a task is delivered twice only if a process dies
//!   in the middle of handing it back (a re-queuer after publishing it, or the consumer
//!   between stashing it and updating its count, which also reports it lost), never
//!   lost once stashed. A consumer killed in the few instructions between taking the
//!   message and stashing it loses that one task (reported lost).
//!
//! A [`Task`] dropped without `done` stays not done, as a forgotten `task_done` does in
//! Python (`join` waits for it); with a stash, its handle gives it back to the queue
//! when dropped. A handle holds at most `depth` tasks not done: `recv_task` fails
//! (`Other`) beyond that. Re-queued tasks go to the back of the queue. Re-queuing
//! happens in `join` (a queue nobody joins keeps a dead consumer's tasks stashed until
//! somebody does, or until a new handle takes over the dead one's entry), bounded by
//! its timeout when the ring is full.
//!
//! ```
//! use shmkit::queue::Queue;
//! let q = Queue::<u64>::options().requeue_lost(8).anonymous()?;
//! let worker = q.try_clone()?; // another process, normally
//! q.send(41)?;
//! let task = worker.recv_task()?;
//! assert_eq!(*task + 1, 42);
//! task.done()?;
//! let outcome = q.join(None)?;
//! assert!(outcome.is_complete() && outcome.requeued.is_empty());
//! # Ok::<(), shmkit::Error>(())
//! ```
//!
//! # Peers and disconnection
//!
//! The queue knows who is attached, as crossbeam-channel's `Sender`s and `Receiver`s do,
//! but across processes:
//!
//! - a [`Queue`] / [`ByteQueue`] handle becomes a **producer** at its first send or
//!   reserve (or [`Queue::attach_producer`]) and a **consumer** at its first receive (or
//!   [`Queue::attach_consumer`]); a [`Sender`] / [`ByteSender`] is a producer from its
//!   creation until its last clone drops. A handle stops being a producer on
//!   [`Queue::close`] ("no more messages"; a later send attaches it again), on drop, or
//!   when its process dies — noticed by a blocked peer within about 30 ms (a sweep of the
//!   participant table's liveness tokens, at most every 10 ms, during the sleep slices),
//!   by `try_` calls on their first and every 64th failure;
//! - once at least one producer has attached and none is left, receivers get every
//!   message already in the queue, then `Disconnected` at once (a blocked receive is
//!   woken by the last producer leaving; [`Queue::iter`] ends there);
//! - once at least one consumer has attached and none is left, a sender gets
//!   `Disconnected` (with its value back) when the queue is full, instead of waiting:
//!   what fits stays for the next consumer;
//! - a named queue outlives its handles: a producer (consumer) that attaches after a
//!   disconnection reconnects, and a receiver that opens a queue whose producers have
//!   all left sees `Disconnected` once it is empty. A process that starts producers
//!   should attach its own handle as a producer first (and `close` it when they have
//!   attached) if its consumers must not see the gap before their first send.
//!
//! # Errors
//!
//! Each operation has its own error type, shaped like std's and crossbeam's:
//! [`TryRecvError`] (`Empty`, `Disconnected`), [`RecvTimeoutError`] (`Timeout`,
//! `Disconnected`), [`RecvError`], [`TrySendError<T>`] (`Full(T)`, `Disconnected(T)`),
//! [`SendTimeoutError<T>`], [`SendError<T>`]; the send errors hand the value back. The
//! common outcomes allocate nothing (an empty `try_recv` costs less than a send +
//! receive pair: `cargo bench -p shmkit-compare --bench queue_ops`); the rare ones
//! (corrupt shared state, a refused SPSC role, a message too large) are an
//! `Other(Box<Error>)` variant with the full message. Every type converts into
//! [`Error`] with `?`. `task_done`, `join` and the constructors keep returning [`Error`].
//!
//! # Threads
//!
//! | type | `Send` | `Sync` | `Clone` |
//! |---|:-:|:-:|:-:|
//! | [`Queue<T>`], [`ByteQueue`] | yes | no: one handle per thread ([`Queue::try_clone`]) | no |
//! | [`Sender<T>`], [`ByteSender`] | yes | yes | yes (shares the pool) |
//! | the error types | yes (if `T` is) | yes (if `T` is) | no |
//!
//! (checked at compile time below). A handle owns one participant entry, whose claim
//! announcements must not be shared by two threads; [`Sender`] keeps a small pool of
//! handles instead (see its docs). `&ByteQueue` and `&ByteSender` implement
//! [`std::io::Write`]; [`ByteQueue::reader`] is a [`std::io::Read`].
//!
//! # Algorithm
//!
//! Dmitry Vyukov's bounded MPMC queue: a sequence word inside each slot says whether the
//! slot is empty or full *for a given lap*, so producers and consumers touch the shared
//! `tail`/`head` words only to claim a position and otherwise meet on the slot's own cache
//! line. SPSC mode needs no claim at all: the producer and the consumer each keep their
//! position in the handle. See `ring.rs` and ARCHITECTURE.md, "Queue", for the slot state
//! machine, the crash-recovery protocol and the sleep/wake handshake.
//!
//! # Waiting
//!
//! A blocked call spins, then sleeps on a futex in the segment, per its
//! [`WaitStrategy`]; the default spins adaptively and, past its first [`YIELD_AFTER`],
//! yields the core between spins (with more processes than cores, the process it waits
//! for may need that core). A receiver asleep on an empty queue is woken by the next
//! message. A sender asleep on a full queue is woken once **half** the slots are free
//! (the low-water mark of a socket's send buffer), not at the first one: woken per slot,
//! it would fill it and sleep again, two context switches per message when processes
//! share cores. If consumers stop receiving with fewer slots free, a sleeping sender
//! finds them when its sleep slice ends (at most 20 ms later); the same holds when a
//! spinning sender takes every freed slot before half are free, so a parked sender
//! beside a spinning one gets a slot once per slice at best.
//!
//! # Crash consistency
//!
//! A message becomes visible only when its sequence word is published, after the data is
//! written: a producer killed mid-write leaves nothing torn behind. A position claimed by
//! a process that dies before finishing is recognised (every claim is announced in the
//! claimer's participant entry first, and liveness is checked by pid **and** start time)
//! and skipped (dead producer) or released (dead consumer: the message it was reading is
//! dropped). Survivors see [`Queue::peer_deaths`] go up. SPSC mode: the producer and
//! consumer roles are taken over from a dead holder; a consumer that dies while reading
//! leaves the message in place for its successor (delivered again).
//!
//! # Trust: what a peer with write access can do
//!
//! Every process that can open the segment can write all of it, and may be buggy or
//! hostile. The queue is built so that such a peer can at worst **deny or garble
//! service**:
//!
//! - messages may be wrong (torn, or bytes the peer wrote), lost, duplicated or
//!   reordered, and the counters ([`Queue::len`], [`Queue::peer_deaths`],
//!   [`Queue::unfinished`], [`stats`]) may be nonsense;
//! - operations may fail with [`Error::Corrupt`] (a sequence number, length or position
//!   that is not legal where it is read), with [`Error::Timeout`] / [`Error::WouldBlock`]
//!   (a peer that fakes a full or empty queue, or a claim that is never finished), or be
//!   refused a participant entry or an SPSC role; `join` may wait until its timeout;
//! - but never a panic, a crash, a wait past the timeout the caller gave, a read or write
//!   outside the segment, or a write through a pointer the peer chose.
//!
//! How: the ring's geometry comes from the checksummed header, validated once at open,
//! never from mutable shared words. Slot addresses are computed locally from a position
//! modulo the capacity; every sequence number and length read from the ring is checked
//! against the values legal at that point. The copying calls ([`Queue::send`],
//! [`Queue::recv`], [`ByteQueue::send`], [`ByteQueue::recv`] and their `try_` / `_timeout`
//! forms) move slot bytes with volatile loads and stores into and out of the caller's
//! value or buffer: they never form a `&T` or `&[u8]` over bytes a peer may be writing
//! at the same moment, so a peer that breaks the protocol changes only *which* bytes are
//! copied. (A byte queue's length word is read once and checked before it is used.)
//!
//! The zero-copy guards ([`SendSlot`], [`RecvSlot`], [`SendBytes`], [`RecvBytes`]) are
//! the exception: they hand out references into the slot, which is sound only if every
//! process with write access follows the protocol (nobody else writes a slot while a
//! claim on it is held). A peer that does not may change the bytes under the reference
//! while the caller reads them. They are memory-safe in practice only because the data
//! is `Pod` / bytes (any bit pattern is a valid value, and nothing the guard exposes is
//! used as an address or length), which is why the queues accept nothing else; but in
//! Rust's model a concurrent write is a data race. Use the copying calls when the peers
//! are not trusted.

mod bytes;
pub(crate) mod copy;
mod errors;
#[cfg(any(fuzzing, test))]
mod fuzz;
#[cfg(all(test, shmkit_loom))]
mod loom;
mod options;
mod ring;
mod sender;
mod stats;
pub(crate) mod wait;

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::segment::{ElemInfo, Kind, Segment};

pub use bytes::{ByteQueue, ByteQueueOptions, ByteReader, RecvBytes, SendBytes};
pub use copy::{cache_bypass, set_cache_bypass};
pub use errors::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
/// The queue ring's fuzz driver (`fuzz/fuzz_targets/queue.rs`); built only for cargo fuzz
/// (`--cfg fuzzing`) and this crate's tests: not part of the API.
#[cfg(any(fuzzing, test))]
pub use fuzz::fuzz_ring;
pub use options::QueueOptions;
use options::init_ring;
pub use ring::{MAX_CAPACITY, MAX_HANDLES, MAX_STASH};
pub use sender::{ByteSender, POOL, Sender};
pub use stats::{QueueStats, stats};
pub use wait::{MIN_ADAPTIVE_SPIN, WaitStrategy, YIELD_AFTER};

use errors::Fail;
use ring::{
    Blocked, Corrupt, Geometry, OWNER_DEAD, ROLE_CONSUMER, ROLE_PRODUCER, ROLE_RECEIVER,
    ROLE_SENDER, Ring, after,
};
use wait::{Next, PreSpin, WaitPoint, Waiter};

/// Version of the ring layout, stored in `params[3]` (2: peer counts and role bits for
/// disconnection; a version-1 process would not keep them. 3: batch receives announce
/// their claims in `intent_more`, which a version-2 process would not read when it
/// recovers claims, so it must not open the ring; and the stash of `requeue_lost`).
/// 4: each wait point has a fence `mode` word, and a parked sleeper that finds it
/// `SYMMETRIC` skips its `membarrier` (`wait`, "Symmetric mode"), which a version-3
/// process's wakers would not honour.
/// Version-3 rings are still opened, with asymmetric fences only; version-2 rings too,
/// also without batch claims (`recv_many` takes one message per claim) and without a
/// stash.
const RING_VERSION: u64 = 4;
const RING_VERSION_NO_FENCE_MODE: u64 = 3;
const RING_VERSION_NO_BATCH: u64 = 2;
/// Header flag bits.
const FLAG_MPMC: u32 = 1;
const FLAG_JOINABLE: u32 = 2;
/// Joinable with a stash (`QueueOptions::requeue_lost`); its depth in bits 8..15.
const FLAG_REQUEUE: u32 = 4;
const STASH_SHIFT: u32 = 8;
const STASH_BITS: u32 = 0x7f << STASH_SHIFT;
const KNOWN_FLAGS: u32 = FLAG_MPMC | FLAG_JOINABLE | FLAG_REQUEUE | STASH_BITS;

/// After how long a waiter blocked by another process's unfinished claim checks whether
/// that process is still alive (and again every `RECOVER_EVERY`).
const RECOVER_AFTER: Duration = Duration::from_millis(2);
const RECOVER_EVERY: Duration = Duration::from_millis(10);
/// How often an idle async waiter (`crate::aio`) looks for peers that died without
/// closing (the blocking forms do it every `PARK_SLICE`).
#[cfg(all(feature = "async", not(shmkit_loom)))]
const ASYNC_SWEEP: Duration = Duration::from_millis(100);

/// Who may send and receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One producer handle and one consumer handle at a time (each role is taken by the
    /// first handle that uses it and passes to another handle when the holder's handle is
    /// dropped or its process dies). No atomic read-modify-write on the fast path.
    Spsc,
    /// Any number of producers and consumers (Vyukov's bounded MPMC algorithm).
    Mpmc,
}

impl Mode {
    fn flags(self) -> u32 {
        match self {
            Mode::Spsc => 0,
            Mode::Mpmc => FLAG_MPMC,
        }
    }
}

/// Checks a segment's queue parameters and returns mode, joinable flag and geometry.
fn check_segment(
    seg: &Segment,
    data_len: Option<u64>,
    data_align: u64,
    expect_mode: Option<Mode>,
) -> Result<(Mode, bool, Geometry)> {
    let raw = &seg.header().raw;
    let bad = |d: String| Error::corrupt(seg.resource(), d);
    let flags = seg.header().kind_flags();
    if flags & !KNOWN_FLAGS != 0 {
        return Err(bad(format!("unknown queue flags {flags:#x}")));
    }
    let version = raw.params[3];
    if ![
        RING_VERSION,
        RING_VERSION_NO_FENCE_MODE,
        RING_VERSION_NO_BATCH,
    ]
    .contains(&version)
    {
        return Err(Error::Mismatch {
            resource: seg.resource(),
            what: "queue ring version",
            expected: format!(
                "{RING_VERSION} (or {RING_VERSION_NO_FENCE_MODE}, {RING_VERSION_NO_BATCH})"
            ),
            found: raw.params[3].to_string(),
        });
    }
    let mode = if flags & FLAG_MPMC != 0 {
        Mode::Mpmc
    } else {
        Mode::Spsc
    };
    if let Some(m) = expect_mode {
        if m != mode {
            return Err(Error::Mismatch {
                resource: seg.resource(),
                what: "queue mode",
                expected: format!("{m:?}"),
                found: format!("{mode:?}"),
            });
        }
    }
    if let Some(len) = data_len {
        if raw.params[2] != len {
            return Err(Error::Mismatch {
                resource: seg.resource(),
                what: "slot size",
                expected: len.to_string(),
                found: raw.params[2].to_string(),
            });
        }
    }
    let depth = u64::from((flags & STASH_BITS) >> STASH_SHIFT);
    if (flags & FLAG_REQUEUE != 0)
        != (depth > 0
            && flags & FLAG_JOINABLE != 0
            && mode == Mode::Mpmc
            && version >= RING_VERSION_NO_FENCE_MODE)
        || (flags & FLAG_REQUEUE == 0 && depth != 0)
    {
        return Err(bad(format!("inconsistent queue flags {flags:#x}")));
    }
    let geo = Geometry::new(raw.params[0], raw.params[2], data_align, raw.params[1])
        .and_then(|g| g.with_stash(depth))
        .map(|g| Geometry {
            batch: version >= RING_VERSION_NO_FENCE_MODE,
            fence_mode: version == RING_VERSION,
            ..g
        })
        .ok_or_else(|| {
            bad(format!(
                "queue parameters {:?} (stash depth {depth}) are out of range",
                raw.params
            ))
        })?;
    if geo.total as u64 != raw.payload_len || seg.payload_len() < geo.total {
        return Err(bad(format!(
            "ring needs {} bytes, payload has {}",
            geo.total, raw.payload_len
        )));
    }
    Ok((mode, flags & FLAG_JOINABLE != 0, geo))
}

/// The owner word of a participant: its pid in the high half (a diagnostic, reported as
/// `last_dead_peer`), its liveness token on this segment in the low half (what decides
/// whether it is alive: see [`crate::liveness`]).
pub(crate) fn owner_word(pid: u32, token: u32) -> u64 {
    u64::from(pid) << 32 | u64::from(token)
}

/// Whether the participant recorded in an owner word still holds its token on `seg`
/// (one `fcntl(F_OFD_GETLK)`, which neither pid reuse nor PID namespaces fool).
pub(crate) fn owner_alive(seg: &Segment, owner: u64) -> bool {
    owner & OWNER_DEAD == 0 && seg.liveness().token_alive(owner as u32)
}

/// The untyped part of a queue handle: the segment, the ring, this handle's participant
/// entry and (SPSC) its positions.
pub(crate) struct Core {
    seg: Arc<Segment>,
    ring: Ring,
    mode: Mode,
    joinable: bool,
    wait: WaitStrategy,
    /// This handle's adaptive spin budget, learned from its waits.
    spin: wait::SpinHint,
    me: usize,
    /// The owner word `me` was registered with (tags this handle's stashed tasks).
    owner: u64,
    /// The process that registered `me` (a forked child must not unregister it).
    pid: u32,
    /// SPSC positions, taken with the role on first use.
    send_pos: Cell<Option<u64>>,
    recv_pos: Cell<Option<u64>>,
    /// SPSC producer: positions below this are known free (a cached `head + capacity`),
    /// so the fast path writes without first reading the slot's line.
    send_limit: Cell<u64>,
    /// The in-flight claim this handle is blocked by, when it was first seen, and when to
    /// check its owner next (kept across calls, so `try_` loops recover dead claims too).
    stuck: Cell<Option<(Blocked, Instant)>>,
    /// When this handle may next sweep the participant table for dead peers (a blocked
    /// call whose peers' count says "connected"), and a counter that spaces out the clock
    /// reads of `try_` calls.
    next_sweep: Cell<Option<Instant>>,
    polls: Cell<u32>,
    /// Roles ([`ROLE_SENDER`], [`ROLE_RECEIVER`]) this handle has attached.
    attached: Cell<u64>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("resource", &self.seg.resource())
            .field("mode", &self.mode)
            .field("capacity", &self.ring.geo.cap)
            .field("joinable", &self.joinable)
            .field("entry", &self.me)
            .finish()
    }
}

/// A position claimed for sending or receiving.
#[derive(Clone, Copy)]
pub(crate) struct Claim(u64);

impl Core {
    fn new(
        seg: Arc<Segment>,
        mode: Mode,
        joinable: bool,
        geo: Geometry,
        wait: WaitStrategy,
    ) -> Result<Core> {
        if seg.payload_len() < geo.total {
            return Err(Error::corrupt(
                seg.resource(),
                "payload shorter than the ring",
            ));
        }
        // SAFETY: the payload is valid for `payload_len >= geo.total` bytes while `seg`
        // lives (we keep an Arc), 64-byte aligned, and every process accesses it through
        // the ring protocol.
        let ring = unsafe { Ring::new(seg.payload_ptr(), geo) };
        wait::init_fences();
        let pid = std::process::id();
        let token = seg.liveness().token()?;
        let owner = owner_word(pid, token);
        let me = ring
            .register(owner, &|o| owner_alive(&seg, o))
            .ok_or_else(|| {
                Error::invalid(
                    seg.resource(),
                    "open queue",
                    format!(
                        "all {} participant entries are taken by live handles; create the queue with a larger max_handles",
                        geo.max_handles
                    ),
                )
            })?;
        let core = Core {
            seg,
            ring,
            mode,
            joinable,
            wait,
            spin: wait::SpinHint::default(),
            me,
            owner,
            pid,
            send_pos: Cell::new(None),
            recv_pos: Cell::new(None),
            send_limit: Cell::new(0),
            stuck: Cell::new(None),
            next_sweep: Cell::new(None),
            polls: Cell::new(0),
            attached: Cell::new(0),
        };
        // Tasks left in this entry's stash (by a dead previous owner, or by an earlier
        // handle of this process that could not re-queue them) go back to the queue.
        core.requeue_own();
        Ok(core)
    }

    /// What a new handle on the same queue needs.
    fn params(&self) -> (Arc<Segment>, Mode, bool, Geometry, WaitStrategy) {
        (
            self.seg.clone(),
            self.mode,
            self.joinable,
            self.ring.geo,
            self.wait,
        )
    }

    fn try_clone(&self) -> Result<Core> {
        Core::new(
            self.seg.clone(),
            self.mode,
            self.joinable,
            self.ring.geo,
            self.wait,
        )
    }

    fn resource(&self) -> String {
        self.seg.resource()
    }

    #[cold]
    fn corrupt(&self, c: Corrupt) -> Error {
        Error::corrupt(self.resource(), c.0)
    }

    fn role(&self, role: u64, what: &'static str) -> Result<()> {
        self.ring
            .take_role(self.me, role, &|o| owner_alive(&self.seg, o))
            .map_err(|holder| {
                Error::invalid(
                    self.resource(),
                    what,
                    format!(
                        "this SPSC queue's {} role is held by another live handle (pid {}); \
                         use an MPMC queue for several {}s",
                        if role == ROLE_PRODUCER {
                            "producer"
                        } else {
                            "consumer"
                        },
                        holder >> 32,
                        if role == ROLE_PRODUCER {
                            "producer"
                        } else {
                            "consumer"
                        },
                    ),
                )
            })
    }

    /// One attempt to claim a position for sending.
    #[inline]
    fn try_claim_send(&self) -> Result<std::result::Result<Claim, Blocked>, Fail> {
        match self.mode {
            Mode::Mpmc => match self.ring.mpmc_claim_send(self.me) {
                Ok(r) => Ok(r.map(Claim)),
                Err(c) => Err(self.corrupt(c).into()),
            },
            Mode::Spsc => {
                let p = match self.send_pos.get() {
                    Some(p) => match self.spsc_claim_free(p) {
                        Some(c) => return Ok(Ok(c)),
                        None => p,
                    },
                    None => {
                        self.role(ROLE_PRODUCER, "send")?;
                        let p = self
                            .ring
                            .spsc_producer_start()
                            .map_err(|c| self.corrupt(c))?;
                        self.send_pos.set(Some(p));
                        // Nothing cached: until a send succeeds, `head` is read again.
                        self.send_limit.set(p);
                        p
                    }
                };
                // The first send, a queue full by `head`, or a `head` past us: the slot's
                // state and `head` are validated.
                let h = self.ring.head().load(Ordering::Acquire);
                match self.ring.spsc_can_send(p, h) {
                    Ok(true) => {
                        self.send_limit.set(h.wrapping_add(self.ring.geo.cap));
                        Ok(Ok(Claim(p)))
                    }
                    Ok(false) => Ok(Err(Blocked::Idle)),
                    Err(c) => Err(self.corrupt(c).into()),
                }
            }
        }
    }

    #[inline]
    fn publish(&self, c: Claim) {
        match self.mode {
            Mode::Mpmc => self.ring.mpmc_publish(self.me, c.0),
            Mode::Spsc => self.spsc_publish(c),
        }
    }

    /// SPSC: publishes `c` and moves the producer on.
    #[inline(always)]
    fn spsc_publish(&self, c: Claim) {
        self.ring.spsc_publish(c.0);
        self.send_pos.set(Some(c.0.wrapping_add(1)));
    }

    fn cancel(&self, c: Claim) {
        match self.mode {
            Mode::Mpmc => self.ring.mpmc_cancel(self.me, c.0),
            Mode::Spsc => {
                self.ring.spsc_cancel(c.0);
                self.send_pos.set(Some(c.0.wrapping_add(1)));
            }
        }
    }

    #[inline]
    fn try_claim_recv(&self) -> Result<std::result::Result<Claim, Blocked>, Fail> {
        match self.mode {
            Mode::Mpmc => match self.ring.mpmc_claim_recv(self.me, self.joinable) {
                Ok(r) => Ok(r.map(Claim)),
                Err(c) => Err(self.corrupt(c).into()),
            },
            Mode::Spsc => {
                let mut p = match self.recv_pos.get() {
                    Some(p) => p,
                    None => {
                        self.role(ROLE_CONSUMER, "recv")?;
                        self.ring.spsc_consumer_start()
                    }
                };
                let r = self.ring.spsc_can_recv(&mut p);
                self.recv_pos.set(Some(p));
                match r {
                    Ok(true) => {
                        if self.joinable {
                            self.ring
                                .outstanding(self.me)
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Ok(Claim(p)))
                    }
                    Ok(false) => Ok(Err(Blocked::Idle)),
                    Err(c) => Err(self.corrupt(c).into()),
                }
            }
        }
    }

    /// One attempt to claim up to `max` (≥ 1) consecutive messages: `(first, count)`.
    #[inline]
    fn try_claim_recv_many(
        &self,
        max: u64,
    ) -> Result<std::result::Result<(Claim, u64), Blocked>, Fail> {
        match self.mode {
            Mode::Mpmc if !self.ring.geo.batch => Ok(self.try_claim_recv()?.map(|c| (c, 1))),
            Mode::Mpmc => match self.ring.mpmc_claim_recv_many(self.me, max, self.joinable) {
                Ok(r) => Ok(r.map(|(p, k)| (Claim(p), k))),
                Err(c) => Err(self.corrupt(c).into()),
            },
            Mode::Spsc => Ok(self.try_claim_recv()?.map(|c| {
                // The consumer owns `head`: the messages after the first are ours to take.
                let k = 1 + self.ring.spsc_run(c.0.wrapping_add(1), max - 1);
                if self.joinable && k > 1 {
                    self.ring
                        .outstanding(self.me)
                        .fetch_add(k - 1, Ordering::Relaxed);
                }
                (c, k)
            })),
        }
    }

    /// Releases `k` positions claimed by [`Self::try_claim_recv_many`].
    #[inline]
    fn release_many(&self, c: Claim, k: u64) {
        match self.mode {
            Mode::Mpmc if k > 1 => self.ring.mpmc_release_many(self.me, c.0, k),
            Mode::Mpmc => self.ring.mpmc_release(self.me, c.0),
            Mode::Spsc => self.release(Claim(c.0.wrapping_add(k - 1))),
        }
    }

    #[inline]
    fn release(&self, c: Claim) {
        match self.mode {
            Mode::Mpmc => self.ring.mpmc_release(self.me, c.0),
            Mode::Spsc => self.spsc_release(c),
        }
    }

    /// SPSC: releases `c` and moves the consumer on.
    #[inline(always)]
    fn spsc_release(&self, c: Claim) {
        self.ring.spsc_release(c.0);
        self.recv_pos.set(Some(c.0.wrapping_add(1)));
    }

    /// Runs `attempt` until it succeeds, waiting on `wp` between attempts, recovering
    /// claims of dead peers, up to `timeout` (`Some(ZERO)`: one attempt). `peer` is the
    /// role whose absence ends the wait with [`Fail::Disconnected`] ([`ROLE_SENDER`] for
    /// a receive, [`ROLE_RECEIVER`] for a send). `polled`: the fast path was polled first
    /// ([`wait::pre_spin`]), so the wait reads the clock at its first step.
    #[inline]
    fn wait_for<R>(
        &self,
        timeout: Option<Duration>,
        polled: bool,
        wp: fn(&Ring) -> WaitPoint<'_>,
        peer: u64,
        mut attempt: impl FnMut() -> Result<std::result::Result<R, Blocked>, Fail>,
    ) -> Result<R, Fail> {
        let mut blocked = match attempt()? {
            Ok(r) => return Ok(r),
            Err(b) => b,
        };
        if timeout == Some(Duration::ZERO) {
            return self.try_failed(blocked, peer, &mut attempt);
        }
        self.wait_slow(timeout, polled, wp, peer, &mut attempt, &mut blocked)
    }

    /// A `try_` call found the queue empty or full: recover a dead claim, check for a
    /// disconnection (a sweep for dead peers on the first and every 64th such call, at
    /// most every [`RECOVER_EVERY`]); no allocation, no system call otherwise.
    #[inline]
    fn try_failed<R>(
        &self,
        blocked: Blocked,
        peer: u64,
        attempt: &mut impl FnMut() -> Result<std::result::Result<R, Blocked>, Fail>,
    ) -> Result<R, Fail> {
        self.maybe_recover(blocked)?;
        let n = self.polls.get();
        self.polls.set(n.wrapping_add(1));
        match self.check_gone(peer, n % 64 == 0, attempt)? {
            Some(r) => Ok(r),
            None => Err(Fail::Blocked),
        }
    }

    /// Whether every participant of `peer` that ever attached is gone: by the count, or,
    /// when `sweep` and the count says otherwise, by a liveness sweep of the participant
    /// table (at most every [`RECOVER_EVERY`] per handle), which discounts the dead.
    #[inline]
    fn peer_gone(&self, peer: u64, sweep: bool) -> bool {
        let w = self.ring.peers(peer).load(Ordering::Acquire);
        if w & ring::EVER == 0 {
            return false;
        }
        if w == ring::EVER {
            return true;
        }
        sweep && self.sweep(peer)
    }

    #[inline(never)]
    fn sweep(&self, peer: u64) -> bool {
        let now = Instant::now();
        if self.next_sweep.get().is_some_and(|t| now < t) {
            return false;
        }
        self.next_sweep.set(Some(now + RECOVER_EVERY));
        self.ring.sweep(peer, &|o| owner_alive(&self.seg, o)) == 0
    }

    /// `Err(Disconnected)` if the peers are gone. A receive first tries once more (a
    /// message published before the last producer left is delivered: its publication
    /// happened before the count we read dropped) and reports a disconnection only when
    /// no claim is pending either (`tail == head`; a dead producer's claim is skipped by
    /// the recovery, and then the check passes).
    #[inline]
    fn check_gone<R>(
        &self,
        peer: u64,
        sweep: bool,
        attempt: &mut impl FnMut() -> Result<std::result::Result<R, Blocked>, Fail>,
    ) -> Result<Option<R>, Fail> {
        if !self.peer_gone(peer, sweep) {
            return Ok(None);
        }
        if peer == ROLE_SENDER {
            if let Ok(r) = attempt()? {
                return Ok(Some(r));
            }
            let t = self.ring.tail().load(Ordering::Acquire);
            if t != self.ring.head().load(Ordering::Acquire) {
                return Ok(None);
            }
        }
        Err(Fail::Disconnected)
    }

    #[inline(never)]
    fn wait_slow<R>(
        &self,
        timeout: Option<Duration>,
        polled: bool,
        wp: fn(&Ring) -> WaitPoint<'_>,
        peer: u64,
        attempt: &mut impl FnMut() -> Result<std::result::Result<R, Blocked>, Fail>,
        blocked: &mut Blocked,
    ) -> Result<R, Fail> {
        let mut w = Waiter::learning(self.wait, timeout, &self.spin);
        if polled {
            w = w.after_pre_spin();
        }
        let mut spins = 0u32;
        loop {
            let next = w.next();
            spins = spins.wrapping_add(1);
            if matches!(next, Next::Park(_)) || spins % 4096 == 0 {
                self.maybe_recover(*blocked)?;
                if let Some(r) = self.check_gone(peer, true, attempt)? {
                    return Ok(r);
                }
            }
            match next {
                Next::Spin => {}
                Next::Park(d) => {
                    // The re-check includes the peer count: the last peer to leave wakes
                    // this wait point after its decrement (same handshake as a publish).
                    let parked = self.wait == WaitStrategy::Park;
                    let got = wp(&self.ring).park_as(parked, d, || match attempt() {
                        Ok(Ok(r)) => Some(Ok(r)),
                        Ok(Err(b)) => {
                            *blocked = b;
                            match self.check_gone(peer, false, attempt) {
                                Ok(None) => None,
                                Ok(Some(r)) => Some(Ok(r)),
                                Err(e) => Some(Err(e)),
                            }
                        }
                        Err(e) => Some(Err(e)),
                    });
                    if let Some(r) = got {
                        return r;
                    }
                    continue;
                }
                Next::TimedOut => return Err(Fail::Timeout),
            }
            match attempt()? {
                Ok(r) => return Ok(r),
                Err(b) => *blocked = b,
            }
        }
    }

    /// Recovers the claim that blocks us if it has done so for [`RECOVER_AFTER`] and its
    /// owner is dead (checked at most every [`RECOVER_EVERY`]).
    fn maybe_recover(&self, b: Blocked) -> Result<(), Fail> {
        let idle = match b {
            Blocked::Idle => true,
            // Empty, or a producer's claim not yet published? `tail` tells.
            Blocked::InFlight { pos, reader: false } => {
                self.ring.tail().load(Ordering::Acquire) == pos
            }
            Blocked::InFlight { reader: true, .. } => false,
        };
        if idle {
            self.stuck.set(None);
            return Ok(());
        }
        let now = Instant::now();
        match self.stuck.get() {
            Some((prev, at)) if prev == b => {
                if now >= at {
                    self.stuck.set(Some((b, now + RECOVER_EVERY)));
                    self.ring
                        .recover(b, &|o| owner_alive(&self.seg, o))
                        .map_err(|c| self.corrupt(c))?;
                }
            }
            _ => self.stuck.set(Some((b, now + RECOVER_AFTER))),
        }
        Ok(())
    }

    /// Hook for `crate::aio`: the wait point a blocked send (`send`) or receive of this
    /// handle sleeps on, and how soon to look again without a wake-up: soon while it is
    /// blocked by another process's unfinished claim; a send every
    /// [`wait::PARK_SLICE`] (free slots below the low-water mark wake nobody; a pending
    /// send on a full queue costs a look 50 times a second, consumer or not); a
    /// receive every [`ASYNC_SWEEP`] while peers are attached (a peer that dies without
    /// closing wakes nobody), never otherwise.
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    pub(crate) fn wait_hook(&self, send: bool) -> (WaitPoint<'_>, Option<Duration>) {
        let (wp, peer) = if send {
            (self.ring.space_wait(), ROLE_RECEIVER)
        } else {
            (self.ring.data_wait(), ROLE_SENDER)
        };
        let w = self.ring.peers(peer).load(Ordering::Relaxed);
        let again = if self.stuck.get().is_some() {
            Some(RECOVER_EVERY)
        } else if send {
            // Consumers wake space sleepers only at the low-water mark
            // (`Ring::wake_space`): like a blocking send, look again every slice.
            Some(wait::PARK_SLICE)
        } else if w & ring::EVER != 0 && w != ring::EVER {
            Some(ASYNC_SWEEP)
        } else {
            None
        };
        (wp, again)
    }

    /// Hook for `crate::aio`: whether the peers a blocked send (`send`) or receive waits
    /// for are all gone, sweeping for dead ones (at most every [`RECOVER_EVERY`]).
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    pub(crate) fn gone_hook(&self, send: bool) -> bool {
        self.peer_gone(if send { ROLE_RECEIVER } else { ROLE_SENDER }, true)
    }

    /// Attaches this handle as a sender or receiver if it is not one yet (one local
    /// check on the fast path).
    #[inline]
    fn ensure_attached(&self, role: u64) {
        if self.attached.get() & role == 0 {
            self.attach(role);
        }
    }

    #[cold]
    fn attach(&self, role: u64) {
        self.ring.attach(self.me, role);
        self.attached.set(self.attached.get() | role);
    }

    /// Detaches this handle from `role` (see [`Queue::close`]).
    fn detach(&self, role: u64) {
        self.ring.detach(self.me, role);
        self.attached.set(self.attached.get() & !role);
    }

    #[inline]
    fn claim_send(&self, timeout: Option<Duration>) -> Result<Claim, Fail> {
        let polled = match self.spsc_send_pos() {
            Some(p) => match self.poll_fast(timeout, || self.spsc_claim_free(p)) {
                Ok(c) => return Ok(c),
                Err(polled) => polled,
            },
            None => false,
        };
        self.ensure_attached(ROLE_SENDER);
        // No consumer left is checked only when the queue is full (in `wait_for`): a named
        // queue outlives its handles, and what fits waits for the next consumer.
        self.wait_for(timeout, polled, Ring::space_wait, ROLE_RECEIVER, || {
            self.try_claim_send()
        })
    }

    #[inline]
    fn claim_recv_many(&self, timeout: Option<Duration>, max: u64) -> Result<(Claim, u64), Fail> {
        self.ensure_attached(ROLE_RECEIVER);
        self.wait_for(timeout, false, Ring::data_wait, ROLE_SENDER, || {
            self.try_claim_recv_many(max)
        })
    }

    /// Where the SPSC fast path of a send applies: the role taken and the position known
    /// (then a claim if `head` frees the position, [`Self::spsc_claim_free`]). The first
    /// send, a full queue and a `head` past our position (corruption) take the general
    /// path, which starts, waits and validates.
    #[inline(always)]
    fn spsc_send_pos(&self) -> Option<u64> {
        if self.mode != Mode::Spsc || self.attached.get() & ROLE_SENDER == 0 {
            return None;
        }
        self.send_pos.get()
    }

    /// SPSC producer at position `p` (after its first send): a claim if `head`, cached or
    /// read again when the cache says full, frees `p`. The slot is not read: reading it
    /// would cost a cache-line transfer per message (the consumer has just read the line,
    /// and a load before our stores makes two coherence transactions of one; see
    /// ARCHITECTURE.md, "Queue"). `None` when `head` says full or is past `p` (nothing is
    /// cached from such a `head`): [`Self::try_claim_send`] then validates.
    #[inline(always)]
    fn spsc_claim_free(&self, p: u64) -> Option<Claim> {
        if after(self.send_limit.get(), p) {
            return Some(Claim(p));
        }
        let h = self.ring.head().load(Ordering::Acquire);
        let free = self.ring.spsc_free(p, h)?;
        self.send_limit.set(h.wrapping_add(self.ring.geo.cap));
        free.then_some(Claim(p))
    }

    /// Where the SPSC fast path of a receive applies: the role taken, the position known,
    /// a queue that is not joinable (whose receives also count tasks). The path takes a
    /// message published at that position ([`Ring::spsc_ready`]); anything else is left
    /// to the general path.
    #[inline(always)]
    fn spsc_recv_pos(&self) -> Option<u64> {
        if self.mode != Mode::Spsc || self.joinable || self.attached.get() & ROLE_RECEIVER == 0 {
            return None;
        }
        self.recv_pos.get()
    }

    /// The SPSC fast path of a blocking call: `poll` once, then, if the call may wait,
    /// again for a while ([`wait::pre_spin`]) before the general wait, whose set-up costs
    /// about what a spinning round trip leaves to wait. `Err(polled)` when the general
    /// wait must follow; `polled`: it polled for a while, so the wait reads the clock at
    /// once.
    #[inline(always)]
    fn poll_fast(
        &self,
        timeout: Option<Duration>,
        mut poll: impl FnMut() -> Option<Claim>,
    ) -> std::result::Result<Claim, bool> {
        if let Some(c) = poll() {
            return Ok(c);
        }
        match wait::pre_spin(self.wait, timeout, &self.spin, poll) {
            PreSpin::Ready(c) => Ok(c),
            PreSpin::Polled => Err(true),
            PreSpin::Skipped => Err(false),
        }
    }

    #[inline]
    fn claim_recv(&self, timeout: Option<Duration>) -> Result<Claim, Fail> {
        let polled = match self.spsc_recv_pos() {
            Some(p) => {
                // The slot's `seq` word is located once: a poll is then one load.
                let seq = self.ring.seq(p);
                match self.poll_fast(timeout, || Ring::spsc_ready(seq, p).then_some(Claim(p))) {
                    Ok(c) => return Ok(c),
                    Err(polled) => polled,
                }
            }
            None => false,
        };
        self.ensure_attached(ROLE_RECEIVER);
        self.wait_for(timeout, polled, Ring::data_wait, ROLE_SENDER, || {
            self.try_claim_recv()
        })
    }

    /// [`Self::claim_send`] behind an SPSC fast path inlined into the caller: one poll
    /// (the cached `head`, or one load of it). A miss, MPMC and the first send go to
    /// [`Self::claim_send`], which polls again, pre-spins and waits. Used by the
    /// zero-copy calls (`reserve`, `recv_ref` and their guards), where what runs between
    /// a message's arrival and the next publication is then inline code, not calls that
    /// return their result through memory; the copying calls keep the plain entries
    /// (measured both ways: ARCHITECTURE.md, "Queue").
    #[inline(always)]
    fn claim_send_fast(&self, timeout: Option<Duration>) -> Result<Claim, Fail> {
        if let Some(p) = self.spsc_send_pos() {
            if let Some(c) = self.spsc_claim_free(p) {
                return Ok(c);
            }
        }
        self.claim_send(timeout)
    }

    /// [`Self::claim_recv`] behind an SPSC fast path inlined into the caller: one load
    /// of the slot's `seq`; anything else goes to [`Self::claim_recv`].
    #[inline(always)]
    fn claim_recv_fast(&self, timeout: Option<Duration>) -> Result<Claim, Fail> {
        if let Some(p) = self.spsc_recv_pos() {
            if Ring::spsc_ready(self.ring.seq(p), p) {
                return Ok(Claim(p));
            }
        }
        self.claim_recv(timeout)
    }

    /// [`Self::publish`] with the SPSC case inlined into the caller (MPMC calls it).
    #[inline(always)]
    fn publish_fast(&self, c: Claim) {
        if self.mode == Mode::Spsc {
            self.spsc_publish(c);
        } else {
            self.publish(c);
        }
    }

    /// [`Self::release`] with the SPSC case inlined into the caller (MPMC calls it).
    #[inline(always)]
    fn release_fast(&self, c: Claim) {
        if self.mode == Mode::Spsc {
            self.spsc_release(c);
        } else {
            self.release(c);
        }
    }

    fn require_joinable(&self, op: &'static str) -> Result<()> {
        if self.joinable {
            Ok(())
        } else {
            Err(Error::invalid(
                self.resource(),
                op,
                "the queue was created without joinable(true)",
            ))
        }
    }

    fn task_done(&self) -> Result<()> {
        self.require_joinable("task_done")?;
        if self.ring.tasks(self.me) == 0 {
            return Err(Error::invalid(
                self.resource(),
                "task_done",
                "called more times than this handle received messages",
            ));
        }
        self.ring
            .outstanding(self.me)
            .fetch_sub(1, Ordering::Release);
        self.ring.join_wait().wake();
        Ok(())
    }

    fn unfinished(&self) -> u64 {
        self.ring.unfinished(&|o| owner_alive(&self.seg, o))
    }

    fn join(&self, timeout: Option<Duration>) -> Result<JoinOutcome> {
        self.require_joinable("join")?;
        let alive = |o| owner_alive(&self.seg, o);
        let mut w = Waiter::new(WaitStrategy::Park, timeout);
        let mut out = JoinOutcome::default();
        loop {
            // Dead consumers' stashed tasks go back into the queue first (they are not
            // counted in `unfinished`); a full ring leaves some for the next round.
            let full = self.ring.geo.stash > 0
                && self
                    .ring
                    .requeue_stashed(
                        self.me,
                        self.owner,
                        false,
                        0..self.ring.geo.max_handles,
                        &alive,
                        &mut out.requeued,
                    )
                    .map_err(|c| self.corrupt(c))?;
            let mut pending = 0;
            if !full && self.unfinished() == 0 {
                pending = self.ring.take_lost(&alive, &mut out.lost);
                if pending == 0 {
                    out.lost.sort_unstable();
                    out.requeued.sort_unstable();
                    return Ok(out);
                }
            }
            match w.next() {
                // A consumer died between the re-queuing pass and `take_lost`: go round.
                Next::Park(_) if pending > 0 => std::thread::yield_now(),
                Next::Park(d) => {
                    let stash = self.ring.geo.stash > 0;
                    // (With a stash, wake up now and then to re-queue what a full ring
                    // refused or a consumer that died meanwhile left.)
                    let d = if stash { d.min(RECOVER_EVERY) } else { d };
                    let _ = self
                        .ring
                        .join_wait()
                        .park(d, || (self.unfinished() == 0).then_some(()));
                }
                Next::Spin => {}
                Next::TimedOut => {
                    return Err(Error::Timeout {
                        resource: self.resource(),
                        op: "join",
                        timeout: timeout.unwrap_or_default(),
                    });
                }
            }
        }
    }

    /// Re-queues the tasks stashed in this handle's own entry (on open and on drop: left
    /// by a dead previous owner, or by this handle's tasks dropped without `done`). Best
    /// effort: what a full ring refuses stays for the next `join`.
    fn requeue_own(&self) {
        if self.ring.geo.stash == 0 || self.mode != Mode::Mpmc {
            return;
        }
        let mut moved = Vec::new();
        let _ = self.ring.requeue_stashed(
            self.me,
            self.owner,
            true,
            self.me..self.me + 1,
            &|o| owner_alive(&self.seg, o),
            &mut moved,
        );
    }

    /// A free stash slot for the next task of this handle (`None`: no stash).
    fn stash_slot(&self) -> Result<Option<usize>, Fail> {
        self.require_joinable("recv_task")?;
        if self.ring.geo.stash == 0 {
            return Ok(None);
        }
        if let Some(j) = self.ring.stash_free(self.me) {
            return Ok(Some(j));
        }
        Err(Error::invalid(
            self.resource(),
            "recv_task",
            format!(
                "this handle holds {} tasks not marked done (the queue's requeue_lost depth): \
                 call Task::done on one first",
                self.ring.geo.stash
            ),
        )
        .into())
    }

    /// Marks the task held in stash slot `slot` (if any) done.
    fn task_done_stashed(&self, slot: Option<usize>) -> Result<()> {
        match slot {
            // A stashed task is counted by its stash slot alone (see `Ring::stash_fill`).
            // If a re-queuer took it meanwhile (it judged this handle gone), it is
            // delivered again: at-least-once.
            Some(j) => {
                self.ring.stash_clear(self.me, j, self.owner);
                Ok(())
            }
            None => self.task_done(),
        }
    }
}

/// What [`Queue::join`] found once nothing was left unfinished.
///
/// Python's `JoinableQueue.join` waits for every task; a consumer that dies holding tasks
/// would make that wait forever, so shmkit does not wait for them and says so here. A
/// task received with [`Queue::recv_task`] from a queue created with
/// [`QueueOptions::requeue_lost`] is kept in the consumer's stash until done, and `join`
/// sends it back into the queue (`requeued`) and waits for another consumer to do it.
/// Otherwise its contents are gone (a received message is released from the ring before
/// it is processed) and it is `lost`: the producer must send it again if it matters.
/// Each lost or re-queued task is reported by one `join` (the one that took it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "a join may have lost tasks to dead consumers"]
pub struct JoinOutcome {
    /// Tasks received but never marked done by consumers that died, as `(pid, tasks)`;
    /// pid 0 for tasks whose dead holder's entry was taken over before a join saw it.
    pub lost: Vec<(u32, u64)>,
    /// Tasks of consumers that died before marking them done, sent back into the queue
    /// by this join and since done by others, as `(pid, tasks)`; pid 0 for tasks whose
    /// re-queuer died moving them. (Tasks a live handle gives back when it is dropped
    /// are not reported: nothing was lost.)
    pub requeued: Vec<(u32, u64)>,
}

impl JoinOutcome {
    /// True if every task was marked done (none lost to a dead consumer).
    pub fn is_complete(&self) -> bool {
        self.lost.is_empty()
    }

    /// How many tasks were lost.
    pub fn lost_tasks(&self) -> u64 {
        self.lost.iter().map(|&(_, n)| n).sum()
    }

    /// How many tasks this join re-queued.
    pub fn requeued_tasks(&self) -> u64 {
        self.requeued.iter().map(|&(_, n)| n).sum()
    }

    /// The pids of the dead consumers (known ones).
    pub fn dead_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.lost.iter().map(|&(p, _)| p).filter(|&p| p != 0)
    }

    /// `Ok(())` if complete, else an error naming the lost tasks and pids (for `?`).
    pub fn complete(self) -> Result<()> {
        if self.is_complete() {
            return Ok(());
        }
        Err(Error::Disconnected {
            resource: "joinable queue".into(),
            op: "join",
            detail: Some(format!(
                "{} task(s) lost with consumers that died (pids {:?})",
                self.lost_tasks(),
                self.dead_pids().collect::<Vec<_>>()
            )),
        })
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // A handle inherited through fork() belongs to the parent's entry.
        if std::process::id() == self.pid {
            self.requeue_own();
            self.ring.unregister(self.me);
        }
    }
}

/// A bounded queue of `T: Pod` values in shared memory, between processes.
///
/// A handle is `Send` but not `Sync`: each thread or process that uses the queue opens
/// (or [`try_clone`](Self::try_clone)s) its own handle, because a handle owns one
/// participant entry in the segment, which is how a claim by a dead process is recognised.
/// For a producer that threads share, use [`sender`](Self::sender). Do not use a handle
/// inherited through `fork` in the child: open or clone a new one.
///
/// ```compile_fail
/// fn sync<T: Sync>() {}
/// sync::<shmkit::queue::Queue<u64>>(); // not Sync: use Queue::sender()
/// ```
///
/// ```
/// use shmkit::queue::Queue;
/// let name = format!("doc-queue-{}", std::process::id());
/// let tx = Queue::<[u32; 4]>::create(&name, 8)?;
/// let rx = Queue::<[u32; 4]>::open(&name)?;
/// tx.send([1, 2, 3, 4])?;
/// assert_eq!(rx.recv()?, [1, 2, 3, 4]);
/// assert!(rx.try_recv().unwrap_err().is_empty());
/// shmkit::Segment::unlink(&name)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Queue<T> {
    core: Core,
    _t: PhantomData<T>,
}

impl<T> Queue<T> {
    /// Hook for `crate::aio`.
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    pub(crate) fn core(&self) -> &Core {
        &self.core
    }
}

impl<T: Pod> Queue<T> {
    /// Options for creating or opening a queue.
    pub fn options() -> QueueOptions<T> {
        QueueOptions::default()
    }

    /// Creates a named MPMC queue of `capacity` slots (rounded up to a power of two).
    pub fn create(name: &str, capacity: u64) -> Result<Self> {
        Self::options().capacity(capacity).create(name)
    }

    /// Opens a named queue (any mode), checking kind and element type.
    pub fn open(name: &str) -> Result<Self> {
        Self::options().open(name)
    }

    /// A second handle on the same queue (its own participant entry), e.g. for another
    /// thread, or for a child after `fork`.
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Queue {
            core: self.core.try_clone()?,
            _t: PhantomData,
        })
    }

    fn from_core(core: Core) -> Self {
        Queue {
            core,
            _t: PhantomData,
        }
    }

    /// A new producer handle on this queue that threads can share (`Send + Sync +
    /// Clone`), attached as a producer now.
    pub fn sender(&self) -> Result<Sender<T>>
    where
        T: Send,
    {
        Ok(Sender::new(self.try_clone()?))
    }

    /// Turns this handle into a shareable producer handle (attached as a producer now).
    pub fn into_sender(self) -> Sender<T>
    where
        T: Send,
    {
        Sender::new(self)
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.core.seg
    }

    /// The mode recorded in the segment.
    pub fn mode(&self) -> Mode {
        self.core.mode
    }

    /// Number of slots.
    pub fn capacity(&self) -> u64 {
        self.core.ring.geo.cap
    }

    /// Whether the queue was created joinable.
    pub fn is_joinable(&self) -> bool {
        self.core.joinable
    }

    /// Number of messages in the queue, approximately: claimed positions not yet taken by
    /// a consumer, read without synchronisation; it may be stale as soon as it is returned.
    pub fn len(&self) -> usize {
        self.core.ring.len() as usize
    }

    /// `len() == 0`, as approximate as [`len`](Self::len).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many claims of dead processes survivors have recovered (slots skipped or
    /// released), over the queue's life, counted by every process.
    pub fn peer_deaths(&self) -> u64 {
        self.core.ring.peer_deaths().load(Ordering::Acquire)
    }

    /// The pid of the last dead peer whose claim was recovered, if any.
    pub fn last_dead_peer(&self) -> Option<u32> {
        match self.core.ring.last_dead_pid().load(Ordering::Acquire) {
            0 => None,
            p => Some(p as u32),
        }
    }

    /// Copies `v` into the claimed slot with volatile stores (no `&mut T` over bytes a
    /// peer that breaks the protocol might be writing).
    #[inline]
    fn write(&self, c: Claim, v: T) {
        self.write_ref(c, &v);
    }

    /// [`Self::write`] from a reference (no `T` on the stack).
    #[inline]
    fn write_ref(&self, c: Claim, v: &T) {
        // SAFETY: the slot's data is `size_of::<T>()` bytes, 8-aligned (`Geometry::new`);
        // `v` is readable for as many bytes and is not slot `c`: callers pass a local or
        // a reference that cannot borrow `c`'s guard (fresh claim, or guard consumed).
        unsafe {
            copy::store(
                (v as *const T).cast(),
                self.core.ring.data(c.0),
                size_of::<T>(),
            )
        };
    }

    /// Copies the claimed slot's `T` out with volatile loads (no `&T` into the slot: a
    /// peer that breaks the protocol may be writing it, and then we get some other `T`).
    #[inline]
    fn read(&self, c: Claim) -> T {
        let mut v = std::mem::MaybeUninit::<T>::uninit();
        // SAFETY: as for `write`, the other way round; every byte of `v` is written, and
        // any bytes are a valid `T` (Pod).
        unsafe {
            copy::load(
                self.core.ring.data(c.0),
                v.as_mut_ptr().cast(),
                size_of::<T>(),
            );
            v.assume_init()
        }
    }

    /// The copying send. It calls [`Core::claim_send`] and [`Core::publish`], not the
    /// inlined entries the zero-copy calls use ([`Core::claim_send_fast`]), which
    /// measured slower in the 1-slot `send`/`recv` ping-pong of `examples/queue_pingpong`
    /// (ARCHITECTURE.md, "Queue").
    #[inline]
    fn send_with(&self, v: T, timeout: Option<Duration>) -> Result<(), (T, Fail)> {
        match self.core.claim_send(timeout) {
            Ok(c) => {
                self.write(c, v);
                self.core.publish(c);
                Ok(())
            }
            Err(f) => Err((v, f)),
        }
    }

    #[inline]
    fn recv_with(&self, timeout: Option<Duration>) -> Result<T, Fail> {
        let c = self.core.claim_recv(timeout)?;
        let v = self.read(c);
        self.core.release(c);
        Ok(v)
    }

    /// Sends `v`, waiting while the queue is full; [`SendError::Disconnected`] (with `v`
    /// back) once every consumer that attached is gone.
    #[inline]
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        self.send_with(v, None).map_err(|(v, f)| f.send(v))
    }

    /// Sends `v` if there is room now ([`TrySendError::Full`] otherwise).
    #[inline]
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        self.send_with(v, Some(Duration::ZERO))
            .map_err(|(v, f)| f.try_send(v))
    }

    /// Sends `v`, waiting at most `timeout` for room ([`SendTimeoutError::Timeout`]).
    pub fn send_timeout(&self, v: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_with(v, Some(timeout))
            .map_err(|(v, f)| f.send_timeout(v))
    }

    /// Receives the next message, waiting while the queue is empty;
    /// [`RecvError::Disconnected`] once it is empty and every producer that attached is
    /// gone (messages sent before they left are delivered first).
    #[inline]
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_with(None).map_err(Fail::recv)
    }

    /// Receives a message if one is there ([`TryRecvError::Empty`] otherwise; no
    /// allocation, no system call).
    #[inline]
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.recv_with(Some(Duration::ZERO)).map_err(Fail::try_recv)
    }

    /// Receives, waiting at most `timeout` ([`RecvTimeoutError::Timeout`]); returns
    /// [`RecvTimeoutError::Disconnected`] as soon as the producers are gone.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_with(Some(timeout)).map_err(Fail::recv_timeout)
    }

    #[inline]
    fn recv_many_with(&self, buf: &mut [T], timeout: Option<Duration>) -> Result<usize, Fail> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (c, k) = self.core.claim_recv_many(timeout, buf.len() as u64)?;
        for (i, v) in buf.iter_mut().take(k as usize).enumerate() {
            *v = self.read(Claim(c.0.wrapping_add(i as u64)));
        }
        self.core.release_many(c, k);
        Ok(k as usize)
    }

    /// Receives up to `buf.len()` messages into `buf`, waiting while the queue is empty;
    /// returns how many (at least one, unless `buf` is empty). Takes the run of messages
    /// there now with one claim (one CAS of the shared head in MPMC mode, one store in
    /// SPSC mode) and one wake-up check, where a loop of [`recv`](Self::recv) pays those
    /// per message. Errors as [`recv`](Self::recv).
    pub fn recv_many(&self, buf: &mut [T]) -> Result<usize, RecvError> {
        self.recv_many_with(buf, None).map_err(Fail::recv)
    }

    /// [`recv_many`](Self::recv_many) if a message is there now
    /// ([`TryRecvError::Empty`] otherwise).
    #[inline]
    pub fn try_recv_many(&self, buf: &mut [T]) -> Result<usize, TryRecvError> {
        self.recv_many_with(buf, Some(Duration::ZERO))
            .map_err(Fail::try_recv)
    }

    /// [`recv_many`](Self::recv_many), waiting at most `timeout`.
    pub fn recv_many_timeout(
        &self,
        buf: &mut [T],
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        self.recv_many_with(buf, Some(timeout))
            .map_err(Fail::recv_timeout)
    }

    /// A blocking iterator over received messages; ends at a disconnection (or another
    /// error: call [`recv`](Self::recv) to see it).
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(|| self.recv().ok())
    }

    /// An iterator over the messages there now; ends when the queue is empty or
    /// disconnected.
    pub fn try_iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(|| self.try_recv().ok())
    }

    /// "No more messages from this handle": detaches it as a producer, so that once every
    /// producer has closed, been dropped or died, receivers drain the queue and then get
    /// `Disconnected`. A later send through this handle attaches it again (reconnects).
    pub fn close(&self) {
        self.core.detach(ROLE_SENDER);
    }

    /// Attaches this handle as a producer now rather than at its first send, so that
    /// receivers do not see a disconnection before it sends (see the module docs, "Peers
    /// and disconnection").
    pub fn attach_producer(&self) {
        self.core.ensure_attached(ROLE_SENDER);
    }

    /// Attaches this handle as a consumer now rather than at its first receive, so that
    /// senders do not see a disconnection before it receives.
    pub fn attach_consumer(&self) {
        self.core.ensure_attached(ROLE_RECEIVER);
    }

    /// Whether every producer that ever attached is gone (by the shared count; a dead
    /// producer counts until a blocked receiver sweeps). Approximate while others run.
    pub fn is_disconnected(&self) -> bool {
        self.core.ring.peers_gone(ROLE_SENDER)
    }

    /// Claims a slot to write in place (zero-copy), waiting at most `timeout` (`None`:
    /// forever). The message is published by [`SendSlot::commit`]; dropping the slot
    /// uncommitted sends nothing (consumers skip it).
    ///
    /// The slot derefs to a `&mut T` in shared memory: this trusts every process with
    /// write access to follow the protocol (see the module docs, "Trust"); use
    /// [`send`](Self::send) otherwise.
    ///
    /// ```
    /// use shmkit::queue::Queue;
    /// let mut q = Queue::<[u8; 64]>::anonymous(4)?;
    /// let mut q2 = q.try_clone()?;
    /// let mut slot = q2.reserve(None)?;
    /// slot[..5].copy_from_slice(b"hello"); // written straight into shared memory
    /// slot.commit();
    /// let msg = q.recv_ref(None)?;             // read in place
    /// assert_eq!(&msg[..5], b"hello");
    /// drop(msg);                               // releases the slot
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    #[inline]
    pub fn reserve(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<SendSlot<'_, T>, SendTimeoutError<()>> {
        let c = self
            .core
            .claim_send_fast(timeout)
            .map_err(|f| f.send_timeout(()))?;
        Ok(SendSlot {
            q: self,
            claim: c,
            done: false,
        })
    }

    /// Receives in place (zero-copy), waiting at most `timeout` (`None`: forever); the
    /// slot is released when the [`RecvSlot`] is dropped.
    ///
    /// The slot derefs to a `&T` in shared memory: this trusts every process with write
    /// access to follow the protocol (a peer that does not may change the value while
    /// it is read; see the module docs, "Trust"). [`RecvSlot::get`] copies the value out
    /// with volatile loads instead; [`recv`](Self::recv) does so without a guard.
    #[inline]
    pub fn recv_ref(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<RecvSlot<'_, T>, RecvTimeoutError> {
        let c = self
            .core
            .claim_recv_fast(timeout)
            .map_err(Fail::recv_timeout)?;
        Ok(RecvSlot { q: self, claim: c })
    }

    /// Marks one message received by this handle as processed (joinable queues).
    pub fn task_done(&self) -> Result<()> {
        self.core.task_done()
    }

    #[inline]
    fn recv_task_with(&self, timeout: Option<Duration>) -> Result<Task<'_, T>, Fail> {
        let slot = self.core.stash_slot()?;
        let c = self.core.claim_recv(timeout)?;
        let value = self.read(c);
        if let Some(j) = slot {
            // The copy is in the stash before the ring slot is released: from here on a
            // death leaves the task for `join` to re-queue.
            // SAFETY: the stash slot's data is `size_of::<T>()` bytes, aligned like a
            // ring slot's; the slot is free and only this entry's owner fills it, and
            // `value` is a local.
            unsafe {
                copy::store(
                    (&raw const value).cast(),
                    self.core.ring.stash_data(self.core.me, j),
                    size_of::<T>(),
                )
            };
            self.core.ring.stash_fill(self.core.me, j, self.core.owner);
        }
        self.core.release(c);
        Ok(Task {
            q: self,
            value,
            slot,
            done: false,
        })
    }

    /// Receives a task (joinable queues), waiting while the queue is empty: the value
    /// in a [`Task`] guard to mark done with [`Task::done`]. With
    /// [`QueueOptions::requeue_lost`], the task is kept in this handle's stash until
    /// then, and re-queued by [`join`](Self::join) if this process dies first (or by
    /// this handle's drop if the guard is dropped without `done`); without it, this is
    /// [`recv`](Self::recv) plus a guard for [`task_done`](Self::task_done).
    /// Fails (`Other`) if this handle already holds `depth` tasks not done.
    ///
    /// ```
    /// use shmkit::queue::Queue;
    /// let q = Queue::<u64>::options().requeue_lost(4).anonymous()?;
    /// q.send(7)?;
    /// let task = q.recv_task()?;
    /// assert_eq!(*task, 7);
    /// task.done()?;
    /// assert!(q.join(None)?.is_complete());
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    pub fn recv_task(&self) -> Result<Task<'_, T>, RecvError> {
        self.recv_task_with(None).map_err(Fail::recv)
    }

    /// [`recv_task`](Self::recv_task) if a task is there now.
    pub fn try_recv_task(&self) -> Result<Task<'_, T>, TryRecvError> {
        self.recv_task_with(Some(Duration::ZERO))
            .map_err(Fail::try_recv)
    }

    /// [`recv_task`](Self::recv_task), waiting at most `timeout`.
    pub fn recv_task_timeout(&self, timeout: Duration) -> Result<Task<'_, T>, RecvTimeoutError> {
        self.recv_task_with(Some(timeout))
            .map_err(Fail::recv_timeout)
    }

    /// Waits until every message sent has been received and marked done (joinable
    /// queues), at most `timeout` (`None`: forever). Tasks held by a consumer that died
    /// are abandoned rather than waited for, and reported in the [`JoinOutcome`] (how
    /// many, which pids); [`JoinOutcome::complete`] turns a loss into an error.
    pub fn join(&self, timeout: Option<Duration>) -> Result<JoinOutcome> {
        self.core.join(timeout)
    }

    /// Messages in the queue plus messages received but not yet marked done by live
    /// handles (joinable queues; approximate while others run).
    pub fn unfinished(&self) -> u64 {
        self.core.unfinished()
    }

    /// An anonymous MPMC queue, shared with children forked afterwards (each child should
    /// [`try_clone`](Self::try_clone) it).
    pub fn anonymous(capacity: u64) -> Result<Self> {
        Self::options().capacity(capacity).anonymous()
    }

    fn from_parts(seg: Segment, opts: &QueueOptions<T>) -> Result<Self> {
        seg.check_elements(Kind::Queue, &ElemInfo::of::<T>(0), None)?;
        let (mode, joinable, geo) = check_segment(
            &seg,
            Some(size_of::<T>() as u64),
            align_of::<T>() as u64,
            opts.mode,
        )?;
        Ok(Queue {
            core: Core::new(Arc::new(seg), mode, joinable, geo, opts.wait)?,
            _t: PhantomData,
        })
    }
}

/// A task received with [`Queue::recv_task`]: the value (a private copy; derefs to it),
/// to be marked done with [`done`](Self::done).
///
/// Dropping it without `done` leaves the task not done, as forgetting `task_done` does
/// in Python: `join` keeps waiting for it. With [`QueueOptions::requeue_lost`] its stash
/// copy stays too, and it is sent back into the queue when this handle is dropped (or by
/// a `join` once this process has died), so a worker that panics mid-task gives the task
/// back at the latest when its handle goes.
#[must_use = "a task not marked done keeps `join` waiting: call `done`"]
pub struct Task<'a, T: Pod> {
    q: &'a Queue<T>,
    value: T,
    slot: Option<usize>,
    done: bool,
}

impl<T: Pod> Task<'_, T> {
    /// The task's value.
    pub fn get(&self) -> T {
        self.value
    }

    /// Marks the task done (and frees its stash copy).
    pub fn done(mut self) -> Result<()> {
        self.done = true;
        self.q.core.task_done_stashed(self.slot)
    }
}

impl<T: Pod> std::ops::Deref for Task<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Task<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("value", &self.value)
            .field("stashed", &self.slot.is_some())
            .field("done", &self.done)
            .finish()
    }
}

/// A claimed slot being written in place; see [`Queue::reserve`].
///
/// Derefs to the slot's `T` in shared memory (it holds the bytes of an older message
/// until overwritten). Trusts every process with write access to follow the protocol:
/// see the module docs, "Trust".
#[must_use = "dropping the reservation unused cancels it: write the message and call `commit`"]
pub struct SendSlot<'a, T: Pod> {
    q: &'a Queue<T>,
    claim: Claim,
    done: bool,
}

impl<T: Pod> SendSlot<'_, T> {
    /// Publishes the message.
    #[inline]
    pub fn commit(mut self) {
        self.done = true;
        self.q.core.publish_fast(self.claim);
    }

    /// Writes `v` and publishes it.
    pub fn send(self, v: T) {
        self.q.write(self.claim, v);
        self.commit();
    }

    /// Writes a copy of `*v` and publishes it: [`send`](Self::send) without moving a `T`
    /// through the stack (a large `T` need not fit there). Volatile stores, and a `T`
    /// whose size is in [`cache_bypass`] goes around the cache, as in a copying send.
    ///
    /// ```
    /// use shmkit::queue::Queue;
    /// let mut q = Queue::<[u8; 65536]>::anonymous(2)?;
    /// let msg = vec![9u8; 65536];
    /// let v: &[u8; 65536] = msg.as_slice().try_into().unwrap();
    /// q.reserve(None)?.send_ref(v);
    /// assert_eq!(q.recv_ref(None)?[65535], 9);
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    #[inline]
    pub fn send_ref(self, v: &T) {
        // `v` cannot borrow this guard's slot: the guard was moved into this call.
        self.q.write_ref(self.claim, v);
        self.commit();
    }
}

impl<T: Pod> std::ops::Deref for SendSlot<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the claim gives exclusive use of the slot (see `Queue::write`); the
        // reference lives no longer than the claim.
        unsafe { &*(self.q.core.ring.data(self.claim.0) as *const T) }
    }
}

impl<T: Pod> std::ops::DerefMut for SendSlot<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes this the only reference.
        unsafe { &mut *(self.q.core.ring.data(self.claim.0) as *mut T) }
    }
}

impl<T: Pod> Drop for SendSlot<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            self.q.core.cancel(self.claim);
        }
    }
}

/// A received message read in place; see [`Queue::recv_ref`]. Releases the slot on drop.
///
/// Deref trusts every process with write access to follow the protocol (see the module
/// docs, "Trust"); [`get`](Self::get) does not.
#[must_use = "dropping it at once releases the message unread"]
pub struct RecvSlot<'a, T: Pod> {
    q: &'a Queue<T>,
    claim: Claim,
}

impl<T: Pod> RecvSlot<'_, T> {
    /// The message, copied out of the slot with volatile loads (no reference into shared
    /// memory: a peer that breaks the protocol can change which value is read, nothing
    /// else).
    #[inline]
    pub fn get(&self) -> T {
        self.q.read(self.claim)
    }
}

impl<T: Pod> std::ops::Deref for RecvSlot<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the claim gives this handle the slot until release (producers do not
        // write a claimed-for-reading slot); T is Pod and aligned.
        unsafe { &*(self.q.core.ring.data(self.claim.0) as *const T) }
    }
}

impl<T: Pod> Drop for RecvSlot<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.q.core.release_fast(self.claim);
    }
}

// Which handles may cross or be shared between threads, checked at compile time (see the
// module docs, "Threads"; `Queue` is not `Sync`: a compile_fail doc test on `Queue`).
const _: () = {
    const fn send<T: Send>() {}
    const fn sync<T: Sync>() {}
    const fn clone<T: Clone>() {}
    send::<Queue<u64>>();
    send::<ByteQueue>();
    send::<Sender<u64>>();
    sync::<Sender<u64>>();
    clone::<Sender<u64>>();
    send::<ByteSender>();
    sync::<ByteSender>();
    clone::<ByteSender>();
    send::<TryRecvError>();
    sync::<TryRecvError>();
    send::<TrySendError<u64>>();
    sync::<TrySendError<u64>>();
};

/// Hooks for `crate::aio` (async zero-copy): a claim taken by one non-blocking attempt
/// becomes a slot guard in the same poll, with no await point in between.
#[cfg(all(feature = "async", not(shmkit_loom)))]
impl Core {
    /// One non-blocking claim to receive (`None`: empty).
    pub(crate) fn try_claim_recv_hook(&self) -> Option<std::result::Result<Claim, RecvError>> {
        match self.claim_recv(Some(Duration::ZERO)) {
            Ok(c) => Some(Ok(c)),
            Err(Fail::Blocked | Fail::Timeout) => None,
            Err(f) => Some(Err(f.recv())),
        }
    }

    /// One non-blocking claim to send (`None`: full).
    pub(crate) fn try_claim_send_hook(&self) -> Option<std::result::Result<Claim, SendError<()>>> {
        match self.claim_send(Some(Duration::ZERO)) {
            Ok(c) => Some(Ok(c)),
            Err(Fail::Blocked | Fail::Timeout) => None,
            Err(f) => Some(Err(f.send(()))),
        }
    }
}

#[cfg(all(feature = "async", not(shmkit_loom)))]
impl<T: Pod> Queue<T> {
    /// The guard of a claim from [`Core::try_claim_send_hook`].
    pub(crate) fn send_slot_hook(&self, claim: Claim) -> SendSlot<'_, T> {
        SendSlot {
            q: self,
            claim,
            done: false,
        }
    }

    /// The guard of a claim from [`Core::try_claim_recv_hook`].
    pub(crate) fn recv_slot_hook(&self, claim: Claim) -> RecvSlot<'_, T> {
        RecvSlot { q: self, claim }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{Layout, SegmentOptions};

    #[test]
    fn cancelled_reservations_a_lap_apart_are_skipped() {
        // A dropped reservation at p, then another at p + capacity before any receive:
        // the slot is two laps ahead of the consumer, which must skip, not say Corrupt.
        let mut q = Queue::<u64>::anonymous(2).unwrap();
        drop(q.reserve(None).unwrap());
        q.send(1).unwrap();
        drop(q.reserve(None).unwrap());
        assert_eq!(q.try_recv().unwrap(), 1);
        assert!(matches!(q.try_recv(), Err(TryRecvError::Empty)));
        // Capacity 1: a run of cancels longer than the capacity.
        let mut q = Queue::<u64>::anonymous(1).unwrap();
        for _ in 0..5 {
            drop(q.reserve(None).unwrap());
        }
        q.send(7).unwrap();
        assert_eq!(q.try_recv().unwrap(), 7);
    }

    #[test]
    fn owner_words_and_liveness() {
        let q = Queue::<u64>::anonymous(4).unwrap();
        let seg = q.segment();
        let t = seg.liveness().token().unwrap();
        let w = owner_word(std::process::id(), t);
        assert!(owner_alive(seg, w));
        // Another token (nobody holds it: tokens are drawn from 2^30 values) is dead, even
        // with our pid: the pid is not what decides.
        let other = if t == 1 { 2 } else { t - 1 };
        assert!(!owner_alive(seg, owner_word(std::process::id(), other)));
        assert!(!owner_alive(seg, 0));
    }

    #[test]
    fn anonymous_queue_roundtrip_and_timeouts() {
        for mode in [Mode::Spsc, Mode::Mpmc] {
            let q = Queue::<u64>::options()
                .mode(mode)
                .capacity(3)
                .anonymous()
                .unwrap();
            assert_eq!(q.capacity(), 4);
            for i in 0..4 {
                q.try_send(i).unwrap();
            }
            assert!(matches!(q.try_send(9), Err(TrySendError::Full(9))));
            assert!(
                q.send_timeout(9, Duration::from_millis(5))
                    .unwrap_err()
                    .is_timeout()
            );
            assert_eq!(q.len(), 4);
            for i in 0..4 {
                assert_eq!(q.recv().unwrap(), i);
            }
            assert!(
                q.recv_timeout(Duration::from_millis(5))
                    .unwrap_err()
                    .is_timeout()
            );
            assert!(q.is_empty());
        }
    }

    #[test]
    fn spsc_second_producer_is_refused_until_the_first_is_dropped() {
        let q = Queue::<u32>::options()
            .mode(Mode::Spsc)
            .anonymous()
            .unwrap();
        let q2 = q.try_clone().unwrap();
        q.send(1).unwrap();
        let e = q2.send(2).unwrap_err();
        assert!(e.to_string().contains("producer role"), "{e}");
        drop(q);
        q2.send(2).unwrap();
        assert_eq!(q2.recv().unwrap(), 1);
        assert_eq!(q2.recv().unwrap(), 2);
    }

    #[test]
    fn zero_copy_and_cancel() {
        let mut q = Queue::<[u8; 16]>::options()
            .mode(Mode::Mpmc)
            .capacity(2)
            .anonymous()
            .unwrap();
        {
            let mut s = q.reserve(None).unwrap();
            s[0] = 1;
            drop(s); // cancelled
        }
        let mut s = q.reserve(None).unwrap();
        s[0] = 2;
        s.commit();
        let r = q.recv_ref(Some(Duration::from_secs(1))).unwrap();
        assert_eq!(r[0], 2);
        assert_eq!(r.get(), *r, "volatile copy = in-place view");
        drop(r);
        assert!(q.try_recv().is_err());
    }

    #[test]
    fn byte_queue_copies_every_length() {
        let mut q = ByteQueue::options().capacity(2).anonymous(700).unwrap();
        let mut buf = vec![1, 2, 3];
        for len in [0usize, 1, 7, 8, 9, 63, 64, 65, 255, 256, 257, 700] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            q.send(&msg).unwrap();
            q.recv(&mut buf).unwrap();
            assert_eq!(buf, msg, "{len}");
            q.send(&msg).unwrap();
            let r = q.recv_ref(None).unwrap();
            let mut copy = Vec::new();
            r.copy_to(&mut copy);
            assert_eq!(copy, msg, "{len}");
            assert_eq!(&*r, &msg[..]);
        }
    }

    #[test]
    fn joinable_counts() {
        let q = Queue::<u8>::options().joinable(true).anonymous().unwrap();
        assert!(q.task_done().is_err());
        q.send(1).unwrap();
        q.send(2).unwrap();
        assert_eq!(q.unfinished(), 2);
        assert!(
            q.join(Some(Duration::from_millis(5)))
                .unwrap_err()
                .is_timeout()
        );
        q.recv().unwrap();
        q.recv().unwrap();
        assert_eq!(q.unfinished(), 2);
        q.task_done().unwrap();
        q.task_done().unwrap();
        assert!(q.join(Some(Duration::from_secs(1))).unwrap().is_complete());
        let plain = Queue::<u8>::anonymous(2).unwrap();
        assert!(plain.join(None).is_err());
    }

    #[test]
    fn tasks_are_stashed_until_done_and_handed_back_by_a_dropped_handle() {
        let q = Queue::<u64>::options()
            .requeue_lost(2)
            .capacity(4)
            .anonymous()
            .unwrap();
        assert!(q.is_joinable());
        let c = q.try_clone().unwrap();
        for v in 1..=3 {
            q.send(v).unwrap();
        }
        let t1 = c.recv_task().unwrap();
        let t2 = c.try_recv_task().unwrap();
        assert_eq!((*t1, t2.get()), (1, 2));
        // The stash is full: refused before anything is taken.
        assert!(matches!(c.try_recv_task(), Err(TryRecvError::Other(_))));
        assert_eq!(q.len(), 1);
        t1.done().unwrap();
        drop(t2); // not done: still unfinished
        assert_eq!(q.unfinished(), 2);
        drop(c); // hands task 2 back
        let mut got: Vec<u64> = std::iter::from_fn(|| {
            let t = q.try_recv_task().ok()?;
            let v = *t;
            t.done().unwrap();
            Some(v)
        })
        .collect();
        got.sort_unstable();
        assert_eq!(got, [2, 3]);
        let out = q.join(Some(Duration::from_secs(5))).unwrap();
        assert!(out.is_complete() && out.requeued.is_empty(), "{out:?}");
        // Options that cannot hold a stash are refused.
        assert!(
            Queue::<u64>::options()
                .mode(Mode::Spsc)
                .requeue_lost(2)
                .anonymous()
                .is_err()
        );
        assert!(
            Queue::<u64>::options()
                .requeue_lost(65)
                .anonymous()
                .is_err()
        );
        // Byte queues have no `requeue_lost` at all: a compile_fail doc test on
        // ByteQueueOptions checks it.
    }

    #[test]
    fn recv_many_takes_runs_in_both_modes() {
        for mode in [Mode::Spsc, Mode::Mpmc] {
            let rx = Queue::<u64>::options()
                .mode(mode)
                .capacity(8)
                .joinable(true)
                .anonymous()
                .unwrap();
            let tx = rx.try_clone().unwrap();
            let mut buf = [0u64; 5];
            assert!(rx.try_recv_many(&mut buf).unwrap_err().is_empty());
            assert_eq!(rx.try_recv_many(&mut []).ok(), Some(0));
            for v in 0..7 {
                tx.send(v).unwrap();
            }
            assert_eq!(rx.recv_many(&mut buf).ok(), Some(5));
            assert_eq!(buf, [0, 1, 2, 3, 4]);
            assert_eq!(rx.unfinished(), 7, "{mode:?}: five tasks held, two queued");
            assert_eq!(
                rx.recv_many_timeout(&mut buf, Duration::from_secs(1)).ok(),
                Some(2)
            );
            assert_eq!(buf[..2], [5, 6]);
            for _ in 0..7 {
                rx.task_done().unwrap();
            }
            assert!(rx.join(Some(Duration::from_secs(1))).unwrap().is_complete());
            // Ends at the disconnection like recv.
            tx.send(9).unwrap();
            drop(tx);
            assert_eq!(rx.recv_many(&mut buf).ok(), Some(1));
            assert!(rx.recv_many(&mut buf).unwrap_err().is_disconnected());
        }
    }

    /// An anonymous segment holding a fresh 4-slot ring of `opts` whose header says ring
    /// `version`, with its layout and geometry.
    fn ring_of_version(opts: &QueueOptions<u64>, version: u64) -> (Segment, Layout, Geometry) {
        let (layout, geo) = opts.layout("<old version>").unwrap();
        let layout = layout.with_params([4, 64, 8, version]);
        let seg = SegmentOptions::default()
            .anonymous(&layout, init_ring(geo))
            .unwrap();
        (seg, layout, geo)
    }

    #[test]
    fn version_2_rings_open_without_batch_claims() {
        let opts = Queue::<u64>::options().capacity(4);
        let (seg, layout, geo) = ring_of_version(&opts, RING_VERSION_NO_BATCH);
        let q = opts.from_segment(seg).unwrap();
        assert!(!q.core.ring.geo.batch);
        for v in 0..3 {
            q.send(v).unwrap();
        }
        let mut buf = [0u64; 4];
        assert_eq!(q.try_recv_many(&mut buf).ok(), Some(1), "one per claim");
        assert_eq!(q.try_recv_many(&mut buf).ok(), Some(1));
        // A version-2 ring has no stash.
        let stashed = geo.with_stash(1).unwrap();
        let layout = layout
            .with_flags(FLAG_MPMC | FLAG_JOINABLE | FLAG_REQUEUE | 1 << STASH_SHIFT)
            .with_payload_len(stashed.total as u64);
        let seg = SegmentOptions::default()
            .anonymous(&layout, init_ring(stashed))
            .unwrap();
        assert!(opts.from_segment(seg).is_err());
    }

    #[test]
    fn version_3_rings_open_with_asymmetric_fences_only() {
        let opts = Queue::<u64>::options().capacity(4).wait(WaitStrategy::Park);
        let (seg, ..) = ring_of_version(&opts, RING_VERSION_NO_FENCE_MODE);
        let q = opts.from_segment(seg).unwrap();
        assert!(q.core.ring.geo.batch && !q.core.ring.geo.fence_mode);
        assert!(q.core.ring.data_wait().mode.is_none());
        assert!(q.core.ring.space_wait().mode.is_none());
        // A parked wait works as before (and cannot switch anything).
        assert!(q.recv_timeout(Duration::from_millis(2)).is_err());
        q.send(5).unwrap();
        assert_eq!(q.recv().unwrap(), 5);
        // Version 5 is refused.
        let (seg, ..) = ring_of_version(&opts, RING_VERSION + 1);
        assert!(matches!(
            opts.from_segment(seg),
            Err(Error::Mismatch {
                what: "queue ring version",
                ..
            })
        ));
    }

    /// A waiter with `WaitStrategy::Park` switches the wait point it sleeps on to
    /// symmetric fences; the default (adaptive) strategy leaves it asymmetric even when it
    /// ends up asleep; a parked producer switches the space wait point.
    #[test]
    fn a_parked_waiter_switches_its_wait_point_to_symmetric_fences() {
        use super::wait::{SWITCHING, SYMMETRIC};
        let mode = |q: &Queue<u64>, space: bool| {
            let wp = if space {
                q.core.ring.space_wait()
            } else {
                q.core.ring.data_wait()
            };
            wp.mode.expect("version-4 ring").load(Ordering::Relaxed)
        };
        let light = wait::init_fences();
        for m in [Mode::Spsc, Mode::Mpmc] {
            let q = Queue::<u64>::options()
                .mode(m)
                .capacity(1)
                .anonymous()
                .unwrap();
            // Adaptive: spins 50 us, then sleeps for the rest of the 5 ms.
            assert!(q.recv_timeout(Duration::from_millis(5)).is_err());
            assert_eq!(mode(&q, false), 0, "{m:?}: adaptive waits stay asymmetric");
            let q = Queue::<u64>::options()
                .mode(m)
                .capacity(1)
                .wait(WaitStrategy::Park)
                .anonymous()
                .unwrap();
            let producer = q.try_clone().unwrap();
            assert!(q.recv_timeout(Duration::from_millis(2)).is_err());
            let want = if light { SYMMETRIC } else { SWITCHING };
            assert_eq!(mode(&q, false), want, "{m:?}: data wait point");
            assert_eq!(mode(&q, true), 0, "{m:?}: nobody slept for space yet");
            // Full (capacity 1): a parked send sleeps on the space wait point.
            producer.send(1).unwrap();
            assert!(producer.send_timeout(2, Duration::from_millis(2)).is_err());
            assert_eq!(mode(&q, true), want, "{m:?}: space wait point");
            // Both sides now fence fully; messages still flow, wake-ups still arrive.
            let t = std::thread::spawn(move || {
                for v in 0..200u64 {
                    producer.send_timeout(v, Duration::from_secs(10)).unwrap();
                }
            });
            assert_eq!(q.recv().unwrap(), 1);
            for v in 0..200u64 {
                assert_eq!(q.recv_timeout(Duration::from_secs(10)).unwrap(), v);
            }
            t.join().unwrap();
        }
    }

    const SWITCHING_GARBAGE: u32 = 0x5eed_0001;

    /// Garbage in the `mode` words (a hostile or buggy peer) costs at most extra fences or
    /// a late wake-up within a sleep slice: parked waits still end, in time.
    #[test]
    fn garbage_in_the_fence_mode_words_is_harmless() {
        for garbage in [SWITCHING_GARBAGE, u32::MAX, 1, 3] {
            let q = Queue::<u64>::options()
                .mode(Mode::Mpmc)
                .capacity(2)
                .wait(WaitStrategy::Park)
                .anonymous()
                .unwrap();
            let other = q.try_clone().unwrap();
            for wp in [q.core.ring.data_wait(), q.core.ring.space_wait()] {
                wp.mode.unwrap().store(garbage, Ordering::Relaxed);
            }
            let t = std::thread::spawn(move || {
                for v in 0..300u64 {
                    other.send_timeout(v, Duration::from_secs(10)).unwrap();
                }
            });
            for v in 0..300u64 {
                assert_eq!(q.recv_timeout(Duration::from_secs(10)).unwrap(), v);
            }
            t.join().unwrap();
            let t = Instant::now();
            assert!(q.recv_timeout(Duration::from_millis(30)).is_err());
            assert!(t.elapsed() < Duration::from_secs(5));
        }
    }

    #[test]
    fn disconnection_rules() {
        for mode in [Mode::Spsc, Mode::Mpmc] {
            let rx = Queue::<u64>::options().mode(mode).anonymous().unwrap();
            // Nobody attached as a producer yet: empty, not disconnected.
            assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
            let tx = rx.try_clone().unwrap();
            tx.send(1).unwrap();
            tx.send(2).unwrap();
            tx.close();
            // Messages sent before the close are delivered first.
            assert_eq!(rx.try_recv().unwrap(), 1);
            assert_eq!(rx.recv().unwrap(), 2);
            assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
            assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
            assert!(
                rx.recv_timeout(Duration::from_secs(30))
                    .unwrap_err()
                    .is_disconnected()
            );
            // A producer attaching again reconnects.
            tx.send(3).unwrap();
            assert!(matches!(rx.try_recv(), Ok(3)));
            assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
            drop(tx);
            assert!(rx.is_disconnected());
            assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
            // The consumer leaving disconnects senders once the queue is full (what fits
            // waits for the next consumer); they get the value back.
            let tx = rx.try_clone().unwrap();
            drop(rx);
            while tx.try_send(1).is_ok() {}
            match tx.send(9) {
                Err(SendError::Disconnected(9)) => {}
                other => panic!("{other:?}"),
            }
            assert!(matches!(tx.try_send(8), Err(TrySendError::Disconnected(8))));
            let e: Error = tx.send(7).unwrap_err().into();
            assert!(matches!(e, Error::Disconnected { .. }), "{e}");
        }
    }

    #[test]
    fn blocked_receiver_wakes_when_the_last_producer_leaves() {
        let rx = Queue::<u64>::options()
            .wait(WaitStrategy::Park)
            .anonymous()
            .unwrap();
        let tx = rx.try_clone().unwrap();
        tx.attach_producer();
        let h = std::thread::spawn(move || {
            let t = Instant::now();
            let a = rx
                .recv_timeout(Duration::from_secs(60))
                .map_err(|e| e.is_disconnected());
            let b = rx
                .recv_timeout(Duration::from_secs(60))
                .map_err(|e| e.is_disconnected());
            (a, b, t.elapsed(), rx)
        });
        tx.send(5).unwrap();
        drop(tx);
        let (a, b, took, rx) = h.join().unwrap();
        // Messages go before Disconnected; the wait ends at the drop, not at the timeout.
        assert_eq!((a, b), (Ok(5), Err(true)));
        assert!(took < Duration::from_secs(30));
        let t = Instant::now();
        assert!(
            rx.recv_timeout(Duration::from_secs(60))
                .unwrap_err()
                .is_disconnected()
        );
        assert!(t.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn shared_sender_from_threads() {
        let rx = Queue::<u64>::options().capacity(8).anonymous().unwrap();
        let tx = rx.sender().unwrap();
        const N: u64 = 2000;
        let got = std::thread::scope(|s| {
            for t in 0..4u64 {
                let tx = tx.clone();
                s.spawn(move || {
                    for i in 0..N {
                        tx.send(t << 32 | i).unwrap();
                    }
                    drop(tx);
                });
            }
            let tx2 = tx.clone();
            drop(tx);
            s.spawn(move || drop(tx2));
            rx.iter().collect::<Vec<u64>>()
        });
        assert_eq!(got.len() as u64, 4 * N);
        for t in 0..4u64 {
            let mine: Vec<u64> = got.iter().filter(|&&v| v >> 32 == t).copied().collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "per-thread order");
        }
        assert!(rx.is_disconnected());
    }

    #[test]
    fn byte_queue_io_adapters() {
        use std::io::{Read, Write};
        let rx = ByteQueue::options().capacity(64).anonymous(4).unwrap();
        let tx = rx.sender().unwrap();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut w = &tx;
                w.write_all(b"hello, world").unwrap();
            });
            let mut text = String::new();
            rx.reader().read_to_string(&mut text).unwrap();
            assert_eq!(text, "hello, world");
        });
        let mut buf = Vec::new();
        assert!(matches!(
            rx.try_recv(&mut buf),
            Err(TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn try_recv_error_paths_do_not_allocate_a_message() {
        // Empty, Full, Disconnected carry nothing: matching them needs no allocation.
        let q = Queue::<u64>::options().capacity(1).anonymous().unwrap();
        assert!(q.try_recv().unwrap_err().is_empty());
        q.send(1).unwrap();
        assert!(q.try_send(2).unwrap_err().is_full());
        assert!(
            q.send_timeout(2, Duration::from_millis(1))
                .unwrap_err()
                .is_timeout()
        );
    }
}
