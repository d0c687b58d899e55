//! Async forms of the topic handles: `recv_async` for subscribers, `send_async` and
//! `loan_async` for publishers (they wait only under `Policy::Block`, or for the
//! publisher role of a topic with several publishers).
//!
//! Same mechanism as the queue's (`aio/queue.rs`): one `try_` attempt per poll, then a
//! registration of the topic's futex word (data or space wait point) with the waiter
//! thread, counted in the wait point's sleepers so that publishers and subscribers wake
//! it; a periodic re-poll notices peers that died (which wakes nobody). The futures take
//! `&mut self` so that they are `Send` (handles are `Send`, not `Sync`).

use bytemuck::Pod;

use super::queue::Exclusive;
use super::{Parked, Spot};
use crate::error::{Error, Result};
use crate::topic::core::Core;
use crate::topic::{
    BytePublisher, ByteSubscriber, Loan, Publisher, RecvError, Subscriber, TryRecvError,
    TrySendError,
};

/// Something with a topic core.
pub(crate) trait HasCore {
    fn core(&self) -> &Core;
}

impl<T: Pod> HasCore for Publisher<T> {
    fn core(&self) -> &Core {
        Publisher::core(self)
    }
}
impl<T: Pod> HasCore for Subscriber<T> {
    fn core(&self) -> &Core {
        Subscriber::core(self)
    }
}
impl HasCore for BytePublisher {
    fn core(&self) -> &Core {
        BytePublisher::core(self)
    }
}
impl HasCore for ByteSubscriber {
    fn core(&self) -> &Core {
        ByteSubscriber::core(self)
    }
}

/// Runs `attempt` (`None`: would block) until it completes, sleeping on the topic's
/// space (`send`) or data wait point in between.
async fn wait_topic<H: HasCore, R, E>(
    h: &mut H,
    send: bool,
    mut attempt: impl FnMut(&H) -> Option<Result<R, E>>,
    fail: impl FnOnce(Error) -> E,
) -> Result<R, E> {
    let this = Exclusive::new(h);
    let mut parked = Parked::default();
    let r = std::future::poll_fn(move |cx| {
        let h: &H = this.get();
        let core = h.core();
        parked.poll(
            cx,
            || {
                let (wp, _) = core.wait_hook(send);
                Spot {
                    word: wp.word,
                    sleepers: wp.sleepers,
                    begin: move || wp.begin_wait(),
                }
            },
            || {
                attempt(h).or_else(|| {
                    if send {
                        None
                    } else {
                        core.sweep_hook();
                        attempt(h)
                    }
                })
            },
            || Some(core.wait_hook(send).1),
            None,
            || core.resource(),
        )
    })
    .await;
    match r {
        Ok(Some(r)) => r,
        Ok(None) => Err(fail(Error::invalid(
            "topic",
            "async wait",
            "ended without a result",
        ))),
        Err(e) => Err(fail(e)),
    }
}

fn recv_step<R>(r: std::result::Result<R, TryRecvError>) -> Option<Result<R, RecvError>> {
    match r {
        Ok(v) => Some(Ok(v)),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
        Err(TryRecvError::Disconnected) => Some(Err(RecvError::Disconnected)),
        Err(TryRecvError::Other(e)) => Some(Err(RecvError::Other(e))),
    }
}

fn send_step<R>(r: std::result::Result<R, TrySendError>) -> Option<Result<R>> {
    match r {
        Ok(v) => Some(Ok(v)),
        Err(TrySendError::Full) => None,
        Err(e) => Some(Err(e.into())),
    }
}

impl<T: Pod> Subscriber<T> {
    /// The next message without blocking the thread: the async form of
    /// [`Subscriber::recv`] (`Lagged(n)`, `Disconnected` as there). Completes in its first
    /// poll when a message is there.
    ///
    /// Cancellation-safe: a message is taken only in the poll that returns it.
    pub async fn recv_async(&mut self) -> Result<T, RecvError> {
        wait_topic(
            self,
            false,
            |s| recv_step(s.try_recv()),
            |e| RecvError::Other(Box::new(e)),
        )
        .await
    }
}

impl ByteSubscriber {
    /// The next message into `buf` without blocking the thread: the async form of
    /// [`ByteSubscriber::recv`]. Cancellation-safe.
    pub async fn recv_async(&mut self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        wait_topic(
            self,
            false,
            |s| recv_step(s.try_recv(buf)),
            |e| RecvError::Other(Box::new(e)),
        )
        .await
    }
}

impl<T: Pod> Publisher<T> {
    /// Publishes `v` without blocking the thread (it waits only under `Policy::Block`).
    /// Cancellation-safe: the value is written only in the poll that completes.
    pub async fn send_async(&mut self, v: T) -> Result<()> {
        wait_topic(self, true, |p| send_step(p.try_send(v)), |e| e).await
    }

    /// Loans the next slot (zero-copy) without blocking the thread: the async form of
    /// [`Publisher::loan`]. Cancellation-safe: the slot is claimed only in the poll that
    /// completes.
    pub async fn loan_async(&mut self) -> Result<Loan<'_, T>> {
        wait_topic(self, true, |p| send_step(p.try_loan().map(drop)), |e| e).await?;
        // The claim above was given back at once (the future cannot hold a guard that
        // borrows the handle across polls); with nothing in between, this one succeeds
        // unless another publisher took the role meanwhile.
        match self.try_loan() {
            Ok(l) => Ok(l),
            Err(e) => Err(e.into()),
        }
    }
}

impl BytePublisher {
    /// Publishes `msg` without blocking the thread (waits only under `Policy::Block`).
    /// Cancellation-safe.
    pub async fn send_async(&mut self, msg: &[u8]) -> Result<()> {
        wait_topic(self, true, |p| send_step(p.try_send(msg)), |e| e).await
    }
}
