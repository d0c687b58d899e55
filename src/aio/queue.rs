//! `recv_async` / `send_async` for [`Queue`] and [`ByteQueue`]; `send_async` for the
//! shared senders [`Sender`] and [`ByteSender`].

use std::sync::atomic::Ordering;

use bytemuck::Pod;

use super::{Parked, Spot};
use crate::error::Error;
use crate::queue::{
    ByteQueue, ByteSender, Claim, Queue, RecvBytes, RecvError, RecvSlot, SendBytes, SendError,
    SendSlot, Sender, TryRecvError, TrySendError,
};

/// A shared reference made from an exclusive one, kept by a future.
///
/// Queue handles are `Send` but not `Sync` (their `Cell`s are per-handle state), so a
/// future holding `&Queue` would not be `Send`. This one holds a `&Q` that came from a
/// `&mut Q`: for its whole life nobody else can reach the handle, so moving it to another
/// thread (with the future) is what moving the `&mut Q` would be.
pub(super) struct Exclusive<'a, Q>(&'a Q);

// SAFETY: built only from `&'a mut Q` (see `Exclusive::new`), not Clone or Copy, so the
// future that owns it is the only way to the handle during 'a; the handle is `Send`, and
// it is used only from the thread that currently polls the future.
unsafe impl<Q: Send> Send for Exclusive<'_, Q> {}

impl<'a, Q> Exclusive<'a, Q> {
    pub(super) fn new(q: &'a mut Q) -> Self {
        Exclusive(q)
    }

    /// (A method, so that closures capture the whole wrapper, not its field.)
    pub(super) fn get(&self) -> &'a Q {
        self.0
    }
}

/// The untyped queue behind a handle.
trait Handle {
    fn core(&self) -> &crate::queue::Core;
    fn resource(&self) -> String;
}

impl<T: Pod> Handle for Queue<T> {
    fn core(&self) -> &crate::queue::Core {
        Queue::core(self)
    }
    fn resource(&self) -> String {
        self.segment().resource()
    }
}

impl Handle for ByteQueue {
    fn core(&self) -> &crate::queue::Core {
        ByteQueue::core(self)
    }
    fn resource(&self) -> String {
        self.segment().resource()
    }
}

/// Runs `attempt` (one `try_` operation of the handle: `None` for empty or full) until
/// it completes, sleeping on the queue's data (`send == false`) or space wait point in
/// between. `fail` turns an error of the waiting itself into the operation's error.
async fn wait_queue<Q: Handle, R, E>(
    q: &mut Q,
    send: bool,
    mut attempt: impl FnMut(&Q) -> Option<Result<R, E>>,
    fail: impl FnOnce(Error) -> E,
) -> Result<R, E> {
    let this = Exclusive::new(q);
    let mut parked = Parked::default();
    let r = std::future::poll_fn(move |cx| {
        let q: &Q = this.get();
        let core = q.core();
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
            // Empty or full: if the peers died without a word (which wakes nobody),
            // the sweep discounts them and the next try reports the disconnection.
            || attempt(q).or_else(|| core.gone_hook(send).then(|| attempt(q)).flatten()),
            || core.wait_hook(send).1,
            None,
            || q.resource(),
        )
    })
    .await;
    match r {
        Ok(Some(r)) => r,
        // No deadline was given: the wait ends only with the operation's result.
        Ok(None) => Err(fail(Error::invalid(
            "queue",
            "async wait",
            "ended without a result",
        ))),
        Err(e) => Err(fail(e)),
    }
}

impl<T: Pod> Queue<T> {
    /// Receives a message without blocking the thread: the async form of
    /// [`Queue::recv`], with its errors ([`RecvError::Disconnected`] once the queue is
    /// empty and every producer is gone). Completes in its first poll when a message is
    /// there.
    ///
    /// Cancellation-safe: a message is taken only in the poll that returns it, so a
    /// future dropped while pending takes nothing (the message stays for the next
    /// receiver) and leaves no registration behind. Takes `&mut self` so that the future
    /// is `Send` (a handle is `Send` but not `Sync`). See [`crate::aio`] for the
    /// mechanism and its cost.
    pub async fn recv_async(&mut self) -> Result<T, RecvError> {
        wait_queue(
            self,
            false,
            |q| match q.try_recv() {
                Ok(v) => Some(Ok(v)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(Err(RecvError::Disconnected)),
                Err(TryRecvError::Other(e)) => Some(Err(RecvError::Other(e))),
            },
            |e| RecvError::Other(Box::new(e)),
        )
        .await
    }

    /// Sends `v` without blocking the thread: the async form of [`Queue::send`]
    /// ([`SendError::Disconnected`] with the value once every consumer is gone).
    ///
    /// Cancellation-safe: the value is written only in the poll that completes, so a
    /// future dropped while pending has sent nothing.
    pub async fn send_async(&mut self, v: T) -> Result<(), SendError<T>> {
        wait_queue(
            self,
            true,
            |q| send_step(q.try_send(v)),
            |e| SendError::Other(v, Box::new(e)),
        )
        .await
    }

    /// Claims a slot to write in place (zero-copy) without blocking the thread: the
    /// async form of [`Queue::reserve`]. Publish with [`SendSlot::commit`].
    ///
    /// Cancellation-safe: the slot is claimed only in the poll that completes (and
    /// handed out at once), so a future dropped while pending holds no slot.
    pub async fn reserve_async(&mut self) -> Result<SendSlot<'_, T>, SendError<()>> {
        let c = claim_async(self, true).await.map_err(ClaimError::send)?;
        Ok(self.send_slot_hook(c))
    }

