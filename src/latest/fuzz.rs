//! The fuzz entry point of the seqlock table ([`fuzz_latest`], driven by
//! `fuzz/fuzz_targets/latest.rs`).
//!
//! The input's first bytes choose the geometry (slots, value size, alignment); the next
//! ones overwrite words of a fresh table (writer word, wait point, sequence words, value
//! words: hostile bytes in the cell); the rest is a list of operations: reads with a small
//! retry limit, writes, torn writes (a writer killed mid-write), and sequence changes
//! between operations. Reads must return a value or a read failure, never panic, touch
//! memory outside the table or loop without bound. After a complete write by the writer,
//! a read of that slot must return exactly what was written, with the version the write
//! returned (nobody else writes in between). The input bytes are also indexed as a
//! keyed board's key table (`keyed::index_keys`): keys or the first repeat, never a panic.

use std::sync::atomic::Ordering;

use super::cell::{Geometry, Table, heap_table};

/// Runs one fuzz input (see the module docs). Public for the fuzz target only.
#[doc(hidden)]
pub fn fuzz_latest(data: &[u8]) {
    let mut it = data.iter().copied();
    let mut next = move || it.next();
    let (Some(a), Some(b), Some(c)) = (next(), next(), next()) else {
        return;
    };
    let slots = u64::from(a % 4) + 1;
    let size = u64::from(b % 80) + 1;
    let align = 1u64 << (c % 7); // 1..=64
    let Some(geo) = Geometry::new(slots, size, align) else {
        return;
    };
    let (buf, table) = heap_table(geo);
    // Hostile prefix: (word index, 8 bytes) pairs over the whole table.
    let n_hostile = next().unwrap_or(0) % 16;
    let total_words = geo.total / 8;
    for _ in 0..n_hostile {
        let Some(i) = next() else { return };
        let mut w = [0u8; 8];
        for x in &mut w {
            *x = next().unwrap_or(0);
        }
        hostile_store(&table, usize::from(i) % total_words, u64::from_le_bytes(w));
    }
    let mut value = vec![0u8; geo.size];
    let mut out = vec![0u8; geo.size];
    while let Some(op) = next() {
        let slot = usize::from(op >> 4) % geo.slots;
        match op % 4 {
            0 => {
                // SAFETY: `out` holds geo.size bytes; slot < slots.
                let _ = unsafe { table.read(slot, out.as_mut_ptr(), u32::from(op >> 6)) };
            }
            1 => {
                let fill = next().unwrap_or(0);
                value
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| *x = fill ^ i as u8);
                // SAFETY: `value` holds geo.size bytes; slot < slots.
                let version = unsafe { table.write(slot, value.as_ptr()) };
                // SAFETY: as above.
                let r = unsafe { table.read(slot, out.as_mut_ptr(), 0) };
                assert_eq!(r, Ok(version), "a complete write reads back");
                assert_eq!(out, value, "a complete write reads back");
            }
            2 => {
                let words = usize::from(next().unwrap_or(0));
                // SAFETY: `value` holds geo.size bytes; slot < slots.
                unsafe { table.write_prefix(slot, value.as_ptr(), words) };
            }
            _ => {
                let s = u64::from(next().unwrap_or(0));
                table.seq(slot).store(s, Ordering::Relaxed);
            }
        }
    }
    // The waiter side of the wait point with hostile words: the wake must not fault.
    table.wait_point().wake();
    // A keyed board's key table, as a hostile peer may leave it: the input itself, read
    // as keys of two sizes. Indexing must give the keys or the first repeat, no panic.
    for keys in [data, data.get(3..).unwrap_or_default()] {
        if let Ok((k, index)) = super::keyed::index_keys::<[u8; 3]>(keys) {
            assert_eq!(k.len(), index.len());
        }
        if let Err(i) = super::keyed::index_keys::<u16>(keys) {
            assert!(i < keys.len() / 2);
        }
    }
    drop(buf);
}

/// Stores `w` into word `i` of the table as a hostile peer would.
fn hostile_store(table: &Table, i: usize, w: u64) {
    let g = table.geo;
    let off = i * 8;
    if off == 0 {
        table.writer().store(w, Ordering::Relaxed);
    } else if off == 64 {
        let wp = table.wait_point();
        wp.word.store(w as u32, Ordering::Relaxed);
        wp.sleepers.store((w >> 32) as u32, Ordering::Relaxed);
    } else if off == 72 {
        table.wait_point().armed.store(w as u32, Ordering::Relaxed);
    } else if off >= 128 {
        let slot = (off - 128) / g.stride;
        if slot < g.slots && (off - 128) % g.stride == 0 {
            table.seq(slot).store(w, Ordering::Relaxed);
        }
        // Value words: garbage that a later read copies; reach them through a torn write.
        else if slot < g.slots {
            let bytes = vec![w as u8; g.size];
            // SAFETY: `bytes` holds geo.size bytes; slot < slots.
            unsafe { table.write_prefix(slot, bytes.as_ptr(), usize::MAX) };
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_driver_smoke() {
        // A few fixed inputs, and every prefix of a longer one.
        let long: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();
        let n = if cfg!(miri) { 20 } else { long.len() };
        for k in 0..n {
            super::fuzz_latest(&long[..k]);
        }
        super::fuzz_latest(&[3, 79, 6, 0, 1, 1, 0, 2, 5, 0, 3, 9, 0]);
    }
}
