//! Topic ring state is hostile input: arbitrary control words, participant entries, slot
//! sequence and length words, then arbitrary operations (publish under Block or
//! Overwrite, subscribe with history, read, lag recovery, kills, sweeps). Any outcome but
//! a panic, an out-of-bounds access or a hang is fine. With bit 0 of the third byte set
//! the ring starts clean and a model checks delivery, lag and dead-subscriber invariants
//! (see `src/topic/fuzz.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shmkit::topic::fuzz_topic(data);
});
