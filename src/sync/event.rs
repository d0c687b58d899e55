//! [`Event`]: Python's `multiprocessing.Event` across processes, on a futex word.
//!
//! State: one 32-bit word, bit 0 = set, bits 1.. = a generation counter bumped by every
//! `set` that changes the flag; plus a count of registered sleepers. `set` makes a system
//! call only if somebody sleeps; `wait` makes none if the flag is already set.
//!
//! Sleep/wake handshake (no lost wake-up): a waiter increments `sleepers` (SeqCst), then
//! re-reads the word and sleeps only if it is unchanged (`FUTEX_WAIT` compares
//! atomically in the kernel); a setter writes the word (SeqCst), then reads `sleepers`.
//! Sequential consistency forbids both missing each other: either the waiter sees the set
//! bit, or the setter sees the sleeper and wakes it (if the wake lands before the waiter
//! is queued, the kernel's compare fails with `EAGAIN`). A `wait` returns `true` when the
//! generation changed even if a `clear` followed quickly, like Python's.
//!
//! Robustness: a waiter killed while sleeping leaves `sleepers` one too high, which only
//! costs later `set`s a (harmless) wake system call. Nobody ever waits for a waiter, so a
//! dead process cannot block `set`.
//!
//! loom checks the handshake on this code (`sync::loom`, with loom's atomics and its model
//! of the futex: `RUSTFLAGS="--cfg shmkit_loom" cargo test --release --lib sync::loom`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::segment::{Kind, Segment};

use super::Deadline;
// loom's atomics in the loom build, where `super::loom` model-checks this code.
use super::futex::atomic::{self, AtomicU32};
use super::futex::{self, WaitStatus};

const SET: u32 = 1;

/// The event object in shared memory: two 32-bit words (8 bytes, align 4). All-zero
/// bytes are a valid cleared event, so a zero-filled slot needs no initialisation;
/// [`RawEvent::init_at`] exists for symmetry.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawEvent {
    word: AtomicU32,
    sleepers: AtomicU32,
}

impl RawEvent {
    /// Bytes a slot must have.
    pub const SIZE: usize = size_of::<RawEvent>();
    /// Alignment a slot must have.
    pub const ALIGN: usize = align_of::<RawEvent>();

    /// Initialises a cleared event at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for writes of [`Self::SIZE`] bytes, aligned to [`Self::ALIGN`],
    /// and not in use by anyone else during the call.
    pub unsafe fn init_at(ptr: *mut RawEvent) {
        // SAFETY: guaranteed by the caller.
        unsafe { ptr.write(RawEvent::default()) }
    }

    /// True if the flag is set (one atomic load).
    pub fn is_set(&self) -> bool {
        self.word.load(Ordering::SeqCst) & SET != 0
    }

    /// Sets the flag and wakes every waiter (system call only if one sleeps).
    pub fn set(&self) {
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            if cur & SET != 0 {
                // Already set: no waiter can be asleep on this value.
                return;
            }
            let new = (cur & !SET).wrapping_add(2) | SET;
            match self
                .word
                .compare_exchange_weak(cur, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        atomic::seqcst_store_load();
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            // Waking cannot fail on a valid word; a failure would only mean a spurious
            // time-out for a bounded waiter, never a hang for set().
            let _ = futex::wake_on(&self.word, i32::MAX);
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.word.fetch_and(!SET, Ordering::SeqCst);
    }

    /// Blocks until the flag is set.
    pub fn wait(&self) -> Result<()> {
        self.wait_for(None)
            .map(|_| ())
            .map_err(|e| Error::os("event", "futex(FUTEX_WAIT)", e))
    }

    /// Blocks until the flag is set or `timeout` passes: `Ok(true)` if set (or set and
    /// cleared again while we slept), `Ok(false)` on timeout.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_for(Some(timeout))
            .map_err(|e| Error::os("event", "futex(FUTEX_WAIT)", e))
    }

