//! Async forms of every blocking operation (features `async` and `tokio`).
//!
//! - Futex-based primitives (feature `async`, no dependency, any executor: the futures
//!   are plain [`std::future::Future`]s woken through [`std::task::Waker`]):
//!   [`Event::wait_async`](crate::sync::Event::wait_async) and
//!   [`wait_timeout_async`](crate::sync::Event::wait_timeout_async),
//!   [`Queue::recv_async`](crate::Queue::recv_async) /
//!   [`send_async`](crate::Queue::send_async) and, zero-copy,
//!   [`reserve_async`](crate::Queue::reserve_async) /
//!   [`recv_ref_async`](crate::Queue::recv_ref_async); the same four on
//!   [`ByteQueue`](crate::ByteQueue::recv_async);
//!   [`Sender::send_async`](crate::queue::Sender::send_async) and
//!   [`ByteSender::send_async`](crate::queue::ByteSender::send_async) on the shared
//!   senders (`&self`: many tasks send through one sender; the future is `Send`);
//!   [`Semaphore::wait_async`](crate::sync::Semaphore::wait_async) /
//!   [`wait_timeout_async`](crate::sync::Semaphore::wait_timeout_async) (and on
//!   [`BoundedSemaphore`](crate::sync::BoundedSemaphore::wait_async));
//!   [`Latest::wait_for_update_async`](crate::latest::Latest::wait_for_update_async)
//!   (and on [`Board`](crate::latest::Board::wait_for_update_async)).
//! - Kernel transports (feature `tokio`, through `tokio::io::unix::AsyncFd`):
//!   [`AsyncMessageQueue`], [`AsyncFifoReader`], [`AsyncFifoWriter`], [`AsyncPipe`],
//!   [`AsyncSignalListener`]. They need a tokio runtime with its I/O driver
//!   (`enable_io`/`enable_all`).
//!
//! ```
//! # #[cfg(feature = "tokio")] {
//! use shmkit::Queue;
//! let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! let mut rx = Queue::<u64>::anonymous(16)?;
//! let mut tx = rx.try_clone()?;             // or Queue::open(name) in another process
//! std::thread::spawn(move || tx.send(42));  // a plain blocking sender
//! assert_eq!(rt.block_on(rx.recv_async())?, 42);
//! # }
//! # Ok::<(), shmkit::Error>(())
//! ```
//!
//! # Waking a future from another process: the design
//!
//! A blocked queue or event operation sleeps on a futex word in shared memory next to a
//! *sleeper count*; wakers bump the word and call `FUTEX_WAKE` only when the count is not
//! zero (ARCHITECTURE.md, "Queue" / "Waiting"). An async waiter has to be woken by that
//! same `FUTEX_WAKE`, issued by a process that knows nothing about it, and has to hand the
//! wake-up to whatever executor polls it.
//!
//! shmkit runs, per process and started on first use, a **waiter thread** blocked in
//! `futex_waitv(2)` (Linux 5.16) on every registered (word, expected value) plus a private
//! control word. A future that cannot complete:
//!
//! 1. tries the operation (the same `try_` path as the blocking call);
//! 2. counts itself as a sleeper (`sleepers += 1`, the same fences as a blocking sleeper)
//!    and reads the word;
//! 3. tries again (the classic lost-wake-up discipline: a waker that published before
//!    step 2 is seen here, one that publishes after it sees `sleepers != 0` and bumps
//!    the word);
//! 4. registers (word, value read in 2, its `Waker`) with the waiter thread and returns
//!    `Pending`. If the thread is asleep on other words it is woken through the control
//!    word to include this one.
//!
//! When a watched word changes, `futex_waitv` returns; the thread drops every
//! registration on that word and calls their wakers (outside its lock). A wake-up that
//! finds no registration left on its word (its futures were dropped meanwhile) is passed
//! on with one `FUTEX_WAKE`: a semaphore's `post` wakes a single sleeper, and it must not
//! be spent on nobody while a blocking sleeper waits. A woken future
//! drops its sleeper count and starts again at 1. A future dropped while pending removes
//! its registration (no system call) and its sleeper count, so nothing stale remains.
//! One thread watches up to 127 distinct (word, value) pairs (`futex_waitv` takes 128
//! words, one is the control word); past that, more threads are started.
//!
//! The waiter thread never dereferences a registered address: only the kernel reads the
//! words (in `futex_waitv`, or a zero-timeout `FUTEX_WAIT` used as a fault-tolerant
//! compare), so even a future leaked with `mem::forget` after its segment was unmapped
//! cannot make the thread fault.
//!
//! # Cost
//!
//! - Nothing on the fast paths: a send, receive or `set` that finds nobody asleep makes
//!   no system call, async waiters or not (an async waiter is counted as a sleeper only
//!   while it is registered). A future whose operation can complete at once completes in
//!   its first poll without touching the waiter thread.
//! - Per wait that blocks: the sleeper registration of the blocking path (for queues one
//!   `membarrier`), a lock, and, when the thread is asleep on other words, one
//!   `FUTEX_WAKE` of the control word plus the thread's new `futex_waitv`.
//! - Per wake-up: the waker's `FUTEX_WAKE` (as for a blocking sleeper), then one
//!   thread-to-thread hand-off (the waiter thread calls `Waker::wake`; for tokio that
//!   unparks the runtime thread). `shmkit-bench` measures it: `shmkit-queue-async`,
//!   `shmkit-event-async` against `shmkit-queue-park`, `shmkit-event`.
//! - One thread (256 KiB stack, every signal blocked) per 127 distinct words waited on
//!   at once; threads are started on demand and kept.
//! - An idle queue wait whose peers are attached re-checks every 100 ms whether they
//!   died without closing (their death wakes nobody; the blocking forms re-check every
//!   20 ms): one liveness sweep (`fcntl` per participant) and one wake-up of the waiting
//!   task. An event wait has no such timer.
//!
//! # Why this design
//!
//! - *An eventfd (or pipe) per waiter, written by the waker*: the waker is another
//!   process and cannot write a descriptor it does not have; passing descriptors would
//!   need a socket per pair of processes and a system call on every send.
//! - *Polling the word from a timer*: adds latency and burns CPU while idle, and is what
//!   the issue rules out.
//! - *A thread per waiting future (`spawn_blocking` + the blocking call)*: one thread per
//!   pending operation, and cancelling it means waiting out its sleep slice.
//! - *`FUTEX_FD`*: removed from Linux in 2.6.26.
//! - `futex_waitv` lets one thread wait on many shared words at once with the exact
//!   semantics of the blocking sleepers (wakers need not know the waiter is async), so
//!   wakers are unchanged and the fast path stays free.
//!
//! # Robustness
//!
//! - A process killed while an async waiter is registered leaves the sleeper count one
//!   too high, exactly like a blocking sleeper that died: later wakers pay one needless
//!   `FUTEX_WAKE` each, nobody blocks.
//! - A queue operation blocked by another process's unfinished claim (a peer that may
//!   have died mid-operation, which wakes nobody) registers with a re-check time (10 ms),
//!   like the blocking path's sliced sleep, and recovers the claim when its owner is
//!   dead.
//! - Disconnection follows the blocking forms: `recv_async` returns
//!   [`RecvError::Disconnected`](crate::queue::RecvError) once the queue is empty and
//!   every producer is gone, `send_async` [`SendError::Disconnected`](crate::queue::SendError)
//!   (with the value) once every consumer is gone. A peer that closes or drops its handle
//!   wakes the waiters at once; one that is killed is found by the 100 ms sweep above.
//! - After `fork`, the child starts its own waiter thread on first use. Do not fork while
//!   another thread is registering a wait (the child could inherit a held lock).
//!
//! # No async condvar wait (or mutex lock)
//!
//! [`Condvar::wait`](crate::sync::Condvar) takes a [`MutexGuard`](crate::sync::MutexGuard)
//! and gives it back relocked, so an async form would be `wait_async(guard).await`, and
//! would need an async relock (`Mutex::lock_async`). The futex half fits this design
//! (the lock word and the condvar's sequence word are futex words a future can sleep
//! on, like a semaphore's). The guard does not: it is deliberately **not `Send`**,
//! because the robust mutex records the owner's *thread id* (a thread of this process
//! that locks again gets `EDEADLK` instead of deadlocking, and `owner()` names the
//! thread). A `wait_async` future holds the guard before and after its await, so it
//! could not be `Send` either: it could not be `tokio::spawn`ed on a multi-thread
//! runtime, which this module promises for every operation, and every user future
//! that awaits while holding a guard would inherit the restriction. Making the guard
//! `Send` would let a task resume on another worker thread while the mutex names the
//! first one: that thread's next `lock` would fail with a false `EDEADLK` instead of
//! waiting, and the diagnostics would name the wrong thread. Dropping the thread id
//! would lose the self-deadlock detection for every user. So there is none; in async
//! code, wait for a change with [`Event`](crate::sync::Event) or
//! [`Semaphore`](crate::sync::Semaphore) (both async), or a queue message, and take the
//! mutex (briefly, without awaiting while holding it) in `spawn_blocking` or directly
//! when it is uncontended (`try_lock`).
//!
//! # Cancellation safety
//!
//! Every future here completes its operation within a single poll (the one that returns
//! `Ready`): a future dropped at any `.await` point has not sent, received, claimed or
//! consumed anything, and leaves no registration and no sleeper count behind. Per
//! operation:
//!
//! | operation | dropped before completion |
//! |-----------|---------------------------|
//! | `Queue::recv_async`, `ByteQueue::recv_async` | no message taken: it stays for the next receiver |
//! | `Queue::send_async`, `ByteQueue::send_async`, `Sender::send_async`, `ByteSender::send_async` | nothing sent (the value is dropped with the future) |
//! | `reserve_async`, `recv_ref_async` | no slot claimed: the claim is taken in the poll that returns the guard |
//! | `Event::wait_async`, `wait_timeout_async` | nothing to undo |
//! | `Latest::wait_for_update_async` (and `Board`'s) | nothing to undo (a read happens only in the poll that returns it) |
//! | `Semaphore::wait_async`, `wait_timeout_async` | no permit taken; a wake-up a `post` gave this future is passed on (`post` wakes one sleeper) |
//! | `AsyncMessageQueue::send`/`recv` | message whole in the queue or not sent / still queued |
//! | `AsyncFifoReader::recv` | bytes already read stay buffered in the reader for the next call |
//! | `AsyncFifoWriter::send` | frame written whole (atomic, at most 4092 B) or not at all |
//! | `AsyncPipe::recv` | a partly received large message is kept for the next call |
//! | `AsyncPipe::send` | one packet (at most [`crate::pipe::CHUNK`] bytes): all or nothing |
//! | `AsyncSignalListener::recv` | the signal stays queued |
//!
// Without feature `tokio`, the links lead to this page.
#![cfg_attr(
    not(feature = "tokio"),
    doc = "[`AsyncMessageQueue`]: self\n[`AsyncFifoReader`]: self\n[`AsyncFifoWriter`]: self\n\
           [`AsyncPipe`]: self\n[`AsyncSignalListener`]: self"
)]

