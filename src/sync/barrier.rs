//! [`Barrier`]: `n` processes (or threads) wait until all have arrived.
//!
//! One futex word holds `generation << 16 | arrived`. Arriving is a CAS that increments
//! `arrived`; the last arrival resets it to 0, bumps the generation and wakes everyone.
//! Waiters sleep until the generation changes.
//!
//! # Not robust (and how to detect it)
//! A participant that dies **before** arriving stalls the others forever in
//! [`Barrier::wait`]; use [`Barrier::wait_timeout`]: on timeout the waiter *withdraws*
//! its arrival (CAS, only if the generation has not moved), so the barrier stays
//! consistent and can be retried. A participant that dies **after** arriving still counts
//! as arrived for that generation (the others pass; it is simply missing next time).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::segment::{ElemInfo, Kind, Layout, Segment, SegmentOptions};

use super::Deadline;
use super::futex::{self, WaitStatus};

const ARRIVED_MASK: u32 = 0xffff;
/// Largest number of participants.
pub const MAX_PARTIES: u32 = 0xffff;
/// Withdrawal attempts after the deadline before giving up (the word kept changing).
const WITHDRAW_TRIES: u32 = 64;

/// The barrier in shared memory: three 32-bit words (12 bytes, align 4).
#[repr(C)]
#[derive(Debug)]
pub struct RawBarrier {
    word: AtomicU32,
    sleepers: AtomicU32,
    parties: AtomicU32,
}

/// Returned by a barrier wait; exactly one waiter per generation is the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarrierWaitResult(bool);

impl BarrierWaitResult {
    /// True for the one participant whose arrival released the others.
    pub fn is_leader(&self) -> bool {
        self.0
    }
}

impl RawBarrier {
    /// Bytes a slot must have.
    pub const SIZE: usize = size_of::<RawBarrier>();
    /// Alignment a slot must have.
    pub const ALIGN: usize = align_of::<RawBarrier>();

    /// Initialises a barrier for `parties` participants (1..=65535).
    ///
    /// # Safety
    /// `ptr` must be valid for writes of [`Self::SIZE`] bytes, aligned to [`Self::ALIGN`],
    /// and not in use by anyone else during the call.
    pub unsafe fn init_at(ptr: *mut RawBarrier, parties: u32) -> Result<()> {
        if parties == 0 || parties > MAX_PARTIES {
            return Err(Error::invalid(
                "barrier",
                "init",
                "parties must be 1..=65535",
            ));
        }
        // SAFETY: guaranteed by the caller.
        unsafe {
            ptr.write(RawBarrier {
                word: AtomicU32::new(0),
                sleepers: AtomicU32::new(0),
                parties: AtomicU32::new(parties),
            })
        };
        Ok(())
    }

