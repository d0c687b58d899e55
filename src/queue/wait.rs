//! Waiting: spin, then sleep on a futex in shared memory.
//!
//! A *wait point* is three 32-bit words on their own cache line: `word`, the futex word
//! that wakers bump; `sleepers`, how many processes are (about to be) asleep on it; and
//! `armed`, the newest value of `word` a sleeper has gone to sleep on; a queue ring's
//! wait points (version 4) have a fourth, the fence `mode` (below).
//!
//! The handshake (Dekker-style, no lost wake-up):
//!
//! ```text
//! sleeper                                   waker
//! w = word                                  publish (store, Release)
//! sleepers += 1                             fence(SeqCst)
//! armed = newest(armed, w)                  if sleepers != 0 {
//! fence(SeqCst)                                 a = armed; v = word
//! if condition holds: sleepers -= 1; done       if a == v and CAS(word, v, v + 1) {
//! futex_wait(word, w, slice)                        futex_wake(word, all)
//! sleepers -= 1                                 }
//!                                           }
//! ```
//!
//! Both sides store, fence, then load the other side's words, so at least one of them
//! sees the other. Either the sleeper's re-check sees the published state, or the waker
//! sees the sleeper's `sleepers` and `armed` stores. In the second case, if `word` still
//! holds `w`, then `armed == w` (no sleeper can arm a value newer than `word`), and the
//! waker bumps and wakes; if `word` moved on, somebody bumped it after the sleeper read
//! `w`, and that bump was followed by a wake, or the sleeper's `futex_wait` returns
//! `EAGAIN` at once. A waker that finds nobody asleep makes no system call.
//!
//! `armed` makes the wake-up once per sleep: after a bump, `armed` is older than `word`
//! until some sleeper goes to sleep again, so wakers that find the woken sleepers still
//! counted (they have not run yet: on a busy machine that is many operations) skip the
//! `FUTEX_WAKE` they would otherwise each make. A process writing garbage into `armed`
//! can make wakers skip wake-ups; sleepers then notice the change within a sleep slice.
//!
//! # Asymmetric fences
//!
//! A `SeqCst` fence after every publish costs the fast path dearly: on x86 it waits for
//! the store buffer to drain, i.e. for the slot's cache line to arrive from the other
//! core. So the fence is made asymmetric, as in Folly's `asymmetricHeavyBarrier` and
//! liburcu: every process registers once with `membarrier(2)`
//! (`MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`); wakers then need only a compiler fence,
//! and a sleeper — which is about to spend microseconds in the kernel anyway — issues
//! `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which runs a full memory barrier on
//! every CPU currently running a registered process. Where `membarrier` is unavailable
//! (old kernel, seccomp) the process falls back to `SeqCst` fences on both sides.
//!
//! # Symmetric mode for sleep-heavy wait points
//!
//! The asymmetric split is right when sleeps are rare next to publishes. Where a waiter
//! sleeps at every wait ([`WaitStrategy::Park`]), the bill turns around: each sleep's
//! `membarrier` interrupts every core running a shmkit process, which on a VM is an
//! inter-processor interrupt and an exit per core, at every sleep. (Measured here with
//! `shmkit-bench --workload mpmc --only shmkit-queue-park`, P parked producers to C
//! parked consumers over an MPMC queue on two vCPUs, four interleaved runs of each
//! build: 2x1 went from 1.9-2.9 to 4.6-6.2 M messages/s and its CPU per message from
//! 487-875 to 193-250 ns; 2x2 from 1.9-3.3 to 3.8-9.1 M/s.) So a queue
//! ring (version 4) has a fourth word per wait point, `mode`, and a parked waiter
//! switches its wait point to full fences on both sides, once, for the ring's life:
//!
//! - a waker loads `mode` after its publish: nonzero means a `SeqCst` fence before it
//!   loads `sleepers` (zero: the compiler fence of the light path);
//! - a parked sleeper that finds `mode` other than [`SYMMETRIC`] stores [`SWITCHING`]
//!   (if it was 0), sleeps the asymmetric way (its `membarrier` included), and stores
//!   [`SYMMETRIC`] if the `membarrier` succeeded; one that finds [`SYMMETRIC`] needs only
//!   its own `SeqCst` fence.
//!
//! Why [`SYMMETRIC`] is enough: it is stored only after a `membarrier` that followed a
//! nonzero `mode`. A waker's load of `mode` that comes after that barrier's point in the
//! waker's program sees nonzero and fences; one that came before it, and saw 0, had
//! published before it too (the publish precedes the load in program order: a compiler
//! fence keeps the compiler from hoisting the load above the publish), and the barrier
//! made that publish visible to every sleeper that checks afterwards. Either way the Dekker
//! handshake above holds. The mode never goes back: wakers of a wait point a parked
//! waiter has used pay a `SeqCst` fence per operation (~10-20 ns next to a spinning
//! peer). Rings of versions 2 and 3 have no `mode` word; their wait points stay
//! asymmetric. A process writing garbage into `mode` can only add fences (nonzero) or,
//! by clearing [`SYMMETRIC`], make wakers skip wake-ups that the sleeper then notices
//! within its sleep slice, as garbage in `armed` can. The loom build fences `SeqCst`
//! on both sides always and gives its queue rings' wait points no `mode` word; its model
//! `queue::loom::parked_sleeper_with_a_fence_mode_word_is_never_lost` checks the
//! symmetric handshake's two fences (it deadlocks with no fence on the waker's symmetric
//! path), not the switch, which rests on `membarrier`.
//!
//! Sleeps are sliced (at most [`PARK_SLICE`]) so that a waiter also notices a peer that
//! died in the middle of an operation (which wakes nobody) and its own deadline.

