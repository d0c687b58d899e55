//! Length-prefixed framing for byte streams (used by [`Fifo`](crate::fifo)).
//!
//! A frame is a 4-byte little-endian payload length followed by the payload:
//!
//! ```text
//! +----------------+----------------------+
//! | len: u32 (LE)  | payload: len bytes   |
//! +----------------+----------------------+
//! ```
//!
//! The format is deliberately trivial so that any language can speak it (Python:
//! `struct.pack("<I", len(b)) + b`). [`decode`] is a pure, total function over untrusted
//! bytes — no allocation, no panics, no arithmetic that can overflow — and is the fuzz
//! target for the transports.
//!
//! ```
//! use shmkit::frame::{self, Decoded};
//! let mut wire = Vec::new();
//! frame::encode_into(b"hello", &mut wire);
//! assert_eq!(wire, b"\x05\x00\x00\x00hello");
//! match frame::decode(&wire, 4092)? {
//!     Decoded::Frame { payload, consumed } => {
//!         assert_eq!(&wire[payload], b"hello");
//!         assert_eq!(consumed, 9);
//!     }
//!     Decoded::Incomplete { .. } => unreachable!(),
//! }
//! # Ok::<(), shmkit::frame::FrameError>(())
//! ```

use std::ops::Range;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;

/// What [`decode`] found at the start of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame: `buf[payload]` is the payload; `consumed` bytes (header + payload)
    /// can be dropped from the front of the buffer.
    Frame {
        /// Where the payload lies in the buffer.
        payload: Range<usize>,
        /// Header plus payload length.
        consumed: usize,
    },
    /// Not enough bytes yet: at least `needed` bytes in total are required.
    Incomplete {
        /// Total buffer length needed to make progress.
        needed: usize,
    },
}

/// Why a buffer does not start with a valid frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announces more than the reader accepts (a corrupt or hostile writer).
    #[error("frame header announces {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// The announced payload length.
        len: u64,
        /// The reader's limit.
        max: usize,
    },
}

/// Decodes the frame at the start of `buf`, accepting payloads of at most `max_payload`
/// bytes. Total on every input.
pub fn decode(buf: &[u8], max_payload: usize) -> Result<Decoded, FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(Decoded::Incomplete { needed: HEADER_LEN });
    };
    let len = u32::from_le_bytes(*header);
    let Ok(len_usize) = usize::try_from(len) else {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            max: max_payload,
        });
    };
    if len_usize > max_payload {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            max: max_payload,
        });
    }
    // `len_usize <= u32::MAX`, so this cannot overflow a 64-bit usize; checked anyway.
    let Some(total) = HEADER_LEN.checked_add(len_usize) else {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            max: max_payload,
        });
    };
    if buf.len() < total {
        return Ok(Decoded::Incomplete { needed: total });
    }
    Ok(Decoded::Frame {
        payload: HEADER_LEN..total,
        consumed: total,
    })
}

/// The header for a payload of `len` bytes, or `None` if `len` does not fit in a `u32`.
pub fn header(len: usize) -> Option<[u8; HEADER_LEN]> {
    u32::try_from(len).ok().map(u32::to_le_bytes)
}

/// Appends the frame for `payload` to `out`.
///
/// # Panics
/// If `payload` is 4 GiB or longer (callers check their own, much smaller, limits first).
pub fn encode_into(payload: &[u8], out: &mut Vec<u8>) {
    let h = header(payload.len()).expect("frame payload must be shorter than 4 GiB");
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edge_cases() {
        assert_eq!(decode(&[], 10), Ok(Decoded::Incomplete { needed: 4 }));
        assert_eq!(
            decode(&[1, 0, 0], 10),
            Ok(Decoded::Incomplete { needed: 4 })
        );
        assert_eq!(
            decode(&[2, 0, 0, 0, 9], 10),
            Ok(Decoded::Incomplete { needed: 6 })
        );
        assert_eq!(
            decode(&[0, 0, 0, 0], 0),
            Ok(Decoded::Frame {
                payload: 4..4,
                consumed: 4
            })
        );
        assert_eq!(
            decode(&[0xff; 8], usize::MAX),
            Ok(Decoded::Incomplete {
                needed: 4 + u32::MAX as usize
            })
        );
        assert_eq!(
            decode(&[11, 0, 0, 0], 10),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
    }

    proptest! {
        #[test]
        fn roundtrip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
            let mut wire = Vec::new();
            for p in &payloads {
                encode_into(p, &mut wire);
            }
            let mut at = 0;
            for p in &payloads {
                match decode(&wire[at..], 300).unwrap() {
                    Decoded::Frame { payload, consumed } => {
                        prop_assert_eq!(&wire[at..][payload], &p[..]);
                        at += consumed;
                    }
                    Decoded::Incomplete { .. } => prop_assert!(false, "incomplete"),
                }
            }
            prop_assert_eq!(at, wire.len());
        }

        #[test]
        fn total_on_hostile_bytes(buf in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..100) {
            match decode(&buf, max) {
                Ok(Decoded::Frame { payload, consumed }) => {
                    prop_assert!(payload.end <= buf.len() && payload.end == consumed);
                    prop_assert!(payload.len() <= max);
                }
                Ok(Decoded::Incomplete { needed }) => prop_assert!(needed > buf.len()),
                Err(FrameError::TooLarge { len, max: m }) => prop_assert!(len > m as u64),
            }
        }
    }
}