    /// Waits for all parties, at most `timeout`. On timeout the arrival is withdrawn
    /// and `Ok(None)` returned.
    fn wait_for(
        &self,
        timeout: Option<Duration>,
        resource: &str,
    ) -> Result<Option<BarrierWaitResult>> {
        let parties = self.parties.load(Ordering::Relaxed);
        if parties == 0 || parties > MAX_PARTIES {
            return Err(Error::corrupt(
                resource,
                format!("barrier party count {parties}"),
            ));
        }
        let deadline = Deadline::after(timeout);
        let mut w = self.word.load(Ordering::SeqCst);
        let generation = loop {
            let arrived = w & ARRIVED_MASK;
            if arrived >= parties {
                return Err(Error::corrupt(
                    resource,
                    format!("{arrived} arrivals for {parties} parties"),
                ));
            }
            let generation = w >> 16;
            let last = arrived + 1 == parties;
            let new = if last {
                (generation.wrapping_add(1) & 0xffff) << 16
            } else {
                w + 1
            };
            match self
                .word
                .compare_exchange_weak(w, new, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) if last => {
                    if self.sleepers.load(Ordering::SeqCst) != 0 {
                        let _ = futex::wake(&self.word, i32::MAX);
                    }
                    return Ok(Some(BarrierWaitResult(true)));
                }
                Ok(_) => break generation,
                Err(cur) => {
                    // Only a word that keeps changing gets here repeatedly: bounded by
                    // the deadline (not arrived yet, so nothing to withdraw).
                    if deadline.remaining().is_none() {
                        return Ok(None);
                    }
                    w = cur;
                }
            }
        };
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let r = self.sleep_until_released(generation, parties, deadline, resource);
        // Wrapping: a peer may have zeroed the count while we slept (harmless: it only
        // decides whether arrivals make a wake system call).
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// The waiting half of [`wait_for`](Self::wait_for): sleeps until the generation
    /// moves, the deadline passes (then withdraws the arrival) or the word is corrupt.
    /// Every path ends by the deadline, whatever a peer writes: after it, at most
    /// [`WITHDRAW_TRIES`] compare-and-swaps are attempted, never a sleep or an
    /// unbounded loop.
    fn sleep_until_released(
        &self,
        generation: u32,
        parties: u32,
        deadline: Deadline,
        resource: &str,
    ) -> Result<Option<BarrierWaitResult>> {
        let mut tries = 0;
        loop {
            let cur = self.word.load(Ordering::SeqCst);
            if cur >> 16 != generation {
                return Ok(Some(BarrierWaitResult(false)));
            }
            let arrived = cur & ARRIVED_MASK;
            if arrived >= parties {
                return Err(Error::corrupt(
                    resource,
                    format!("{arrived} arrivals for {parties} parties"),
                ));
            }
            let Some(left) = deadline.remaining() else {
                // Withdraw our arrival if the generation has not completed meanwhile.
                // `arrived == 0` means a peer cleared the count (ours included): nothing
                // left to withdraw. A CAS that keeps failing means the word keeps
                // changing: give up after a few tries (a timeout either way).
                tries += 1;
                if arrived == 0
                    || tries > WITHDRAW_TRIES
                    || self
                        .word
                        .compare_exchange(cur, cur - 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                {
                    return Ok(None);
                }
                continue;
            };
            match futex::wait(&self.word, cur, left) {
                Ok(WaitStatus::Woken) | Ok(WaitStatus::TimedOut) => {}
                Err(e) => return Err(Error::os(resource, "futex(FUTEX_WAIT)", e)),
            }
        }
    }

    /// Waits until all parties have arrived.
    #[doc(alias = "pthread_barrier_wait")]
    pub fn wait(&self) -> Result<BarrierWaitResult> {
        self.wait_for(None, "barrier")?
            .ok_or_else(|| Error::corrupt("barrier", "unbounded barrier wait ended"))
    }

    /// Waits at most `timeout`; on [`Error::Timeout`] this arrival was withdrawn.
    #[doc(alias = "pthread_barrier_wait")]
    pub fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult> {
        self.wait_for(Some(timeout), "barrier")?
            .ok_or_else(|| Error::Timeout {
                resource: "barrier".into(),
                op: "barrier wait",
                timeout,
            })
    }

    /// (arrived, parties, generation), for diagnostics.
    pub fn state(&self) -> (u32, u32, u32) {
        Self::decode([
            self.word.load(Ordering::Relaxed),
            self.sleepers.load(Ordering::Relaxed),
            self.parties.load(Ordering::Relaxed),
        ])
    }

    /// (arrived, parties, generation) from the three words (word, sleepers, parties), as
    /// read from memory or from a byte snapshot.
    pub(crate) fn decode([w, _sleepers, parties]: [u32; 3]) -> (u32, u32, u32) {
        (w & ARRIVED_MASK, parties, w >> 16)
    }
}

/// A process-shared barrier in its own segment (`multiprocessing.Barrier` without the
/// "broken" state: a timed-out waiter withdraws instead). Not robust: see the
/// [module docs](self).
///
/// ```
/// use shmkit::sync::Barrier;
/// use std::time::Duration;
/// let b = Barrier::anonymous(2)?;
/// // Only one of two parties arrives: the wait times out and withdraws.
/// assert!(b.wait_timeout(Duration::from_millis(5)).unwrap_err().is_timeout());
/// let b1 = Barrier::anonymous(1)?;
/// assert!(b1.wait()?.is_leader());
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Barrier {
    seg: Segment,
    resource: String,
}

impl Barrier {
    /// The segment layout for `parties` participants.
    pub fn layout(parties: u32) -> Layout {
        Layout::new(Kind::Barrier, ElemInfo::bytes(0))
            .with_payload_len(RawBarrier::SIZE as u64)
            .with_params([0x6261_7272_0001, RawBarrier::SIZE as u64, parties as u64, 0])
    }

    fn init(parties: u32) -> impl FnOnce(&mut [u8]) -> Result<()> {
        move |payload| {
            // SAFETY: 64-aligned payload of RawBarrier::SIZE bytes, exclusively ours.
            unsafe { RawBarrier::init_at(payload.as_mut_ptr().cast(), parties) }
        }
    }

    /// Creates a named barrier for `parties` participants.
    pub fn create(name: &str, parties: u32) -> Result<Self> {
        Self::create_with(&Segment::options(), name, parties)
    }

