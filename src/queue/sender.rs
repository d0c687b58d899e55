//! [`Sender`] and [`ByteSender`]: producer handles that are `Send + Sync + Clone`.
//!
//! A queue handle owns one participant entry, whose `intent` word announces the position
//! it is claiming; that is how survivors tell a dead process's claim from a live one. Two
//! threads claiming through one entry would overwrite each other's announcement, and a
//! consumer could then skip a live claim. So a shareable sender is a small pool of
//! ordinary handles (each its own entry), created on demand, each used by one thread at a
//! time under an uncontended in-process lock: a thread tries "its" handle first (an index
//! drawn once per thread), then the others, and waits for its own only if all are busy.
//! The pool holds at most [`POOL`] handles (one for an SPSC queue, whose single producer
//! role belongs to one entry). Cost: one uncontended lock/unlock per send (~10–20 ns) on
//! top of the handle's own send.

#[cfg(shmkit_loom)]
use loom::sync::atomic::AtomicU32;
#[cfg(not(shmkit_loom))]
use std::sync::atomic::AtomicU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytemuck::Pod;

use crate::error::Result;
use crate::segment::Segment;

use super::wait::WaitPoint;
use super::{
    ByteQueue, Core, Mode, Queue, SendError, SendTimeoutError, TrySendError, ring::ROLE_SENDER,
};

/// Most handles a shareable sender opens (threads sending at the same moment beyond this
/// wait for one another).
pub const POOL: usize = 8;

/// A pool of producer handles; slot 0 is always filled.
struct Pool<H> {
    slots: Box<[Mutex<Option<H>>]>,
    make: Box<dyn Fn() -> Result<H> + Send + Sync>,
    /// The queue's space wait point, for async sends (which sleep with no handle held).
    #[cfg_attr(any(not(feature = "async"), shmkit_loom), allow(dead_code))]
    space: SpaceWait,
}

/// A queue's space wait point (futex word and sleeper count), usable from any thread:
/// two atomics in the segment, which `_seg` keeps mapped.
#[cfg_attr(any(not(feature = "async"), shmkit_loom), allow(dead_code))]
struct SpaceWait {
    _seg: Arc<Segment>,
    word: *const AtomicU32,
    sleepers: *const AtomicU32,
    armed: *const AtomicU32,
}

impl SpaceWait {
    fn of(core: &Core) -> SpaceWait {
        let wp = core.ring.space_wait();
        SpaceWait {
            _seg: core.seg.clone(),
            word: wp.word,
            sleepers: wp.sleepers,
            armed: wp.armed,
        }
    }

    /// Where an async sender sleeps.
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    fn spot(&self) -> crate::aio::Spot<'_, impl FnOnce() -> u32 + '_> {
        let wp = self.get();
        crate::aio::Spot {
            word: wp.word,
            sleepers: wp.sleepers,
            begin: move || wp.begin_wait(),
        }
    }

    #[cfg_attr(any(not(feature = "async"), shmkit_loom), allow(dead_code))]
    fn get(&self) -> WaitPoint<'_> {
        // SAFETY: all three point to atomics inside the segment's mapping (taken from a ring
        // over it), which `_seg` keeps alive as long as `self`; shared memory words are
        // only ever accessed atomically.
        unsafe {
            WaitPoint {
                word: &*self.word,
                sleepers: &*self.sleepers,
                armed: &*self.armed,
                mode: None,
            }
        }
    }
}

// SAFETY: the pointers are to atomics (Sync by nature) in a mapping that `_seg` (Send +
// Sync) owns; nothing else is shared.
unsafe impl Send for SpaceWait {}
// SAFETY: as above.
unsafe impl Sync for SpaceWait {}

impl<H> std::fmt::Debug for Pool<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("slots", &self.slots.len())
            .finish()
    }
}

fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|s| *s)
}

fn lock<H>(m: &Mutex<Option<H>>) -> MutexGuard<'_, Option<H>> {
    // A panic while sending cannot leave a handle half-updated in a way that matters
    // (the shared state is protected by the ring protocol): ignore poisoning.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<H> Pool<H> {
    fn new(
        first: H,
        space: SpaceWait,
        mode: Mode,
        make: Box<dyn Fn() -> Result<H> + Send + Sync>,
    ) -> Self {
        let n = if mode == Mode::Spsc { 1 } else { POOL };
        let mut first = Some(first);
        let slots = (0..n).map(|_| Mutex::new(first.take())).collect();
        Pool { slots, make, space }
    }

    /// Runs `f` on a handle of the pool that no other thread is using.
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&H) -> R) -> R {
        let n = self.slots.len();
        let start = thread_slot() % n;
        for k in 0..n {
            let Ok(mut g) = self.slots[(start + k) % n].try_lock() else {
                continue;
            };
            if g.is_none() {
                // A new entry; if the queue has none left, try the others.
                match (self.make)() {
                    Ok(h) => *g = Some(h),
                    Err(_) => continue,
                }
            }
            if let Some(h) = g.as_ref() {
                return f(h);
            }
        }
        // All busy (or no entry left to open): wait for a filled one.
        let mut k = start;
        loop {
            let g = lock(&self.slots[k % n]);
            if let Some(h) = g.as_ref() {
                return f(h);
            }
            k = 0;
        }
    }

    fn each(&self, f: impl Fn(&H)) {
        for s in self.slots.iter() {
            if let Some(h) = lock(s).as_ref() {
                f(h);
            }
        }
    }
}

