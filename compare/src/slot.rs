//! Shared-memory channels: a ring of `depth` slots per direction, each slot a sequence
//! word followed by the payload (the layout DESIGN.md §7 found fastest: the sequence word
//! shares its cache line with the first payload bytes). How a side waits for a slot is the
//! [`Doorbell`]: spinning (`spin-floor`), or sleeping on a futex, an eventfd, a semaphore, a
//! condition variable, a real-time signal, a peer crate's event.
//!
//! Protocol for message `n` in one direction (all counters wrap at 2^32):
//! slot `n % depth` is free when its sequence word is `n` (initially slot `i` holds `i`);
//! the producer copies the payload in and stores `n + 1` (Release); the consumer waits for
//! `n + 1` (Acquire), copies the payload out and stores `n + depth`. A sleeping side raises
//! its "waiting" flag, re-checks the word, then sleeps on its doorbell; the other side rings
//! the doorbell only when it sees the flag (SeqCst fences on both sides, the Dekker
//! pattern), so a doorbell costs nothing when nobody sleeps.

use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use shmkit::{Error, Result};

use crate::channel::{Channel, ChannelParams, Side};
use crate::shm::SharedMem;

/// A wait that makes no progress for this long fails with [`Error::Timeout`].
pub const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// Polls `ready` with a `spin_loop` between polls until it returns true, for at most
/// [`WAIT_LIMIT`] (the clock is read every 65536 polls only, so that it does not weigh on
/// the latency measured); false if it timed out. For the peers' spinning adapters.
#[inline]
pub fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    let mut start: Option<Instant> = None;
    let mut spins = 0u32;
    while !ready() {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins & 0xFFFF == 0 {
            let now = Instant::now();
            if now.duration_since(*start.get_or_insert(now)) > WAIT_LIMIT {
                return false;
            }
        }
    }
    true
}

/// How long one doorbell sleep lasts at most before the waiter re-checks its deadline.
pub const SLEEP_SLICE: Duration = Duration::from_millis(500);

/// How a side waits until the other side changes a shared word.
pub trait Doorbell: Sized {
    /// False for busy-waiting bells: `sleep`/`ring` are never called.
    const SLEEPS: bool;
    /// Shared bytes the bell needs (placed 64-byte aligned after the rings).
    fn shm_bytes() -> usize {
        0
    }
    /// Creates the bell in the parent before the fork. `mem` points at [`Self::shm_bytes`]
    /// zeroed, 64-byte aligned shared bytes.
    fn create(mem: *mut u8) -> Result<Self>;
    /// Called in each process after the fork.
    fn attach(&mut self, _side: Side, _peer: Pid) -> Result<()> {
        Ok(())
    }
    /// Sleeps on `side`'s bell until rung, spuriously, or for at most `timeout`. `seen` is
    /// the value of `word` that made the caller decide to sleep.
    fn sleep(&self, side: Side, word: &AtomicU32, seen: u32, timeout: Duration) -> Result<()>;
    /// Rings the bell of `to`, whose waiter sleeps on `word`.
    fn ring(&self, to: Side, word: &AtomicU32) -> Result<()>;
}

/// A ring-of-slots channel in shared memory, waiting with doorbell `D`.
pub struct SlotChannel<D: Doorbell> {
    mem: SharedMem,
    bell: D,
    size: usize,
    depth: usize,
    stride: usize,
    dir_len: usize,
    sent: u64,
    received: u64,
}

const CTRL: usize = 64;
const PROD_WAITING: usize = 0;
const CONS_WAITING: usize = 4;
const PAYLOAD_AT: usize = 8;

fn round64(n: usize) -> usize {
    n.div_ceil(64) * 64
}

impl<D: Doorbell> SlotChannel<D> {
    /// A channel in a shmkit anonymous segment.
    pub fn new(p: ChannelParams) -> Result<Self> {
        Self::with_mem(p, SharedMem::anonymous)
    }

