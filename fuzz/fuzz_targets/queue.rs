//! Queue ring state is hostile input: arbitrary control words, sequence numbers and
//! participant entries, then arbitrary operations (send, receive, cancel, recover, SPSC
//! roles, attach/detach/close, kills, sweeps, take_lost, entry takeovers). Any outcome but
//! a panic, an out-of-bounds access or a hang is fine; corrupt states must come back as
//! `Corrupt` or as "would block". With bit 1 of the third byte set (MPMC), the ring
//! starts clean and the operations run against a model that asserts the disconnection
//! and dead-participant invariants (see `src/queue/fuzz.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shmkit::queue::fuzz_ring(data);
});
