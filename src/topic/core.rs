//! The untyped part of publisher and subscriber handles: registration, the publisher
//! role, the `Block` wait for slow subscribers, the subscriber's seqlock read, dead-peer
//! sweeps and the spin-then-park loop.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::errors::Fail;
use super::ring::{ROLE_PUB, Ring, Slot, diff};
use super::{Policy, Shape};
use crate::error::Error;
use crate::queue::WaitStrategy;
use crate::queue::wait::{self, Next, SpinHint, WaitPoint, Waiter};
use crate::segment::Segment;

/// After how long a blocked publisher checks whether what blocks it (the slowest
/// subscriber, the holder of the publisher role) is alive, and how often after that.
const RECOVER_AFTER: Duration = Duration::from_millis(2);
const RECOVER_EVERY: Duration = Duration::from_millis(10);

pub(crate) use crate::queue::owner_alive;
use crate::queue::owner_word;

pub(crate) struct Core {
    pub(crate) seg: Arc<Segment>,
    pub(crate) ring: Ring,
    pub(crate) shape: Shape,
    pub(crate) wait: WaitStrategy,
    /// This handle's adaptive spin budget, learned from its waits.
    spin: SpinHint,
    pub(crate) me: usize,
    pid: u32,
    /// Publisher: the next position, while this handle holds the publisher role.
    pos: Cell<Option<u64>>,
    /// Publisher (`Block`): positions below this may be written without a rescan.
    limit: Cell<u64>,
    /// Publisher (`Block`): the subscribe epoch the limit was computed at.
    epoch: Cell<u64>,
    /// Subscriber: next position to read.
    pub(crate) cursor: Cell<u64>,
    /// What blocks this handle (an entry), since when, when to check it next.
    stuck: Cell<Option<(usize, Instant, Instant)>>,
    /// Subscriber: rate limit of dead-publisher sweeps.
    polls: Cell<u32>,
    next_sweep: Cell<Option<Instant>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic")
            .field("resource", &self.seg.resource())
            .field("capacity", &self.ring.geo.cap)
            .field("policy", &self.shape.policy)
            .field("entry", &self.me)
            .finish()
    }
}

impl Core {
    pub(crate) fn new(
        seg: Arc<Segment>,
        ring: Ring,
        shape: Shape,
        wait: WaitStrategy,
    ) -> Result<Core, Error> {
        wait::init_fences();
        let pid = std::process::id();
        let token = seg.liveness().token()?;
        let me = ring
            .register(owner_word(pid, token), &|o| owner_alive(&seg, o))
            .ok_or_else(|| {
                Error::invalid(
                    seg.resource(),
                    "open topic",
                    format!(
                        "all {} participant entries are taken by live handles; create the topic with more max_subscribers",
                        ring.geo.entries
                    ),
                )
            })?;
        Ok(Core {
            seg,
            ring,
            shape,
            wait,
            spin: SpinHint::default(),
            me,
            pid,
            pos: Cell::new(None),
            limit: Cell::new(0),
            epoch: Cell::new(0),
            cursor: Cell::new(0),
            stuck: Cell::new(None),
            polls: Cell::new(0),
            next_sweep: Cell::new(None),
        })
    }

    pub(crate) fn resource(&self) -> String {
        self.seg.resource()
    }

    #[cold]
    pub(crate) fn corrupt(&self, detail: String) -> Fail {
        Error::corrupt(self.resource(), detail).into()
    }

    fn alive(&self, owner: u64) -> bool {
        owner_alive(&self.seg, owner)
    }

    /// Whether entry `k`, which blocks this handle, should be checked for death now
    /// (after `RECOVER_AFTER`, then every `RECOVER_EVERY`); remembers it otherwise.
    fn due(&self, k: usize) -> bool {
        let now = Instant::now();
        match self.stuck.get() {
            Some((j, _, next)) if j == k => {
                if now >= next {
                    self.stuck.set(Some((k, now, now + RECOVER_EVERY)));
                    true
                } else {
                    false
                }
            }
            _ => {
                self.stuck.set(Some((k, now, now + RECOVER_AFTER)));
                false
            }
        }
    }

    // ------------------------------------------------------------ publisher

