//! The topic protocol, over raw memory.
//!
//! Like `queue/ring.rs`, this file knows nothing about segments, types or system calls
//! (liveness comes in through `is_alive` callbacks), so unit tests, Miri, loom
//! (`super::loom`) and the fuzz driver (`super::fuzz`) run it on a plain buffer.
//!
//! # Memory layout (offsets from the start of the ring; every line is 128 bytes)
//!
//! | offset | contents |
//! |-------:|----------|
//! | 0      | `tail`: the next position the publisher writes (u64; written by the publisher role only) |
//! | 128    | `lock`: publisher role (entry index + 1, 0 = free) |
//! | 256    | data wait point: futex word (u32), sleepers (u32), armed (u32; `queue/wait.rs`) — subscribers sleep here |
//! | 384    | space wait point — a `Block` publisher sleeps here |
//! | 512    | `pubs`, `subs` (peer counts: bits 0..32 the count, bit 32 [`EVER`]), `epoch` (bumped by each subscribe), `peer_deaths`, `last_dead_pid` |
//! | 640    | participant table: `entries` lines: `owner`, `roles`, `cursor` |
//! | 640 + 128·entries | `cap` slots of `stride` bytes: `seq` (u64), `len` (u64, byte form), then the data |
//!
//! # Slot sequence words (a seqlock per slot)
//!
//! Position `p` lives in slot `p % cap`. Its `seq` word is
//! - `0` — never written;
//! - `2p + 1` ([`writing`]) — the publisher is writing position `p` (odd);
//! - `2p + 2` ([`stamp`]) — the slot holds message `p`, complete (even).
//!
//! The publisher stores `writing(p)`, a Release fence, the data, then `stamp(p)` with
//! Release and `tail = p + 1`. A subscriber at cursor `c` loads `seq` (Acquire): `stamp(c)`
//! means ready; it copies the data out (volatile loads), issues an Acquire fence and
//! loads `seq` again: unchanged means the copy is the message, anything else means the
//! publisher lapped it meanwhile (the copy is discarded, never returned torn). A slot
//! holding an older lap (or `writing(c)`) is "not yet"; a newer position means the
//! subscriber was overwritten: it reports `Lagged(n)` and continues from the oldest
//! message still retained. A value that is not a position of this slot is corruption.
//!
//! # Slow subscribers
//!
//! Each subscriber stores its cursor (next position it will read) in its entry. Under the
//! `Block` policy the publisher may write `p` only when every live subscriber's cursor is
//! above `p - cap`; it caches the bound (`limit`) and rescans only when it reaches it or
//! when `epoch` changed (a new subscriber). A subscriber whose owner is dead is retired by
//! the publisher (its `SUB` role cleared), so it never blocks anybody. Under `Overwrite`
//! the publisher never looks at cursors.
//!
//! # Participants
//!
//! `owner` holds the handle's owner word (pid << 32 | liveness token). A death is noted
//! exactly once: whoever first sees it CASes `owner` to `owner | OWNER_DEAD` and then
//! swaps `roles` to 0, discounting the roles it held. `register` takes only free entries
//! or entries already noted dead whose roles are cleared, so it never races that
//! discount. Counts may still be one too high after a process dies between setting a
//! role and counting it; the authoritative answer is a sweep ([`Ring::sweep`]), which
//! blocked callers run at a bounded rate. Every word here may be garbage written by a
//! hostile peer: it can cause `Lagged`, `Disconnected`, a wait until the caller's
//! timeout or a `Corrupt` error, never an access outside the ring (slot addresses come
//! from a position modulo `cap`, and `cap` comes from the checksummed header).

#[cfg(shmkit_loom)]
use loom::sync::atomic::{AtomicU32, AtomicU64, fence};
use std::sync::atomic::Ordering;
#[cfg(not(shmkit_loom))]
use std::sync::atomic::{AtomicU32, AtomicU64, fence};

