//! Frame decoding (the FIFO wire format) is total: any bytes and any limit give a frame, a
//! request for more bytes, or a TooLarge error — never a panic or an out-of-bounds range —
//! and decoding a stream frame by frame re-encodes to exactly the bytes consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmkit::frame::{self, Decoded, FrameError};

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the reader's payload limit (0..=65535), the rest is the
    // stream, so that both accepted and refused lengths are reached.
    let (max, stream) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (4092, data),
    };
    let mut at = 0;
    let mut reencoded = Vec::new();
    loop {
        match frame::decode(&stream[at..], max) {
            Ok(Decoded::Frame { payload, consumed }) => {
                assert_eq!(payload.start, frame::HEADER_LEN);
                assert_eq!(payload.end, consumed);
                assert!(consumed <= stream.len() - at);
                assert!(payload.len() <= max);
                frame::encode_into(&stream[at..][payload], &mut reencoded);
                at += consumed;
            }
            Ok(Decoded::Incomplete { needed }) => {
                assert!(needed > stream.len() - at);
                break;
            }
            Err(FrameError::TooLarge { len, max: m }) => {
                assert_eq!(m, max);
                assert!(len > max as u64);
                break;
            }
        }
    }
    assert_eq!(reencoded, &stream[..at]);
});
