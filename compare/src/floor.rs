//! `spin-floor`: the hardware reference, the classic ping-pong. Each direction has one
//! region: a turn word followed by the message. The sender copies the message in and stores
//! the new turn (Release); the receiver spins on the turn word (Acquire) and copies the
//! message out. No acknowledgement and no slot release: under strict alternation the reply
//! proves the previous message was consumed. At 64 B the turn word and the first 60 bytes
//! share a cache line and 4 bytes spill into a second one.
//!
//! (A single region shared by both directions measured ~35% slower here: the side spinning
//! for the reply keeps stealing the line the other side is writing the reply into.)
//!
//! It only supports strict alternation (`depth` 1; parent sends, child replies, ...): a
//! side that tries to send twice in a row gets an error (checked locally, before touching
//! shared memory), the constructor refuses stream depths, and the stream workload lists
//! the floor as not applicable (its ceiling there is `memcpy`).

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
    stride: usize,
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
        let stride = (PAYLOAD_AT + p.size).div_ceil(64) * 64;
        let mem = SharedMem::anonymous(2 * stride)?;
        Ok(Box::new(FloorChannel {
            mem,
            size: p.size,
            stride,
            sent: 0,
            received: 0,
        }))
    }

    /// Start of the region the messages of `dir` (the sender's side index) travel in.
    fn region(&self, dir: usize) -> *mut u8 {
        self.mem.ptr().wrapping_add(dir * self.stride)
    }

    fn turn(&self, dir: usize) -> &AtomicU32 {
        // SAFETY: the start of region `dir` (0 or 1) is 64-byte aligned inside a mapping of
        // 2 * stride bytes that lives as long as self; AtomicU32 may alias memory the peer
        // writes.
        unsafe { &*(self.region(dir) as *const AtomicU32) }
    }

    /// Spins until the turn word equals `target`, checking the clock every 65536 spins.
    #[inline]
    fn wait_turn(&self, dir: usize, target: u32) -> Result<()> {
        let turn = self.turn(dir);
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

impl Channel for FloorChannel {
    fn attach(&mut self, _: Side, _: Pid) -> Result<()> {
        Ok(())
    }

    #[inline]
    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        self.check_len(msg.len())?;
        // Strict alternation, enforced locally: the parent's j-th message follows the child's
        // (j-1)-th reply; the child's j-th reply follows the parent's j-th message.
        let expected_received = match side {
            Side::Parent => self.sent,
            Side::Child => self.sent.wrapping_add(1),
        };
        if self.received != expected_received {
            return Err(Error::invalid(
                "spin-floor",
                "send",
                "strict alternation required: wait for the peer's reply before sending again",
            ));
        }
        let dir = side.index();
        // No wait: under strict alternation the peer copied our previous message out
        // before it sent the reply we have received since.
        // SAFETY: region `dir` holds PAYLOAD_AT + size bytes; only this side writes it, and
        // the peer does not read it until we publish the new turn below.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), self.region(dir).add(PAYLOAD_AT), msg.len())
        };
        self.sent = self.sent.wrapping_add(1);
        self.turn(dir).store(self.sent, Ordering::Release);
        Ok(())
    }

    #[inline]
    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        self.check_len(buf.len())?;
        let dir = side.peer().index();
        let next = self.received.wrapping_add(1);
        self.wait_turn(dir, next)?;
        // SAFETY: the peer published message `next` (Acquire above) and, under strict
        // alternation, will not write its region again before we reply; `buf` is private.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.region(dir).add(PAYLOAD_AT),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        self.received = next;
        Ok(())
    }
}