mod event;
#[cfg(feature = "tokio")]
mod fd;
mod queue;
mod reactor;
mod semaphore;
mod topic;

#[cfg(feature = "tokio")]
mod fifo;
#[cfg(feature = "tokio")]
mod mq;
#[cfg(feature = "tokio")]
mod pipe;
#[cfg(feature = "tokio")]
mod signal;

#[cfg(feature = "tokio")]
pub use fifo::{AsyncFifoReader, AsyncFifoWriter};
#[cfg(feature = "tokio")]
pub use mq::AsyncMessageQueue;
#[cfg(feature = "tokio")]
pub use pipe::AsyncPipe;
#[cfg(feature = "tokio")]
pub use signal::AsyncSignalListener;

use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How many waits this process has registered with its waiter threads right now, and how
/// many such threads it runs (diagnostics; both drop back when futures complete or are
/// dropped, except that threads are kept for reuse).
pub fn registrations() -> (usize, usize) {
    let (threads, waits) = reactor::census();
    (waits, threads)
}

/// Where a future sleeps: the futex word, its sleeper count, and how to count in (`begin`
/// adds one sleeper with the fences the wakers expect and returns the word's value).
pub(crate) struct Spot<'a, B: FnOnce() -> u32> {
    pub(crate) word: &'a AtomicU32,
    pub(crate) sleepers: &'a AtomicU32,
    pub(crate) begin: B,
}