    /// Receives in place (zero-copy) without blocking the thread: the async form of
    /// [`Queue::recv_ref`]; the slot is released when the guard drops.
    ///
    /// Cancellation-safe: the message is claimed only in the poll that returns its
    /// guard, so a future dropped while pending takes nothing.
    pub async fn recv_ref_async(&mut self) -> Result<RecvSlot<'_, T>, RecvError> {
        let c = claim_async(self, false).await.map_err(ClaimError::recv)?;
        Ok(self.recv_slot_hook(c))
    }

    /// (receivers, senders) counted as asleep on this queue right now, in every process:
    /// blocked calls that sleep, and async waiters while they are registered. A process
    /// that died asleep stays counted (its only cost: one needless wake-up system call
    /// per later send or receive). Diagnostics: zero means sends and receives make no
    /// system call.
    pub fn sleepers(&self) -> (u32, u32) {
        sleepers(self.core())
    }
}

fn sleepers(core: &crate::queue::Core) -> (u32, u32) {
    let data = core.wait_hook(false).0.sleepers.load(Ordering::Relaxed);
    let space = core.wait_hook(true).0.sleepers.load(Ordering::Relaxed);
    (data, space)
}

/// Why a zero-copy claim failed (mapped to the operation's error type).
enum ClaimError {
    Recv(RecvError),
    Send(SendError<()>),
}

impl ClaimError {
    fn recv(self) -> RecvError {
        match self {
            ClaimError::Recv(e) => e,
            ClaimError::Send(SendError::Other(_, e)) => RecvError::Other(e),
            ClaimError::Send(_) => RecvError::Disconnected,
        }
    }

    fn send(self) -> SendError<()> {
        match self {
            ClaimError::Send(e) => e,
            ClaimError::Recv(RecvError::Other(e)) => SendError::Other((), e),
            ClaimError::Recv(_) => SendError::Disconnected(()),
        }
    }
}

/// Waits for and takes a zero-copy claim (to send if `send`), in the completing poll.
async fn claim_async<Q: Handle>(q: &mut Q, send: bool) -> Result<Claim, ClaimError> {
    wait_queue(
        q,
        send,
        |q| {
            let core = q.core();
            if send {
                core.try_claim_send_hook()
                    .map(|r| r.map_err(ClaimError::Send))
            } else {
                core.try_claim_recv_hook()
                    .map(|r| r.map_err(ClaimError::Recv))
            }
        },
        |e| ClaimError::Recv(RecvError::Other(Box::new(e))),
    )
    .await
}

/// One `try_send` as a step of [`wait_queue`].
fn send_step<V>(r: Result<(), TrySendError<V>>) -> Option<Result<(), SendError<V>>> {
    match r {
        Ok(()) => Some(Ok(())),
        Err(TrySendError::Full(_)) => None,
        Err(TrySendError::Disconnected(v)) => Some(Err(SendError::Disconnected(v))),
        Err(TrySendError::Other(v, e)) => Some(Err(SendError::Other(v, e))),
    }
}

impl ByteQueue {
    /// Receives a message into `buf` (cleared first) without blocking the thread: the
    /// async form of [`ByteQueue::recv`]. Cancellation-safe like [`Queue::recv_async`].
    pub async fn recv_async(&mut self, buf: &mut Vec<u8>) -> Result<(), RecvError> {
        wait_queue(
            self,
            false,
            |q| match q.try_recv(buf) {
                Ok(()) => Some(Ok(())),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(Err(RecvError::Disconnected)),
                Err(TryRecvError::Other(e)) => Some(Err(RecvError::Other(e))),
            },
            |e| RecvError::Other(Box::new(e)),
        )
        .await
    }

