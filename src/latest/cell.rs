//! The seqlock protocol of [`Latest`](super::Latest) and [`Board`](super::Board), over raw
//! memory.
//!
//! This file knows nothing about segments, types or system calls, so it runs on a plain
//! buffer: unit tests, Miri, loom (`super::loom`) and the fuzz entry point
//! (`super::fuzz`) drive it there.
//!
//! # Memory layout (offsets from the start of the table)
//!
//! | offset | contents |
//! |-------:|----------|
//! | 0      | `writer`: owner word of the writer role, `pid << 32 \| token` (0: none) |
//! | 64     | wait point: futex word (u32), sleepers (u32), armed (u32; `queue/wait.rs`) — `wait_for_update` sleeps here |
//! | 128    | `slots` slots of `stride` bytes: `seq` (u64), then the value at `data_off` |
//!
//! A slot's value occupies `words = ceil(size / 8)` 64-bit words (the padding of the last
//! one is written as zeros). Every word of the table — control words, `seq` and the value
//! — is only ever accessed through 64-bit (32-bit for the wait point) atomics.
//!
//! # The protocol (one writer per table)
//!
//! ```text
//! writer                                   reader
//! s = seq (Relaxed)                        s1 = seq (Acquire); odd: retry
//! seq = s + 1 (Relaxed)  [odd]             value words (Relaxed loads)
//! fence(Release)                           fence(Acquire)
//! value words (Relaxed stores)             s2 = seq (Relaxed)
//! seq = s + 2 (Release)  [even]            s1 == s2: the copy is consistent, version s1/2
//! ```
//!
//! This is the fence discipline of H.-J. Boehm, "Can seqlocks get along with programming
//! language memory models?" (MSPC 2012), §5: the value is copied with *atomic* relaxed
//! accesses (no data race, so no undefined behaviour however the writer interleaves), and
//! the two fences give the happens-before edges. If a reader's relaxed load sees any
//! value word stored after the writer's release fence, that fence synchronises with the
//! reader's acquire fence, so the writer's odd `seq` store happens before the reader's
//! second `seq` load, which therefore differs from `s1`. If it saw none, the copy holds
//! only words of writes whose final even store the reader's `s1` (Acquire) already
//! observed, i.e. exactly one complete write. On x86-64 and aarch64 the relaxed 64-bit
//! accesses are plain loads and stores.
//!
//! # Crashes and hostile writers
//!
//! - A writer killed between its two `seq` stores leaves `seq` odd. Readers retry a
//!   bounded number of times and then fail ([`ReadFail::Odd`]); they never see the torn
//!   value. The next writer that writes the slot keeps `seq` odd while it rewrites the
//!   whole value (`begin_write` does not bump an odd `seq`), then makes it even: the slot
//!   is repaired by a complete write, never by declaring the torn bytes consistent.
//! - A hostile process can write any word. It can make reads fail after the bounded
//!   retries (`seq` odd forever, or changing on every attempt: [`ReadFail::Changing`]),
//!   or make them return any bytes (the value is `Pod`: any bytes are a value) and any
//!   version. Nothing here indexes memory with a shared word: the geometry comes from the
//!   validated segment header.

#[cfg(shmkit_loom)]
use loom::sync::atomic::{AtomicU32, AtomicU64, fence};
use std::sync::atomic::Ordering;
#[cfg(not(shmkit_loom))]
use std::sync::atomic::{AtomicU32, AtomicU64, fence};

use crate::queue::wait::WaitPoint;

/// Offset of the writer's owner word.
pub(crate) const OFF_WRITER: usize = 0;
/// Offset of the wait point (futex word, then the sleeper count).
pub(crate) const OFF_WAIT: usize = 64;
/// Offset of slot 0.
pub(crate) const OFF_SLOTS: usize = 128;
/// Largest number of slots of a [`Board`](super::Board).
pub const MAX_SLOTS: u64 = 1 << 20;
/// Largest value (bytes).
pub const MAX_VALUE: u64 = 1 << 30;

/// Sizes and offsets of a table, computed from its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Number of slots.
    pub slots: usize,
    /// Bytes of a value.
    pub size: usize,
    /// Offset of the value inside a slot (≥ 8, a multiple of its alignment).
    pub data_off: usize,
    /// 64-bit words of a value.
    pub words: usize,
    /// Bytes per slot (a multiple of 64).
    pub stride: usize,
    /// Total bytes.
    pub total: usize,
}

