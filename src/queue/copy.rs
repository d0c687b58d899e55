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

use std::ptr::{read_unaligned, read_volatile, write_unaligned, write_volatile};

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
    // SAFETY: the caller's contract is `copy`'s, with `dst` the shared side. `copy::<false>`
    // only reads through the private pointer.
    unsafe { copy::<false>(dst, src.cast_mut(), len) }
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
    use std::arch::x86_64::{__m128i, __m256i};

    use super::mv;

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