#[cfg(shmkit_loom)]
use loom::sync::atomic::{AtomicU32, fence};
use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(not(shmkit_loom))]
use std::sync::atomic::{AtomicU32, compiler_fence, fence};
use std::time::{Duration, Instant};

/// Longest single futex sleep; the waiter re-checks the ring (and dead peers) after it.
pub(crate) const PARK_SLICE: Duration = Duration::from_millis(20);

/// How a blocked operation waits for the ring to change.
///
/// Waking a process that sleeps on another core costs 15–25 µs on the machines shmkit is
/// measured on, while two processes spinning on one cache line see each other's store in
/// well under a microsecond; spinning first is what makes the queue fast, parking is what
/// keeps an idle queue from burning a core.
///
/// Under [`Spin`](Self::Spin) and [`Adaptive`](Self::Adaptive), a blocking
/// single-message send or receive on an SPSC queue (not `recv_many`, nor a receive on a
/// joinable queue) that finds nothing ready first polls for the message (or the free
/// slot) 64 more times, a `spin_loop` hint before each poll, before it sets up its general
/// wait (deadline, liveness and recovery checks): a peer that answers within a round trip
/// is then seen as soon as it does. Those polls take the place of the general wait's
/// first 64 spins, which do not read the clock either, so a timeout is overshot by no
/// more than before (about 1 µs here; a `pause` costs several times more on recent Intel
/// cores).
///
/// ```
/// use shmkit::queue::WaitStrategy;
/// use std::time::Duration;
/// let latency_first = WaitStrategy::Adaptive { spin: Duration::from_micros(200) };
/// assert_ne!(latency_first, WaitStrategy::default());
/// assert_eq!(WaitStrategy::default(), WaitStrategy::Adaptive { spin: Duration::from_micros(50) });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Busy-wait only (with `spin_loop` hints): lowest latency, one core at 100% while
    /// waiting. Timeouts and dead-peer detection still work.
    Spin,
    /// Sleep on the futex at once: no CPU while waiting, a wake-up costs a system call on
    /// each side and tens of microseconds across cores. A parked waiter switches the
    /// wait point it sleeps on (a queue's data or space side) to symmetric fences, for
    /// the queue's life: its sleeps then skip the `membarrier` that interrupts every core,
    /// and every handle that wakes that side pays a `SeqCst` fence per operation instead
    /// (ARCHITECTURE.md, "Symmetric mode for parked waiters").
    Park,
    /// Spin for at most `spin`, then sleep. The default spins up to 50 µs: about two
    /// cross-core wake-ups, so a peer that answers within that time is seen at spinning
    /// latency, and an idle queue costs at most 50 µs of CPU per wait.
    ///
    /// Each handle adapts its budget within `spin` to how its waits end (as glibc's
    /// adaptive mutexes adapt their spin count): a wait that ended within `spin` (while
    /// spinning, or woken soon after parking) doubles the budget, one that lasted longer
    /// halves it, down to [`MIN_ADAPTIVE_SPIN`]. A handle whose peer answers quickly keeps
    /// spinning the whole budget; one whose peer is slower than `spin` stops paying for
    /// spins that never catch anything, and its waits then cost about what
    /// [`WaitStrategy::Park`]'s do. After a long quiet spell, the first quick answers are
    /// seen at parked latency until the budget has doubled back (a few waits).
    ///
    /// Past its first [`YIELD_AFTER`] the spin calls `sched_yield` every 64 spins, so
    /// that a peer waiting for this core gets it.
    Adaptive {
        /// The most to spin before sleeping.
        spin: Duration,
    },
}