impl Geometry {
    /// Validates parameters and lays the table out; `None` if they are out of range
    /// (no slot, more than [`MAX_SLOTS`], an empty value or one over [`MAX_VALUE`], an
    /// alignment that is not a power of two up to 64).
    pub(crate) fn new(slots: u64, size: u64, align: u64) -> Option<Geometry> {
        if slots == 0 || slots > MAX_SLOTS || size == 0 || size > MAX_VALUE {
            return None;
        }
        if !align.is_power_of_two() || align > 64 {
            return None;
        }
        let data_off = align.max(8) as usize;
        let words = size.div_ceil(8) as usize;
        let stride = (data_off + 8 * words).next_multiple_of(64);
        let total = stride.checked_mul(slots as usize)?.checked_add(OFF_SLOTS)?;
        Some(Geometry {
            slots: slots as usize,
            size: size as usize,
            data_off,
            words,
            stride,
            total,
        })
    }

    fn seq_off(&self, slot: usize) -> usize {
        OFF_SLOTS + slot * self.stride
    }

    fn word_off(&self, slot: usize, k: usize) -> usize {
        self.seq_off(slot) + self.data_off + 8 * k
    }
}

/// Why a read gave up after its retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadFail {
    /// The last attempt found `seq` odd: a write in progress, or one whose writer died.
    Odd,
    /// The last attempt found `seq` changed during the copy.
    Changing,
}

/// A table over raw memory.
///
/// Invariant: `base` is valid for reads and writes of `geo.total` bytes for the lifetime
/// of the `Table`, 64-byte aligned, and every party accesses its words only atomically.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Table {
    base: *mut u8,
    pub geo: Geometry,
    /// Under loom, every word lives in a loom atomic beside the buffer (loom cannot model
    /// atomics reinterpreted from raw memory).
    #[cfg(shmkit_loom)]
    shadow: &'static Shadow,
}

#[cfg(shmkit_loom)]
#[derive(Debug)]
struct Shadow {
    w64: std::collections::BTreeMap<usize, AtomicU64>,
    w32: [AtomicU32; 3],
}

// SAFETY: the table only hands out atomics over memory that is shared by design;
// synchronisation is the protocol's job.
unsafe impl Send for Table {}
// SAFETY: as above: every access through a shared `&Table` is atomic.
unsafe impl Sync for Table {}

impl Table {
    /// # Safety
    /// `base` must be valid for reads and writes of `geo.total` bytes for as long as the
    /// table (or a copy) is used, 64-byte aligned, and accessed by others only through
    /// atomics.
    #[cfg(not(shmkit_loom))]
    pub(crate) unsafe fn new(base: *mut u8, geo: Geometry) -> Table {
        Table { base, geo }
    }

