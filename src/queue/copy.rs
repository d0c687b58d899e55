//! Copies between slot memory and private memory with volatile accesses on the shared side.
//!
//! The slot protocol gives a claimer exclusive use of a slot, but a peer that does not
//! follow it (buggy or hostile) may write the slot at the same time. The copying send and
//! receive paths therefore never form a `&[u8]` / `&T` over slot bytes: they read them
//! with volatile loads into the caller's buffer (and write them with volatile stores), so
//! the compiler neither assumes the bytes stay put nor re-reads them later. What a peer
//! can do at worst is change the bytes being copied: the caller gets torn or wrong data of
//! the right length (any bytes are a valid `Pod` value), never a read or write outside
//! the slot.
//!
//! On x86-64 the bulk of a copy moves 16 bytes per volatile access (SSE2 is part of the
//! baseline), 32 bytes with AVX for long copies, which keeps it near memcpy speed;
//! elsewhere 8 bytes per access.
//!
//! # Long stores bypass the cache
//!
//! A store into shared memory whose length is in [`cache_bypass`] (default 16 KiB up to
//! 256 KiB) uses non-temporal stores on x86-64 (`movntdq`, or `vmovntdq` with AVX); why
//! and the numbers are in [`set_cache_bypass`]. x86 does not keep non-temporal stores in
//! order with other stores (Intel SDM vol. 3, "Memory Ordering in P6 and More Recent
//! Processor Families": writes are not reordered with other writes, except streaming
//! stores), and neither a `Release` store nor a `Release` fence (a compiler fence on x86)
//! orders them. So the copy is fenced on both sides with `sfence`: before, so that the
//! stores that precede it stay first (a topic marks the slot it rewrites odd before the
//! data, and a subscriber that sees new data must see the mark, or a lapped subscriber
//! could accept a torn message); after, so that the data is visible before the
//! publication that follows. No test shows the difference on the cores measured here
//! (the 40 KB process test passed with the second fence removed): the fences rest on the
//! manuals. Shorter stores, and other architectures, go through the cache.

use std::ops::Range;
use std::ptr::{read_unaligned, read_volatile, write_unaligned, write_volatile};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Copies `len` bytes from shared memory at `src` to private memory at `dst`, reading the
/// shared side with volatile loads.
///
/// # Safety
/// `src` is valid for reads of `len` bytes and 8-byte aligned; `dst` is valid for writes
/// of `len` bytes (any alignment); the two do not overlap.
#[inline(always)]
pub(crate) unsafe fn load(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller's contract is `copy`'s, with `src` the shared side.
    unsafe { copy::<true>(src.cast_mut(), dst, len) }
}

/// Copies `len` bytes from private memory at `src` to shared memory at `dst`, writing the
/// shared side with volatile stores.
///
/// # Safety
/// `src` is valid for reads of `len` bytes (any alignment); `dst` is valid for writes of
/// `len` bytes and 8-byte aligned; the two do not overlap.
#[inline(always)]
pub(crate) unsafe fn store(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if len >= BYPASS_FROM.load(Ordering::Relaxed) && len < BYPASS_BELOW.load(Ordering::Relaxed) {
        // SAFETY: the caller's contract (the same as `stream`'s); BYPASS_FROM >= 64.
        unsafe { x86::stream(src, dst, len) };
        return;
    }
    // SAFETY: the caller's contract is `copy`'s, with `dst` the shared side. `copy::<false>`
    // only reads through the private pointer.
    unsafe { copy::<false>(dst, src.cast_mut(), len) }
}

/// The lengths whose stores into shared memory bypass the cache by default (x86-64; see
/// the module docs and [`set_cache_bypass`]).
pub(crate) const DEFAULT_BYPASS: Range<usize> = 16 * 1024..256 * 1024;

/// The range in force (empty, `usize::MAX..0`: off).
static BYPASS_FROM: AtomicUsize = AtomicUsize::new(if cfg!(target_arch = "x86_64") {
    DEFAULT_BYPASS.start
} else {
    usize::MAX
});
static BYPASS_BELOW: AtomicUsize = AtomicUsize::new(if cfg!(target_arch = "x86_64") {
    DEFAULT_BYPASS.end
} else {
    0
});