use crate::queue::wait::WaitPoint;

pub(crate) const LINE: usize = 128;
pub(crate) const OFF_TAIL: usize = 0;
pub(crate) const OFF_LOCK: usize = LINE;
pub(crate) const OFF_DATA_WAIT: usize = 2 * LINE;
pub(crate) const OFF_SPACE_WAIT: usize = 3 * LINE;
pub(crate) const OFF_STATS: usize = 4 * LINE;
pub(crate) const OFF_ENTRIES: usize = 5 * LINE;
/// Bytes before a slot's data: `seq`, `len`.
pub(crate) const SLOT_HEADER: usize = 16;

/// Largest capacity (slots).
pub const MAX_CAPACITY: u64 = 1 << 24;
/// Largest number of participant entries (subscribers + publishers).
pub const MAX_ENTRIES: u64 = 4096;

/// Role bits.
pub(crate) const ROLE_PUB: u64 = 1;
pub(crate) const ROLE_SUB: u64 = 2;
/// Set in an owner word once its death has been noted (tokens are below 2^30).
pub(crate) const OWNER_DEAD: u64 = 1 << 31;
/// In a peer count word: set once anybody attached.
pub(crate) const EVER: u64 = 1 << 32;
const COUNT_MASK: u64 = EVER - 1;

/// The `seq` word of a slot being written for position `p`.
#[inline]
pub(crate) fn writing(p: u64) -> u64 {
    p.wrapping_mul(2).wrapping_add(1)
}
/// The `seq` word of a slot holding message `p`.
#[inline]
pub(crate) fn stamp(p: u64) -> u64 {
    p.wrapping_mul(2).wrapping_add(2)
}

/// Wrapping signed distance `a - b`.
#[inline]
pub(crate) fn diff(a: u64, b: u64) -> i64 {
    a.wrapping_sub(b) as i64
}

/// Sizes and offsets of a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub cap: u64,
    pub data_len: usize,
    pub data_off: usize,
    pub stride: usize,
    pub entries: usize,
    pub slots_off: usize,
    pub total: usize,
}

impl Geometry {
    /// Validates parameters and lays the ring out; `None` if out of range.
    pub(crate) fn new(cap: u64, data_len: u64, data_align: u64, entries: u64) -> Option<Self> {
        if !cap.is_power_of_two() || !(2..=MAX_CAPACITY).contains(&cap) {
            return None;
        }
        if entries == 0 || entries > MAX_ENTRIES {
            return None;
        }
        if !data_align.is_power_of_two() || data_align > 64 || data_len > (1 << 30) {
            return None;
        }
        let data_off = (SLOT_HEADER as u64).next_multiple_of(data_align);
        // As in the queue: slots never share a cache line with a neighbour.
        let packed = (data_off + data_len).next_multiple_of(data_align.max(8));
        let stride = if packed <= 64 {
            packed.next_power_of_two()
        } else {
            packed.next_multiple_of(64)
        };
        let slots_off = (OFF_ENTRIES as u64 + LINE as u64 * entries)
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
            entries: entries as usize,
            slots_off: slots_off as usize,
            total: total as usize,
        })
    }
}

/// A shared-state inconsistency (reported as `Error::Corrupt`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Corrupt(pub(crate) String);

/// What a subscriber finds at its cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Message `c` is there (the `seq` value to re-check after copying).
    Ready(u64),
    /// Not published yet.
    NotYet,
    /// A later position `q` took the slot: the subscriber was overwritten.
    Overwritten(u64),
}

/// The ring over raw memory.
///
/// Invariant: `base` is valid for reads and writes of `geo.total` bytes for the lifetime
/// of the `Ring`, 64-byte aligned, and every control word is only accessed atomically.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ring {
    base: *mut u8,
    pub geo: Geometry,
    #[cfg(shmkit_loom)]
    shadow: &'static Shadow,
}