    /// Attaches this handle as a publisher (counted: subscribers see `Disconnected` once
    /// every publisher is gone).
    pub(crate) fn attach_publisher(&self) -> Result<(), Error> {
        self.ring.attach(self.me, ROLE_PUB);
        if !self.shape.multi {
            // One publisher: take the role now, so a second one is refused at once.
            self.take_role().map_err(|f| match f {
                Fail::Other(e) => *e,
                _ => Error::invalid(self.resource(), "publisher", "publisher role busy"),
            })?;
        }
        Ok(())
    }

    #[inline]
    fn take_role(&self) -> Result<u64, Fail> {
        match self.pos.get() {
            Some(p) => Ok(p),
            None => self.take_role_slow(),
        }
    }

    #[cold]
    fn take_role_slow(&self) -> Result<u64, Fail> {
        let r = self.ring.take_lock(self.me, &|_| true);
        let r = match r {
            Err(k) if !self.shape.multi || self.due(usize::MAX - k) => {
                self.ring.take_lock(self.me, &|o| self.alive(o))
            }
            r => r,
        };
        match r {
            Ok(()) => {
                let p = self.ring.tail().load(Ordering::Acquire);
                self.pos.set(Some(p));
                self.limit.set(p);
                Ok(p)
            }
            Err(_) if self.shape.multi => Err(Fail::Blocked),
            Err(k) => {
                let holder = self.ring.owner(k).load(Ordering::Relaxed);
                Err(Error::invalid(
                    self.resource(),
                    "publish",
                    format!(
                        "this topic's publisher role is held by another live handle (pid {}); \
                         create the topic with .publishers(n) for several publishers",
                        holder >> 32
                    ),
                )
                .into())
            }
        }
    }

    /// One attempt to claim the next position for writing; marks its slot as being
    /// written. `Fail::Blocked` when it must wait.
    #[inline]
    pub(crate) fn try_claim(&self) -> Result<u64, Fail> {
        let p = self.take_role()?;
        if self.shape.policy == Policy::Block {
            let e = self.ring.epoch().load(Ordering::Acquire);
            if diff(p, self.limit.get()) >= 0 || e != self.epoch.get() {
                self.epoch.set(e);
                match self.ring.room(p) {
                    Ok(l) => self.limit.set(l),
                    Err(k) => {
                        self.limit.set(p);
                        if self.due(k) {
                            let o = self.ring.owner(k).load(Ordering::Acquire);
                            if !self.alive(o) {
                                self.ring.note_dead_entry(k, o);
                                return self.try_claim();
                            }
                        }
                        if self.shape.multi {
                            self.pos.set(None);
                            self.ring.release_lock(self.me);
                        }
                        return Err(Fail::Blocked);
                    }
                }
            }
        }
        self.stuck.set(None);
        self.ring.begin_write(p);
        Ok(p)
    }

    /// Publishes position `p` (claimed by `try_claim`).
    #[inline]
    pub(crate) fn publish(&self, p: u64) {
        self.ring.finish_write(p);
        if self.shape.multi {
            self.pos.set(None);
            self.ring.release_lock(self.me);
        } else {
            self.pos.set(Some(p.wrapping_add(1)));
        }
    }

    /// A claim given up (a loan dropped unpublished): the position stays next.
    pub(crate) fn abandon(&self) {
        if self.shape.multi {
            self.pos.set(None);
            self.ring.release_lock(self.me);
        }
    }

    // ------------------------------------------------------------ subscriber

    pub(crate) fn subscribe(&self, history: u64) {
        let c = self.ring.start(history);
        self.cursor.set(self.ring.subscribe(self.me, c));
    }

    /// One attempt to read the message at the cursor: `read(data, seq)` copies it out
    /// (it may fail with an error of its own, e.g. a bad length); the cursor advances only
    /// if the slot still held the message after the copy.
    #[inline]
    pub(crate) fn try_read<R>(
        &self,
        mut read: impl FnMut(&Ring, u64) -> Result<R, Fail>,
    ) -> Result<R, Fail> {
        let c = self.cursor.get();
        // A copy spoiled by a rewrite is retried after looking again (which then sees
        // the newer position): a bounded number of times, so that a hostile peer
        // flipping the sequence word cannot keep a `try_` call looping.
        for _ in 0..16 {
            match self.ring.look(c) {
                Ok(Slot::Ready(s)) => {
                    let r = read(&self.ring, c);
                    if !self.ring.still(c, s) {
                        continue; // lapped during the copy: look again (Overwritten)
                    }
                    let r = r?;
                    self.advance(c.wrapping_add(1));
                    return Ok(r);
                }
                Ok(Slot::Overwritten(q)) => {
                    let n = self.ring.recover(c, q);
                    self.advance(n);
                    return Err(Fail::Lagged(n.wrapping_sub(c)));
                }
                Ok(Slot::NotYet) => return Err(self.nothing(c)),
                Err(e) => return Err(self.corrupt(e.0)),
            }
        }
        Err(Fail::Blocked)
    }