/// Sets, for this process, which message lengths queues and topics write into shared
/// memory with non-temporal stores, around the cache (x86-64: `movntdq`/`vmovntdq`, then
/// `sfence`); `None` writes every message through the cache. The default is
/// `16 KiB..256 KiB` on x86-64; elsewhere the setting has no effect (messages always go
/// through the cache). A start below 64 counts as 64. Meant to be set once, at start-up (a
/// store racing with a change may go either way; both ways are correct).
///
/// A message is for a process on another core. Written through the cache, its lines sit
/// modified in the writer's L2 and the reader pulls them from there, line by line; written
/// around it, they reach memory in full-line bursts and the reader streams them. Past a
/// point, though, the writer's L2 overflows and its lines spill to the L3, from where a
/// reader that shares the L3 takes them faster than from memory. Measured here (two vCPUs
/// of an AMD EPYC with a 1 MiB L2 each, which the hypervisor places in one core complex,
/// sharing an L3, or in two, and moves between the two within minutes; a two-thread ring
/// of eight slots, and `shmkit-bench --workload stream`), GB/s through the cache against
/// around it:
///
/// | message | one complex | two complexes |
/// |--------:|------------:|--------------:|
/// | 4 KiB   | 8.4 / 5.9   | 2.1 / 6.3     |
/// | 16 KiB  | 8.8 / 10.0  | 2.2 / 11.4    |
/// | 64 KiB  | 7.8-8.9 / 17.9-18.0 | 2.3 / 22.0 |
/// | 128 KiB | 11.1 / 13.9 | 2.4 / 26.3    |
/// | 256 KiB | 29.3 / 22.1 | 2.5 / 26.9    |
/// | 1 MiB   | 47.9-49.0 / 17.2-20.4 | 2.6-3.0 / 27.3 |
///
/// The default takes the range where bypassing wins in both placements. Where the two
/// sides never share an L3 (another core complex or socket), bypassing pays at every size
/// from 4 KiB: `set_cache_bypass(Some(4096..usize::MAX))`. Where the reader shares the
/// writer's core (or L2), it never pays: `None`.
///
/// Zero-copy writes ([`super::Queue::reserve`], [`super::ByteQueue::reserve`]) through
/// the guard's `DerefMut` are the caller's own stores and are not affected; a reservation
/// filled from private memory with [`super::SendSlot::send_ref`] or
/// [`super::SendBytes::write_from_slice`] takes the copying send's path, bypass included.
///
/// ```
/// use shmkit::queue::{cache_bypass, set_cache_bypass};
/// let before = cache_bypass();
/// set_cache_bypass(Some(4096..usize::MAX));
/// assert_eq!(cache_bypass(), if cfg!(target_arch = "x86_64") { Some(4096..usize::MAX) } else { None });
/// set_cache_bypass(None);
/// assert_eq!(cache_bypass(), None);
/// set_cache_bypass(before);
/// ```
pub fn set_cache_bypass(lengths: Option<Range<usize>>) {
    let (from, below) = match lengths {
        Some(r) if cfg!(target_arch = "x86_64") && r.start.max(64) < r.end => {
            (r.start.max(64), r.end)
        }
        _ => (usize::MAX, 0),
    };
    BYPASS_BELOW.store(below, Ordering::Relaxed);
    BYPASS_FROM.store(from, Ordering::Relaxed);
}

/// Which message lengths bypass the cache in this process (`None`: none); see
/// [`set_cache_bypass`].
pub fn cache_bypass() -> Option<Range<usize>> {
    let (from, below) = (
        BYPASS_FROM.load(Ordering::Relaxed),
        BYPASS_BELOW.load(Ordering::Relaxed),
    );
    (from < below).then_some(from..below)
}

/// Moves one `W` between `shared` and `private` (to private if `LOAD`), volatile on the
/// shared side.
///
/// # Safety
/// Both pointers are valid for a `W` (read on one side, written on the other), `shared`
/// aligned for `W`; they do not overlap.
#[inline(always)]
unsafe fn mv<W: Copy, const LOAD: bool>(shared: *mut u8, private: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe {
        if LOAD {
            write_unaligned(private as *mut W, read_volatile(shared as *const W));
        } else {
            write_volatile(shared as *mut W, read_unaligned(private as *const W));
        }
    }
}

