//! The slot protocol, over raw memory.
//!
//! This file knows nothing about segments, types or system calls (except through the
//! `is_alive` callbacks it is given), so it runs on a plain byte buffer: unit tests, Miri
//! and the fuzz entry point (`super::fuzz`) exercise it there.
//!
//! # Memory layout (offsets from the start of the ring; every line is 128 bytes)
//!
//! | offset | contents |
//! |-------:|----------|
//! | 0      | `tail`: next position a producer claims (u64) |
//! | 128    | `head`: next position a consumer claims (u64) |
//! | 256    | data wait point: futex word (u32), sleepers (u32), armed (u32), fence mode (u32, version 4; `wait.rs`) — consumers sleep here |
//! | 384    | space wait point — producers sleep here |
//! | 512    | join wait point — `join()` sleeps here |
//! | 640    | `peer_deaths` (u64), `last_dead_pid` (u64), SPSC `producer`/`consumer` roles (u64 each), `senders`, `receivers` (peer counts, u64 each), `lost_tasks` (u64) |
//! | 768    | participant table: `max_handles` entries of 128 bytes: `owner`, `intent`, `outstanding`, `roles`, `intent_more` |
//! | 768 + 128·max_handles | `capacity` slots of `stride` bytes: `seq` (u64) then the data |
//! | `stash_off` = after the slots | stash (`requeue_lost(depth)` only): `max_handles × depth` slots of `stride` bytes: `state` (u64) then the data |
//!
//! A participant entry's fifth word, `intent_more`, is how many positions after `intent`
//! a batch receive claimed ([`Ring::mpmc_claim_recv_many`]).
//!
//! # Stash (joinable queues with `requeue_lost`)
//!
//! A stash slot's `state` is 0 (free: only the entry's owner fills it), `owner |`
//! [`STASH_FULL`] (holding a task of that owner word, which counts it: the claim's count
//! in `outstanding` is moved to the slot by [`Ring::stash_fill`]), or `mover |
//! STASH_FULL |` [`STASH_MOVING`] (a re-queuer is moving it back into the ring). See
//! [`Ring::requeue_stashed`] and ARCHITECTURE.md, "Queue". Any state a hostile peer
//! writes gives a garbage task or a refused `recv_task`: the data is `Pod`.
//!
//! # Slot sequence numbers (Vyukov's bounded MPMC queue, doubled)
//!
//! The slot for position `p` is `p % capacity`. Its `seq` word says:
//! - `2p`     — EMPTY for position `p`: a producer may claim `p`;
//! - `2p + 1` — FULL for position `p`: a consumer may claim `p`;
//! - `2(p + capacity)` — released (or skipped): EMPTY for the next lap.
//!
//! Any other value, for the position a process is at, is corruption. `head` and `tail`
//! are read with Acquire (free on x86): whoever claimed the positions before the one we
//! read synchronised with the slot's previous lap, so a slot read after it is at most one
//! lap behind — which is what lets the validation be strict. (loom found the Relaxed
//! version reading a slot two laps stale and calling it corrupt.)
//!
//! A producer claims `p` by a CAS of `tail` from `p` to `p + 1`, writes the data and
//! stores `2p + 1`; a consumer claims `p` by a CAS of `head`, reads, stores
//! `2(p + capacity)`. Before its CAS a process writes the position it is about to claim
//! into its own participant entry (`intent`), so that a claim whose owner died can be
//! recognised: see ARCHITECTURE.md, "Queue".
//!
//! # Peers and disconnection
//!
//! `senders` and `receivers` count the participants that attached as producers or
//! consumers: bits 0..32 the count, bit 32 ([`EVER`]) set once anybody attached. A
//! participant attaches by announcing it in its entry's `roles` word (an "attaching"
//! bit; the word also carries its token in the high half), incrementing the count, then
//! setting [`ROLE_SENDER`] / [`ROLE_RECEIVER`] and clearing the announcement; it
//! detaches by clearing the bit and decrementing (saturating at 0). A sweep counts an
//! announced live participant as attached. A dead
//! participant is discounted exactly once: whoever first notices the death marks the
//! owner word with [`OWNER_DEAD`] (a CAS: one winner, who also counts it in `peer_deaths`)
//! and clears the role bits by a CAS that names the dead owner's token, so that a new
//! owner of the entry is never discounted in its stead. `register`, taking a dead entry
//! over, clears the bits with a swap; the two RMWs on one word decide who discounts. The
//! `outstanding` word (joinable tasks) is tagged the same way (count in the low half,
//! token in the high half), so that a `join` taking a dead consumer's tasks and a new
//! owner taking its entry over each take them at most once, and never the new owner's.
//! Every one of these words may be garbage written by a hostile peer: it can make a
//! process see `Disconnected` or not, nothing else (counts saturate, tokens only compare).

#[cfg(shmkit_loom)]
use loom::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::atomic::Ordering;
#[cfg(not(shmkit_loom))]
use std::sync::atomic::{AtomicU32, AtomicU64};

/// Spacing of control words (two cache lines: adjacent-line prefetch on x86 pulls pairs).
pub(crate) const LINE: usize = 128;
pub(crate) const OFF_TAIL: usize = 0;
pub(crate) const OFF_HEAD: usize = LINE;
pub(crate) const OFF_DATA_WAIT: usize = 2 * LINE;
pub(crate) const OFF_SPACE_WAIT: usize = 3 * LINE;
pub(crate) const OFF_JOIN_WAIT: usize = 4 * LINE;
pub(crate) const OFF_STATS: usize = 5 * LINE;
pub(crate) const OFF_PARTICIPANTS: usize = 6 * LINE;
/// Bytes before a slot's data (the `seq` word; ByteQueue adds its length word inside the
/// data area).
pub(crate) const SLOT_HEADER: usize = 8;

/// `intent` value meaning "no claim in progress".
pub(crate) const NO_INTENT: u64 = u64::MAX;
/// Largest capacity (slots).
pub const MAX_CAPACITY: u64 = 1 << 24;
/// Largest number of handles that may have a queue open at once.
pub const MAX_HANDLES: u64 = 4096;
/// Most stash slots per participant entry (tasks a consumer of a re-queuing joinable
/// queue may hold at once).
pub const MAX_STASH: u64 = 64;
/// In a stash state word: the slot holds a task (the rest of the word is the owner word
/// of the consumer that holds it). Tokens are below 2^30, so bits 30 and 31 are free.
pub(crate) const STASH_FULL: u64 = 1 << 30;
/// In a stash state word (with [`STASH_FULL`]): a re-queuer (whose owner word the rest
/// is) is moving the task back into the ring.
pub(crate) const STASH_MOVING: u64 = 1 << 31;

/// Role bits in a participant entry (SPSC).
pub(crate) const ROLE_PRODUCER: u64 = 1;
pub(crate) const ROLE_CONSUMER: u64 = 2;
/// Role bits in a participant entry: counted in `senders` / `receivers`.
pub(crate) const ROLE_SENDER: u64 = 4;
pub(crate) const ROLE_RECEIVER: u64 = 8;
/// Role bits in a participant entry: attaching as a sender / receiver (see `Ring::attach`).
pub(crate) const ATTACHING_SENDER: u64 = 16;
pub(crate) const ATTACHING_RECEIVER: u64 = 32;
/// The "attaching" bit of `role` ([`ROLE_SENDER`] or [`ROLE_RECEIVER`]).
#[inline]
fn attaching(role: u64) -> u64 {
    role << 2
}
/// Set in an owner word once its death has been noted (counted, roles discounted). Tokens
/// are below 2^30, so the bit is free.
pub(crate) const OWNER_DEAD: u64 = 1 << 31;
/// The token half of an owner word.
const TOKEN_MASK: u64 = OWNER_DEAD - 1;
/// In a peer count word: set once anybody attached.
pub(crate) const EVER: u64 = 1 << 32;
const COUNT_MASK: u64 = EVER - 1;

/// Sizes and offsets of a ring, computed from its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Number of slots (a power of two).
    pub cap: u64,
    /// Bytes of data per slot.
    pub data_len: usize,
    /// Offset of the data inside a slot (≥ 8, a multiple of the data alignment).
    pub data_off: usize,
    /// Bytes per slot.
    pub stride: usize,
    /// Participant entries.
    pub max_handles: usize,
    /// Offset of slot 0.
    pub slots_off: usize,
    /// Stash slots per participant entry (0: no stash; see "Stash" in the module docs).
    pub stash: usize,
    /// Offset of the stash (after the slots; `total` when there is none).
    pub stash_off: usize,
    /// Batch receives allowed (ring version 3; an older ring may have version-2
    /// processes attached, which would not see a batch's announcement).
    pub batch: bool,
    /// Wait points have a fence `mode` word (ring version 4; see `wait`, "Symmetric
    /// mode"). Older rings may have processes attached that never read it.
    pub fence_mode: bool,
    /// Total bytes.
    pub total: usize,
}

impl Geometry {
    /// Validates parameters and lays the ring out; `None` if they are out of range.
    pub(crate) fn new(
        cap: u64,
        data_len: u64,
        data_align: u64,
        max_handles: u64,
    ) -> Option<Geometry> {
        if !cap.is_power_of_two() || cap > MAX_CAPACITY {
            return None;
        }
        if max_handles == 0 || max_handles > MAX_HANDLES {
            return None;
        }
        if !data_align.is_power_of_two() || data_align > 64 || data_len > (1 << 30) {
            return None;
        }
        let data_off = (SLOT_HEADER as u64).next_multiple_of(data_align);
        // Slots never share a cache line with a neighbour: a slot is a power of two up to
        // 64 bytes, or a whole number of lines. (Measured here: 64-byte messages in
        // 72-byte slots round-trip ~1.35x slower than in 128-byte ones; neighbours'
        // sequence words and data interleave on shared lines.)
        let packed = (data_off + data_len).next_multiple_of(data_align.max(8));
        let stride = if packed <= 64 {
            packed.next_power_of_two()
        } else {
            packed.next_multiple_of(64)
        };
        let slots_off = (OFF_PARTICIPANTS as u64 + LINE as u64 * max_handles)
            .next_multiple_of(data_align.max(LINE as u64));
        let total = stride.checked_mul(cap)?.checked_add(slots_off)?;
        if total > (1 << 40) {
            return None;
        }
        Some(Geometry {
            cap,
            data_len: data_len as usize,
            data_off: data_off as usize,
            stride: stride as usize,
            max_handles: max_handles as usize,
            slots_off: slots_off as usize,
            stash: 0,
            stash_off: total as usize,
            batch: true,
            fence_mode: true,
            total: total as usize,
        })
    }

