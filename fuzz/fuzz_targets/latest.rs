//! Latest-value table state is hostile input: a geometry (slots, value size, alignment),
//! arbitrary words over the writer word, the wait point, sequence and value words, then
//! arbitrary operations (reads with small retry limits, complete writes, writes cut off
//! mid-way as by a killed writer, sequence changes). Reads must return a value or a
//! bounded failure, never panic, touch memory outside the table or hang; a complete
//! write must read back exactly (see `src/latest/fuzz.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shmkit::latest::fuzz_latest(data);
});
