//! `shmkit::queue` in the comparison: `shmkit-queue-spin`, `shmkit-queue` (adaptive, the
//! default) and `shmkit-queue-park` (`Queue<[u8; N]>`, N = the message size), `shmkit-bytequeue` (`ByteQueue`, copying send
//! and receive) and `shmkit-bytequeue-zc` (`ByteQueue`, written and read in place).
//!
//! Two anonymous SPSC queues per channel, one per direction, created in the parent before
//! the fork; the forked peer takes its own handles with `try_clone` in
//! [`Channel::attach`] (a handle inherited through `fork` belongs to the parent). The
//! parent sends on queue 0 and receives on queue 1.
//!
//! Capacity: the workload's depth, like every other ring in the harness: [`RTT_CAPACITY`]
//! (one slot) when it keeps one message in flight (rtt, wake: strict alternation, so more
//! slots buffer nothing), 8 in the stream workload. (Runs up to December 2026 gave the
//! queues 256 slots in rtt and wake, their default, while the harness's own rings had one:
//! strict alternation then walks 256 slots, cold ones at 4 KiB (1 MiB per direction, the
//! size of the L2), and the queues' 4 KiB round trip measured ~1.3 µs against ~0.95 µs with
//! one slot.) Topics take at least 2, their minimum. Each slot holds one whole message of
//! the channel's size (`ByteQueue`: `max_message` = the message size).
//!
//! Every wait is bounded by [`WAIT_LIMIT`] (`send_timeout` / `recv_timeout`, or the
//! timeout of `reserve` / `recv_ref`); the queues also detect a dead peer's claims.
//!
//! How the payload is touched, per adapter:
//! - typed queues: the sender copies the harness's bytes into a reserved slot
//!   (`reserve` + `SendSlot::send_ref`: the copying send's store path, which bypasses the
//!   cache for 16 KiB..256 KiB), the receiver copies them out of `recv_ref` into its buffer:
//!   one copy in, one copy out, what `send(T)` / `recv()` do inside (claim, write,
//!   publish / claim, read, release) without the stack temporary of a by-value `T`
//!   (1 MiB at the largest size);
//! - `shmkit-bytequeue`: `send_timeout(&[u8])` (one copy in) and `recv_timeout(&mut
//!   Vec<u8>)` (one copy out into the receiver's own `Vec`, which the workload checks
//!   through [`Channel::recv_view`]: no extra copy into the harness's buffer);
//! - `shmkit-bytequeue-zc`: `reserve(len)`, the sender writes the whole payload into the
//!   slot (the harness's pattern, stamped) with `SendBytes::write_from_slice` (the same
//!   store path; iceoryx2's adapter fills its loan with its `write_from_slice`), `commit`; `recv_ref`, the workload sums every
//!   byte in the slot, the slot is released. No copy on the receiving side at all.

use bytemuck::Pod;
use nix::unistd::Pid;
use shmkit::queue::{ByteQueue, Mode, Queue, WaitStrategy};
use shmkit::{Error, Result};

use crate::channel::{Channel, ChannelParams, Side};
use crate::slot::WAIT_LIMIT;

/// Slots per queue when the workload has one message in flight (depth 1): one, as in
/// the harness's own rings.
pub const RTT_CAPACITY: u64 = 1;

/// Message sizes `Queue<[u8; N]>` is instantiated for (the harness's sizes and the
/// payload minimum).
pub const TYPED_SIZES: [usize; 5] = [16, 64, 4096, 64 << 10, 1 << 20];

fn capacity(p: ChannelParams) -> u64 {
    if p.depth <= 1 {
        RTT_CAPACITY
    } else {
        p.depth as u64
    }
}

fn wrong_len(id: &'static str, len: usize, size: usize) -> Error {
    Error::invalid(id, "transfer", format!("{len} bytes, made for {size}"))
}

/// `Queue<T>` both ways, `T` a byte array of the message size.
pub struct QueueChannel<T: Pod> {
    id: &'static str,
    queues: [Queue<T>; 2],
}

/// `shmkit-queue-spin`: SPSC, [`WaitStrategy::Spin`] on both sides.
pub fn queue_spin(p: ChannelParams) -> Result<Box<dyn Channel>> {
    typed(p, WaitStrategy::Spin, "shmkit-queue-spin")
}

/// `shmkit-queue`: SPSC, the default [`WaitStrategy`] on both sides (adaptive: spins up
/// to 50 µs, then sleeps): the like-for-like partner of `shmkit-queue-park` for the CPU
/// column.
pub fn queue_adaptive(p: ChannelParams) -> Result<Box<dyn Channel>> {
    typed(p, WaitStrategy::default(), "shmkit-queue")
}

/// `shmkit-queue-park`: SPSC, [`WaitStrategy::Park`] on both sides (sleep at once).
pub fn queue_park(p: ChannelParams) -> Result<Box<dyn Channel>> {
    typed(p, WaitStrategy::Park, "shmkit-queue-park")
}

fn typed(p: ChannelParams, wait: WaitStrategy, id: &'static str) -> Result<Box<dyn Channel>> {
    match p.size {
        16 => QueueChannel::<[u8; 16]>::boxed(p, wait, id),
        64 => QueueChannel::<[u8; 64]>::boxed(p, wait, id),
        4096 => QueueChannel::<[u8; 4096]>::boxed(p, wait, id),
        65536 => QueueChannel::<[u8; 65536]>::boxed(p, wait, id),
        1048576 => QueueChannel::<[u8; 1048576]>::boxed(p, wait, id),
        other => Err(Error::invalid(
            id,
            "create",
            format!("Queue<[u8; N]> is instantiated for N in {TYPED_SIZES:?} only, not {other}"),
        )),
    }
}