    /// Loom: every word of the table as a loom atomic (leaked: one small table per model
    /// iteration); `base` is not used.
    #[cfg(shmkit_loom)]
    pub(crate) unsafe fn new(base: *mut u8, geo: Geometry) -> Table {
        let mut w64 = std::collections::BTreeMap::new();
        w64.insert(OFF_WRITER, AtomicU64::new(0));
        for s in 0..geo.slots {
            w64.insert(geo.seq_off(s), AtomicU64::new(0));
            for k in 0..geo.words {
                w64.insert(geo.word_off(s, k), AtomicU64::new(0));
            }
        }
        let shadow = Box::leak(Box::new(Shadow {
            w64,
            w32: [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)],
        }));
        Table { base, geo, shadow }
    }

    #[cfg(shmkit_loom)]
    fn u64_at(&self, off: usize) -> &AtomicU64 {
        let _ = self.base;
        &self.shadow.w64[&off]
    }

    #[cfg(not(shmkit_loom))]
    #[inline(always)]
    fn u64_at(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off + 8 <= self.geo.total && off % 8 == 0);
        // Callers pass constant control offsets or offsets from `seq_off`/`word_off` of a
        // slot below `geo.slots` and a word below `geo.words`: in bounds by the layout.
        // SAFETY: in bounds, 8-aligned (offsets are multiples of 8 from a 64-aligned
        // base), and the word is only ever accessed atomically (struct invariant).
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    #[cfg(shmkit_loom)]
    fn u32_at(&self, off: usize) -> &AtomicU32 {
        &self.shadow.w32[(off - OFF_WAIT) / 4]
    }

    #[cfg(not(shmkit_loom))]
    fn u32_at(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off + 4 <= self.geo.total && off % 4 == 0);
        // SAFETY: as for `u64_at`.
        unsafe { &*(self.base.add(off) as *const AtomicU32) }
    }

    /// Zeroes every word (a fresh table: no writer, every `seq` 0, values zero).
    pub(crate) fn init(&self) {
        self.writer().store(0, Ordering::Relaxed);
        self.u32_at(OFF_WAIT).store(0, Ordering::Relaxed);
        self.u32_at(OFF_WAIT + 4).store(0, Ordering::Relaxed);
        self.u32_at(OFF_WAIT + 8).store(0, Ordering::Relaxed);
        for s in 0..self.geo.slots {
            self.seq(s).store(0, Ordering::Relaxed);
            for k in 0..self.geo.words {
                self.u64_at(self.geo.word_off(s, k))
                    .store(0, Ordering::Relaxed);
            }
        }
        fence(Ordering::Release);
    }

    /// The writer role's owner word.
    pub(crate) fn writer(&self) -> &AtomicU64 {
        self.u64_at(OFF_WRITER)
    }

    /// The sequence word of `slot` (`slot < geo.slots`, checked by the caller).
    pub(crate) fn seq(&self, slot: usize) -> &AtomicU64 {
        assert!(slot < self.geo.slots, "slot index checked by the caller");
        self.u64_at(self.geo.seq_off(slot))
    }

    /// Where `wait_for_update` sleeps.
    pub(crate) fn wait_point(&self) -> WaitPoint<'_> {
        WaitPoint {
            word: self.u32_at(OFF_WAIT),
            sleepers: self.u32_at(OFF_WAIT + 4),
            armed: self.u32_at(OFF_WAIT + 8),
            mode: None,
        }
    }

    /// Copies a consistent value of `slot` into `dst` and returns its version (`seq / 2`),
    /// trying at most `1 + retries` times (spinning, then yielding the CPU between
    /// attempts).
    ///
    /// # Safety
    /// `dst` is valid for writes of `geo.size` bytes (any alignment); `slot < geo.slots`.
    pub(crate) unsafe fn read(
        &self,
        slot: usize,
        dst: *mut u8,
        retries: u32,
    ) -> Result<u64, ReadFail> {
        let seq = self.seq(slot);
        let mut attempt = 0u32;
        loop {
            let s1 = seq.load(Ordering::Acquire);
            let fail = if s1 & 1 == 0 {
                // SAFETY: the caller's contract.
                unsafe { self.load_words(slot, dst) };
                fence(Ordering::Acquire);
                if seq.load(Ordering::Relaxed) == s1 {
                    return Ok(s1 / 2);
                }
                ReadFail::Changing
            } else {
                ReadFail::Odd
            };
            if attempt >= retries {
                return Err(fail);
            }
            attempt += 1;
            backoff(attempt);
        }
    }

    /// Copies the value words of `slot` to `dst` with relaxed atomic loads.
    ///
    /// # Safety
    /// As for [`Self::read`].
    #[inline(always)]
    unsafe fn load_words(&self, slot: usize, dst: *mut u8) {
        let g = &self.geo;
        let full = g.size / 8;
        for k in 0..full {
            let w = self.u64_at(g.word_off(slot, k)).load(Ordering::Relaxed);
            // SAFETY: 8(k + 1) <= size: in bounds of `dst` (caller); unaligned store.
            unsafe { dst.add(8 * k).cast::<u64>().write_unaligned(w) };
        }
        let rest = g.size % 8;
        if rest != 0 {
            let w = self.u64_at(g.word_off(slot, full)).load(Ordering::Relaxed);
            let b = w.to_ne_bytes();
            // SAFETY: 8 * full + rest == size: in bounds of `dst`; `b` is 8 private bytes.
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), dst.add(8 * full), rest) };
        }
    }

    /// Writes `src` as the new value of `slot` and returns its version. Only the writer
    /// (one process, one thread at a time) may call it.
    ///
    /// An odd `seq` (a write whose writer died) is not bumped at the start: it stays odd
    /// until this write is complete (see the module docs).
    ///
    /// # Safety
    /// `src` is valid for reads of `geo.size` bytes (any alignment); `slot < geo.slots`.
    pub(crate) unsafe fn write(&self, slot: usize, src: *const u8) -> u64 {
        let seq = self.seq(slot);
        let s = seq.load(Ordering::Relaxed);
        let begin = if s & 1 == 0 {
            let b = s.wrapping_add(1);
            seq.store(b, Ordering::Relaxed);
            b
        } else {
            s
        };
        fence(Ordering::Release);
        // SAFETY: the caller's contract.
        unsafe { self.store_words(slot, src, usize::MAX) };
        let end = begin.wrapping_add(1);
        seq.store(end, Ordering::Release);
        end / 2
    }

    /// Writes `src` into `slot` without touching `seq`: only before the table is
    /// published (initialisation).
    ///
    /// # Safety
    /// As for [`Self::write`].
    pub(crate) unsafe fn fill(&self, slot: usize, src: *const u8) {
        // SAFETY: the caller's contract.
        unsafe { self.store_words(slot, src, usize::MAX) }
    }

    /// The first half of a write that never finishes: `seq` made odd, then only the first
    /// `words` value words stored (what a writer killed mid-write leaves; tests and the
    /// fuzz driver use it).
    ///
    /// # Safety
    /// As for [`Self::write`].
    #[cfg(any(fuzzing, test, feature = "test-hooks"))]
    pub(crate) unsafe fn write_prefix(&self, slot: usize, src: *const u8, words: usize) {
        let seq = self.seq(slot);
        let s = seq.load(Ordering::Relaxed);
        if s & 1 == 0 {
            seq.store(s.wrapping_add(1), Ordering::Relaxed);
        }
        fence(Ordering::Release);
        // SAFETY: the caller's contract.
        unsafe { self.store_words(slot, src, words) };
    }

    /// Copies `src` into the value words of `slot` with relaxed atomic stores (the last
    /// word's padding as zeros), at most `limit` words.
    ///
    /// # Safety
    /// As for [`Self::write`].
    #[inline(always)]
    unsafe fn store_words(&self, slot: usize, src: *const u8, limit: usize) {
        let g = &self.geo;
        let full = g.size / 8;
        for k in 0..full.min(limit) {
            // SAFETY: 8(k + 1) <= size: in bounds of `src` (caller); unaligned load.
            let w = unsafe { src.add(8 * k).cast::<u64>().read_unaligned() };
            self.u64_at(g.word_off(slot, k)).store(w, Ordering::Relaxed);
        }
        let rest = g.size % 8;
        if rest != 0 && full < limit {
            let mut b = [0u8; 8];
            // SAFETY: 8 * full + rest == size: in bounds of `src`.
            unsafe { std::ptr::copy_nonoverlapping(src.add(8 * full), b.as_mut_ptr(), rest) };
            self.u64_at(g.word_off(slot, full))
                .store(u64::from_ne_bytes(b), Ordering::Relaxed);
        }
    }
}