    /// The same ring with `depth` stash slots (each `stride` bytes) per participant entry
    /// after the slots; `None` if `depth` is out of `0..=MAX_STASH` or it is too large.
    pub(crate) fn with_stash(self, depth: u64) -> Option<Geometry> {
        if depth > MAX_STASH {
            return None;
        }
        let extra = (self.stride as u64)
            .checked_mul(depth)?
            .checked_mul(self.max_handles as u64)?;
        let total = (self.stash_off as u64).checked_add(extra)?;
        if total > (1 << 40) {
            return None;
        }
        Some(Geometry {
            stash: depth as usize,
            total: total as usize,
            ..self
        })
    }
}

/// A shared-state inconsistency found by the ring (reported as `Error::Corrupt`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Corrupt(pub(crate) String);

/// Why a claim could not be made now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// Nothing to receive / no free slot, and no claim by another process is pending.
    Idle,
    /// A producer claimed `pos` and has not published it (consumer side), or a consumer
    /// claimed `pos` and has not released it (producer side).
    InFlight { pos: u64, reader: bool },
}

/// The ring over raw memory.
///
/// Invariant: `base` is valid for reads and writes of `geo.total` bytes for the lifetime
/// of the `Ring`, aligned to 128 bytes (64 suffices for the atomics), and every control
/// word is only accessed atomically by every party.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ring {
    base: *mut u8,
    pub geo: Geometry,
    /// Under loom, control words live in loom atomics beside the buffer (loom cannot
    /// model atomics reinterpreted from raw memory); slot data stays in the buffer.
    #[cfg(shmkit_loom)]
    shadow: &'static Shadow,
}

#[cfg(shmkit_loom)]
#[derive(Debug)]
struct Shadow {
    w64: std::collections::BTreeMap<usize, AtomicU64>,
    w32: std::collections::BTreeMap<usize, AtomicU32>,
}

// SAFETY: the ring only hands out atomics and raw pointers into memory that is shared by
// design; synchronisation is the protocol's job.
unsafe impl Send for Ring {}

#[inline]
fn empty(p: u64) -> u64 {
    p.wrapping_mul(2)
}
#[inline]
fn full(p: u64) -> u64 {
    p.wrapping_mul(2).wrapping_add(1)
}
/// How many positions the slot state `s` is ahead of position `p` (negative: behind), if
/// `s` belongs to the same slot as `p` in a ring of `cap` slots; `None` otherwise.
/// Positions are compared modulo 2^63 (the sequence word doubles them).
#[inline]
fn lap_diff(s: u64, p: u64, cap: u64) -> Option<i64> {
    let q = s >> 1;
    if (q ^ p) & (cap - 1) != 0 {
        return None;
    }
    let d = q.wrapping_sub(p) << 1;
    Some((d as i64) >> 1)
}

/// True if `a` is after `b` in wrapping order.
#[inline]
pub(crate) fn after(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) > 0
}

impl Ring {
    /// # Safety
    /// `base` must be valid for reads and writes of `geo.total` bytes for as long as the
    /// ring (or a copy) is used, 64-byte aligned, and accessed by others only through this
    /// protocol (atomics for control words).
    #[cfg(not(shmkit_loom))]
    pub(crate) unsafe fn new(base: *mut u8, geo: Geometry) -> Ring {
        Ring { base, geo }
    }

    /// Loom: the control words a ring uses, as loom atomics (leaked: one small table per
    /// model iteration).
    #[cfg(shmkit_loom)]
    pub(crate) unsafe fn new(base: *mut u8, geo: Geometry) -> Ring {
        let mut w64 = std::collections::BTreeMap::new();
        for off in (0..OFF_PARTICIPANTS).step_by(8) {
            w64.insert(off, AtomicU64::new(0));
        }
        for i in 0..geo.max_handles {
            for k in 0..5 {
                w64.insert(OFF_PARTICIPANTS + LINE * i + 8 * k, AtomicU64::new(0));
            }
        }
        for p in 0..geo.cap as usize {
            w64.insert(geo.slots_off + p * geo.stride, AtomicU64::new(0));
        }
        for k in 0..geo.max_handles * geo.stash {
            w64.insert(geo.stash_off + k * geo.stride, AtomicU64::new(0));
        }
        let mut w32 = std::collections::BTreeMap::new();
        for off in [OFF_DATA_WAIT, OFF_SPACE_WAIT, OFF_JOIN_WAIT] {
            w32.insert(off, AtomicU32::new(0));
            w32.insert(off + 4, AtomicU32::new(0));
            w32.insert(off + 8, AtomicU32::new(0));
        }
        let shadow = Box::leak(Box::new(Shadow { w64, w32 }));
        Ring { base, geo, shadow }
    }

    #[cfg(shmkit_loom)]
    fn u64_at(&self, off: usize) -> &AtomicU64 {
        &self.shadow.w64[&off]
    }

    #[cfg(shmkit_loom)]
    fn u32_at(&self, off: usize) -> &AtomicU32 {
        &self.shadow.w32[&off]
    }