/// A producer handle on a [`Queue`] that many threads can share: `Send + Sync + Clone`
/// (clones share the handle pool, like crossbeam's `Sender`); see [`Queue::sender`].
///
/// It attaches as a producer at creation and detaches when the last clone is dropped (or
/// on [`close`](Self::close)), so receivers see `Disconnected` once every sender is gone.
///
/// ```
/// use shmkit::queue::Queue;
/// let rx = Queue::<u64>::anonymous(64)?;
/// let tx = rx.sender()?;
/// std::thread::scope(|s| {
///     for t in 0..4u64 {
///         let tx = &tx; // shared by reference: no lock, no clone needed
///         s.spawn(move || tx.send(t).unwrap());
///     }
/// });
/// drop(tx);
/// let mut got: Vec<u64> = rx.iter().collect(); // ends at Disconnected
/// got.sort();
/// assert_eq!(got, [0, 1, 2, 3]);
/// # Ok::<(), shmkit::Error>(())
/// ```
pub struct Sender<T> {
    pool: Arc<Pool<Queue<T>>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            pool: self.pool.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("pool", &self.pool).finish()
    }
}

impl<T: Pod + Send> Sender<T> {
    pub(super) fn new(q: Queue<T>) -> Self {
        q.attach_producer();
        let (seg, mode, joinable, geo, wait) = q.core.params();
        let make = Box::new(move || {
            let q =
                Queue::<T>::from_core(super::Core::new(seg.clone(), mode, joinable, geo, wait)?);
            q.attach_producer();
            Ok(q)
        });
        let space = SpaceWait::of(&q.core);
        Sender {
            pool: Arc::new(Pool::new(q, space, mode, make)),
        }
    }

    /// Sends `v`, waiting while the queue is full (see [`Queue::send`]).
    #[inline]
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        self.pool.with(|q| q.send(v))
    }

    /// Sends `v` if there is room now (see [`Queue::try_send`]).
    #[inline]
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        self.pool.with(|q| q.try_send(v))
    }

    /// Sends `v`, waiting at most `timeout` (see [`Queue::send_timeout`]).
    pub fn send_timeout(&self, v: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.pool.with(|q| q.send_timeout(v, timeout))
    }

    /// Detaches every handle of this sender (and its clones) as a producer: "no more
    /// messages". A later send attaches again.
    pub fn close(&self) {
        self.pool.each(|q| q.core.detach(ROLE_SENDER));
    }

    /// Whether every consumer that attached is gone (approximate).
    pub fn is_disconnected(&self) -> bool {
        self.pool
            .with(|q| q.core.ring.peers_gone(super::ring::ROLE_RECEIVER))
    }
}

/// A producer handle on a [`ByteQueue`] that many threads can share: `Send + Sync +
/// Clone`; see [`ByteQueue::sender`] and [`Sender`].
pub struct ByteSender {
    pool: Arc<Pool<ByteQueue>>,
}

impl Clone for ByteSender {
    fn clone(&self) -> Self {
        ByteSender {
            pool: self.pool.clone(),
        }
    }
}

impl std::fmt::Debug for ByteSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteSender")
            .field("pool", &self.pool)
            .finish()
    }
}

impl ByteSender {
    pub(super) fn new(q: ByteQueue) -> Self {
        q.attach_producer();
        let max = q.max_message();
        let (seg, mode, joinable, geo, wait) = q.core.params();
        let make = Box::new(move || {
            let q = ByteQueue::from_core(
                super::Core::new(seg.clone(), mode, joinable, geo, wait)?,
                max,
            );
            q.attach_producer();
            Ok(q)
        });
        let space = SpaceWait::of(&q.core);
        ByteSender {
            pool: Arc::new(Pool::new(q, space, mode, make)),
        }
    }

    /// Sends `msg` (see [`ByteQueue::send`]).
    pub fn send<'m>(&self, msg: &'m [u8]) -> Result<(), SendError<&'m [u8]>> {
        self.pool.with(|q| q.send(msg))
    }

    /// Sends `msg` if there is room now (see [`ByteQueue::try_send`]).
    pub fn try_send<'m>(&self, msg: &'m [u8]) -> Result<(), TrySendError<&'m [u8]>> {
        self.pool.with(|q| q.try_send(msg))
    }

    /// Sends `msg`, waiting at most `timeout` (see [`ByteQueue::send_timeout`]).
    pub fn send_timeout<'m>(
        &self,
        msg: &'m [u8],
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<&'m [u8]>> {
        self.pool.with(|q| q.send_timeout(msg, timeout))
    }

    /// Detaches every handle of this sender as a producer (see [`Sender::close`]).
    pub fn close(&self) {
        self.pool.each(|q| q.close());
    }

    /// The largest message the queue carries.
    pub fn max_message(&self) -> usize {
        self.pool.with(|q| q.max_message())
    }
}

/// `std::io::Write` through a shared byte sender (see the impl for `&ByteQueue`).
impl std::io::Write for &ByteSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pool.with(|mut q| q.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Hooks for `crate::aio` (async sends through a shared sender): one handle of the pool
/// per attempt, and the queue's space wait point to sleep on with no handle held.
#[cfg(all(feature = "async", not(shmkit_loom)))]
impl<T: Pod + Send> Sender<T> {
    pub(crate) fn with_hook<R>(&self, f: impl FnOnce(&Queue<T>) -> R) -> R {
        self.pool.with(f)
    }

    pub(crate) fn space_hook(&self) -> crate::aio::Spot<'_, impl FnOnce() -> u32 + '_> {
        self.pool.space.spot()
    }
}

#[cfg(all(feature = "async", not(shmkit_loom)))]
impl ByteSender {
    pub(crate) fn with_hook<R>(&self, f: impl FnOnce(&ByteQueue) -> R) -> R {
        self.pool.with(f)
    }

    pub(crate) fn space_hook(&self) -> crate::aio::Spot<'_, impl FnOnce() -> u32 + '_> {
        self.pool.space.spot()
    }
}