    /// Moves the cursor to `n` (shared, for a `Block` publisher and `stat`).
    #[inline]
    pub(crate) fn advance(&self, n: u64) {
        self.cursor.set(n);
        self.ring.cursor(self.me).store(n, Ordering::Release);
        if self.shape.policy == Policy::Block {
            self.ring.space_wait().wake();
        }
    }

    /// Nothing at cursor `c`: `Disconnected` if every publisher is gone (by the count, or
    /// by a rate-limited sweep that notes dead ones), else `Blocked`.
    #[cold]
    fn nothing(&self, c: u64) -> Fail {
        let gone = self.ring.publishers_gone() || {
            let n = self.polls.get().wrapping_add(1);
            self.polls.set(n);
            n % 64 == 1 && self.ring.publishers_ever() && self.sweep_due() && {
                self.ring.sweep(ROLE_PUB, &|o| self.alive(o)) == 0
            }
        };
        if gone && !matches!(self.ring.look(c), Ok(Slot::Ready(_))) {
            // (Re-checked: a message published just before the last publisher left.)
            Fail::Disconnected
        } else {
            Fail::Blocked
        }
    }

    fn sweep_due(&self) -> bool {
        let now = Instant::now();
        match self.next_sweep.get() {
            Some(t) if now < t => false,
            _ => {
                self.next_sweep.set(Some(now + RECOVER_EVERY));
                true
            }
        }
    }

    // ------------------------------------------------------------ waiting

    /// Retries `attempt` until it does not return `Fail::Blocked`, spinning then parking
    /// on the data (`send == false`) or space wait point, at most `timeout`.
    #[inline]
    pub(crate) fn wait_for<R>(
        &self,
        send: bool,
        timeout: Option<Duration>,
        mut attempt: impl FnMut() -> Result<R, Fail>,
    ) -> Result<R, Fail> {
        match attempt() {
            Err(Fail::Blocked) => {}
            r => return r,
        }
        self.wait_slow(send, timeout, attempt)
    }

    #[inline(never)]
    fn wait_slow<R>(
        &self,
        send: bool,
        timeout: Option<Duration>,
        mut attempt: impl FnMut() -> Result<R, Fail>,
    ) -> Result<R, Fail> {
        let mut w = Waiter::learning(self.wait, timeout, &self.spin);
        loop {
            match w.next() {
                Next::Spin => {}
                Next::Park(d) => {
                    let wp: WaitPoint<'_> = if send {
                        self.ring.space_wait()
                    } else {
                        self.ring.data_wait()
                    };
                    if let Some(r) = wp.park(d, || match attempt() {
                        Err(Fail::Blocked) => None,
                        r => Some(r),
                    }) {
                        return r;
                    }
                }
                Next::TimedOut => return Err(Fail::Timeout),
            }
            match attempt() {
                Err(Fail::Blocked) => {}
                r => return r,
            }
        }
    }
}

#[cfg(all(feature = "async", not(shmkit_loom)))]
impl Core {
    /// Hook for `crate::aio`: the wait point a blocked publish (`send`) or receive
    /// sleeps on, and how soon an async waiter should look again without a wake-up (a
    /// dead peer wakes nobody).
    pub(crate) fn wait_hook(&self, send: bool) -> (WaitPoint<'_>, Duration) {
        if send {
            (self.ring.space_wait(), RECOVER_EVERY)
        } else {
            (self.ring.data_wait(), RECOVER_EVERY * 10)
        }
    }

    /// Hook for `crate::aio`: a rate-limited sweep for dead publishers (a receive that
    /// found nothing; the next attempt then sees a disconnection).
    pub(crate) fn sweep_hook(&self) {
        if self.ring.publishers_ever() && !self.ring.publishers_gone() && self.sweep_due() {
            self.ring.sweep(ROLE_PUB, &|o| self.alive(o));
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if self.pid == std::process::id() {
            self.ring.unregister(self.me);
        }
    }
}