impl Default for WaitStrategy {
    fn default() -> Self {
        WaitStrategy::Adaptive {
            spin: Duration::from_micros(50),
        }
    }
}

/// The least an adaptive wait spins before it sleeps, however long its recent waits were
/// (a peer that is ready at once is still seen without a system call).
pub const MIN_ADAPTIVE_SPIN: Duration = Duration::from_micros(2);

/// How long an adaptive wait spins flat out, counted from its first clock reading (after
/// its first 64 spins); after that it calls `sched_yield` every 64 spins (one system
/// call per few microseconds of waiting). With more processes than
/// cores, the process a spinner waits for may be runnable on the spinner's own core: a
/// producer spinning on a full queue keeps the consumer that would empty it off the CPU
/// until the spin budget or the time slice ends (measured: two producers and a consumer
/// on two cores, the default wait fell to a tenth of one pair's throughput). Yielding
/// hands it the core; alone on its core, `sched_yield` returns at once. On a busy core
/// a yield can keep the waiter off the CPU for a scheduler slice (milliseconds), so
/// such a wait may end that much past its spin budget or timeout, as any preempted
/// wait can.
pub const YIELD_AFTER: Duration = MIN_ADAPTIVE_SPIN;

/// What one handle learned from its waits: the spin budget an adaptive wait uses next
/// (`None`: the strategy's full `spin`). Per handle (not shared), so no atomics.
#[derive(Debug, Default)]
pub(crate) struct SpinHint(Cell<Option<Duration>>);

impl SpinHint {
    fn budget(&self, max: Duration) -> Duration {
        self.0.get().map_or(max, |b| b.min(max))
    }

    /// Records a wait that lasted `waited` under an adaptive strategy spinning at most
    /// `max`.
    fn learn(&self, max: Duration, waited: Duration) {
        let cur = self.budget(max);
        let next = if waited <= max {
            cur.saturating_mul(2).clamp(MIN_ADAPTIVE_SPIN.min(max), max)
        } else {
            (cur / 2).max(MIN_ADAPTIVE_SPIN.min(max))
        };
        self.0.set(Some(next));
    }
}

/// How many times a blocking SPSC send or receive that finds nothing ready polls its fast
/// path again (a `spin_loop` hint between polls; about 1 µs on the machine of the
/// measurements) before it enters the general wait. Setting that wait up (its waiter and
/// deadline, the general claim with its validation, the liveness and recovery checks)
/// takes tens of nanoseconds, about what a spinning round trip leaves each side to wait:
/// a reply that arrives meanwhile is seen only once the set-up is done. The measurements
/// are in ARCHITECTURE.md, "Waiting". A wait that polled reads the clock at the first
/// step of its [`Waiter`] ([`Waiter::after_pre_spin`]): the polls replace the waiter's
/// first 64 spins, which do not read it either.
pub(crate) const PRE_SPIN_POLLS: u32 = 64;

/// What [`pre_spin`] did.
pub(crate) enum PreSpin<R> {
    /// A poll succeeded.
    Ready(R),
    /// Every poll failed: the general wait follows, reading the clock at once.
    Polled,
    /// The call must not spin first ([`WaitStrategy::Park`], a zero timeout).
    Skipped,
}

