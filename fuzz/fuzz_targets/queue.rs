//! Queue ring state is hostile input: arbitrary control words, sequence numbers and
//! participant entries, then arbitrary operations (send, receive, cancel, recover, SPSC
//! roles). Any outcome but a panic, an out-of-bounds access or a hang is fine; corrupt
//! states must come back as `Corrupt` or as "would block".
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shmkit::queue::fuzz_ring(data);
});
