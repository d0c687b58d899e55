//! Message payloads: the sender stamps a sequence number (and one extra word) into a
//! prepared pattern and hands all `size` bytes to the mechanism; the receiver sums every
//! byte of what it received and compares with the expected sum. A mismatch is an error.

/// The smallest message: a sequence number and one extra word.
pub const MIN_SIZE: usize = 16;

/// A reusable message buffer with a known pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    buf: Vec<u8>,
    rest_sum: u64,
}

impl Pattern {
    /// A pattern of `size` bytes (at least [`MIN_SIZE`]).
    pub fn new(size: usize) -> Pattern {
        let size = size.max(MIN_SIZE);
        let buf: Vec<u8> = (0..size)
            .map(|i| (i.wrapping_mul(31).wrapping_add(7)) as u8)
            .collect();
        let rest_sum = checksum(&buf[MIN_SIZE..]);
        Pattern { buf, rest_sum }
    }

    /// The message length.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Always false: a pattern holds at least [`MIN_SIZE`] bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes `seq` and `extra` into the first 16 bytes and returns the whole message.
    #[inline]
    pub fn stamp(&mut self, seq: u64, extra: u64) -> &[u8] {
        self.buf[0..8].copy_from_slice(&seq.to_le_bytes());
        self.buf[8..16].copy_from_slice(&extra.to_le_bytes());
        &self.buf
    }

    /// Checks a received message: its length, its sequence number, and the sum of all its
    /// bytes. Returns the extra word.
    #[inline]
    pub fn check(&self, msg: &[u8], seq: u64) -> Option<u64> {
        if msg.len() != self.buf.len() {
            return None;
        }
        let got_seq = u64::from_le_bytes(msg[0..8].try_into().ok()?);
        let extra = u64::from_le_bytes(msg[8..16].try_into().ok()?);
        let sum = checksum(msg);
        let expect = self.rest_sum.wrapping_add(seq).wrapping_add(extra);
        (got_seq == seq && sum == expect).then_some(extra)
    }
}

/// Sum of the little-endian `u64` words of `buf` (a trailing partial word is summed
/// byte-wise): reads every byte.
#[inline]
pub fn checksum(buf: &[u8]) -> u64 {
    let mut chunks = buf.chunks_exact(8);
    let mut sum = 0u64;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        sum = sum.wrapping_add(u64::from_le_bytes(w));
    }
    for &b in chunks.remainder() {
        sum = sum.wrapping_add(u64::from(b));
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_a_flipped_byte() {
        // The extra word (bytes 8..16) is free-form; every byte after it is checked.
        for size in [17, 64, 4096] {
            let mut p = Pattern::new(size);
            let mut msg = p.stamp(7, 99).to_vec();
            assert_eq!(p.check(&msg, 7), Some(99));
            assert_eq!(p.check(&msg, 8), None);
            msg[size - 1] ^= 0x10;
            assert_eq!(p.check(&msg, 7), None);
            assert_eq!(p.check(&msg[..size - 1], 7), None);
        }
    }
}