/// Polls `poll` up to [`PRE_SPIN_POLLS`] times, a `spin_loop` hint before each, when the
/// strategy and `timeout` allow a wait to spin (see [`PRE_SPIN_POLLS`]); the first `Some`
/// ends it. A wait that ends here is a short wait: under [`WaitStrategy::Adaptive`] it
/// teaches `hint` so, as a wait that ended within the first spins of the general wait
/// does.
#[inline]
pub(crate) fn pre_spin<R>(
    strategy: WaitStrategy,
    timeout: Option<Duration>,
    hint: &SpinHint,
    mut poll: impl FnMut() -> Option<R>,
) -> PreSpin<R> {
    if strategy == WaitStrategy::Park || timeout == Some(Duration::ZERO) {
        return PreSpin::Skipped;
    }
    for _ in 0..PRE_SPIN_POLLS {
        std::hint::spin_loop();
        if let Some(r) = poll() {
            if let WaitStrategy::Adaptive { spin } = strategy {
                hint.learn(spin, Duration::ZERO);
            }
            return PreSpin::Ready(r);
        }
    }
    PreSpin::Polled
}

impl WaitStrategy {
    /// How long to spin before parking (`None`: forever).
    pub(crate) fn spin_budget(self) -> Option<Duration> {
        match self {
            WaitStrategy::Spin => None,
            WaitStrategy::Park => Some(Duration::ZERO),
            WaitStrategy::Adaptive { spin } => Some(spin),
        }
    }
}

/// Sleeps on `word` while it holds `expected`, at most `timeout` ([`crate::sync::futex`]:
/// shared, not `FUTEX_PRIVATE_FLAG`; in the loom build its model of the futex, without
/// timeouts). Spurious returns are harmless: callers re-check their condition, so errors
/// and early returns are deliberately ignored.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let _ = crate::sync::futex::wait_on(word, expected, Some(timeout));
}

/// Wakes every process sleeping on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    let _ = crate::sync::futex::wake_on(word, i32::MAX);
}

#[cfg(not(shmkit_loom))]
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

/// True once this process is registered for expedited global membarriers.
static LIGHT: AtomicBool = AtomicBool::new(false);

/// Registers this process with `membarrier(2)` (once); afterwards its wakers use compiler
/// fences only. Returns whether the light path is on.
pub(crate) fn init_fences() -> bool {
    static INIT: OnceLock<bool> = OnceLock::new();
    *INIT.get_or_init(|| {
        // SAFETY: membarrier takes plain integer arguments and touches no user memory.
        let r = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
                0,
                0,
            )
        };
        let ok = r == 0;
        LIGHT.store(ok, Ordering::Release);
        ok
    })
}

/// `mode` word: a parked sleeper is switching the wait point to full fences.
pub(crate) const SWITCHING: u32 = 1;
/// `mode` word: every waker fences fully; sleepers need no `membarrier`.
pub(crate) const SYMMETRIC: u32 = 2;

/// The waker's half of the store-then-load handshake.
#[cfg(shmkit_loom)]
fn light_fence() {
    // Loom cannot model membarrier: check the symmetric (fallback) protocol.
    fence(Ordering::SeqCst);
}

#[cfg(shmkit_loom)]
fn heavy_fence() -> bool {
    fence(Ordering::SeqCst);
    true
}

