//! `spin-floor`: the hardware reference. One shared region holds a turn counter followed by
//! the message; the two processes strictly alternate (parent sends, child receives and
//! replies, parent receives, ...), each spinning on the turn word until it is its turn.
//! No acknowledgement, no slot release: the reply itself hands the region back. At 64 B the
//! turn word and the message share the first cache line, and the last 4 bytes spill into a
//! second one; nothing cheaper can move 64 checked bytes each way between two cores.
//!
//! It only supports strict alternation (`depth` 1, one message in flight in the whole
//! channel): a side that sends twice in a row waits for a turn that never comes and gets
//! [`Error::Timeout`](shmkit::Error::Timeout), never corrupted data. The stream workload
//! therefore lists it as not applicable (its ceiling there is `memcpy`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use nix::unistd::Pid;
use shmkit::{Error, Result};

use crate::channel::{Channel, ChannelParams, Side};
use crate::shm::SharedMem;
use crate::slot::WAIT_LIMIT;

const PAYLOAD_AT: usize = 4;

/// The strict-alternation ping-pong region.
pub struct FloorChannel {
    mem: SharedMem,
    size: usize,
    /// Messages this process has sent / received.
    sent: u32,
    received: u32,
}

impl FloorChannel {
    /// A region for messages of `p.size` bytes; `p.depth` must be 1.
    pub fn boxed(p: ChannelParams) -> Result<Box<dyn Channel>> {
        if p.depth != 1 {
            return Err(Error::invalid(
                "spin-floor",
                "create",
                "the floor is a strict-alternation ping-pong (depth 1), not a stream",
            ));
        }
        let mem = SharedMem::anonymous(PAYLOAD_AT + p.size)?;
        Ok(Box::new(FloorChannel {
            mem,
            size: p.size,
            sent: 0,
            received: 0,
        }))
    }

    fn turn(&self) -> &AtomicU32 {
        // SAFETY: offset 0 of a 64-byte aligned mapping of at least 64 bytes that lives as
        // long as self; AtomicU32 may alias memory the peer writes.
        unsafe { &*(self.mem.ptr() as *const AtomicU32) }
    }

    /// Spins until the turn word equals `target`, checking the clock every 65536 spins.
    #[inline]
    fn wait_turn(&self, target: u32) -> Result<()> {
        let turn = self.turn();
        let mut spins = 0u32;
        let mut start: Option<Instant> = None;
        while turn.load(Ordering::Acquire) != target {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins & 0xFFFF == 0 {
                let now = Instant::now();
                if now.duration_since(*start.get_or_insert(now)) > WAIT_LIMIT {
                    return Err(Error::Timeout {
                        resource: "spin-floor".into(),
                        op: "waiting for the peer's turn",
                        timeout: WAIT_LIMIT,
                    });
                }
            }
        }
        Ok(())
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len == self.size {
            Ok(())
        } else {
            Err(Error::invalid(
                "spin-floor",
                "transfer",
                format!("{len} bytes, made for {}", self.size),
            ))
        }
    }
}

/// The global number of the `j`-th message sent by `side`: the parent sends the even
/// ones, the child the odd ones.
fn global(side: Side, j: u32) -> u32 {
    j.wrapping_mul(2).wrapping_add(side.index() as u32)
}

impl Channel for FloorChannel {
    fn attach(&mut self, _: Side, _: Pid) -> Result<()> {
        Ok(())
    }

    #[inline]
    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        self.check_len(msg.len())?;
        let k = global(side, self.sent);
        self.wait_turn(k)?;
        // SAFETY: it is our turn (Acquire above): the peer has copied the previous message
        // out and will not touch the region until we publish k + 1; the region holds
        // PAYLOAD_AT + size bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), self.mem.ptr().add(PAYLOAD_AT), msg.len())
        };
        self.turn().store(k.wrapping_add(1), Ordering::Release);
        self.sent = self.sent.wrapping_add(1);
        Ok(())
    }

    #[inline]
    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        self.check_len(buf.len())?;
        let k = global(side.peer(), self.received);
        self.wait_turn(k.wrapping_add(1))?;
        // SAFETY: the peer published message k (Acquire above) and will not write the
        // region again before we send (strict alternation); `buf` is private.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.mem.ptr().add(PAYLOAD_AT),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        self.received = self.received.wrapping_add(1);
        Ok(())
    }
}