/// Copies `len` bytes between `shared` and `private` (to private if `LOAD`).
///
/// # Safety
/// Both are valid for `len` bytes (read on one side, written on the other), `shared`
/// 8-byte aligned; they do not overlap.
#[inline(always)]
unsafe fn copy<const LOAD: bool>(shared: *mut u8, private: *mut u8, len: usize) {
    debug_assert!(shared as usize % 8 == 0);
    #[allow(unused_mut)]
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    if len >= 64 {
        // SAFETY: the caller's contract; `bulk` returns how much it copied, a multiple of
        // 8 no greater than `len`.
        i = unsafe { x86::bulk::<LOAD>(shared, private, len) };
    }
    while i + 8 <= len {
        // SAFETY: in bounds; `shared + i` is 8-aligned (i is a multiple of 8).
        unsafe { mv::<u64, LOAD>(shared.add(i), private.add(i)) };
        i += 8;
    }
    while i < len {
        // SAFETY: in bounds; bytes need no alignment.
        unsafe { mv::<u8, LOAD>(shared.add(i), private.add(i)) };
        i += 1;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128, _mm256_loadu_si256,
        _mm256_stream_si256,
    };

    use super::mv;

    /// Copies `len` bytes from private `src` to shared `dst` with non-temporal stores for
    /// the aligned bulk (volatile stores for the unaligned head and the tail), between two
    /// `sfence`s: every earlier store is globally visible before any of these, and every
    /// one of these before any later store.
    ///
    /// # Safety
    /// As for `super::store`, and `len >= 64`.
    #[inline(never)]
    pub(super) unsafe fn stream(src: *const u8, dst: *mut u8, len: usize) {
        // SAFETY: a plain fence (no memory operand).
        unsafe { _mm_sfence() };
        let done = if std::is_x86_feature_detected!("avx") {
            // SAFETY: the caller's contract; the CPU has AVX (checked).
            unsafe { stream_avx(src, dst, len) }
        } else {
            let mut i = 0;
            // Align the shared side to 16 (it is 8-aligned): one u64 at most.
            if dst as usize % 16 != 0 {
                // SAFETY: 8 <= len; `dst` is 8-aligned.
                unsafe { mv::<u64, false>(dst, src.cast_mut()) };
                i = 8;
            }
            while i + 64 <= len {
                // SAFETY: i + 64 <= len; `dst + i` is 16-aligned (above), so is every
                // `+ 16 k`; the loads are unaligned reads of private memory.
                unsafe {
                    for k in 0..4 {
                        let o = i + 16 * k;
                        _mm_stream_si128(
                            dst.add(o).cast::<__m128i>(),
                            _mm_loadu_si128(src.add(o).cast::<__m128i>()),
                        );
                    }
                }
                i += 64;
            }
            i
        };
        // SAFETY: plain fence; then the rest (`done` is a multiple of 8, so `dst + done`
        // stays 8-aligned) through the cache.
        unsafe {
            _mm_sfence();
            super::copy::<false>(dst.add(done), src.add(done).cast_mut(), len - done);
        }
    }

    /// [`stream`]'s bulk with 32-byte stores; returns how much it copied (a multiple of 8).
    ///
    /// # Safety
    /// As for [`stream`], and the CPU supports AVX.
    #[target_feature(enable = "avx")]
    unsafe fn stream_avx(src: *const u8, dst: *mut u8, len: usize) -> usize {
        let mut i = 0;
        // Align the shared side to 32: three u64 at most.
        while (dst as usize + i) % 32 != 0 {
            // SAFETY: i + 8 <= 24 < len; `dst + i` is 8-aligned.
            unsafe { mv::<u64, false>(dst.add(i), src.add(i).cast_mut()) };
            i += 8;
        }
        while i + 128 <= len {
            // SAFETY: i + 128 <= len; `dst + i` is 32-aligned (above), so is every
            // `+ 32 k`; the loads are unaligned reads of private memory.
            unsafe {
                for k in 0..4 {
                    let o = i + 32 * k;
                    _mm256_stream_si256(
                        dst.add(o).cast::<__m256i>(),
                        _mm256_loadu_si256(src.add(o).cast::<__m256i>()),
                    );
                }
            }
            i += 128;
        }
        i
    }

    /// Copies a prefix of `len >= 64` bytes in vector-sized volatile accesses and returns
    /// its length (a multiple of 8, at most `len`). SSE2 is baseline on x86-64; AVX is
    /// used for long copies where the CPU has it (detection is a cached flag).
    ///
    /// # Safety
    /// As for `super::copy`.
    #[inline(always)]
    pub(super) unsafe fn bulk<const LOAD: bool>(
        shared: *mut u8,
        private: *mut u8,
        len: usize,
    ) -> usize {
        if len >= 256 && std::is_x86_feature_detected!("avx") {
            // SAFETY: the caller's contract; the CPU has AVX (checked).
            return unsafe { avx::<LOAD>(shared, private, len) };
        }
        let mut i = 0;
        // Align the shared side to 16 (it is 8-aligned): one u64 at most.
        if shared as usize % 16 != 0 {
            // SAFETY: 8 <= len; `shared` is 8-aligned.
            unsafe { mv::<u64, LOAD>(shared, private) };
            i = 8;
        }
        while i + 64 <= len {
            // SAFETY: i + 64 <= len; `shared + i` is 16-aligned (above), so is every
            // `+ 16 k`.
            unsafe {
                for k in 0..4 {
                    mv::<__m128i, LOAD>(shared.add(i + 16 * k), private.add(i + 16 * k));
                }
            }
            i += 64;
        }
        i
    }

    /// As [`bulk`], 32 bytes per access, for CPUs with AVX.
    ///
    /// # Safety
    /// As for `super::copy`, `len >= 256`, and the CPU supports AVX.
    #[target_feature(enable = "avx")]
    unsafe fn avx<const LOAD: bool>(shared: *mut u8, private: *mut u8, len: usize) -> usize {
        let mut i = 0;
        // Align the shared side to 32: three u64 at most.
        while (shared as usize + i) % 32 != 0 {
            // SAFETY: i + 8 <= 24 < len; `shared + i` is 8-aligned.
            unsafe { mv::<u64, LOAD>(shared.add(i), private.add(i)) };
            i += 8;
        }
        while i + 128 <= len {
            // SAFETY: i + 128 <= len; `shared + i` is 32-aligned (above), so is every
            // `+ 32 k`.
            unsafe {
                for k in 0..4 {
                    mv::<__m256i, LOAD>(shared.add(i + 32 * k), private.add(i + 32 * k));
                }
            }
            i += 128;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores long enough to bypass the cache, around the threshold and the 128-byte
    /// loop boundary, at every 8-byte offset modulo 32 of the shared side.
    #[test]
    #[cfg_attr(miri, ignore = "non-temporal stores and sfence: not in Miri")]
    fn long_stores_bypassing_the_cache_are_exact() {
        assert_eq!(
            cache_bypass(),
            cfg!(target_arch = "x86_64").then_some(DEFAULT_BYPASS),
            "the default"
        );
        const STREAM_FROM: usize = DEFAULT_BYPASS.start;
        let n = STREAM_FROM + 400;
        let src: Vec<u8> = (0..n + 8).map(|i| (i * 7 + i / 251) as u8).collect();
        for len in [
            STREAM_FROM - 8,
            STREAM_FROM,
            STREAM_FROM + 1,
            STREAM_FROM + 127,
            n - 32,
        ] {
            for skew in [0usize, 8, 16, 24] {
                for src_off in [0usize, 1, 5] {
                    let mut shared = vec![0u64; n / 8 + 8];
                    // SAFETY: skew + len <= n + 32 bytes of `shared`, 8-aligned at skew;
                    // src_off + len <= n + 8.
                    unsafe {
                        store(
                            src.as_ptr().add(src_off),
                            (shared.as_mut_ptr() as *mut u8).add(skew),
                            len,
                        )
                    };
                    let b = bytemuck::cast_slice::<u64, u8>(&shared);
                    assert_eq!(
                        &b[skew..skew + len],
                        &src[src_off..src_off + len],
                        "{len} {skew} {src_off}"
                    );
                    assert!(b[..skew].iter().all(|&x| x == 0));
                    assert!(b[skew + len..].iter().all(|&x| x == 0));
                }
            }
        }
    }

    #[test]
    fn copies_every_length_and_alignment_exactly() {
        // Shared sides at every 8-byte offset modulo 32, unaligned private sides, lengths
        // around every loop boundary (8-byte, 16-byte and, past 256, 32-byte chunks).
        let shared: Vec<u64> = (0..64u64)
            .map(|i| i.wrapping_mul(0x0101_0101_0101_0101) ^ 0xa5)
            .collect();
        let base = shared.as_ptr() as *const u8;
        let lens: &[usize] = if cfg!(miri) {
            &[0, 1, 7, 8, 9, 63, 64, 65, 136, 200, 300]
        } else {
            &[
                0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 71, 72, 127, 128, 129, 136, 200, 255,
                256, 257, 300, 383, 384, 440,
            ]
        };
        for skew in [0usize, 8, 16, 24] {
            for &len in lens {
                for dst_off in [0usize, 1, 3] {
                    // SAFETY: skew + len <= 512 bytes of `shared`.
                    let src = unsafe { base.add(skew) };
                    let want: Vec<u8> =
                        bytemuck::cast_slice::<u64, u8>(&shared)[skew..skew + len].to_vec();
                    let mut out = vec![0u8; len + 4];
                    // SAFETY: src has len readable bytes, 8-aligned; out has dst_off + len.
                    unsafe { load(src, out.as_mut_ptr().add(dst_off), len) };
                    assert_eq!(
                        &out[dst_off..dst_off + len],
                        &want[..],
                        "load {skew} {len} {dst_off}"
                    );

                    let mut back = vec![0u64; 64];
                    // SAFETY: back has skew + len writable bytes, 8-aligned at skew.
                    unsafe {
                        store(
                            out.as_ptr().add(dst_off),
                            (back.as_mut_ptr() as *mut u8).add(skew),
                            len,
                        )
                    };
                    let back = bytemuck::cast_slice::<u64, u8>(&back);
                    assert_eq!(
                        &back[skew..skew + len],
                        &want[..],
                        "store {skew} {len} {dst_off}"
                    );
                    assert!(back[..skew].iter().all(|&b| b == 0));
                    assert!(back[skew + len..].iter().all(|&b| b == 0));
                }
            }
        }
    }
}