/// A fresh table over a new heap buffer (64-aligned), for tests, Miri, loom and the fuzz
/// driver. The table points into the returned buffer's heap allocation: keep the buffer
/// alive (moving the `Vec` does not move it) for as long as the table is used.
#[cfg(any(fuzzing, test))]
#[cfg_attr(shmkit_loom, allow(dead_code))]
pub(crate) fn heap_table(geo: Geometry) -> (Vec<u64>, Table) {
    let mut buf = vec![0u64; geo.total / 8 + 8];
    let raw = buf.as_mut_ptr() as usize;
    let pad = (raw.next_multiple_of(64) - raw) / 8;
    // SAFETY: `pad` < 8 words: inside `buf`, which has 8 words beyond geo.total bytes.
    let base = unsafe { buf.as_mut_ptr().add(pad) } as *mut u8;
    // SAFETY: valid for geo.total bytes while the caller keeps `buf` (documented),
    // 64-aligned, only accessed atomically.
    let table = unsafe { Table::new(base, geo) };
    table.init();
    (buf, table)
}

/// Between read attempts: spin a little (a write of a small value takes nanoseconds),
/// then give the CPU away (a writer preempted mid-write needs it).
#[inline]
fn backoff(attempt: u32) {
    if attempt < 64 {
        std::hint::spin_loop();
    } else {
        #[cfg(shmkit_loom)]
        loom::thread::yield_now();
        #[cfg(not(shmkit_loom))]
        std::thread::yield_now();
    }
}