#[cfg(shmkit_loom)]
#[derive(Debug)]
struct Shadow {
    w64: std::collections::BTreeMap<usize, AtomicU64>,
    w32: std::collections::BTreeMap<usize, AtomicU32>,
}

// SAFETY: the ring hands out atomics and raw pointers into memory shared by design;
// synchronisation is the protocol's job.
unsafe impl Send for Ring {}

impl Ring {
    /// # Safety
    /// `base` must be valid for reads and writes of `geo.total` bytes for as long as the
    /// ring (or a copy) is used, 64-byte aligned, and accessed by others only through this
    /// protocol (atomics for control words).
    #[cfg(not(shmkit_loom))]
    pub(crate) unsafe fn new(base: *mut u8, geo: Geometry) -> Ring {
        Ring { base, geo }
    }

    /// Loom: control words as loom atomics beside the buffer (leaked per iteration).
    #[cfg(shmkit_loom)]
    pub(crate) unsafe fn new(base: *mut u8, geo: Geometry) -> Ring {
        let mut w64 = std::collections::BTreeMap::new();
        for off in (0..OFF_ENTRIES).step_by(8) {
            w64.insert(off, AtomicU64::new(0));
        }
        for i in 0..geo.entries {
            for k in 0..3 {
                w64.insert(OFF_ENTRIES + LINE * i + 8 * k, AtomicU64::new(0));
            }
        }
        for p in 0..geo.cap as usize {
            w64.insert(geo.slots_off + p * geo.stride, AtomicU64::new(0));
            w64.insert(geo.slots_off + p * geo.stride + 8, AtomicU64::new(0));
        }
        let mut w32 = std::collections::BTreeMap::new();
        for off in [OFF_DATA_WAIT, OFF_SPACE_WAIT] {
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
        // Callers pass a constant control offset, an entry offset reduced modulo the
        // entry count, or a slot offset from a position reduced modulo `cap`.
        // SAFETY: in bounds (struct invariant), 8-aligned, only accessed atomically.
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    #[cfg(not(shmkit_loom))]
    #[inline]
    fn u32_at(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off + 4 <= self.geo.total && off % 4 == 0);
        // SAFETY: as for `u64_at`.
        unsafe { &*(self.base.add(off) as *const AtomicU32) }
    }

    #[inline]
    pub(crate) fn tail(&self) -> &AtomicU64 {
        self.u64_at(OFF_TAIL)
    }
    #[inline]
    pub(crate) fn lock(&self) -> &AtomicU64 {
        self.u64_at(OFF_LOCK)
    }
    #[inline]
    pub(crate) fn data_wait(&self) -> WaitPoint<'_> {
        WaitPoint {
            word: self.u32_at(OFF_DATA_WAIT),
            sleepers: self.u32_at(OFF_DATA_WAIT + 4),
            armed: self.u32_at(OFF_DATA_WAIT + 8),
            mode: None,
        }
    }
    #[inline]
    pub(crate) fn space_wait(&self) -> WaitPoint<'_> {
        WaitPoint {
            word: self.u32_at(OFF_SPACE_WAIT),
            sleepers: self.u32_at(OFF_SPACE_WAIT + 4),
            armed: self.u32_at(OFF_SPACE_WAIT + 8),
            mode: None,
        }
    }
    /// Peer count word of `role`.
    #[inline]
    pub(crate) fn peers(&self, role: u64) -> &AtomicU64 {
        self.u64_at(OFF_STATS + if role == ROLE_PUB { 0 } else { 8 })
    }
    #[inline]
    pub(crate) fn epoch(&self) -> &AtomicU64 {
        self.u64_at(OFF_STATS + 16)
    }
    pub(crate) fn peer_deaths(&self) -> &AtomicU64 {
        self.u64_at(OFF_STATS + 24)
    }
    pub(crate) fn last_dead_pid(&self) -> &AtomicU64 {
        self.u64_at(OFF_STATS + 32)
    }

    /// Offset of entry `i` (clamped into the table: callers pass their own index or one
    /// checked against `entries`; no division on the hot path).
    #[inline]
    fn entry(&self, i: usize) -> usize {
        OFF_ENTRIES + LINE * i.min(self.geo.entries - 1)
    }
    #[inline]
    pub(crate) fn owner(&self, i: usize) -> &AtomicU64 {
        self.u64_at(self.entry(i))
    }
    #[inline]
    pub(crate) fn roles(&self, i: usize) -> &AtomicU64 {
        self.u64_at(self.entry(i) + 8)
    }
    #[inline]
    pub(crate) fn cursor(&self, i: usize) -> &AtomicU64 {
        self.u64_at(self.entry(i) + 16)
    }

    #[inline]
    fn slot(&self, p: u64) -> usize {
        self.geo.slots_off + (p & (self.geo.cap - 1)) as usize * self.geo.stride
    }
    #[inline]
    pub(crate) fn seq(&self, p: u64) -> &AtomicU64 {
        self.u64_at(self.slot(p))
    }
    /// The byte form's length word of position `p`'s slot.
    #[inline]
    pub(crate) fn len_word(&self, p: u64) -> &AtomicU64 {
        self.u64_at(self.slot(p) + 8)
    }
    /// Pointer to the data of position `p`'s slot (`geo.data_len` bytes).
    #[inline]
    pub(crate) fn data(&self, p: u64) -> *mut u8 {
        // SAFETY: slot(p) + data_off + data_len <= slots_off + cap * stride = total.
        unsafe { self.base.add(self.slot(p) + self.geo.data_off) }
    }

    /// Writes a fresh ring. Only for a ring nobody else uses yet.
    pub(crate) fn init(&self) {
        for off in (0..OFF_ENTRIES).step_by(8) {
            self.u64_at(off).store(0, Ordering::Relaxed);
        }
        for i in 0..self.geo.entries {
            self.owner(i).store(0, Ordering::Relaxed);
            self.roles(i).store(0, Ordering::Relaxed);
            self.cursor(i).store(0, Ordering::Relaxed);
        }
        for p in 0..self.geo.cap {
            self.seq(p).store(0, Ordering::Relaxed);
            self.len_word(p).store(0, Ordering::Relaxed);
        }
    }

    // ------------------------------------------------------------ participants

    #[inline]
    fn alive(o: u64, is_alive: &dyn Fn(u64) -> bool) -> bool {
        o != 0 && o & OWNER_DEAD == 0 && is_alive(o)
    }

    /// Takes an entry for owner word `me` (never 0): a free one, or one whose owner is
    /// dead (noting the death first). `None` if all are held by live owners.
    pub(crate) fn register(&self, me: u64, is_alive: &dyn Fn(u64) -> bool) -> Option<usize> {
        for pass in 0..2 {
            for i in 0..self.geo.entries {
                let cur = self.owner(i).load(Ordering::Acquire);
                if pass == 1 && cur != 0 && cur & OWNER_DEAD == 0 && !is_alive(cur) {
                    self.note_dead_entry(i, cur);
                }
                let cur = self.owner(i).load(Ordering::Acquire);
                let usable = cur == 0
                    || (cur & OWNER_DEAD != 0 && self.roles(i).load(Ordering::Acquire) == 0);
                if usable
                    && self
                        .owner(i)
                        .compare_exchange(cur, me, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    self.roles(i).store(0, Ordering::Release);
                    return Some(i);
                }
            }
        }
        None
    }

    /// Gives entry `i` back (detaching its roles).
    pub(crate) fn unregister(&self, i: usize) {
        self.release_lock(i);
        let old = self.roles(i).swap(0, Ordering::AcqRel);
        self.discount(old);
        self.owner(i).store(0, Ordering::Release);
    }

    /// Attaches entry `i` in `role` (a no-op if it already is).
    pub(crate) fn attach(&self, i: usize, role: u64) {
        if self.roles(i).fetch_or(role, Ordering::AcqRel) & role == 0 {
            let _ = self
                .peers(role)
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |x| {
                    Some((x & COUNT_MASK).saturating_add(1).min(COUNT_MASK) | EVER)
                });
        }
    }

    fn discount(&self, roles: u64) {
        for role in [ROLE_PUB, ROLE_SUB] {
            if roles & role != 0 {
                self.leave(role);
            }
        }
    }

    /// One participant of `role` left: decrement (saturating) and wake the other side.
    fn leave(&self, role: u64) {
        let _ = self
            .peers(role)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |x| {
                Some(if x & COUNT_MASK == 0 { x } else { x - 1 })
            });
        if role == ROLE_PUB {
            self.data_wait().wake();
        } else {
            self.space_wait().wake();
        }
    }

    /// Whether publishers attached once and none is counted now (one load).
    #[inline]
    pub(crate) fn publishers_gone(&self) -> bool {
        self.peers(ROLE_PUB).load(Ordering::Acquire) == EVER
    }

    /// Whether a publisher ever attached.
    pub(crate) fn publishers_ever(&self) -> bool {
        self.peers(ROLE_PUB).load(Ordering::Acquire) & EVER != 0
    }

    /// Notes that entry `i`, owned by `owner`, died (exactly once): counts it and
    /// discounts its roles. Returns whether this call noted it.
    pub(crate) fn note_dead_entry(&self, i: usize, owner: u64) -> bool {
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
        let _ = self.peer_deaths().fetch_add(1, Ordering::AcqRel);
        self.last_dead_pid().store(owner >> 32, Ordering::Relaxed);
        let old = self.roles(i).swap(0, Ordering::AcqRel);
        self.discount(old);
        true
    }

    /// Checks every entry holding `role`, notes the dead, returns how many are alive. One
    /// `is_alive` call per such entry (callers rate-limit it).
    pub(crate) fn sweep(&self, role: u64, is_alive: &dyn Fn(u64) -> bool) -> u64 {
        let mut live = 0;
        for i in 0..self.geo.entries {
            let o = self.owner(i).load(Ordering::Acquire);
            let r = self.roles(i).load(Ordering::Acquire);
            if o == 0 || o & OWNER_DEAD != 0 || r & role == 0 {
                continue;
            }
            if is_alive(o) {
                live += 1;
            } else {
                self.note_dead_entry(i, o);
            }
        }
        live
    }

    // ------------------------------------------------------------ publisher role

    /// Takes the publisher role (the `lock` word) for entry `me`. Fails with the holder's
    /// entry index while a live holder has it; a holder that `is_alive` says is dead is
    /// replaced (pass `&|_| true` to skip the liveness check).
    pub(crate) fn take_lock(&self, me: usize, is_alive: &dyn Fn(u64) -> bool) -> Result<(), usize> {
        let mine = me as u64 + 1;
        loop {
            let cur = self.lock().load(Ordering::Acquire);
            if cur == mine {
                return Ok(());
            }
            if cur != 0 {
                let k = (cur - 1) as usize;
                if k < self.geo.entries {
                    let o = self.owner(k).load(Ordering::Acquire);
                    if Self::alive(o, is_alive) {
                        return Err(k);
                    }
                }
            }
            if self
                .lock()
                .compare_exchange(cur, mine, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    /// Releases the publisher role if entry `me` holds it.
    pub(crate) fn release_lock(&self, me: usize) {
        let _ = self
            .lock()
            .compare_exchange(me as u64 + 1, 0, Ordering::AcqRel, Ordering::Relaxed);
    }

    // ------------------------------------------------------------ publishing

    /// `Block` policy: whether position `p` may be written. `Ok(limit)`: every position
    /// below `limit` may be (the slowest live subscriber's cursor + `cap`, or `p + cap`
    /// with no subscriber); `Err(i)`: entry `i` has not read `p - cap` yet.
    pub(crate) fn room(&self, p: u64) -> Result<u64, usize> {
        let cap = self.geo.cap;
        let mut limit = p.wrapping_add(cap);
        for i in 0..self.geo.entries {
            if self.roles(i).load(Ordering::Acquire) & ROLE_SUB == 0 {
                continue;
            }
            let c = self.cursor(i).load(Ordering::Acquire);
            let lag = diff(p, c);
            if lag >= cap as i64 {
                return Err(i);
            }
            if lag > 0 && diff(c.wrapping_add(cap), limit) < 0 {
                limit = c.wrapping_add(cap);
            }
        }
        Ok(limit)
    }

    /// Starts writing position `p`: marks its slot odd, so a subscriber copying the
    /// previous lap's message discards its copy.
    #[inline]
    pub(crate) fn begin_write(&self, p: u64) {
        self.seq(p).store(writing(p), Ordering::Relaxed);
        fence(Ordering::Release);
    }

    /// Publishes position `p` (written since `begin_write`) and advances `tail`.
    #[inline]
    pub(crate) fn finish_write(&self, p: u64) {
        self.seq(p).store(stamp(p), Ordering::Release);
        self.tail().store(p.wrapping_add(1), Ordering::Release);
        self.data_wait().wake();
    }

    // ------------------------------------------------------------ subscribing

    /// Where a new subscriber starts: `history` messages back from `tail` (at most
    /// `cap - 1`, at most as many as were published).
    pub(crate) fn start(&self, history: u64) -> u64 {
        let t = self.tail().load(Ordering::Acquire);
        let k = history.min(self.geo.cap - 1).min(t);
        t.wrapping_sub(k)
    }

    /// Attaches entry `i` as a subscriber at `cursor` (returned). A `Block` publisher
    /// that has not seen the new `epoch` yet may still rewrite the oldest history slots:
    /// their reads then fail the sequence check and report `Lagged`, never a torn copy.
    pub(crate) fn subscribe(&self, i: usize, cursor: u64) -> u64 {
        self.cursor(i).store(cursor, Ordering::Release);
        self.attach(i, ROLE_SUB);
        let _ = self.epoch().fetch_add(1, Ordering::SeqCst);
        cursor
    }

    /// Looks at the slot for cursor `c`.
    #[inline]
    pub(crate) fn look(&self, c: u64) -> Result<Slot, Corrupt> {
        let s = self.seq(c).load(Ordering::Acquire);
        if s == stamp(c) {
            return Ok(Slot::Ready(s));
        }
        if s == 0 {
            return Ok(Slot::NotYet);
        }
        let q = (s - 1) >> 1; // the position the slot holds or is being written for
        if (q ^ c) & (self.geo.cap - 1) != 0 {
            return Err(Corrupt(format!(
                "slot {} holds sequence {s:#x}, not a position of that slot (capacity {})",
                c & (self.geo.cap - 1),
                self.geo.cap
            )));
        }
        if diff(q, c) > 0 {
            Ok(Slot::Overwritten(q))
        } else {
            Ok(Slot::NotYet)
        }
    }

    /// After copying message `c` out: whether the slot still holds it (`s` from `look`).
    #[inline]
    pub(crate) fn still(&self, c: u64, s: u64) -> bool {
        fence(Ordering::Acquire);
        self.seq(c).load(Ordering::Relaxed) == s
    }

    /// A subscriber at `c` was overwritten by position `q`: the cursor to continue from
    /// (the oldest message still retained, past `c`).
    pub(crate) fn recover(&self, c: u64, q: u64) -> u64 {
        let t = self.tail().load(Ordering::Acquire);
        let newest = if diff(t, q) > 0 { t } else { q.wrapping_add(1) };
        // `newest - cap` may be being overwritten right now (the next write reuses it);
        // start one later so the next read is likely to succeed.
        let oldest = newest.wrapping_sub(self.geo.cap).wrapping_add(1);
        if diff(oldest, c) > 0 {
            oldest
        } else {
            c.wrapping_add(1)
        }
    }
}

#[cfg(all(test, not(shmkit_loom)))]
mod tests {
    use super::*;

    #[repr(C, align(128))]
    struct Buf([u8; 128]);

    fn ring(cap: u64, data_len: u64, entries: u64) -> (Vec<Buf>, Ring) {
        let geo = Geometry::new(cap, data_len, 8, entries).unwrap();
        let mut v: Vec<Buf> = (0..geo.total.div_ceil(128))
            .map(|_| Buf([0; 128]))
            .collect();
        // SAFETY: the buffer outlives the ring in each test and is 128-aligned.
        let r = unsafe { Ring::new(v.as_mut_ptr().cast(), geo) };
        r.init();
        (v, r)
    }

    fn put(r: &Ring, p: u64, v: u64) {
        r.begin_write(p);
        // SAFETY: data_len >= 8, aligned.
        unsafe { (r.data(p) as *mut u64).write_volatile(v) };
        r.finish_write(p);
    }

    #[test]
    fn geometry_bounds() {
        assert!(Geometry::new(1, 8, 8, 1).is_none());
        assert!(Geometry::new(3, 8, 8, 1).is_none());
        assert!(Geometry::new(4, 8, 8, 0).is_none());
        assert!(Geometry::new(4, 8, 128, 1).is_none());
        let g = Geometry::new(4, 64, 8, 2).unwrap();
        assert_eq!(g.stride, 128);
        assert_eq!(g.slots_off, OFF_ENTRIES + 2 * LINE);
    }

    #[test]
    fn publish_look_lag() {
        let (_b, r) = ring(4, 8, 4);
        assert_eq!(r.look(0), Ok(Slot::NotYet));
        put(&r, 0, 10);
        assert_eq!(r.look(0), Ok(Slot::Ready(stamp(0))));
        assert!(r.still(0, stamp(0)));
        for p in 1..6 {
            put(&r, p, 10 + p);
        }
        // Cursor 1 was overwritten by 5.
        assert_eq!(r.look(1), Ok(Slot::Overwritten(5)));
        assert_eq!(r.recover(1, 5), 3);
        assert_eq!(r.look(6), Ok(Slot::NotYet));
        r.begin_write(6);
        assert_eq!(r.look(6), Ok(Slot::NotYet));
        assert_eq!(r.look(2), Ok(Slot::Overwritten(6)));
        r.seq(3).store(stamp(2), Ordering::Relaxed);
        assert!(r.look(3).is_err());
    }

    #[test]
    fn room_and_participants() {
        let (_b, r) = ring(4, 8, 4);
        let alive = |o: u64| o != 7;
        let a = r.register(5, &alive).unwrap();
        let b = r.register(7, &alive).unwrap();
        r.attach(a, ROLE_PUB);
        assert!(!r.publishers_gone());
        r.subscribe(b, 0);
        assert_eq!(r.room(0), Ok(4));
        assert_eq!(r.room(4), Err(b));
        // 7 is dead: a sweep retires it.
        assert_eq!(r.sweep(ROLE_SUB, &alive), 0);
        assert_eq!(r.room(4), Ok(8));
        assert_eq!(r.peer_deaths().load(Ordering::Relaxed), 1);
        // Its entry is reusable.
        assert_eq!(r.register(9, &alive), Some(b));
        assert_eq!(r.take_lock(a, &alive), Ok(()));
        assert_eq!(r.take_lock(b, &alive), Err(a));
        r.unregister(a);
        assert!(r.publishers_gone());
        assert_eq!(r.take_lock(b, &alive), Ok(()));
        assert_eq!(r.start(3), 0);
        put(&r, 0, 1);
        put(&r, 1, 1);
        assert_eq!(r.start(3), 0);
        assert_eq!(r.start(1), 1);
    }
}