    /// Waits until the flag is set, at most `timeout` (`None`: forever). Returns `true`
    /// if it was set (or set and cleared again while we slept), `false` on timeout.
    pub(crate) fn wait_for(
        &self,
        timeout: Option<Duration>,
    ) -> std::result::Result<bool, nix::errno::Errno> {
        let start = self.word.load(Ordering::SeqCst);
        if start & SET != 0 {
            return Ok(true);
        }
        let deadline = Deadline::after(timeout);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        atomic::seqcst_store_load();
        let r = loop {
            let cur = self.word.load(Ordering::SeqCst);
            if cur & SET != 0 || (cur >> 1) != (start >> 1) {
                break Ok(true);
            }
            let Some(left) = deadline.remaining() else {
                break Ok(false);
            };
            match futex::wait_on(&self.word, cur, left) {
                Ok(WaitStatus::Woken) => {}
                Ok(WaitStatus::TimedOut) => {}
                Err(e) => break Err(e),
            }
        };
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// The futex word and the sleeper count, for the async waiters (`crate::aio`).
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    pub(crate) fn wait_words(&self) -> (&AtomicU32, &AtomicU32) {
        (&self.word, &self.sleepers)
    }

    /// (flag, registered sleepers), for diagnostics.
    pub fn state(&self) -> (bool, u32) {
        Self::decode([
            self.word.load(Ordering::SeqCst),
            self.sleepers.load(Ordering::Relaxed),
        ])
    }

    /// (flag, registered sleepers) from the two words, as read from memory or from a
    /// byte snapshot.
    pub(crate) fn decode([w, sleepers]: [u32; 2]) -> (bool, u32) {
        (w & SET != 0, sleepers)
    }
}

/// Python's `multiprocessing.Event` in its own segment: a flag that processes `set`,
/// `clear` and `wait` for.
///
/// ```
/// use shmkit::sync::Event;
/// use std::time::Duration;
/// let name = format!("doc-event-{}", std::process::id());
/// let ev = Event::create(&name)?;
/// assert!(!ev.wait_timeout(Duration::from_millis(1))?);  // not set: times out
/// Event::open(&name)?.set();                             // e.g. another process
/// assert!(ev.is_set());
/// ev.wait()?;                                            // returns at once
/// shmkit::Segment::unlink(&name)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Event {
    seg: Segment,
}

segment_object_handle!(Event, RawEvent, Kind::Event, 0x6576_6e74_0001, "event");

impl Event {
    /// True if the flag is set.
    pub fn is_set(&self) -> bool {
        self.raw().is_set()
    }

    /// Sets the flag, waking every waiter in every process.
    pub fn set(&self) {
        self.raw().set()
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.raw().clear()
    }

    /// Blocks until the flag is set.
    pub fn wait(&self) -> Result<()> {
        self.raw()
            .wait_for(None)
            .map(|_| ())
            .map_err(|e| Error::os(self.seg.resource(), "futex(FUTEX_WAIT)", e))
    }

    /// Blocks until the flag is set or `timeout` passes: `Ok(true)` if set, `Ok(false)` on
    /// timeout (Python's `wait(timeout)` return value).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.raw()
            .wait_for(Some(timeout))
            .map_err(|e| Error::os(self.seg.resource(), "futex(FUTEX_WAIT)", e))
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}

#[cfg(all(test, not(shmkit_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn set_wakes_threads_and_clear_resets() {
        let ev = Arc::new(Event::anonymous().unwrap());
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let e = ev.clone();
                std::thread::spawn(move || e.wait_timeout(Duration::from_secs(20)).unwrap())
            })
            .collect();
        ev.set();
        for h in hs {
            assert!(h.join().unwrap());
        }
        ev.clear();
        assert!(!ev.is_set());
        assert!(!ev.wait_timeout(Duration::from_millis(5)).unwrap());
    }
}