#[cfg(not(shmkit_loom))]
#[inline]
fn light_fence() {
    if LIGHT.load(Ordering::Relaxed) {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The sleeper's half: a full barrier here and on every CPU running a registered process.
/// Returns whether the `membarrier` succeeded.
#[cfg(not(shmkit_loom))]
fn heavy_fence() -> bool {
    fence(Ordering::SeqCst);
    // SAFETY: plain integer arguments, no user memory.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) };
    // On failure, wakers in registered processes may miss this sleeper; its sleep is
    // sliced (PARK_SLICE), so a wake-up can be late but never lost for good.
    r == 0
}

/// A wait point in shared memory: the futex word and the sleeper count.
#[derive(Clone, Copy)]
pub(crate) struct WaitPoint<'a> {
    pub(crate) word: &'a AtomicU32,
    pub(crate) sleepers: &'a AtomicU32,
    pub(crate) armed: &'a AtomicU32,
    /// The fence mode word (module docs, "Symmetric mode"); `None`: always asymmetric.
    pub(crate) mode: Option<&'a AtomicU32>,
}

impl WaitPoint<'_> {
    /// Waker side, called after the state change was published: no system call unless
    /// somebody sleeps.
    #[inline]
    pub(crate) fn wake(&self) {
        self.waker_fence();
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            self.wake_slow();
        }
    }

    /// Waker side with a condition: as [`Self::wake`], but a waker that finds sleepers
    /// wakes them only if `worth_it()` (evaluated only then, so the fast path is
    /// unchanged). The queue's consumers use it for the space wait point's low-water mark
    /// (`Ring::wake_space`); a skipped wake-up is made by a later waker whose condition
    /// holds, or the sleeper notices the change within its sleep slice.
    #[inline]
    pub(crate) fn wake_when(&self, worth_it: impl FnOnce() -> bool) {
        self.waker_fence();
        if self.sleepers.load(Ordering::Relaxed) != 0 && worth_it() {
            self.wake_slow();
        }
    }

    /// The waker's fence: light, unless a parked sleeper switched this wait point to
    /// symmetric fences (`mode` nonzero; loaded after the caller's publish).
    #[inline]
    fn waker_fence(&self) {
        // The `mode` load must stay after the caller's publish in program order (module
        // docs, "Why SYMMETRIC is enough"); a Relaxed load may otherwise be hoisted above
        // a Release store.
        #[cfg(not(shmkit_loom))]
        compiler_fence(Ordering::SeqCst);
        match self.mode {
            Some(m) if m.load(Ordering::Relaxed) != 0 => fence(Ordering::SeqCst),
            _ => light_fence(),
        }
    }

    #[cold]
    fn wake_slow(&self) {
        // `armed` first (Acquire): seeing a sleeper's arming of `w` then implies seeing a
        // `word` at least `w` (the sleeper read it before arming).
        let a = self.armed.load(Ordering::Acquire);
        let v = self.word.load(Ordering::Relaxed);
        if a != v {
            // Everybody asleep was woken by a bump since (or is about to see it).
            return;
        }
        if self
            .word
            .compare_exchange(v, v.wrapping_add(1), Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            futex_wake_all(self.word);
        }
        // (CAS failed: another waker bumped `word` just now, and wakes.)
    }

    /// Sleeper side, first half: counts this waiter as a sleeper and returns the word's
    /// value to sleep on; the caller re-checks its condition next, and finally undoes the
    /// count (`sleepers -= 1`). [`Self::park`] and the async waiters (`crate::aio`) use it.
    #[cfg_attr(any(not(feature = "async"), shmkit_loom), allow(dead_code))]
    pub(crate) fn begin_wait(&self) -> u32 {
        self.begin_wait_as(false)
    }

    /// [`Self::begin_wait`] for a sleeper that sleeps at every wait (`parked`: it switches
    /// the wait point to symmetric fences; module docs).
    fn begin_wait_as(&self, parked: bool) -> u32 {
        // Acquire: a bumped word implies the waker's publication is visible.
        let w = self.word.load(Ordering::Acquire);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // `armed = newest(armed, w)` (wrapping order): a sleeper that read an older `w`
        // never lowers it.
        let mut a = self.armed.load(Ordering::Relaxed);
        while (w.wrapping_sub(a) as i32) > 0 {
            match self
                .armed
                .compare_exchange_weak(a, w, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => a = now,
            }
        }
        match self.mode {
            Some(m) if parked => {
                let mode = m.load(Ordering::Acquire);
                if mode == SYMMETRIC {
                    // Every waker fences (module docs); the `sleepers` RMW above is not
                    // guaranteed to be a full fence on every architecture.
                    fence(Ordering::SeqCst);
                } else {
                    if mode == 0 {
                        m.store(SWITCHING, Ordering::SeqCst);
                    }
                    if heavy_fence() {
                        m.store(SYMMETRIC, Ordering::Release);
                    }
                }
            }
            _ => {
                heavy_fence();
            }
        }
        w
    }

    /// Sleeper side: registers, re-checks with `ready`, sleeps at most `slice` unless the
    /// check succeeded. Returns the check's result if it succeeded.
    pub(crate) fn park<R>(&self, slice: Duration, ready: impl FnMut() -> Option<R>) -> Option<R> {
        self.park_as(false, slice, ready)
    }

    /// [`Self::park`] for a waiter that sleeps at every wait ([`WaitStrategy::Park`]):
    /// it switches the wait point to symmetric fences (module docs).
    pub(crate) fn park_as<R>(
        &self,
        parked: bool,
        slice: Duration,
        mut ready: impl FnMut() -> Option<R>,
    ) -> Option<R> {
        let w = self.begin_wait_as(parked);
        let r = ready();
        if r.is_none() {
            futex_wait(self.word, w, slice);
        }
        self.sleepers.fetch_sub(1, Ordering::Relaxed);
        r
    }
}