impl<T: Pod> QueueChannel<T> {
    fn boxed(p: ChannelParams, wait: WaitStrategy, id: &'static str) -> Result<Box<dyn Channel>> {
        let opts = Queue::<T>::options()
            .mode(Mode::Spsc)
            .capacity(capacity(p))
            .wait(wait);
        Ok(Box::new(QueueChannel {
            id,
            queues: [opts.anonymous()?, opts.anonymous()?],
        }))
    }
}

impl<T: Pod> Channel for QueueChannel<T> {
    fn attach(&mut self, side: Side, _: Pid) -> Result<()> {
        if side == Side::Child {
            self.queues = [self.queues[0].try_clone()?, self.queues[1].try_clone()?];
        }
        Ok(())
    }

    #[inline]
    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        if msg.len() != size_of::<T>() {
            return Err(wrong_len(self.id, msg.len(), size_of::<T>()));
        }
        let v: &T = bytemuck::try_from_bytes(msg)
            .map_err(|e| Error::invalid(self.id, "send", format!("{e:?}")))?;
        self.queues[side.index()]
            .reserve(Some(WAIT_LIMIT))?
            .send_ref(v);
        Ok(())
    }

    #[inline]
    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        if buf.len() != size_of::<T>() {
            return Err(wrong_len(self.id, buf.len(), size_of::<T>()));
        }
        let slot = self.queues[side.peer().index()].recv_ref(Some(WAIT_LIMIT))?;
        buf.copy_from_slice(bytemuck::bytes_of(&*slot));
        Ok(())
    }
}

/// `ByteQueue` both ways, copying (`send` / `recv` into a `Vec`) or zero-copy
/// (`reserve` + `commit` / `recv_ref`).
pub struct ByteQueueChannel {
    id: &'static str,
    zero_copy: bool,
    size: usize,
    queues: [ByteQueue; 2],
    /// The receiver's own buffer (copying variant), allocated once.
    scratch: Vec<u8>,
}

/// `shmkit-bytequeue`: SPSC, default wait strategy, copying send / receive.
pub fn bytequeue(p: ChannelParams) -> Result<Box<dyn Channel>> {
    ByteQueueChannel::boxed(p, false, "shmkit-bytequeue")
}

/// `shmkit-bytequeue-zc`: SPSC, default wait strategy, written and read in place.
pub fn bytequeue_zc(p: ChannelParams) -> Result<Box<dyn Channel>> {
    ByteQueueChannel::boxed(p, true, "shmkit-bytequeue-zc")
}

impl ByteQueueChannel {
    fn boxed(p: ChannelParams, zero_copy: bool, id: &'static str) -> Result<Box<dyn Channel>> {
        let opts = ByteQueue::options()
            .mode(Mode::Spsc)
            .capacity(capacity(p))
            .wait(WaitStrategy::default());
        Ok(Box::new(ByteQueueChannel {
            id,
            zero_copy,
            size: p.size,
            queues: [opts.anonymous(p.size)?, opts.anonymous(p.size)?],
            scratch: Vec::with_capacity(p.size),
        }))
    }

    fn check(&self, len: usize) -> Result<()> {
        if len == self.size {
            Ok(())
        } else {
            Err(wrong_len(self.id, len, self.size))
        }
    }
}

impl Channel for ByteQueueChannel {
    fn attach(&mut self, side: Side, _: Pid) -> Result<()> {
        if side == Side::Child {
            self.queues = [self.queues[0].try_clone()?, self.queues[1].try_clone()?];
        }
        Ok(())
    }

    #[inline]
    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        self.check(msg.len())?;
        let q = &mut self.queues[side.index()];
        if self.zero_copy {
            let mut slot = q.reserve(msg.len(), Some(WAIT_LIMIT))?;
            slot.write_from_slice(msg)?;
            slot.commit();
            Ok(())
        } else {
            Ok(q.send_timeout(msg, WAIT_LIMIT)?)
        }
    }

    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        // The workloads use recv_view; this serves direct callers.
        let len = buf.len();
        // recv_view checked the length against `len`.
        self.recv_view(side, len, &mut |msg| buf.copy_from_slice(msg))
    }

    fn has_recv_view(&self) -> bool {
        true
    }

    #[inline]
    fn recv_view(&mut self, side: Side, len: usize, read: &mut dyn FnMut(&[u8])) -> Result<()> {
        self.check(len)?;
        let q = &mut self.queues[side.peer().index()];
        if self.zero_copy {
            let msg = q.recv_ref(Some(WAIT_LIMIT))?;
            if msg.len() != len {
                return Err(Error::corrupt(
                    self.id,
                    format!("received {} bytes, expected {len}", msg.len()),
                ));
            }
            read(&msg);
            // Dropping `msg` releases the slot.
        } else {
            q.recv_timeout(&mut self.scratch, WAIT_LIMIT)?;
            if self.scratch.len() != len {
                return Err(Error::corrupt(
                    self.id,
                    format!("received {} bytes, expected {len}", self.scratch.len()),
                ));
            }
            read(&self.scratch);
        }
        Ok(())
    }
}