/// A future's waiting state, kept across polls: its registration with the waiter thread
/// and the sleeper count it holds. Dropping it undoes both.
#[derive(Default)]
pub(crate) struct Parked<'a> {
    reg: Option<reactor::Registration>,
    counted: Option<&'a AtomicU32>,
}

impl<'a> Parked<'a> {
    /// True if a wake-up was delivered to this future and not yet consumed by a poll
    /// (its registration fired). Wake-one primitives forward such a wake-up when the
    /// future is dropped.
    pub(crate) fn woken(&self) -> bool {
        self.reg.as_ref().is_some_and(|r| r.fired())
    }

    fn release(&mut self) {
        // The registration first: once the count drops, wakers may skip FUTEX_WAKE.
        self.reg = None;
        if let Some(s) = self.counted.take() {
            s.fetch_sub(1, Ordering::Release);
        }
    }

    /// One poll of a wait: `attempt` returns `Some` when the operation completed (in
    /// this very call). `Ready(None)` means `deadline` passed. `recheck` (asked after a
    /// failed attempt) is how soon to look again without a wake-up.
    pub(crate) fn poll<R, B: FnOnce() -> u32>(
        &mut self,
        cx: &mut Context<'_>,
        spot: impl FnOnce() -> Spot<'a, B>,
        mut attempt: impl FnMut() -> Option<R>,
        recheck: impl FnOnce() -> Option<Duration>,
        deadline: Option<Instant>,
        resource: impl FnOnce() -> String,
    ) -> Poll<Result<Option<R>>> {
        if let Some(reg) = &self.reg {
            if reg.pending(cx.waker()) {
                // Polled without our wake-up (another future of the same task, say):
                // the registration still stands.
                return match attempt() {
                    Some(r) => {
                        self.release();
                        Poll::Ready(Ok(Some(r)))
                    }
                    None => Poll::Pending,
                };
            }
            self.release();
        }
        if let Some(r) = attempt() {
            return Poll::Ready(Ok(Some(r)));
        }
        let now_due = deadline.map(|d| (Instant::now(), d));
        if now_due.is_some_and(|(now, d)| now >= d) {
            return Poll::Ready(Ok(None));
        }
        let Spot {
            word,
            sleepers,
            begin,
        } = spot();
        let expected = begin();
        self.counted = Some(sleepers);
        if let Some(r) = attempt() {
            self.release();
            return Poll::Ready(Ok(Some(r)));
        }
        let again = recheck().map(|d| now_due.map_or_else(Instant::now, |(n, _)| n) + d);
        let at = match (deadline, again) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match reactor::register(word, expected, cx.waker(), at) {
            Ok(reg) => {
                self.reg = Some(reg);
                Poll::Pending
            }
            Err(e) => {
                self.release();
                Poll::Ready(Err(Error::os_with_advice(
                    resource(),
                    "futex_waitv",
                    e,
                    "async waiting needs futex_waitv (Linux 5.16 or later) and a thread",
                )))
            }
        }
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.release();
    }
}