    #[cfg(not(shmkit_loom))]
    #[inline]
    fn u64_at(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off + 8 <= self.geo.total && off % 8 == 0);
        // Every caller passes a constant control offset or one computed from a position
        // reduced modulo the capacity, so `off + 8 <= total` (struct invariant).
        // SAFETY: in bounds (above), 8-aligned (offsets are multiples of 8, the base is
        // 64-aligned), and the word is only ever accessed atomically.
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    #[cfg(not(shmkit_loom))]
    #[inline]
    fn u32_at(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off + 4 <= self.geo.total && off % 4 == 0);
        // SAFETY: as for `u64_at`.
        unsafe { &*(self.base.add(off) as *const AtomicU32) }
    }

    pub(crate) fn tail(&self) -> &AtomicU64 {
        self.u64_at(OFF_TAIL)
    }
    pub(crate) fn head(&self) -> &AtomicU64 {
        self.u64_at(OFF_HEAD)
    }
    /// The `mode` word of the wait point at `off` (version-4 rings; module docs of
    /// `wait`, "Symmetric mode"). None in the loom build, whose fences are all `SeqCst`.
    #[inline]
    fn fence_mode_word(&self, off: usize) -> Option<&AtomicU32> {
        if cfg!(shmkit_loom) || !self.geo.fence_mode {
            None
        } else {
            Some(self.u32_at(off + 12))
        }
    }
    pub(crate) fn data_wait(&self) -> super::wait::WaitPoint<'_> {
        super::wait::WaitPoint {
            word: self.u32_at(OFF_DATA_WAIT),
            sleepers: self.u32_at(OFF_DATA_WAIT + 4),
            armed: self.u32_at(OFF_DATA_WAIT + 8),
            mode: self.fence_mode_word(OFF_DATA_WAIT),
        }
    }
    pub(crate) fn space_wait(&self) -> super::wait::WaitPoint<'_> {
        super::wait::WaitPoint {
            word: self.u32_at(OFF_SPACE_WAIT),
            sleepers: self.u32_at(OFF_SPACE_WAIT + 4),
            armed: self.u32_at(OFF_SPACE_WAIT + 8),
            mode: self.fence_mode_word(OFF_SPACE_WAIT),
        }
    }
    pub(crate) fn join_wait(&self) -> super::wait::WaitPoint<'_> {
        super::wait::WaitPoint {
            word: self.u32_at(OFF_JOIN_WAIT),
            sleepers: self.u32_at(OFF_JOIN_WAIT + 4),
            armed: self.u32_at(OFF_JOIN_WAIT + 8),
            mode: self.fence_mode_word(OFF_JOIN_WAIT),
        }
    }
    pub(crate) fn peer_deaths(&self) -> &AtomicU64 {
        self.u64_at(OFF_STATS)
    }
    pub(crate) fn last_dead_pid(&self) -> &AtomicU64 {
        self.u64_at(OFF_STATS + 8)
    }
    fn role_word(&self, role: u64) -> &AtomicU64 {
        self.u64_at(OFF_STATS + if role == ROLE_PRODUCER { 16 } else { 24 })
    }
    /// Peer count word of `role` ([`ROLE_SENDER`] or [`ROLE_RECEIVER`]).
    pub(crate) fn peers(&self, role: u64) -> &AtomicU64 {
        self.u64_at(OFF_STATS + if role == ROLE_SENDER { 32 } else { 40 })
    }
    /// Tasks abandoned by dead consumers whose entries were taken over before a `join`
    /// reported them.
    pub(crate) fn lost_tasks(&self) -> &AtomicU64 {
        self.u64_at(OFF_STATS + 48)
    }

    fn entry(&self, i: usize) -> usize {
        OFF_PARTICIPANTS + LINE * (i % self.geo.max_handles)
    }
    pub(crate) fn owner(&self, i: usize) -> &AtomicU64 {
        self.u64_at(self.entry(i))
    }
    pub(crate) fn intent(&self, i: usize) -> &AtomicU64 {
        self.u64_at(self.entry(i) + 8)
    }
    pub(crate) fn outstanding(&self, i: usize) -> &AtomicU64 {
        self.u64_at(self.entry(i) + 16)
    }
    pub(crate) fn roles(&self, i: usize) -> &AtomicU64 {
        self.u64_at(self.entry(i) + 24)
    }
    /// How many positions after `intent` a batch receive ([`Ring::mpmc_claim_recv_many`])
    /// claimed too (0 for a single claim).
    pub(crate) fn intent_more(&self, i: usize) -> &AtomicU64 {
        self.u64_at(self.entry(i) + 32)
    }
    /// Tasks entry `i` received and has not marked done (the count half of its
    /// `outstanding` word; the high half is its owner's token, see `take_lost`).
    pub(crate) fn tasks(&self, i: usize) -> u64 {
        self.outstanding(i).load(Ordering::Acquire) & COUNT_MASK
    }

    #[inline]
    fn slot(&self, p: u64) -> usize {
        self.geo.slots_off + (p & (self.geo.cap - 1)) as usize * self.geo.stride
    }
    #[inline]
    pub(crate) fn seq(&self, p: u64) -> &AtomicU64 {
        self.u64_at(self.slot(p))
    }
    /// Pointer to the data of position `p`'s slot (`geo.data_len` bytes, aligned to the
    /// data alignment given to [`Geometry::new`]).
    #[inline]
    pub(crate) fn data(&self, p: u64) -> *mut u8 {
        // SAFETY: slot(p) + data_off + data_len <= slots_off + cap * stride = total.
        unsafe { self.base.add(self.slot(p) + self.geo.data_off) }
    }

    /// Writes a fresh ring: zero counters, every slot EMPTY for its first lap, no
    /// participants. Only for a ring nobody else uses yet.
    pub(crate) fn init(&self) {
        for off in (0..OFF_PARTICIPANTS).step_by(8) {
            self.u64_at(off).store(0, Ordering::Relaxed);
        }
        for i in 0..self.geo.max_handles {
            self.owner(i).store(0, Ordering::Relaxed);
            self.intent(i).store(NO_INTENT, Ordering::Relaxed);
            self.intent_more(i).store(0, Ordering::Relaxed);
            self.outstanding(i).store(0, Ordering::Relaxed);
            self.roles(i).store(0, Ordering::Relaxed);
        }
        for p in 0..self.geo.cap {
            self.seq(p).store(empty(p), Ordering::Relaxed);
        }
        for i in 0..self.geo.max_handles {
            for j in 0..self.geo.stash {
                self.stash_state(i, j).store(0, Ordering::Relaxed);
            }
        }
    }

    /// Approximate number of messages (claimed positions not yet released).
    pub(crate) fn len(&self) -> u64 {
        let h = self.head().load(Ordering::Relaxed);
        let t = self.tail().load(Ordering::Relaxed);
        let d = t.wrapping_sub(h);
        if (d as i64) < 0 {
            0
        } else {
            d.min(self.geo.cap)
        }
    }

    fn corrupt(&self, what: &str, p: u64, s: u64) -> Corrupt {
        Corrupt(format!(
            "{what}: slot {} holds sequence {s:#x}, which is not legal at position {p} (capacity {})",
            p & (self.geo.cap - 1),
            self.geo.cap
        ))
    }

    // ---------------------------------------------------------------- participants

    /// Whether owner word `o` names a live participant (not free, not noted dead, and
    /// `is_alive` says so).
    #[inline]
    fn alive(o: u64, is_alive: &dyn Fn(u64) -> bool) -> bool {
        o != 0 && o & OWNER_DEAD == 0 && is_alive(o)
    }

    /// Takes a participant entry for `me` (an owner word, never 0): a free one, or one
    /// whose owner `is_alive` says is dead. `None` if all are taken by live processes.
    pub(crate) fn register(&self, me: u64, is_alive: &dyn Fn(u64) -> bool) -> Option<usize> {
        // Free entries first: a dead entry keeps its intent, which tells whoever recovers
        // its claim which pid died, and its outstanding tasks, which `join` reports.
        for pass in 0..2 {
            for i in 0..self.geo.max_handles {
                let mut cur = self.owner(i).load(Ordering::Acquire);
                loop {
                    let usable = if pass == 0 {
                        cur == 0
                    } else {
                        cur != 0 && !Self::alive(cur, is_alive)
                    };
                    if !usable {
                        break;
                    }
                    // A failed CAS re-checks the new value: a sweeper marking the dead
                    // owner (loom found `register` giving up on the only usable entry).
                    if let Err(x) =
                        self.owner(i)
                            .compare_exchange(cur, me, Ordering::AcqRel, Ordering::Acquire)
                    {
                        cur = x;
                        continue;
                    }
                    self.intent(i).store(NO_INTENT, Ordering::Release);
                    self.intent_more(i).store(0, Ordering::Release);
                    let lost = self
                        .outstanding(i)
                        .swap((me & TOKEN_MASK) << 32, Ordering::AcqRel)
                        & COUNT_MASK;
                    let old = self
                        .roles(i)
                        .swap((me & TOKEN_MASK) << 32, Ordering::AcqRel);
                    if cur != 0 {
                        if cur & OWNER_DEAD == 0 {
                            self.note_death(cur);
                        }
                        self.detach_bits(old);
                        if lost != 0 {
                            let _ = self.lost_tasks().fetch_update(
                                Ordering::AcqRel,
                                Ordering::Acquire,
                                |x| Some(x.saturating_add(lost)),
                            );
                        }
                    }
                    return Some(i);
                }
            }
        }
        None
    }

    /// Gives entry `i` back.
    pub(crate) fn unregister(&self, i: usize) {
        for role in [ROLE_PRODUCER, ROLE_CONSUMER] {
            let _ = self.role_word(role).compare_exchange(
                i as u64 + 1,
                0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        self.intent(i).store(NO_INTENT, Ordering::Release);
        self.intent_more(i).store(0, Ordering::Release);
        self.outstanding(i).store(0, Ordering::Release);
        let old = self.roles(i).swap(0, Ordering::AcqRel);
        self.detach_bits(old);
        self.owner(i).store(0, Ordering::Release);
        self.join_wait().wake();
    }

    /// Attaches entry `me` as a sender or receiver (`role` is [`ROLE_SENDER`] or
    /// [`ROLE_RECEIVER`]); a no-op if it already is one.
    pub(crate) fn attach(&self, me: usize, role: u64) {
        if self.roles(me).load(Ordering::Relaxed) & role != 0 {
            return;
        }
        // Announce, count, then flag. A process killed after counting and before flagging
        // leaves the count one too high, which the liveness sweep of a blocked peer
        // overrules (see `sweep`); the announcement (`attaching(role)`) makes that sweep
        // count a live process in between as attached: without it, a sweep could find no
        // flagged entry and report the first producer `Disconnected` while it attaches
        // (found by loom). A dead entry's announcement alone is never discounted: whether
        // it counted is unknown, and a count one too high is the safe side.
        let pending = attaching(role);
        self.roles(me).fetch_or(pending, Ordering::AcqRel);
        let _ = self
            .peers(role)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |x| {
                Some((x & COUNT_MASK).saturating_add(1).min(COUNT_MASK) | EVER)
            });
        let prev = self.roles(me).fetch_or(role, Ordering::AcqRel);
        self.roles(me).fetch_and(!pending, Ordering::AcqRel);
        if prev & role != 0 {
            // Somebody (a hostile peer) set it meanwhile: do not count twice.
            self.leave(role);
        }
    }

    /// Detaches entry `me` from `role`; a no-op if it is not attached.
    pub(crate) fn detach(&self, me: usize, role: u64) {
        if self.roles(me).fetch_and(!role, Ordering::AcqRel) & role != 0 {
            self.leave(role);
        }
    }

    /// Decrements the count of every sender/receiver bit in `roles` (just cleared).
    fn detach_bits(&self, roles: u64) {
        for role in [ROLE_SENDER, ROLE_RECEIVER] {
            if roles & role != 0 {
                self.leave(role);
            }
        }
    }

    /// One participant of `role` left: decrement (saturating); wake the other side when
    /// the last one left, so that its blocked calls see the disconnection at once.
    fn leave(&self, role: u64) {
        let prev = self
            .peers(role)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |x| {
                Some(if x & COUNT_MASK == 0 { x } else { x - 1 })
            })
            .unwrap_or_else(|x| x);
        if prev & COUNT_MASK <= 1 {
            if role == ROLE_SENDER {
                self.data_wait().wake();
            } else {
                self.space_wait().wake();
            }
        }
    }

    /// Whether every participant of `role` that ever attached is gone, by the count
    /// alone (one load). A dead participant still counts until somebody sweeps.
    #[inline]
    pub(crate) fn peers_gone(&self, role: u64) -> bool {
        self.peers(role).load(Ordering::Acquire) == EVER
    }

    /// Notes that entry `i`, owned by `owner`, died (exactly once per death, whoever
    /// calls): counts it in `peer_deaths` and discounts its roles. Returns whether this
    /// call noted it.
    fn note_dead_entry(&self, i: usize, owner: u64) -> bool {
        if owner == 0
            || owner & OWNER_DEAD != 0
            || self
                .owner(i)
                .compare_exchange(
                    owner,
                    owner | OWNER_DEAD,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return false;
        }
        self.note_death(owner);
        let w = self.roles(i);
        let mut r = w.load(Ordering::Acquire);
        // The CAS names the dead owner's token: if `register` gave the entry to somebody
        // else meanwhile, their roles are left alone (register discounted the dead ones).
        while r >> 32 == owner & TOKEN_MASK && r & (ROLE_SENDER | ROLE_RECEIVER) != 0 {
            match w.compare_exchange(
                r,
                r & !(ROLE_SENDER | ROLE_RECEIVER),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.detach_bits(r);
                    break;
                }
                Err(x) => r = x,
            }
        }
        self.join_wait().wake();
        true
    }

    /// Checks the liveness of every participant that holds (or is attaching) a
    /// sender/receiver role or outstanding tasks, notes the dead (see `note_dead_entry`),
    /// and returns how many live participants hold or are attaching `role`. One `is_alive` call per such entry: for blocked
    /// callers, rate-limited by them.
    pub(crate) fn sweep(&self, role: u64, is_alive: &dyn Fn(u64) -> bool) -> u64 {
        let mut live = 0;
        for i in 0..self.geo.max_handles {
            let o = self.owner(i).load(Ordering::Acquire);
            if o == 0 || o & OWNER_DEAD != 0 {
                continue;
            }
            let r = self.roles(i).load(Ordering::Acquire);
            let attached = ROLE_SENDER | ROLE_RECEIVER | ATTACHING_SENDER | ATTACHING_RECEIVER;
            let busy = r & attached != 0 || self.tasks(i) != 0;
            if !busy {
                continue;
            }
            if is_alive(o) {
                live += u64::from(r & (role | attaching(role)) != 0);
            } else {
                self.note_dead_entry(i, o);
            }
        }
        live
    }

    /// Dead consumers' abandoned tasks, taken (each is reported once): entries noted dead
    /// (or found dead now) with outstanding tasks, as `(pid, tasks)`, plus the count of
    /// those whose entries were already taken over (pid unknown, `pid` 0). Tasks the dead
    /// left in the stash are not lost: their number is returned (for `requeue_stashed`).
    pub(crate) fn take_lost(
        &self,
        is_alive: &dyn Fn(u64) -> bool,
        out: &mut Vec<(u32, u64)>,
    ) -> u64 {
        for i in 0..self.geo.max_handles {
            if self.tasks(i) == 0 {
                continue;
            }
            let o = self.owner(i).load(Ordering::Acquire);
            if o == 0 || Self::alive(o, is_alive) {
                continue;
            }
            self.note_dead_entry(i, o);
            // The CAS names the dead owner's token: once `register` has given the entry
            // to somebody else (and re-tagged the word, taking the dead tasks itself),
            // the new owner's tasks are left alone. (An owner re-check before a swap was
            // not enough: loom found the new owner's task taken and reported lost.)
            let w = self.outstanding(i);
            let tag = (o & TOKEN_MASK) << 32;
            let mut x = w.load(Ordering::Acquire);
            while x & !COUNT_MASK == tag && x & COUNT_MASK != 0 {
                match w.compare_exchange(x, tag, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        out.push(((o >> 32) as u32, x & COUNT_MASK));
                        break;
                    }
                    Err(y) => x = y,
                }
            }
        }
        let n = self.lost_tasks().swap(0, Ordering::AcqRel);
        if n != 0 {
            out.push((0, n));
        }
        // Tasks dead consumers left in the stash are not lost: their number is returned,
        // for the caller to re-queue them (`requeue_stashed`) before it reports.
        let mut pending = 0;
        for i in 0..self.geo.max_handles {
            for j in 0..self.geo.stash {
                let s = self.stash_state(i, j).load(Ordering::Acquire);
                if s & STASH_FULL != 0 {
                    let o = s & !(STASH_FULL | STASH_MOVING);
                    if !is_alive(o)
                        || (s & STASH_MOVING == 0 && o != self.owner(i).load(Ordering::Acquire))
                    {
                        pending += 1;
                    }
                }
            }
        }
        pending
    }

    /// SPSC: takes the producer or consumer role for entry `me`. Fails with the holder's
    /// owner word if a live participant holds it.
    pub(crate) fn take_role(
        &self,
        me: usize,
        role: u64,
        is_alive: &dyn Fn(u64) -> bool,
    ) -> Result<(), u64> {
        let w = self.role_word(role);
        loop {
            let cur = w.load(Ordering::Acquire);
            if cur == me as u64 + 1 {
                return Ok(());
            }
            if cur != 0 {
                // Valid holder: an entry in range, still flagged, whose owner is alive.
                let k = (cur - 1) as usize;
                if k < self.geo.max_handles {
                    let owner = self.owner(k).load(Ordering::Acquire);
                    if self.roles(k).load(Ordering::Acquire) & role != 0
                        && Self::alive(owner, is_alive)
                    {
                        return Err(owner);
                    }
                }
            }
            // Flag the role in our entry *before* taking the word: whoever sees the word
            // naming us (Acquire) also sees the flag, and does not take the role from us.
            self.roles(me).fetch_or(role, Ordering::AcqRel);
            if w.compare_exchange(cur, me as u64 + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    /// Counts a dead peer.
    fn note_death(&self, owner: u64) {
        self.peer_deaths().fetch_add(1, Ordering::AcqRel);
        if owner != 0 {
            self.last_dead_pid().store(owner >> 32, Ordering::Release);
        }
    }

    // ---------------------------------------------------------------- MPMC

    /// MPMC producer: claims the next position for entry `me`.
    pub(crate) fn mpmc_claim_send(&self, me: usize) -> Result<Result<u64, Blocked>, Corrupt> {
        let cap = self.geo.cap;
        let mut p = self.tail().load(Ordering::Acquire);
        loop {
            let s = self.seq(p).load(Ordering::Acquire);
            if s == empty(p) {
                self.intent(me).store(p.wrapping_mul(2), Ordering::Relaxed);
                // Release: the intent is visible to whoever sees the new tail.
                match self.tail().compare_exchange_weak(
                    p,
                    p.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Ok(Ok(p)),
                    Err(t) => p = t,
                }
                continue;
            }
            let prev = p.wrapping_sub(cap);
            let blocked = if s == full(prev) {
                // Last lap's message: unread (full), or claimed by a consumer still reading.
                let h = self.head().load(Ordering::Acquire);
                if after(h, prev) {
                    Blocked::InFlight {
                        pos: prev,
                        reader: true,
                    }
                } else {
                    Blocked::Idle
                }
            } else if s == empty(prev) {
                // Last lap's claim not yet published: full (consumers recover dead claims).
                Blocked::Idle
            } else if lap_diff(s, p, cap).is_some_and(|d| d >= 0) {
                // Somebody got further (any number of laps): our tail snapshot is stale.
                let t = self.tail().load(Ordering::Acquire);
                if t == p {
                    return Err(self.corrupt("send", p, s));
                }
                p = t;
                continue;
            } else {
                return Err(self.corrupt("send", p, s));
            };
            self.intent(me).store(NO_INTENT, Ordering::Release);
            return Ok(Err(blocked));
        }
    }

    /// MPMC producer: publishes position `p` (data written).
    #[inline]
    pub(crate) fn mpmc_publish(&self, me: usize, p: u64) {
        self.seq(p).store(full(p), Ordering::Release);
        self.intent(me).store(NO_INTENT, Ordering::Release);
        self.data_wait().wake();
    }

    /// MPMC producer: gives up claimed position `p` without a message (consumers skip it).
    pub(crate) fn mpmc_cancel(&self, me: usize, p: u64) {
        self.seq(p)
            .store(empty(p.wrapping_add(self.geo.cap)), Ordering::Release);
        self.intent(me).store(NO_INTENT, Ordering::Release);
        // Consumers waiting at p must move on; producers may now use the slot.
        self.data_wait().wake();
        self.space_wait().wake();
    }

    /// MPMC consumer: claims the next position for entry `me`. `count` adds one to the
    /// entry's outstanding tasks (joinable queues) before the claim becomes visible.
    pub(crate) fn mpmc_claim_recv(
        &self,
        me: usize,
        count: bool,
    ) -> Result<Result<u64, Blocked>, Corrupt> {
        let cap = self.geo.cap;
        let mut p = self.head().load(Ordering::Acquire);
        let mut skips = 0u64;
        loop {
            let s = self.seq(p).load(Ordering::Acquire);
            if s == full(p) {
                self.intent(me)
                    .store(p.wrapping_mul(2) | 1, Ordering::Relaxed);
                if count {
                    self.outstanding(me).fetch_add(1, Ordering::Relaxed);
                }
                match self.head().compare_exchange_weak(
                    p,
                    p.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Ok(Ok(p)),
                    Err(h) => {
                        if count {
                            self.outstanding(me).fetch_sub(1, Ordering::Relaxed);
                        }
                        p = h;
                    }
                }
                continue;
            }
            let blocked = if s == empty(p) {
                // Empty, or claimed by a producer that has not published yet. Telling the
                // two apart needs `tail`, a line the producers write: reading it on every
                // spin would steal it from them, so `recover` reads it, rarely.
                Blocked::InFlight {
                    pos: p,
                    reader: false,
                }
            } else if s == full(p.wrapping_sub(cap)) {
                // A slow consumer still reads last lap's message: nothing for us yet.
                Blocked::Idle
            } else if let Some(d) = lap_diff(s, p, cap).filter(|&d| d > 0) {
                // Released or skipped (possibly laps ago: our head snapshot is stale). If
                // head is still here the slot was skipped (a cancelled or dead producer's
                // claim): help head past it. A skipped slot is free for the next lap, so
                // it may be any number of laps ahead (cancels at p, p + cap, ... before a
                // consumer passes p: the fuzz model found this called corrupt), but not
                // past what producers claimed (read `tail` only then: rare). Each help
                // moves head by one claimed position; a bounded number per call keeps a
                // hostile far-ahead state from holding us here.
                let h = self.head().load(Ordering::Acquire);
                if h == p {
                    if d != cap as i64 {
                        let t = self.tail().load(Ordering::Acquire);
                        if !after(t.wrapping_add(cap), p.wrapping_add(d as u64)) {
                            return Err(self.corrupt("recv", p, s));
                        }
                    }
                    skips += 1;
                    if skips > cap.saturating_mul(2).saturating_add(64) {
                        self.intent(me).store(NO_INTENT, Ordering::Release);
                        return Ok(Err(Blocked::Idle));
                    }
                    let _ = self.head().compare_exchange(
                        p,
                        p.wrapping_add(1),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    p = self.head().load(Ordering::Acquire);
                } else {
                    p = h;
                }
                continue;
            } else {
                return Err(self.corrupt("recv", p, s));
            };
            self.intent(me).store(NO_INTENT, Ordering::Release);
            return Ok(Err(blocked));
        }
    }

    /// Whether entry `i`, whose intent word reads `it`, announced a batch receive that
    /// claimed `pos` after its first position. (A stale `intent_more` can only add a
    /// false match, which delays a recovery while that entry's owner lives, or names
    /// the wrong dead pid: the true claimer's entry always matches, and a live match
    /// stops the recovery.)
    fn in_batch(&self, i: usize, it: u64, pos: u64) -> bool {
        if it == NO_INTENT || it & 1 == 0 {
            return false;
        }
        let more = self.intent_more(i).load(Ordering::Acquire);
        let d = pos.wrapping_sub(it >> 1) & (u64::MAX >> 1);
        more < self.geo.cap && d >= 1 && d <= more
    }

    /// MPMC consumer: claims up to `max` consecutive published positions for entry `me`
    /// with one CAS of `head` (a batch receive), as `(first, count)`. The claim is
    /// announced as `intent` (the first position) and `intent_more` (count - 1), so that
    /// a batch whose owner died is recovered position by position (see `recover`). Falls
    /// back to [`Self::mpmc_claim_recv`] when fewer than two are ready.
    pub(crate) fn mpmc_claim_recv_many(
        &self,
        me: usize,
        max: u64,
        count: bool,
    ) -> Result<Result<(u64, u64), Blocked>, Corrupt> {
        let max = max.min(self.geo.cap);
        loop {
            let p = self.head().load(Ordering::Acquire);
            let mut k = 0;
            while k < max
                && self.seq(p.wrapping_add(k)).load(Ordering::Acquire) == full(p.wrapping_add(k))
            {
                k += 1;
            }
            if k < 2 {
                return Ok(self.mpmc_claim_recv(me, count)?.map(|p| (p, 1)));
            }
            self.intent(me)
                .store(p.wrapping_mul(2) | 1, Ordering::Relaxed);
            self.intent_more(me).store(k - 1, Ordering::Relaxed);
            if count {
                self.outstanding(me).fetch_add(k, Ordering::Relaxed);
            }
            // Release: the intent is visible to whoever sees the new head.
            if self
                .head()
                .compare_exchange(p, p.wrapping_add(k), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(Ok((p, k)));
            }
            if count {
                self.outstanding(me).fetch_sub(k, Ordering::Relaxed);
            }
            self.intent_more(me).store(0, Ordering::Relaxed);
        }
    }

    /// MPMC consumer: releases the `k` positions from `p` of a batch receive (data read),
    /// with one wake-up check.
    pub(crate) fn mpmc_release_many(&self, me: usize, p: u64, k: u64) {
        for i in 0..k {
            let q = p.wrapping_add(i);
            self.seq(q)
                .store(empty(q.wrapping_add(self.geo.cap)), Ordering::Release);
        }
        self.intent_more(me).store(0, Ordering::Release);
        self.intent(me).store(NO_INTENT, Ordering::Release);
        self.wake_space(None);
    }

    /// SPSC consumer: how many consecutive positions from `p` hold a message (at most
    /// `max`; stops at anything else, such as a skipped slot).
    pub(crate) fn spsc_run(&self, p: u64, max: u64) -> u64 {
        let max = max.min(self.geo.cap);
        let mut k = 0;
        while k < max
            && self.seq(p.wrapping_add(k)).load(Ordering::Acquire) == full(p.wrapping_add(k))
        {
            k += 1;
        }
        k
    }

    /// MPMC consumer: releases position `p` (data read).
    #[inline]
    pub(crate) fn mpmc_release(&self, me: usize, p: u64) {
        self.seq(p)
            .store(empty(p.wrapping_add(self.geo.cap)), Ordering::Release);
        self.intent(me).store(NO_INTENT, Ordering::Release);
        self.wake_space(None);
    }

    /// Free slots that wake producers asleep on a full ring: half the capacity (at least
    /// one), the low-water mark of a socket's send buffer (`sk_stream_write_space`). A
    /// producer woken at the first free slot fills it and sleeps again; with several
    /// processes to a core, every such wake-up is two context switches per message.
    #[inline]
    pub(crate) fn space_low_water(&self) -> u64 {
        (self.geo.cap / 2).max(1)
    }

    /// Consumer side, after releasing: wakes the producers asleep on a full ring once at
    /// least [`Self::space_low_water`] slots are free. `head` is the consumer's own next
    /// position where it alone advances `head` (SPSC); `None` reads the shared `head`.
    ///
    /// Why no sleeper is left behind for good: the count is `tail - head` with `head`
    /// read by a read-modify-write (the newest value; an older one would count the ring
    /// fuller than it is and skip a due wake-up) and `tail` by a load (an older value
    /// counts it emptier: an extra wake-up, harmless). The sleeper's re-check looks at
    /// its own slot only, so the handshake in `wait.rs` guarantees just that the
    /// consumer releasing that slot sees the sleeper. If that consumer's count is still
    /// above the mark, the claim that later brings the ring to the mark comes after its
    /// read-modify-write in `head`'s modification order, so the consumer that made it
    /// sees the sleeper too (the fences order its release after that consumer's) and
    /// wakes it when it releases. A consumer that stops receiving with the ring above
    /// the mark leaves the producers asleep until their sleep slice ends (at most
    /// [`super::wait::PARK_SLICE`]); they then find the free slots. So does a producer
    /// that spins and takes every freed slot before the ring reaches the mark: a parked
    /// producer beside it then sends once per slice at best. Garbage in `head` or `tail`
    /// makes wake-ups early or late by a slice, nothing else. The loom models
    /// `queue::loom::space_wakes_at_the_low_water_mark` (two consumers, either order)
    /// and `spsc_space_wakes_at_the_low_water_mark` check the wake-up.
    #[inline]
    pub(crate) fn wake_space(&self, head: Option<u64>) {
        self.space_wait().wake_when(|| {
            let h = match head {
                Some(h) => h,
                None => self.head().fetch_add(0, Ordering::AcqRel),
            };
            let used = self.tail().load(Ordering::Acquire).wrapping_sub(h) as i64;
            used <= (self.geo.cap - self.space_low_water()) as i64
        });
    }

    /// Recovers a claim that blocks us if its owner is dead. Returns the dead owner's word
    /// if this call recovered it, `None` if the claim is still (or may still be) live or
    /// was completed meanwhile.
    pub(crate) fn recover(
        &self,
        blocked: Blocked,
        is_alive: &dyn Fn(u64) -> bool,
    ) -> Result<Option<u64>, Corrupt> {
        let Blocked::InFlight { pos, reader } = blocked else {
            return Ok(None);
        };
        if !reader {
            // Is `pos` claimed at all?
            let t = self.tail().load(Ordering::Acquire);
            if t == pos {
                return Ok(None);
            }
            if !after(t, pos) {
                return Err(Corrupt(format!(
                    "recv: tail {t} is behind head {pos} (capacity {})",
                    self.geo.cap
                )));
            }
        }
        let want = pos.wrapping_mul(2) | reader as u64;
        let mut dead = None;
        for i in 0..self.geo.max_handles {
            // Acquire: an owner that finished and cleared its intent also published.
            let it = self.intent(i).load(Ordering::Acquire);
            if it != want && !(reader && self.in_batch(i, it, pos)) {
                continue;
            }
            let owner = self.owner(i).load(Ordering::Acquire);
            if Self::alive(owner, is_alive) {
                return Ok(None);
            }
            dead = Some((i, owner));
        }
        let (from, to) = if reader {
            (full(pos), empty(pos.wrapping_add(self.geo.cap)))
        } else {
            (empty(pos), empty(pos.wrapping_add(self.geo.cap)))
        };
        if self
            .seq(pos)
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return Ok(None);
        }
        if !reader {
            let _ = self.head().compare_exchange(
                pos,
                pos.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        // The dead entry's outstanding count is abandoned (see `unfinished`, `take_lost`);
        // the death is counted once per participant, by whoever notices it first.
        let dead_owner = match dead {
            Some((i, owner)) => {
                self.note_dead_entry(i, owner);
                owner & !OWNER_DEAD
            }
            None => 0,
        };
        self.data_wait().wake();
        self.space_wait().wake();
        self.join_wait().wake();
        Ok(Some(dead_owner))
    }

    // ---------------------------------------------------------------- SPSC

    /// SPSC producer: where to start, skipping positions a dead predecessor published
    /// without advancing `tail`.
    pub(crate) fn spsc_producer_start(&self) -> Result<u64, Corrupt> {
        let mut p = self.tail().load(Ordering::Acquire);
        for _ in 0..=self.geo.cap {
            let s = self.seq(p).load(Ordering::Acquire);
            if s == full(p)
                || s == empty(p.wrapping_add(self.geo.cap))
                || s == full(p.wrapping_add(self.geo.cap))
            {
                p = p.wrapping_add(1);
            } else {
                self.tail().store(p, Ordering::Release);
                return Ok(p);
            }
        }
        Err(Corrupt("spsc: no free position found from tail".into()))
    }

    /// SPSC consumer: where to start.
    pub(crate) fn spsc_consumer_start(&self) -> u64 {
        self.head().load(Ordering::Acquire)
    }

    /// SPSC producer: is position `p` free, given the consumer's `head`? (In SPSC mode the
    /// consumer frees slots by advancing `head` only; the slot keeps `full(p - cap)`.)
    /// Validates the slot's state, and that `head` is not past `p` (the consumer cannot
    /// pass the producer). The queue's send fast path trusts `head` alone; this check
    /// runs on a producer's first send and whenever `head` says full or is past `p`
    /// (see ARCHITECTURE.md, "Queue").
    #[inline]
    pub(crate) fn spsc_can_send(&self, p: u64, head: u64) -> Result<bool, Corrupt> {
        let Some(free) = self.spsc_free(p, head) else {
            return Err(Corrupt(format!(
                "send (spsc): head {head} is past the producer's position {p}"
            )));
        };
        let s = self.seq(p).load(Ordering::Acquire);
        if s == empty(p) || s == full(p.wrapping_sub(self.geo.cap)) {
            Ok(free)
        } else {
            Err(self.corrupt("send (spsc)", p, s))
        }
    }

    /// SPSC consumer fast path: whether the message at `p` is published (`seq`: the
    /// slot's word, [`Self::seq`]`(p)`, located once by a caller that polls). Any other state
    /// (empty, skipped, garbage) is left to [`Self::spsc_can_recv`], which skips and
    /// validates.
    #[inline(always)]
    pub(crate) fn spsc_ready(seq: &AtomicU64, p: u64) -> bool {
        seq.load(Ordering::Acquire) == full(p)
    }

    /// SPSC producer, fast path: whether `p` is free by `head` alone, without reading the
    /// slot (see ARCHITECTURE.md, "Queue"); `None` when `head` is past `p`, which the
    /// general path ([`Self::spsc_can_send`]) reports as corruption.
    #[inline(always)]
    pub(crate) fn spsc_free(&self, p: u64, head: u64) -> Option<bool> {
        if after(head, p) {
            return None;
        }
        Some(after(head.wrapping_add(self.geo.cap), p))
    }

    /// SPSC producer: publishes `p`.
    #[inline(always)]
    pub(crate) fn spsc_publish(&self, p: u64) {
        self.seq(p).store(full(p), Ordering::Release);
        self.tail().store(p.wrapping_add(1), Ordering::Release);
        self.data_wait().wake();
    }

    /// SPSC producer: gives `p` up without a message.
    pub(crate) fn spsc_cancel(&self, p: u64) {
        self.seq(p)
            .store(empty(p.wrapping_add(self.geo.cap)), Ordering::Release);
        self.tail().store(p.wrapping_add(1), Ordering::Relaxed);
        self.data_wait().wake();
    }

    /// SPSC consumer at `*p`: `Ok(true)` if a message is there; skips skipped slots.
    #[inline]
    pub(crate) fn spsc_can_recv(&self, p: &mut u64) -> Result<bool, Corrupt> {
        for _ in 0..=self.geo.cap {
            let s = self.seq(*p).load(Ordering::Acquire);
            if s == full(*p) {
                return Ok(true);
            }
            if s == empty(*p) || s == full(p.wrapping_sub(self.geo.cap)) {
                return Ok(false);
            }
            if s == empty(p.wrapping_add(self.geo.cap)) || s == full(p.wrapping_add(self.geo.cap)) {
                // Skipped (cancelled), possibly refilled on the next lap.
                *p = p.wrapping_add(1);
                // Release, as `spsc_release`: a producer that reads this `head` may reuse
                // the slots before it, which this consumer has finished reading.
                self.head().store(*p, Ordering::Release);
                continue;
            }
            return Err(self.corrupt("recv (spsc)", *p, s));
        }
        Err(Corrupt("recv (spsc): every slot is marked skipped".into()))
    }

    /// SPSC consumer: releases `p` by advancing `head` (one store to a line only the
    /// consumer writes; the slot's own line is left alone, so the consumer's next store
    /// elsewhere is not queued behind a write to a line the producer is about to take).
    #[inline(always)]
    pub(crate) fn spsc_release(&self, p: u64) {
        // Release: the data was read before, and a joinable consumer's outstanding count
        // is visible with the new head.
        self.head().store(p.wrapping_add(1), Ordering::Release);
        self.wake_space(Some(p.wrapping_add(1)));
    }

    // ---------------------------------------------------------------- stash

    /// Offset of stash slot `j` of entry `i` (only called when the ring has a stash).
    #[inline]
    fn stash_slot(&self, i: usize, j: usize) -> usize {
        debug_assert!(self.geo.stash > 0);
        let k = (i % self.geo.max_handles) * self.geo.stash + j % self.geo.stash.max(1);
        self.geo.stash_off + k * self.geo.stride
    }
    /// State word of stash slot `j` of entry `i`: 0 free, `owner | STASH_FULL` holding a
    /// task of that owner, `mover | STASH_FULL | STASH_MOVING` being re-queued.
    pub(crate) fn stash_state(&self, i: usize, j: usize) -> &AtomicU64 {
        self.u64_at(self.stash_slot(i, j))
    }
    /// Pointer to the data of stash slot `j` of entry `i` (`geo.data_len` bytes, aligned
    /// like a ring slot's data).
    pub(crate) fn stash_data(&self, i: usize, j: usize) -> *mut u8 {
        // SAFETY: stash_slot(i, j) + data_off + data_len <= stash_off + max_handles *
        // stash * stride = total (`Geometry::with_stash`).
        unsafe { self.base.add(self.stash_slot(i, j) + self.geo.data_off) }
    }

    /// A free stash slot of entry `me`. Only the entry's owner fills a free slot, so it
    /// stays free until the owner fills it.
    pub(crate) fn stash_free(&self, me: usize) -> Option<usize> {
        // Acquire: a re-queuer that freed the slot has finished reading its data.
        (0..self.geo.stash).find(|&j| self.stash_state(me, j).load(Ordering::Acquire) == 0)
    }

    /// Marks stash slot `j` of entry `me` as holding a task of `owner` (its data written),
    /// and moves the task from the entry's outstanding count (where the claim counted
    /// it) to the stash: a stashed task is counted by its FULL slot alone, so that a
    /// re-queuer never touches a count. (Killed between the two stores, the task is
    /// counted twice: reported lost and re-queued.)
    pub(crate) fn stash_fill(&self, me: usize, j: usize, owner: u64) {
        let o = owner & !(STASH_FULL | STASH_MOVING);
        self.stash_state(me, j)
            .store(o | STASH_FULL, Ordering::Release);
        self.outstanding(me).fetch_sub(1, Ordering::Release);
    }

    /// Frees stash slot `j` of entry `me` (its task is done). False if it no longer held
    /// `owner`'s task (a re-queuer took it: at-least-once).
    pub(crate) fn stash_clear(&self, me: usize, j: usize, owner: u64) -> bool {
        let o = owner & !(STASH_FULL | STASH_MOVING);
        let ok = self
            .stash_state(me, j)
            .compare_exchange(o | STASH_FULL, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        self.join_wait().wake();
        ok
    }

    /// Tasks of `owner` waiting in entry `i`'s stash (not being moved).
    fn stashed_by(&self, i: usize, owner: u64) -> u64 {
        let want = (owner & !(STASH_FULL | STASH_MOVING)) | STASH_FULL;
        (0..self.geo.stash)
            .filter(|&j| self.stash_state(i, j).load(Ordering::Acquire) == want)
            .count() as u64
    }

    /// Copies stash slot `(i, j)`'s data into the data of position `p` (both ours: the
    /// stash slot is marked moving by us, `p` is claimed by us).
    fn copy_stash_to_slot(&self, i: usize, j: usize, p: u64) {
        let mut chunk = [0u64; 32];
        let (src, dst) = (self.stash_data(i, j), self.data(p));
        let mut off = 0;
        while off < self.geo.data_len {
            let n = (self.geo.data_len - off).min(size_of_val(&chunk));
            // SAFETY: both areas are `data_len` bytes of this ring, 8-aligned (slot data
            // offsets and strides are multiples of 8), `off` a multiple of 256; `chunk`
            // is private and `n` bytes long at least.
            unsafe {
                super::copy::load(src.add(off), chunk.as_mut_ptr().cast(), n);
                super::copy::store(chunk.as_ptr().cast(), dst.add(off), n);
            }
            off += n;
        }
    }

    /// Moves the tasks stashed in entries `entries` by consumers that are gone back into
    /// the ring, sending through entry `me` (owner word `me_owner`); appends `(pid, 1)` per
    /// task moved to `out` (pid 0 if a re-queuer died moving it). A consumer is gone if
    /// `is_alive` says so or it no longer owns the entry (released or taken over). A
    /// re-queuer first marks the stash slot as moved by it (one CAS: one winner), then
    /// claims a position, copies, publishes, and frees the slot; one that dies in between
    /// leaves the slot marked with its owner word, and the next re-queuer moves it again
    /// (at-least-once: a task may be delivered twice if a re-queuer dies after publishing).
    /// With `mine`, the tasks stashed by `me_owner` itself count as gone too (a handle
    /// giving back its tasks on drop). Returns `Ok(true)` if the ring was full (some tasks
    /// stay stashed).
    pub(crate) fn requeue_stashed(
        &self,
        me: usize,
        me_owner: u64,
        mine: bool,
        entries: std::ops::Range<usize>,
        is_alive: &dyn Fn(u64) -> bool,
        out: &mut Vec<(u32, u64)>,
    ) -> Result<bool, Corrupt> {
        let me_o = me_owner & !(STASH_FULL | STASH_MOVING);
        let mover = (me_owner & !(STASH_FULL | STASH_MOVING)) | STASH_FULL | STASH_MOVING;
        let end = entries.end.min(self.geo.max_handles);
        for i in entries.start.min(end)..end {
            for j in 0..self.geo.stash {
                let w = self.stash_state(i, j);
                let s = w.load(Ordering::Acquire);
                if s & STASH_FULL == 0 || s == mover {
                    continue;
                }
                let o = s & !(STASH_FULL | STASH_MOVING);
                let gone = if s & STASH_MOVING != 0 {
                    !is_alive(o)
                } else {
                    // The owner word is read after the state: a new owner's task is seen
                    // only with the new owner word (it took the entry before stashing).
                    let cur = self.owner(i).load(Ordering::Acquire);
                    (mine && o == me_o)
                        || o != cur
                        || (!is_alive(o) && {
                            // Counted in `peer_deaths` like any dead participant.
                            self.note_dead_entry(i, cur);
                            true
                        })
                };
                if !gone
                    || w.compare_exchange(s, mover, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                {
                    continue;
                }
                let p = match self.mpmc_claim_send(me) {
                    Ok(Ok(p)) => p,
                    other => {
                        // Full (or corrupt): put the task back as it was.
                        let _ = w.compare_exchange(mover, s, Ordering::AcqRel, Ordering::Relaxed);
                        return other.map(|_| true);
                    }
                };
                self.copy_stash_to_slot(i, j, p);
                self.mpmc_publish(me, p);
                let _ = w.compare_exchange(mover, 0, Ordering::AcqRel, Ordering::Relaxed);
                let pid = if s & STASH_MOVING == 0 {
                    (o >> 32) as u32
                } else {
                    0
                };
                match out.iter_mut().find(|(p, _)| *p == pid) {
                    Some((_, n)) => *n += 1,
                    None => out.push((pid, 1)),
                }
            }
        }
        self.join_wait().wake();
        Ok(false)
    }

    // ---------------------------------------------------------------- joinable

    /// Tasks received and not yet marked done by live participants, plus messages still
    /// in the ring. `is_alive` is asked only about entries with outstanding tasks.
    pub(crate) fn unfinished(&self, is_alive: &dyn Fn(u64) -> bool) -> u64 {
        let t = self.tail().load(Ordering::Acquire);
        let h = self.head().load(Ordering::Acquire);
        let mut n = t.wrapping_sub(h);
        if (n as i64) < 0 {
            n = 0;
        }
        for i in 0..self.geo.max_handles {
            let mut o = self.tasks(i);
            let owner = self.owner(i).load(Ordering::Acquire);
            if self.geo.stash > 0 {
                o = o.saturating_add(self.stashed_by(i, owner));
            }
            if o == 0 {
                continue;
            }
            if Self::alive(owner, is_alive) {
                n = n.saturating_add(o);
            }
        }
        n
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A ring on a heap buffer (Miri-friendly).
    pub(crate) struct TestRing {
        _buf: Vec<u64>,
        pub ring: Ring,
    }

    pub(crate) fn test_ring(cap: u64, handles: u64) -> TestRing {
        test_ring_stash(cap, handles, 0)
    }

    pub(crate) fn test_ring_stash(cap: u64, handles: u64, depth: u64) -> TestRing {
        let geo = Geometry::new(cap, 8, 8, handles)
            .unwrap()
            .with_stash(depth)
            .unwrap();
        let mut buf = vec![0u64; geo.total / 8 + 16];
        let raw = buf.as_mut_ptr() as usize;
        let pad = (raw.next_multiple_of(128) - raw) / 8;
        let base = buf[pad..].as_mut_ptr() as *mut u8;
        // SAFETY: the buffer outlives the ring (both in TestRing) and is 128-aligned.
        let ring = unsafe { Ring::new(base, geo) };
        ring.init();
        TestRing { _buf: buf, ring }
    }

    fn send(r: &Ring, me: usize, v: u64) -> Result<bool, Corrupt> {
        match r.mpmc_claim_send(me)? {
            Ok(p) => {
                // SAFETY: 8 data bytes per slot.
                unsafe { r.data(p).cast::<u64>().write(v) };
                r.mpmc_publish(me, p);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    fn recv(r: &Ring, me: usize) -> Result<Option<u64>, Corrupt> {
        match r.mpmc_claim_recv(me, false)? {
            Ok(p) => {
                // SAFETY: 8 data bytes per slot.
                let v = unsafe { r.data(p).cast::<u64>().read() };
                r.mpmc_release(me, p);
                Ok(Some(v))
            }
            Err(_) => Ok(None),
        }
    }

    /// `Queue::recv_task` on the ring: claim (counted), copy into a free stash slot,
    /// release.
    fn recv_task(r: &Ring, me: usize, owner: u64) -> Option<(u64, usize)> {
        let j = r.stash_free(me)?;
        let p = r.mpmc_claim_recv(me, true).unwrap().ok()?;
        // SAFETY: 8 data bytes per slot and per stash slot.
        let v = unsafe { r.data(p).cast::<u64>().read() };
        // SAFETY: as above.
        unsafe { r.stash_data(me, j).cast::<u64>().write(v) };
        r.stash_fill(me, j, owner);
        r.mpmc_release(me, p);
        Some((v, j))
    }

    /// `Task::done` on the ring.
    fn task_done(r: &Ring, me: usize, owner: u64, j: usize) {
        assert!(r.stash_clear(me, j, owner));
    }

    #[test]
    fn stash_requeues_a_dead_consumers_tasks_once() {
        const C: u64 = 7 << 32 | 33;
        const P: u64 = 8 << 32 | 22;
        let t = test_ring_stash(4, 3, 4);
        let r = &t.ring;
        let dead = AtomicBool::new(false);
        let alive = |o: u64| !(o == C && dead.load(Ordering::Relaxed));
        let p = r.register(P, &alive).unwrap();
        let c = r.register(C, &alive).unwrap();
        for v in 1..=3 {
            assert_eq!(send(r, p, v), Ok(true));
        }
        let held: Vec<_> = (0..3).map(|_| recv_task(r, c, C).unwrap()).collect();
        task_done(r, c, C, held[0].1);
        assert_eq!(r.tasks(c), 0, "stashed tasks are counted by their slots");
        assert_eq!(r.unfinished(&alive), 2);
        let mut out = Vec::new();
        // Alive and owning its entry: nothing moves.
        assert_eq!(
            r.requeue_stashed(p, P, false, 0..3, &alive, &mut out),
            Ok(false)
        );
        assert!(out.is_empty());
        dead.store(true, Ordering::Relaxed);
        assert_eq!(
            r.unfinished(&alive),
            0,
            "a dead consumer's tasks are not waited for"
        );
        assert_eq!(
            r.requeue_stashed(p, P, false, 0..3, &alive, &mut out),
            Ok(false)
        );
        assert_eq!(out, vec![(7, 2)]);
        assert_eq!(r.unfinished(&alive), 2, "back in the ring");
        assert_eq!(recv(r, p), Ok(Some(2)));
        assert_eq!(recv(r, p), Ok(Some(3)));
        assert_eq!(recv(r, p), Ok(None));
        let mut lost = Vec::new();
        assert_eq!(r.take_lost(&alive, &mut lost), 0);
        assert!(lost.is_empty(), "{lost:?}");
        // Once only.
        out.clear();
        assert_eq!(
            r.requeue_stashed(p, P, false, 0..3, &alive, &mut out),
            Ok(false)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn stash_survives_takeover_and_a_full_ring() {
        const C: u64 = 7 << 32 | 33;
        const P: u64 = 8 << 32 | 22;
        const NEW: u64 = 9 << 32 | 44;
        let t = test_ring_stash(2, 2, 2);
        let r = &t.ring;
        let dead = AtomicBool::new(false);
        let alive = |o: u64| !(o == C && dead.load(Ordering::Relaxed));
        let p = r.register(P, &alive).unwrap();
        let c = r.register(C, &alive).unwrap();
        assert_eq!(send(r, p, 1), Ok(true));
        let (_, j) = recv_task(r, c, C).unwrap();
        dead.store(true, Ordering::Relaxed);
        // The new owner of the dead entry never uses the dead task's slot.
        assert_eq!(r.register(NEW, &alive), Some(c));
        assert_eq!(
            r.lost_tasks().load(Ordering::Relaxed),
            0,
            "stashed: not lost"
        );
        assert_ne!(r.stash_free(c), Some(j));
        assert_eq!(send(r, p, 2), Ok(true));
        let (v, k) = recv_task(r, c, NEW).unwrap();
        assert_eq!((v, r.stash_free(c)), (2, None));
        // A full ring: the dead task stays stashed, unharmed.
        assert_eq!(send(r, p, 3), Ok(true));
        assert_eq!(send(r, p, 4), Ok(true));
        let mut out = Vec::new();
        assert_eq!(
            r.requeue_stashed(p, P, false, 0..2, &alive, &mut out),
            Ok(true)
        );
        assert!(out.is_empty());
        assert_eq!(recv(r, p), Ok(Some(3)));
        assert_eq!(
            r.requeue_stashed(p, P, false, 0..2, &alive, &mut out),
            Ok(false)
        );
        assert_eq!(out, vec![(7, 1)], "the dead task, not the new owner's");
        assert_eq!(recv(r, p), Ok(Some(4)));
        assert_eq!(recv(r, p), Ok(Some(1)));
        task_done(r, c, NEW, k);
        assert_eq!(r.stash_free(c), Some(0));
    }

    #[test]
    fn hostile_stash_states_are_errors_or_garbage_never_ub() {
        const P: u64 = 8 << 32 | 22;
        let t = test_ring_stash(2, 2, 3);
        let r = &t.ring;
        let p = r.register(P, &|_| true).unwrap();
        for (k, w) in [
            u64::MAX,
            STASH_FULL,
            12345,
            STASH_FULL | STASH_MOVING | 5,
            0,
        ]
        .into_iter()
        .enumerate()
        {
            r.stash_state(1, k % 3).store(w, Ordering::Relaxed);
            r.stash_state(p, k % 3)
                .store(w.rotate_left(7), Ordering::Relaxed);
            let mut out = Vec::new();
            let _ = r.requeue_stashed(p, P, k % 2 == 0, 0..99, &|o| o == P, &mut out);
            let _ = r.stash_free(p);
            let _ = r.take_lost(&|o| o == P, &mut out);
            let _ = r.register(3, &|_| false);
        }
    }

    /// A batch receive, as `Queue::recv_many` does it (also used by the loom models).
    pub(crate) fn recv_many(r: &Ring, me: usize, max: u64) -> Result<Vec<u64>, Corrupt> {
        match r.mpmc_claim_recv_many(me, max, false)? {
            Ok((p, k)) => {
                // SAFETY: 8 data bytes per slot.
                let v = (0..k)
                    .map(|i| unsafe { r.data(p + i).cast::<u64>().read() })
                    .collect();
                if k > 1 {
                    r.mpmc_release_many(me, p, k);
                } else {
                    r.mpmc_release(me, p);
                }
                Ok(v)
            }
            Err(_) => Ok(Vec::new()),
        }
    }

    #[test]
    fn batch_receive_takes_a_run_and_a_dead_batch_is_recovered() {
        let t = test_ring(4, 3);
        let r = &t.ring;
        let dead = AtomicBool::new(false);
        let alive = |o: u64| !(o == 33 && dead.load(Ordering::Relaxed));
        let prod = r.register(22, &alive).unwrap();
        let cons = r.register(33, &alive).unwrap();
        for v in 0..3 {
            assert_eq!(send(r, prod, v), Ok(true));
        }
        assert_eq!(recv_many(r, prod, 8), Ok(vec![0, 1, 2]));
        // A skipped slot ends a run.
        assert_eq!(send(r, prod, 3), Ok(true));
        let c = r.mpmc_claim_send(prod).unwrap().unwrap();
        assert_eq!(send(r, prod, 4), Ok(true));
        r.mpmc_cancel(prod, c);
        assert_eq!(recv_many(r, prod, 8), Ok(vec![3]));
        assert_eq!(recv_many(r, prod, 8), Ok(vec![4]));
        assert_eq!(recv_many(r, prod, 8), Ok(vec![]));
        // A consumer claims a batch of three and dies before releasing it.
        for v in 10..14 {
            assert_eq!(send(r, prod, v), Ok(true));
        }
        let (p, k) = r.mpmc_claim_recv_many(cons, 3, false).unwrap().unwrap();
        assert_eq!(k, 3);
        assert_eq!(recv(r, prod), Ok(Some(13)));
        for i in 0..3 {
            let b = r.mpmc_claim_send(prod).unwrap().unwrap_err();
            assert_eq!(
                b,
                Blocked::InFlight {
                    pos: p + i,
                    reader: true
                }
            );
            if i == 0 {
                assert_eq!(r.recover(b, &alive), Ok(None), "live batch: wait");
                dead.store(true, Ordering::Relaxed);
            }
            assert_eq!(
                r.recover(b, &alive),
                Ok(Some(33)),
                "position {i} of the batch"
            );
            assert_eq!(send(r, prod, 20 + i), Ok(true));
        }
        assert_eq!(recv_many(r, prod, 2), Ok(vec![20, 21]));
        assert_eq!(recv_many(r, prod, 2), Ok(vec![22]));
    }

    #[test]
    fn geometry_rejects_bad_parameters() {
        assert!(Geometry::new(3, 8, 8, 4).is_none());
        assert!(Geometry::new(0, 8, 8, 4).is_none());
        assert!(Geometry::new(4, 8, 8, 0).is_none());
        assert!(Geometry::new(4, 8, 3, 4).is_none());
        assert!(Geometry::new(MAX_CAPACITY * 2, 8, 8, 4).is_none());
        let g = Geometry::new(4, 64, 8, 4).unwrap();
        assert_eq!(g.stride, 128);
        assert_eq!(g.slots_off % 128, 0);
        assert_eq!(g.total, g.slots_off + 4 * 128);
        assert_eq!(Geometry::new(4, 8, 8, 4).unwrap().stride, 16);
        assert_eq!(Geometry::new(4, 20, 4, 4).unwrap().stride, 32);
        assert_eq!(Geometry::new(4, 200, 8, 4).unwrap().stride, 256);
        let g = Geometry::new(4, 64, 64, 1).unwrap();
        assert_eq!((g.data_off, g.stride), (64, 128));
    }

    #[test]
    fn mpmc_fifo_full_and_empty() {
        let t = test_ring(4, 2);
        let r = &t.ring;
        let me = r.register(11, &|_| true).unwrap();
        assert_eq!(recv(r, me), Ok(None));
        for lap in 0..5u64 {
            for i in 0..4 {
                assert_eq!(send(r, me, lap * 10 + i), Ok(true));
            }
            assert_eq!(send(r, me, 99), Ok(false));
            assert_eq!(r.len(), 4);
            for i in 0..4 {
                assert_eq!(recv(r, me), Ok(Some(lap * 10 + i)));
            }
            assert_eq!(recv(r, me), Ok(None));
        }
    }

    #[test]
    fn spsc_fifo_and_restart() {
        let t = test_ring(2, 2);
        let r = &t.ring;
        let mut p = r.spsc_producer_start().unwrap();
        let mut c = r.spsc_consumer_start();
        for v in 0..10u64 {
            assert_eq!(
                r.spsc_can_send(p, r.head().load(Ordering::Relaxed)),
                Ok(true)
            );
            // SAFETY: 8 data bytes per slot.
            unsafe { r.data(p).cast::<u64>().write(v) };
            r.spsc_publish(p);
            p += 1;
            if v % 2 == 1 {
                assert_eq!(
                    r.spsc_can_send(p, r.head().load(Ordering::Relaxed)),
                    Ok(false)
                );
                for w in v - 1..=v {
                    assert_eq!(r.spsc_can_recv(&mut c), Ok(true));
                    // SAFETY: as above.
                    assert_eq!(unsafe { r.data(c).cast::<u64>().read() }, w);
                    r.spsc_release(c);
                    c += 1;
                }
            }
        }
        // A producer that published without storing tail: the next one skips ahead.
        // SAFETY: as above.
        unsafe { r.data(p).cast::<u64>().write(77) };
        r.seq(p).store(full(p), Ordering::Release);
        assert_eq!(r.spsc_producer_start(), Ok(p + 1));
        // A cancelled slot is skipped by the consumer.
        r.spsc_cancel(p + 1);
        assert_eq!(r.spsc_can_recv(&mut c), Ok(true));
        r.spsc_release(c);
        c += 1;
        assert_eq!(r.spsc_can_recv(&mut c), Ok(false));
        assert_eq!(c, p + 2);
    }

    #[test]
    fn dead_producer_claim_is_skipped_and_counted() {
        let t = test_ring(4, 3);
        let r = &t.ring;
        let dead = AtomicBool::new(false);
        let alive = |o: u64| !(o == 22 && dead.load(Ordering::Relaxed));
        let prod = r.register(22, &alive).unwrap();
        let cons = r.register(33, &alive).unwrap();
        assert_ne!(prod, cons);
        // The producer claims position 0 and "dies" before publishing.
        let p = r.mpmc_claim_send(prod).unwrap().unwrap();
        assert_eq!(p, 0);
        assert_eq!(send(r, cons, 5), Ok(true)); // another producer sends at 1
        let b = r.mpmc_claim_recv(cons, false).unwrap().unwrap_err();
        assert_eq!(
            b,
            Blocked::InFlight {
                pos: 0,
                reader: false
            }
        );
        assert_eq!(r.recover(b, &alive), Ok(None), "live claimer: wait");
        dead.store(true, Ordering::Relaxed);
        assert_eq!(r.recover(b, &alive), Ok(Some(22)));
        assert_eq!(r.peer_deaths().load(Ordering::Relaxed), 1);
        assert_eq!(recv(r, cons), Ok(Some(5)));
        assert_eq!(recv(r, cons), Ok(None));
        // The slot is usable again.
        for v in 0..4 {
            assert_eq!(send(r, cons, v), Ok(true));
        }
        for v in 0..4 {
            assert_eq!(recv(r, cons), Ok(Some(v)));
        }
        // Free entries go first, then the dead entry is reclaimed.
        assert_eq!(r.register(44, &alive), Some(2));
        assert_eq!(r.register(55, &alive), Some(prod));
    }

    #[test]
    fn dead_consumer_claim_is_released() {
        let t = test_ring(2, 3);
        let r = &t.ring;
        let dead = AtomicBool::new(false);
        let alive = |o: u64| !(o == 33 && dead.load(Ordering::Relaxed));
        let prod = r.register(22, &alive).unwrap();
        let cons = r.register(33, &alive).unwrap();
        assert_eq!(send(r, prod, 1), Ok(true));
        assert_eq!(send(r, prod, 2), Ok(true));
        let p = r.mpmc_claim_recv(cons, true).unwrap().unwrap();
        assert_eq!(p, 0);
        assert_eq!(r.unfinished(&alive), 2);
        let b = r.mpmc_claim_send(prod).unwrap().unwrap_err();
        assert_eq!(
            b,
            Blocked::InFlight {
                pos: 0,
                reader: true
            }
        );
        assert_eq!(r.recover(b, &alive), Ok(None));
        dead.store(true, Ordering::Relaxed);
        assert_eq!(
            r.unfinished(&alive),
            1,
            "a dead consumer's tasks are abandoned"
        );
        assert_eq!(r.recover(b, &alive), Ok(Some(33)));
        assert_eq!(send(r, prod, 3), Ok(true));
        assert_eq!(recv(r, prod), Ok(Some(2)));
        assert_eq!(recv(r, prod), Ok(Some(3)));
    }

    #[test]
    fn cancelled_claim_is_skipped() {
        let t = test_ring(2, 1);
        let r = &t.ring;
        let me = r.register(5, &|_| true).unwrap();
        let p = r.mpmc_claim_send(me).unwrap().unwrap();
        assert_eq!(send(r, me, 9), Ok(true));
        r.mpmc_cancel(me, p);
        assert_eq!(recv(r, me), Ok(Some(9)));
        assert_eq!(recv(r, me), Ok(None));
        assert_eq!(r.head().load(Ordering::Relaxed), 2);
    }

    #[test]
    fn garbage_sequence_is_corrupt_not_ub() {
        let t = test_ring(4, 1);
        let r = &t.ring;
        let me = r.register(5, &|_| true).unwrap();
        r.seq(0).store(12345, Ordering::Relaxed);
        assert!(r.mpmc_claim_send(me).is_err());
        assert!(r.mpmc_claim_recv(me, false).is_err());
        assert!(r.spsc_can_send(0, 0).is_err());
        let mut c = 0;
        assert!(r.spsc_can_recv(&mut c).is_err());
        // Tail behind head.
        let t2 = test_ring(4, 1);
        t2.ring.head().store(3, Ordering::Relaxed);
        t2.ring.seq(3).store(6, Ordering::Relaxed);
        let b = t2.ring.mpmc_claim_recv(0, false).unwrap().unwrap_err();
        assert!(t2.ring.recover(b, &|_| true).is_err());
    }

    #[test]
    fn registration_is_bounded_and_reclaims_dead() {
        let t = test_ring(2, 2);
        let r = &t.ring;
        assert_eq!(r.register(1, &|_| true), Some(0));
        assert_eq!(r.register(2, &|_| true), Some(1));
        assert_eq!(r.register(3, &|_| true), None);
        assert_eq!(r.register(3, &|o| o != 1), Some(0));
        r.unregister(1);
        assert_eq!(r.register(4, &|_| true), Some(1));
    }

    #[test]
    fn sweep_counts_an_attaching_peer_and_take_lost_names_the_token() {
        let t = test_ring(2, 2);
        let r = &t.ring;
        let dead = AtomicBool::new(false);
        let alive = |o: u64| !(o == 1 << 32 | 5 && dead.load(Ordering::Relaxed));
        let d = r.register(1 << 32 | 5, &alive).unwrap();
        // Halfway through `attach` (announced and counted, not flagged): attached.
        r.roles(d).fetch_or(ATTACHING_SENDER, Ordering::Relaxed);
        r.peers(ROLE_SENDER).store(EVER | 1, Ordering::Relaxed);
        assert_eq!(r.sweep(ROLE_SENDER, &alive), 1);
        r.roles(d).fetch_and(!ATTACHING_SENDER, Ordering::Relaxed);
        assert_eq!(r.sweep(ROLE_SENDER, &alive), 0);
        // A dead consumer's task; the entry is taken over and the new owner receives one.
        r.attach(d, ROLE_RECEIVER);
        r.outstanding(d).fetch_add(1, Ordering::Relaxed);
        dead.store(true, Ordering::Relaxed);
        assert_eq!(r.sweep(ROLE_SENDER, &alive), 0);
        assert_eq!(r.peers(ROLE_RECEIVER).load(Ordering::Relaxed), EVER);
        assert_eq!(r.register(2 << 32 | 6, &alive), Some(1));
        assert_eq!(
            r.register(3 << 32 | 7, &alive),
            Some(d),
            "a noted-dead entry"
        );
        r.outstanding(d).fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        r.take_lost(&alive, &mut out);
        assert_eq!(
            out,
            vec![(0, 1)],
            "the dead task once, the new owner's never"
        );
        assert_eq!(r.tasks(d), 1);
        assert_eq!(r.peer_deaths().load(Ordering::Relaxed), 1);
    }

    #[test]
    fn spsc_roles_are_exclusive_while_alive() {
        let t = test_ring(2, 3);
        let r = &t.ring;
        let dead = AtomicBool::new(false);
        let alive = |o: u64| !(o == 1 && dead.load(Ordering::Relaxed));
        let a = r.register(1, &alive).unwrap();
        let b = r.register(2, &alive).unwrap();
        assert_eq!(r.take_role(a, ROLE_PRODUCER, &alive), Ok(()));
        assert_eq!(r.take_role(b, ROLE_CONSUMER, &alive), Ok(()));
        assert_eq!(r.take_role(b, ROLE_PRODUCER, &alive), Err(1));
        dead.store(true, Ordering::Relaxed);
        assert_eq!(r.take_role(b, ROLE_PRODUCER, &alive), Ok(()));
        r.unregister(b);
        let c = r.register(3, &alive).unwrap();
        assert_eq!(r.take_role(c, ROLE_CONSUMER, &alive), Ok(()));
    }

    #[test]
    fn threads_mpmc_every_message_once_in_order_per_producer() {
        const N: u64 = if cfg!(miri) { 50 } else { 20_000 };
        let t = test_ring(8, 4);
        let r = t.ring;
        let ids: Vec<usize> = (0..4)
            .map(|i| r.register(100 + i, &|_| true).unwrap())
            .collect();
        let seen = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for (k, &me) in ids[..2].iter().enumerate() {
                s.spawn(move || {
                    let mut i = 0;
                    while i < N {
                        if send(&r, me, (k as u64) << 32 | i).unwrap() {
                            i += 1;
                        } else {
                            std::thread::yield_now();
                        }
                    }
                });
            }
            for &me in &ids[2..] {
                let seen = &seen;
                s.spawn(move || {
                    let mut got = Vec::new();
                    let mut last = [None::<u64>; 2];
                    while (got.len() as u64) < N {
                        match recv(&r, me).unwrap() {
                            Some(v) => {
                                let (k, i) = ((v >> 32) as usize, v & 0xffff_ffff);
                                assert!(last[k].is_none_or(|l| l < i), "per-producer order");
                                last[k] = Some(i);
                                got.push(v);
                            }
                            None => {
                                if r.head().load(Ordering::Relaxed) >= 2 * N {
                                    break;
                                }
                                std::thread::yield_now();
                            }
                        }
                    }
                    seen.lock().unwrap().extend(got);
                });
            }
        });
        let mut all = seen.into_inner().unwrap();
        all.sort_unstable();
        let mut want: Vec<u64> = (0..2u64)
            .flat_map(|k| (0..N).map(move |i| k << 32 | i))
            .collect();
        want.sort_unstable();
        assert_eq!(all, want);
    }

    proptest::proptest! {
        /// Any single-threaded sequence of sends, receives, cancelled reservations and SPSC
        /// operations behaves like a bounded FIFO of the same capacity.
        #[test]
        fn behaves_like_a_bounded_fifo(
            cap_log in 0u32..4,
            ops in proptest::collection::vec(0u8..4, 0..200),
        ) {
            let cap = 1u64 << cap_log;
            let t = test_ring(cap, 2);
            let r = &t.ring;
            let me = r.register(1, &|_| true).unwrap();
            let mut model = std::collections::VecDeque::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    0 | 1 => {
                        let ok = send(r, me, next).unwrap();
                        proptest::prop_assert_eq!(ok, (model.len() as u64) < cap);
                        if ok {
                            model.push_back(next);
                        }
                        next += 1;
                    }
                    2 => {
                        let got = recv(r, me).unwrap();
                        proptest::prop_assert_eq!(got, model.pop_front());
                    }
                    _ => {
                        // Reserve and cancel: takes a position, delivers nothing.
                        if let Ok(p) = r.mpmc_claim_send(me).unwrap() {
                            r.mpmc_cancel(me, p);
                            // The cancelled position stays between head and tail until a
                            // consumer passes it: drain, to keep the FIFO model simple.
                            let drained: Vec<u64> = model.drain(..).collect();
                            for v in drained {
                                proptest::prop_assert_eq!(recv(r, me).unwrap(), Some(v));
                            }
                            proptest::prop_assert_eq!(recv(r, me).unwrap(), None);
                        }
                    }
                }
                proptest::prop_assert!(r.len() <= cap);
            }
        }
    }
}