    /// Sends `msg` without blocking the thread: the async form of [`ByteQueue::send`].
    /// Cancellation-safe: nothing is sent unless the future completes.
    pub async fn send_async<'m>(&mut self, msg: &'m [u8]) -> Result<(), SendError<&'m [u8]>> {
        wait_queue(
            self,
            true,
            |q| send_step(q.try_send(msg)),
            |e| SendError::Other(msg, Box::new(e)),
        )
        .await
    }

    /// Claims a slot for a message of `len` bytes to write in place without blocking the
    /// thread: the async form of [`ByteQueue::reserve`]. Cancellation-safe like
    /// [`Queue::reserve_async`].
    pub async fn reserve_async(&mut self, len: usize) -> Result<SendBytes<'_>, SendError<()>> {
        if let Err(e) = self.check_len_hook(len) {
            return Err(SendError::Other((), Box::new(e)));
        }
        let c = claim_async(self, true).await.map_err(ClaimError::send)?;
        Ok(self.send_bytes_hook(c, len))
    }

    /// Receives in place (zero-copy) without blocking the thread: the async form of
    /// [`ByteQueue::recv_ref`]. Cancellation-safe like [`Queue::recv_ref_async`].
    pub async fn recv_ref_async(&mut self) -> Result<RecvBytes<'_>, RecvError> {
        let c = claim_async(self, false).await.map_err(ClaimError::recv)?;
        self.recv_bytes_hook(c)
            .map_err(|e| RecvError::Other(Box::new(e)))
    }

    /// (receivers, senders) counted as asleep on this queue: see [`Queue::sleepers`].
    pub fn sleepers(&self) -> (u32, u32) {
        sleepers(self.core())
    }
}

/// Sends `v` through a shared sender: `try_once` borrows a handle of the sender's pool
/// for one attempt only (a `try_send`; `Err(v)`: full, the value back), and between
/// attempts the future sleeps on the queue's space wait point (`spot`) holding no handle,
/// so other threads keep sending through the pool meanwhile. Cancellation-safe like
/// [`Queue::send_async`]: the value is sent only in the poll that completes.
async fn send_shared<'a, V, B: FnOnce() -> u32>(
    spot: impl Fn() -> Spot<'a, B>,
    v: V,
    mut try_once: impl FnMut(V) -> Result<Result<(), SendError<V>>, V>,
    recheck: impl Fn() -> Option<std::time::Duration>,
) -> Result<(), SendError<V>> {
    let mut v = Some(v);
    let mut parked = Parked::default();
    let r = std::future::poll_fn(|cx| {
        parked.poll(
            cx,
            &spot,
            || match try_once(v.take()?) {
                Ok(r) => Some(r),
                Err(x) => {
                    v = Some(x);
                    None
                }
            },
            &recheck,
            None,
            || "queue sender".to_string(),
        )
    })
    .await;
    match (r, v) {
        (Ok(Some(r)), _) => r,
        // The value is taken only by an attempt that completed, and then `r` is Some.
        (_, None) => Ok(()),
        (Ok(None), Some(x)) => Err(SendError::Other(
            x,
            Box::new(Error::invalid(
                "queue sender",
                "async send",
                "ended without a result",
            )),
        )),
        (Err(e), Some(x)) => Err(SendError::Other(x, Box::new(e))),
    }
}

/// One `try_send` through a pool handle, as a step of [`send_shared`]: a full queue whose
/// consumers are all gone (by a rate-limited sweep) is tried once more, to report it.
fn shared_step<H: Handle, V>(
    q: &H,
    v: V,
    try_send: impl Fn(&H, V) -> Result<(), TrySendError<V>>,
) -> Result<Result<(), SendError<V>>, V> {
    match split(try_send(q, v)) {
        Err(v) if q.core().gone_hook(true) => split(try_send(q, v)),
        r => r,
    }
}

/// A `try_send` result as "done (with this result)" or "full (the value back)".
fn split<V>(r: Result<(), TrySendError<V>>) -> Result<Result<(), SendError<V>>, V> {
    match r {
        Ok(()) => Ok(Ok(())),
        Err(TrySendError::Full(v)) => Err(v),
        Err(TrySendError::Disconnected(v)) => Ok(Err(SendError::Disconnected(v))),
        Err(TrySendError::Other(v, e)) => Ok(Err(SendError::Other(v, e))),
    }
}

impl<T: Pod + Send> Sender<T> {
    /// Sends `v` without blocking the thread: the async form of [`Sender::send`]. The
    /// future is `Send` and borrows the sender shared (`&self`), so tasks and threads can
    /// send through one sender at once; it holds a handle of the sender's pool only
    /// during each attempt, never across an await.
    ///
    /// Cancellation-safe: the value is written only in the poll that completes, so a
    /// future dropped while pending has sent nothing. (No `reserve_async`: a zero-copy
    /// slot would hold a pool handle across awaits; use [`Queue::reserve_async`].)
    pub async fn send_async(&self, v: T) -> Result<(), SendError<T>> {
        send_shared(
            || self.space_hook(),
            v,
            |v| self.with_hook(|q| shared_step(q, v, |q, v| q.try_send(v))),
            || self.with_hook(|q| q.core().wait_hook(true).1),
        )
        .await
    }
}

impl ByteSender {
    /// Sends `msg` without blocking the thread: the async form of [`ByteSender::send`];
    /// see [`Sender::send_async`].
    pub async fn send_async<'m>(&self, msg: &'m [u8]) -> Result<(), SendError<&'m [u8]>> {
        send_shared(
            || self.space_hook(),
            msg,
            |m| self.with_hook(|q| shared_step(q, m, |q, m| q.try_send(m))),
            || self.with_hook(|q| q.core().wait_hook(true).1),
        )
        .await
    }
}