/// Spin-then-park loop state for one blocking call.
///
/// The clock is read only every 64 spins, and not at all before the first 64: a peer
/// that answers within a few hundred nanoseconds costs no `clock_gettime`.
pub(crate) struct Waiter<'h> {
    strategy: WaitStrategy,
    timeout: Option<Duration>,
    /// (deadline, end of spinning), fixed at the first clock reading, and that reading.
    times: Option<(Option<Instant>, Option<Instant>, Instant)>,
    spins: u32,
    /// The handle's memory of its waits (adaptive strategy): read for the spin budget,
    /// updated when this wait ends (on drop).
    hint: Option<&'h SpinHint>,
}

/// What the waiter should do next.
pub(crate) enum Next {
    /// Try again now (still spinning).
    Spin,
    /// Sleep, at most this long.
    Park(Duration),
    /// The deadline passed.
    TimedOut,
}

impl<'h> Waiter<'h> {
    pub(crate) fn new(strategy: WaitStrategy, timeout: Option<Duration>) -> Self {
        Waiter {
            strategy,
            timeout,
            times: None,
            spins: 0,
            hint: None,
        }
    }

    /// A waiter whose adaptive spin budget comes from, and is learned into, `hint`.
    pub(crate) fn learning(
        strategy: WaitStrategy,
        timeout: Option<Duration>,
        hint: &'h SpinHint,
    ) -> Self {
        Waiter {
            hint: Some(hint),
            ..Waiter::new(strategy, timeout)
        }
    }

    /// For a wait that [`pre_spin`] polled first: its first step reads the clock (the
    /// polls stood in for the spins before it).
    pub(crate) fn after_pre_spin(mut self) -> Self {
        self.spins = 63;
        self
    }

    fn spin_budget(&self) -> Option<Duration> {
        match (self.strategy, self.hint) {
            (WaitStrategy::Adaptive { spin }, Some(h)) => Some(h.budget(spin)),
            (s, _) => s.spin_budget(),
        }
    }