#[cfg(all(test, not(shmkit_loom)))]
mod tests {
    use super::*;

    pub(crate) fn table(slots: u64, size: u64, align: u64) -> (Vec<u64>, Table) {
        heap_table(Geometry::new(slots, size, align).unwrap())
    }

    fn read_bytes(t: &Table, slot: usize, retries: u32) -> Result<(Vec<u8>, u64), ReadFail> {
        let mut out = vec![0u8; t.geo.size];
        // SAFETY: `out` holds size bytes; callers pass slot < slots.
        let v = unsafe { t.read(slot, out.as_mut_ptr(), retries) }?;
        Ok((out, v))
    }

    fn write_bytes(t: &Table, slot: usize, bytes: &[u8]) -> u64 {
        assert_eq!(bytes.len(), t.geo.size);
        // SAFETY: `bytes` holds size bytes; callers pass slot < slots.
        unsafe { t.write(slot, bytes.as_ptr()) }
    }

    #[test]
    fn geometry_limits() {
        assert!(Geometry::new(0, 8, 8).is_none());
        assert!(Geometry::new(MAX_SLOTS + 1, 8, 8).is_none());
        assert!(Geometry::new(1, 0, 1).is_none());
        assert!(Geometry::new(1, MAX_VALUE + 1, 1).is_none());
        assert!(Geometry::new(1, 8, 3).is_none());
        assert!(Geometry::new(1, 8, 128).is_none());
        let g = Geometry::new(1, 8, 8).unwrap();
        assert_eq!((g.data_off, g.words, g.stride, g.total), (8, 1, 64, 192));
        let g = Geometry::new(3, 57, 32).unwrap();
        assert_eq!((g.data_off, g.words, g.stride), (32, 8, 128));
    }

    #[test]
    fn write_then_read_every_size() {
        for size in [1u64, 3, 7, 8, 9, 15, 16, 17, 64, 100] {
            let (_buf, t) = table(2, size, 1);
            let (zero, v0) = read_bytes(&t, 1, 0).unwrap();
            assert_eq!((zero, v0), (vec![0; size as usize], 0));
            for round in 1..4u8 {
                let val: Vec<u8> = (0..size as u8).map(|i| i ^ round).collect();
                assert_eq!(write_bytes(&t, 1, &val), u64::from(round));
                assert_eq!(read_bytes(&t, 1, 0).unwrap(), (val, u64::from(round)));
            }
            // The other slot is untouched.
            assert_eq!(read_bytes(&t, 0, 0).unwrap().1, 0);
        }
    }

    #[test]
    fn odd_sequence_fails_bounded_and_a_write_repairs_it() {
        let (_buf, t) = table(1, 16, 8);
        write_bytes(&t, 0, &[1; 16]);
        // A writer dies mid-write: seq odd, half the value new.
        t.seq(0).store(3, Ordering::Relaxed);
        assert_eq!(read_bytes(&t, 0, 100), Err(ReadFail::Odd));
        // The next write keeps it odd while writing, then completes it.
        assert_eq!(write_bytes(&t, 0, &[2; 16]), 2);
        assert_eq!(t.seq(0).load(Ordering::Relaxed), 4);
        assert_eq!(read_bytes(&t, 0, 0).unwrap(), (vec![2; 16], 2));
    }

    #[test]
    fn concurrent_reads_are_never_torn() {
        let (_buf, t) = table(1, 40, 8);
        let n: u64 = if cfg!(miri) { 30 } else { 20_000 };
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 1..=n {
                    let v = [i; 5];
                    // SAFETY: 40 bytes; slot 0 exists.
                    unsafe { t.write(0, v.as_ptr().cast()) };
                }
            });
            let mut last = 0;
            while last < n {
                let mut v = [0u64; 5];
                // SAFETY: 40 bytes; slot 0 exists.
                if let Ok(ver) = unsafe { t.read(0, v.as_mut_ptr().cast(), 1000) } {
                    assert!(v.iter().all(|&w| w == v[0]), "torn: {v:?}");
                    assert_eq!(v[0], ver, "version and value agree");
                    assert!(ver >= last, "versions never go back");
                    last = ver;
                }
            }
        });
    }
}