    /// A channel in memory from `alloc(len)`.
    pub fn with_mem(p: ChannelParams, alloc: fn(usize) -> Result<SharedMem>) -> Result<Self> {
        if p.size < crate::payload::MIN_SIZE || p.depth == 0 || p.depth > 1024 {
            return Err(Error::invalid(
                "slot channel",
                "create",
                format!("size {} / depth {} out of range", p.size, p.depth),
            ));
        }
        let stride = round64(PAYLOAD_AT + p.size);
        let dir_len = CTRL + p.depth * stride;
        let total = 2 * dir_len + round64(D::shm_bytes());
        let mem = alloc(total)?;
        if mem.len() < total {
            return Err(Error::invalid(
                "slot channel",
                "create",
                "mapping too small",
            ));
        }
        // SAFETY: `2 * dir_len` is within the mapping (checked above) and 64-byte aligned
        // because `dir_len` is a multiple of 64.
        let bell = D::create(unsafe { mem.ptr().add(2 * dir_len) })?;
        let ch = SlotChannel {
            mem,
            bell,
            size: p.size,
            depth: p.depth,
            stride,
            dir_len,
            sent: 0,
            received: 0,
        };
        for d in 0..2 {
            for i in 0..p.depth {
                ch.seq(d, i).store(i as u32, Ordering::Relaxed);
            }
        }
        Ok(ch)
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= 2 * self.dir_len && offset % 4 == 0);
        // SAFETY: every caller passes an offset inside the two rings (computed from the
        // layout fixed at creation, never read from shared memory), 4-byte aligned; the
        // mapping lives as long as `self`, and AtomicU32 may alias memory the peer writes.
        unsafe { &*(self.mem.ptr().add(offset) as *const AtomicU32) }
    }

    fn seq(&self, dir: usize, slot: usize) -> &AtomicU32 {
        self.word(dir * self.dir_len + CTRL + slot * self.stride)
    }

    fn payload(&self, dir: usize, slot: usize) -> *mut u8 {
        // SAFETY: the slot's payload lies inside the ring of `dir` (stride >= 8 + size).
        unsafe {
            self.mem
                .ptr()
                .add(dir * self.dir_len + CTRL + slot * self.stride + PAYLOAD_AT)
        }
    }

    fn flag(&self, dir: usize, which: usize) -> &AtomicU32 {
        self.word(dir * self.dir_len + which)
    }

    #[inline]
    fn wait_for(&self, side: Side, word: &AtomicU32, target: u32, flag: &AtomicU32) -> Result<()> {
        if word.load(Ordering::Acquire) == target {
            return Ok(());
        }
        let mut start: Option<Instant> = None;
        if !D::SLEEPS {
            let mut spins = 0u32;
            loop {
                std::hint::spin_loop();
                if word.load(Ordering::Acquire) == target {
                    return Ok(());
                }
                spins = spins.wrapping_add(1);
                if spins & 0xFFFF == 0 {
                    // Read the clock rarely: it would distort the floor.
                    let now = Instant::now();
                    if now.duration_since(*start.get_or_insert(now)) > WAIT_LIMIT {
                        return Err(timeout());
                    }
                }
            }
        }
        let start = Instant::now();
        loop {
            flag.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let seen = word.load(Ordering::SeqCst);
            if seen == target {
                flag.store(0, Ordering::Relaxed);
                return Ok(());
            }
            let slept = self.bell.sleep(side, word, seen, SLEEP_SLICE);
            if let Err(e) = slept {
                flag.store(0, Ordering::Relaxed);
                return Err(e);
            }
            if word.load(Ordering::Acquire) == target {
                flag.store(0, Ordering::Relaxed);
                return Ok(());
            }
            if start.elapsed() > WAIT_LIMIT {
                flag.store(0, Ordering::Relaxed);
                return Err(timeout());
            }
        }
    }

    #[inline]
    fn publish(&self, to: Side, word: &AtomicU32, value: u32, flag: &AtomicU32) -> Result<()> {
        if !D::SLEEPS {
            word.store(value, Ordering::Release);
            return Ok(());
        }
        word.store(value, Ordering::SeqCst);
        {
            fence(Ordering::SeqCst);
            if flag.load(Ordering::SeqCst) != 0 {
                self.bell.ring(to, word)?;
            }
        }
        Ok(())
    }

    fn check_len(&self, len: usize, op: &'static str) -> Result<()> {
        if len == self.size {
            Ok(())
        } else {
            Err(Error::invalid(
                "slot channel",
                op,
                format!("message of {len} bytes, channel made for {}", self.size),
            ))
        }
    }
}

fn timeout() -> Error {
    Error::Timeout {
        resource: "slot channel".into(),
        op: "waiting for the peer",
        timeout: WAIT_LIMIT,
    }
}

impl<D: Doorbell> Channel for SlotChannel<D> {
    fn attach(&mut self, side: Side, peer: Pid) -> Result<()> {
        self.bell.attach(side, peer)
    }

    #[inline]
    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        self.check_len(msg.len(), "send")?;
        let dir = side.index();
        let n = self.sent;
        let slot = (n % self.depth as u64) as usize;
        let seq = self.seq(dir, slot);
        self.wait_for(side, seq, n as u32, self.flag(dir, PROD_WAITING))?;
        // SAFETY: the slot is free (its word says so, Acquire), so the consumer does not read
        // it; the payload area holds `size` bytes; `msg` is a private buffer.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), self.payload(dir, slot), msg.len()) };
        self.publish(
            side.peer(),
            seq,
            (n as u32).wrapping_add(1),
            self.flag(dir, CONS_WAITING),
        )?;
        self.sent = n + 1;
        Ok(())
    }

    #[inline]
    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        self.check_len(buf.len(), "recv")?;
        let dir = side.peer().index();
        let n = self.received;
        let slot = (n % self.depth as u64) as usize;
        let seq = self.seq(dir, slot);
        self.wait_for(
            side,
            seq,
            (n as u32).wrapping_add(1),
            self.flag(dir, CONS_WAITING),
        )?;
        // SAFETY: the slot is full (Acquire on its word), the producer does not write it
        // until we release it below; `buf` is private and holds `size` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.payload(dir, slot), buf.as_mut_ptr(), buf.len())
        };
        let release = (n as u32).wrapping_add(self.depth as u32);
        self.publish(side.peer(), seq, release, self.flag(dir, PROD_WAITING))?;
        self.received = n + 1;
        Ok(())
    }
}