    /// Called after a failed attempt.
    #[inline]
    pub(crate) fn next(&mut self) -> Next {
        self.spins = self.spins.wrapping_add(1);
        let parks_now = self.strategy == WaitStrategy::Park;
        if self.spins % 64 != 0 && !parks_now {
            std::hint::spin_loop();
            return Next::Spin;
        }
        let now = Instant::now();
        if self.times.is_none() {
            self.times = Some((
                self.timeout.map(|t| now + t),
                self.spin_budget().map(|b| now + b),
                now,
            ));
        }
        let Some((deadline, spin_until, _)) = self.times else {
            return Next::TimedOut; // (set just above)
        };
        if deadline.is_some_and(|d| now >= d) {
            return Next::TimedOut;
        }
        match spin_until {
            Some(s) if now >= s => {
                let left = deadline.map_or(PARK_SLICE, |d| d.saturating_duration_since(now));
                Next::Park(left.min(PARK_SLICE))
            }
            _ => {
                if matches!(self.strategy, WaitStrategy::Adaptive { .. })
                    && self.times.is_some_and(|(.., t0)| now - t0 >= YIELD_AFTER)
                {
                    // Past the first microseconds, spin politely: a peer we wait for
                    // that shares our core runs only when we let it.
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                Next::Spin
            }
        }
    }
}

impl Drop for Waiter<'_> {
    /// Teaches the handle how long this wait took (adaptive strategy only). A wait that
    /// never read the clock ended within its first 64 spins: short.
    fn drop(&mut self) {
        if let (Some(h), WaitStrategy::Adaptive { spin }) = (self.hint, self.strategy) {
            let waited = self.times.map_or(Duration::ZERO, |(.., t0)| t0.elapsed());
            h.learn(spin, waited);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `pre_spin` with a poll that succeeds on call `ready_at` (1-based; 0: never):
    /// `(Some(n), n)` for `Ready(n)`, `(None, PRE_SPIN_POLLS)` for `Polled`, `(None, 0)`
    /// for `Skipped` (each checked against the number of polls made).
    fn polls(
        strategy: WaitStrategy,
        timeout: Option<Duration>,
        ready_at: u32,
    ) -> (Option<u32>, u32) {
        let hint = SpinHint::default();
        let mut n = 0;
        let r = pre_spin(strategy, timeout, &hint, || {
            n += 1;
            (n == ready_at).then_some(n)
        });
        match r {
            PreSpin::Ready(k) => (Some(k), n),
            PreSpin::Polled => {
                assert_eq!(n, PRE_SPIN_POLLS, "Polled after every poll");
                (None, n)
            }
            PreSpin::Skipped => {
                assert_eq!(n, 0, "Skipped without polling");
                (None, 0)
            }
        }
    }

    #[test]
    fn pre_spin_polls_a_bounded_number_of_times_and_stops_at_the_first_success() {
        let adaptive = WaitStrategy::default();
        assert_eq!(polls(WaitStrategy::Spin, None, 3), (Some(3), 3));
        assert_eq!(
            polls(adaptive, Some(Duration::from_secs(1)), 3),
            (Some(3), 3)
        );
        assert_eq!(polls(WaitStrategy::Spin, None, 0), (None, PRE_SPIN_POLLS));
        assert_eq!(
            polls(WaitStrategy::Spin, None, PRE_SPIN_POLLS + 1),
            (None, PRE_SPIN_POLLS)
        );
        // A short timeout polls too: the polls stand in for the waiter's untimed spins.
        assert_eq!(
            polls(
                WaitStrategy::Spin,
                Some(Duration::from_nanos(1)),
                PRE_SPIN_POLLS
            ),
            (Some(PRE_SPIN_POLLS), PRE_SPIN_POLLS)
        );
    }

    #[test]
    fn pre_spin_does_not_poll_when_the_call_must_not_spin() {
        // Park sleeps at once; a zero timeout is one attempt (try_*).
        assert_eq!(polls(WaitStrategy::Park, None, 1), (None, 0));
        assert_eq!(
            polls(WaitStrategy::Spin, Some(Duration::ZERO), 1),
            (None, 0)
        );
        assert_eq!(
            polls(WaitStrategy::default(), Some(Duration::ZERO), 1),
            (None, 0)
        );
    }

    #[test]
    fn a_waiter_after_a_pre_spin_reads_the_clock_at_its_first_step() {
        // Without the polls a 1 ns timeout is noticed at the 64th step; after them, at
        // the first, so the untimed spinning stays what it was.
        let mut w = Waiter::new(WaitStrategy::Spin, Some(Duration::from_nanos(1)));
        for _ in 0..63 {
            assert!(matches!(w.next(), Next::Spin));
        }
        let mut w = Waiter::new(WaitStrategy::Spin, Some(Duration::from_nanos(1))).after_pre_spin();
        assert!(w.times.is_none());
        let _ = w.next();
        assert!(w.times.is_some(), "the first step read the clock");
    }

    #[test]
    fn a_wait_that_ends_in_the_pre_spin_teaches_a_short_wait() {
        let max = Duration::from_micros(50);
        let h = SpinHint::default();
        h.learn(max, 2 * max);
        h.learn(max, 2 * max);
        assert_eq!(h.budget(max), max / 4);
        assert!(matches!(
            pre_spin(WaitStrategy::default(), None, &h, || Some(())),
            PreSpin::Ready(())
        ));
        assert_eq!(h.budget(max), max / 2);
        // Spin has no budget to teach.
        let h = SpinHint::default();
        assert!(matches!(
            pre_spin(WaitStrategy::Spin, None, &h, || Some(())),
            PreSpin::Ready(())
        ));
        assert_eq!(h.0.get(), None);
    }

    #[test]
    fn adaptive_budget_halves_after_long_waits_and_doubles_back() {
        let max = Duration::from_micros(50);
        let h = SpinHint::default();
        assert_eq!(h.budget(max), max);
        for _ in 0..10 {
            h.learn(max, Duration::from_millis(1));
        }
        assert_eq!(h.budget(max), MIN_ADAPTIVE_SPIN);
        h.learn(max, Duration::from_micros(30));
        assert_eq!(h.budget(max), 2 * MIN_ADAPTIVE_SPIN);
        for _ in 0..10 {
            h.learn(max, Duration::ZERO);
        }
        assert_eq!(h.budget(max), max);
        // A smaller maximum caps a budget learned under a larger one.
        assert_eq!(h.budget(Duration::from_micros(5)), Duration::from_micros(5));
        // A budget below the minimum stays as small as the strategy asks.
        let tiny = Duration::from_nanos(500);
        h.learn(tiny, Duration::from_millis(1));
        assert_eq!(h.budget(tiny), tiny);
    }

    #[test]
    fn a_waiter_learns_on_drop() {
        let max = Duration::from_micros(50);
        let h = SpinHint::default();
        let s = WaitStrategy::Adaptive { spin: max };
        drop(Waiter::learning(s, None, &h)); // ended at once: stays at the maximum
        assert_eq!(h.budget(max), max);
        let mut w = Waiter::learning(s, Some(Duration::from_millis(2)), &h);
        while !matches!(w.next(), Next::TimedOut) {} // spins 50 µs, then "parks" till 2 ms
        drop(w);
        assert_eq!(h.budget(max), max / 2);
        // Park and Spin learn nothing.
        let p = SpinHint::default();
        drop(Waiter::learning(WaitStrategy::Park, None, &p));
        assert_eq!(p.0.get(), None);
    }

    #[test]
    fn wake_without_sleepers_is_a_no_op_and_park_returns_when_ready() {
        let word = AtomicU32::new(0);
        let sleepers = AtomicU32::new(0);
        let armed = AtomicU32::new(0);
        let wp = WaitPoint {
            word: &word,
            sleepers: &sleepers,
            armed: &armed,
            mode: None,
        };
        wp.wake();
        assert_eq!(word.load(Ordering::Relaxed), 0);
        assert_eq!(wp.park(Duration::from_secs(5), || Some(7)), Some(7));
        assert_eq!(sleepers.load(Ordering::Relaxed), 0);
        let t = Instant::now();
        assert_eq!(wp.park(Duration::from_millis(5), || None::<()>), None);
        assert!(t.elapsed() >= Duration::from_millis(4));
    }

    #[test]
    fn park_is_woken_by_another_thread() {
        let word = AtomicU32::new(0);
        let sleepers = AtomicU32::new(0);
        let armed = AtomicU32::new(0);
        let flag = AtomicU32::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let wp = WaitPoint {
                    word: &word,
                    sleepers: &sleepers,
                    armed: &armed,
                    mode: None,
                };
                let t = Instant::now();
                loop {
                    if wp
                        .park(Duration::from_secs(10), || {
                            (flag.load(Ordering::Acquire) == 1).then_some(())
                        })
                        .is_some()
                    {
                        break;
                    }
                    assert!(t.elapsed() < Duration::from_secs(10), "lost wake-up");
                }
            });
            // Publish once the sleeper is (probably) asleep; correctness does not depend
            // on the timing, only the code path exercised does.
            while sleepers.load(Ordering::Relaxed) == 0 {
                std::hint::spin_loop();
            }
            flag.store(1, Ordering::Release);
            WaitPoint {
                word: &word,
                sleepers: &sleepers,
                armed: &armed,
                mode: None,
            }
            .wake();
        });
    }

    #[test]
    fn waiter_times_out() {
        let mut w = Waiter::new(WaitStrategy::Spin, Some(Duration::from_millis(2)));
        loop {
            match w.next() {
                Next::Spin => {}
                Next::Park(_) => panic!("Spin never parks"),
                Next::TimedOut => break,
            }
        }
        let mut w = Waiter::new(WaitStrategy::Park, Some(Duration::from_millis(30)));
        assert!(matches!(w.next(), Next::Park(d) if d <= PARK_SLICE));
    }
}