    /// [`create`](Self::create) with options.
    pub fn create_with(opts: &SegmentOptions, name: &str, parties: u32) -> Result<Self> {
        Self::from_segment(opts.create(name, &Self::layout(parties), Self::init(parties))?)
    }

    /// Opens the barrier (which must be for `parties`) or creates it.
    pub fn open_or_create(name: &str, parties: u32) -> Result<(Self, bool)> {
        let (seg, created) =
            Segment::open_or_create(name, &Self::layout(parties), Self::init(parties))?;
        Ok((Self::from_segment(seg)?, created))
    }

    /// Opens a named barrier (the party count is read from the segment).
    pub fn open(name: &str) -> Result<Self> {
        Self::from_segment(Segment::open(name)?)
    }

    /// An anonymous barrier, shared with children forked after this call.
    pub fn anonymous(parties: u32) -> Result<Self> {
        Self::from_segment(Segment::anonymous(
            &Self::layout(parties),
            Self::init(parties),
        )?)
    }

    /// Wraps a segment after checking it holds a barrier.
    pub fn from_segment(seg: Segment) -> Result<Self> {
        let parties = u32::try_from(seg.header().raw.params[2]).unwrap_or(0);
        seg.check_layout(&Self::layout(parties))?;
        Ok(Barrier {
            resource: seg.resource(),
            seg,
        })
    }

    fn raw(&self) -> &RawBarrier {
        // SAFETY: check_layout verified a barrier segment whose payload is a RawBarrier
        // of atomics (64-aligned); it lives as long as the mapping.
        unsafe { &*(self.seg.payload_ptr() as *const RawBarrier) }
    }

    /// Waits until all parties have arrived.
    #[doc(alias = "pthread_barrier_wait")]
    pub fn wait(&self) -> Result<BarrierWaitResult> {
        self.raw()
            .wait_for(None, &self.resource)?
            .ok_or_else(|| Error::corrupt(&self.resource, "unbounded barrier wait ended"))
    }

    /// Waits at most `timeout`; on [`Error::Timeout`] this arrival was withdrawn.
    #[doc(alias = "pthread_barrier_wait")]
    pub fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult> {
        self.raw()
            .wait_for(Some(timeout), &self.resource)?
            .ok_or_else(|| Error::Timeout {
                resource: self.resource.clone(),
                op: "barrier wait",
                timeout,
            })
    }

    /// Number of participants.
    pub fn parties(&self) -> u32 {
        self.raw().state().1
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The layout of the barrier segment `h` claims to be (its parties from the
    /// parameters), to check the header against.
    pub(super) fn layout_of(h: &crate::segment::Header) -> Option<Layout> {
        Some(Self::layout(u32::try_from(h.raw.params[2]).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn three_threads_pass_together_many_generations() {
        let b = Arc::new(Barrier::anonymous(3).unwrap());
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..200)
                        .filter(|_| b.wait_timeout(Duration::from_secs(20)).unwrap().is_leader())
                        .count()
                })
            })
            .collect();
        let leaders: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(leaders, 200);
        assert_eq!(b.raw().state().0, 0);
    }

    #[test]
    fn corrupt_shared_state_is_an_error_not_a_panic() {
        let b = Barrier::anonymous(2).unwrap();
        b.raw().parties.store(0, Ordering::Relaxed); // a hostile peer
        assert!(matches!(
            b.wait_timeout(Duration::from_millis(1)),
            Err(Error::Corrupt { .. })
        ));
        b.raw().parties.store(2, Ordering::Relaxed);
        b.raw().word.store(0xffff, Ordering::Relaxed); // 65535 arrivals of 2
        assert!(matches!(
            b.wait_timeout(Duration::from_millis(1)),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn timeout_is_bounded_when_a_peer_clears_the_count() {
        let b = Arc::new(Barrier::anonymous(3).unwrap());
        let b2 = b.clone();
        let t = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let r = b2.wait_timeout(Duration::from_millis(50));
            (r, start.elapsed())
        });
        // A hostile peer clears the arrival count while the waiter sleeps (repeatedly,
        // until the waiter has returned).
        while !t.is_finished() {
            b.raw().word.store(0, Ordering::SeqCst);
            std::thread::yield_now();
        }
        let (r, took) = t.join().unwrap();
        assert!(r.unwrap_err().is_timeout());
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn timeout_withdraws_arrival() {
        let b = Barrier::anonymous(2).unwrap();
        assert!(
            b.wait_timeout(Duration::from_millis(2))
                .unwrap_err()
                .is_timeout()
        );
        assert_eq!(b.raw().state().0, 0);
    }
}
