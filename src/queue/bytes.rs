//! [`ByteQueue`]: variable-length byte messages over the same slot ring.
//!
//! Each slot holds one message: a `u32` length, 4 bytes of padding, then up to
//! `max_message` bytes. A message never wraps around the end of the ring and never spans
//! slots, so the crash-recovery protocol of [`Queue`](super::Queue) applies unchanged
//! (a half-written message is never visible, a dead claimer's slot is skipped). The cost
//! is space: every slot reserves `max_message` bytes, so size the queue for the largest
//! message you send. A message longer than `max_message` is [`Error::MessageTooLarge`]
//! on the sending side; a stored length above `max_message` is [`Error::Corrupt`] on the
//! receiving side.
//!
//! What a peer with write access can do to a byte queue is what it can do to any queue
//! (see the [module docs](super), "Trust"): the stored length is read once, volatile, and
//! checked against `max_message` before any byte is copied, and the copying calls move
//! the bytes with volatile loads and stores; the zero-copy [`SendBytes`] / [`RecvBytes`]
//! trust the peers to follow the protocol.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::segment::{ElemInfo, Kind, Segment, SegmentOptions};

use super::errors::Fail;
use super::ring::{ROLE_RECEIVER, ROLE_SENDER};
use super::{
    ByteSender, Claim, Core, JoinOutcome, Mode, QueueOptions, RecvError, RecvTimeoutError,
    SendError, SendTimeoutError, TryRecvError, TrySendError, WaitStrategy, check_segment,
    init_ring,
};

/// Bytes before the message in a slot's data (the length word and padding).
const LEN_HEADER: usize = 8;
/// Largest `max_message`.
pub const MAX_MESSAGE: usize = 1 << 30;

/// A bounded queue of byte messages of at most `max_message` bytes.
///
/// ```
/// use shmkit::queue::ByteQueue;
/// let name = format!("doc-bq-{}", std::process::id());
/// let tx = ByteQueue::create(&name, 16, 1024)?;
/// let rx = ByteQueue::open(&name)?;
/// tx.send(b"hello")?;
/// tx.send(&[])?;
/// let mut buf = Vec::new();
/// rx.recv(&mut buf)?;
/// assert_eq!(buf, b"hello");
/// rx.recv(&mut buf)?;
/// assert!(buf.is_empty());
/// assert!(tx.send(&[0; 1025]).is_err()); // too large: a clear error
/// shmkit::Segment::unlink(&name)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct ByteQueue {
    pub(super) core: Core,
    max: usize,
}

/// Options for byte queues ([`ByteQueue::options`]): the setters of [`QueueOptions`],
/// finished with [`create`](Self::create), [`open`](Self::open),
/// [`anonymous`](Self::anonymous) or [`from_segment`](Self::from_segment), which return a
/// [`ByteQueue`].
///
/// ```
/// use shmkit::queue::{ByteQueue, Mode};
/// let q: ByteQueue = ByteQueue::options().mode(Mode::Spsc).capacity(8).anonymous(100)?;
/// q.send(b"hi")?;
/// let mut got = Vec::new();
/// q.recv(&mut got).unwrap();
/// assert_eq!(got, b"hi");
/// # Ok::<(), shmkit::Error>(())
/// ```
///
/// A `Queue<u8>` cannot come out of them by mistake:
///
/// ```compile_fail
/// let q: shmkit::queue::Queue<u8> = shmkit::queue::ByteQueue::options().anonymous(8)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
///
/// Nor is there a `requeue_lost` (it needs an MPMC `Queue<T>`):
///
/// ```compile_fail
/// let q = shmkit::queue::ByteQueue::options().requeue_lost(1).anonymous(8)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ByteQueueOptions {
    inner: QueueOptions<u8>,
}

impl ByteQueueOptions {
    fn with(self, set: impl FnOnce(QueueOptions<u8>) -> QueueOptions<u8>) -> Self {
        ByteQueueOptions {
            inner: set(self.inner),
        }
    }

    /// See [`QueueOptions::mode`].
    pub fn mode(self, mode: Mode) -> Self {
        self.with(|o| o.mode(mode))
    }

    /// See [`QueueOptions::capacity`].
    pub fn capacity(self, capacity: u64) -> Self {
        self.with(|o| o.capacity(capacity))
    }

    /// See [`QueueOptions::max_handles`].
    pub fn max_handles(self, n: u64) -> Self {
        self.with(|o| o.max_handles(n))
    }

    /// See [`QueueOptions::wait`].
    pub fn wait(self, wait: WaitStrategy) -> Self {
        self.with(|o| o.wait(wait))
    }

    /// See [`QueueOptions::joinable`].
    pub fn joinable(self, yes: bool) -> Self {
        self.with(|o| o.joinable(yes))
    }

    /// See [`QueueOptions::segment`].
    pub fn segment(self, segment: SegmentOptions) -> Self {
        self.with(|o| o.segment(segment))
    }

    fn bytes_layout(
        &self,
        resource: &str,
        max_message: usize,
    ) -> Result<(crate::segment::Layout, super::Geometry)> {
        if max_message > MAX_MESSAGE {
            return Err(Error::invalid(
                resource,
                "create byte queue",
                format!("max_message {max_message} exceeds {MAX_MESSAGE}"),
            ));
        }
        let data_len = (LEN_HEADER + max_message) as u64;
        self.inner
            .create_layout(resource, Kind::ByteQueue, data_len, 8, |cap| {
                ElemInfo::bytes(cap * data_len)
            })
    }

    /// Creates a named byte queue whose messages are at most `max_message` bytes.
    pub fn create(&self, name: &str, max_message: usize) -> Result<ByteQueue> {
        let (layout, geo) = self.bytes_layout(name, max_message)?;
        let seg = self.inner.segment.create(name, &layout, init_ring(geo))?;
        ByteQueue::from_parts(seg, self)
    }

    /// Opens a named byte queue.
    pub fn open(&self, name: &str) -> Result<ByteQueue> {
        ByteQueue::from_parts(self.inner.segment.open(name)?, self)
    }

    /// A byte queue over an existing segment (e.g. one from
    /// [`SegmentOptions::open_fd`](crate::segment::SegmentOptions::open_fd)).
    pub fn from_segment(&self, seg: Segment) -> Result<ByteQueue> {
        ByteQueue::from_parts(seg, self)
    }

    /// Creates an anonymous byte queue (shared with children forked afterwards).
    pub fn anonymous(&self, max_message: usize) -> Result<ByteQueue> {
        let (layout, geo) = self.bytes_layout("<anonymous byte queue>", max_message)?;
        let seg = self.inner.segment.anonymous(&layout, init_ring(geo))?;
        ByteQueue::from_parts(seg, self)
    }
}

impl ByteQueue {
    /// Hook for `crate::aio`.
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// Options (mode, capacity, wait strategy, ...); finish with
    /// [`create`](ByteQueueOptions::create) or [`open`](ByteQueueOptions::open).
    pub fn options() -> ByteQueueOptions {
        ByteQueueOptions::default()
    }

    /// Creates a named MPMC byte queue of `capacity` messages of at most `max_message`
    /// bytes each.
    pub fn create(name: &str, capacity: u64, max_message: usize) -> Result<Self> {
        Self::options().capacity(capacity).create(name, max_message)
    }

    /// Opens a named byte queue.
    pub fn open(name: &str) -> Result<Self> {
        Self::options().open(name)
    }

    fn from_parts(seg: Segment, opts: &ByteQueueOptions) -> Result<Self> {
        seg.check_elements(Kind::ByteQueue, &ElemInfo::bytes(0), None)?;
        let (mode, joinable, geo) = check_segment(&seg, None, 8, opts.inner.mode)?;
        if geo.data_len < LEN_HEADER {
            return Err(Error::corrupt(seg.resource(), "byte queue slots too small"));
        }
        let max = geo.data_len - LEN_HEADER;
        Ok(ByteQueue {
            core: Core::new(Arc::new(seg), mode, joinable, geo, opts.inner.wait)?,
            max,
        })
    }

    /// A second handle (its own participant entry).
    pub fn try_clone(&self) -> Result<Self> {
        Ok(ByteQueue {
            core: self.core.try_clone()?,
            max: self.max,
        })
    }

    pub(super) fn from_core(core: Core, max: usize) -> Self {
        ByteQueue { core, max }
    }

    /// A new producer handle that threads can share (`Send + Sync + Clone`), attached as
    /// a producer now.
    pub fn sender(&self) -> Result<ByteSender> {
        Ok(ByteSender::new(self.try_clone()?))
    }

    /// Turns this handle into a shareable producer handle (attached as a producer now).
    pub fn into_sender(self) -> ByteSender {
        ByteSender::new(self)
    }

    /// The largest message this queue carries.
    pub fn max_message(&self) -> usize {
        self.max
    }

    /// Number of slots.
    pub fn capacity(&self) -> u64 {
        self.core.ring.geo.cap
    }

    /// The mode recorded in the segment.
    pub fn mode(&self) -> Mode {
        self.core.mode
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.core.seg
    }

    /// Approximate number of messages (see [`Queue::len`](super::Queue::len)).
    pub fn len(&self) -> usize {
        self.core.ring.len() as usize
    }

    /// `len() == 0`, approximately.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Recovered claims of dead processes (see [`Queue::peer_deaths`](super::Queue::peer_deaths)).
    pub fn peer_deaths(&self) -> u64 {
        self.core
            .ring
            .peer_deaths()
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The pid of the last dead peer whose claim was recovered, if any.
    pub fn last_dead_peer(&self) -> Option<u32> {
        match self
            .core
            .ring
            .last_dead_pid()
            .load(std::sync::atomic::Ordering::Acquire)
        {
            0 => None,
            p => Some(p as u32),
        }
    }

    /// Whether the queue was created joinable.
    pub fn is_joinable(&self) -> bool {
        self.core.joinable
    }

    /// Messages in the queue plus messages received but not yet marked done by live
    /// handles (joinable queues; approximate while others run).
    pub fn unfinished(&self) -> u64 {
        self.core.unfinished()
    }

    fn len_word(&self, c: Claim) -> *mut u32 {
        self.core.ring.data(c.0) as *mut u32
    }

    fn body(&self, c: Claim) -> *mut u8 {
        // SAFETY: the slot's data is LEN_HEADER + max bytes.
        unsafe { self.core.ring.data(c.0).add(LEN_HEADER) }
    }

    fn check_len(&self, len: usize, op: &'static str) -> Result<()> {
        if len > self.max {
            return Err(Error::MessageTooLarge {
                resource: self.core.resource(),
                op,
                len,
                max: self.max,
                advice: Some("create the queue with a larger max_message".into()),
            });
        }
        Ok(())
    }

    #[inline]
    fn send_with(
        &self,
        msg: &[u8],
        op: &'static str,
        timeout: Option<Duration>,
    ) -> Result<(), Fail> {
        self.check_len(msg.len(), op)?;
        let c = self.core.claim_send(timeout)?;
        self.store_body(c, msg);
        // SAFETY: the length word lies in the slot and is aligned; `msg.len() <= max`.
        unsafe { self.len_word(c).write_volatile(msg.len() as u32) };
        self.core.publish(c);
        Ok(())
    }

    /// Copies `msg` into claimed slot `c`'s body with volatile stores (no `&mut [u8]` over
    /// bytes a peer that breaks the protocol might be writing). Callers check the length
    /// first; anything past `max` is cut.
    #[inline]
    fn store_body(&self, c: Claim, msg: &[u8]) {
        let n = msg.len().min(self.max);
        // SAFETY: `n <= max` bytes fit the body, 8-aligned (slot data is, LEN_HEADER is 8);
        // `msg` is readable for `n` bytes and is not body `c`: callers pass bytes that
        // cannot borrow `c`'s guard (a fresh claim, or the guard borrowed `&mut`).
        unsafe { super::copy::store(msg.as_ptr(), self.body(c), n) };
    }

    /// Reads the (untrusted) length of a claimed message.
    fn stored_len(&self, c: Claim) -> Result<usize> {
        // SAFETY: the length word lies in the slot and is aligned; read once, volatile.
        let len = unsafe { self.len_word(c).read_volatile() } as usize;
        if len > self.max {
            // Give the slot back so the queue moves on, then report.
            self.core.release(c);
            return Err(Error::corrupt(
                self.core.resource(),
                format!(
                    "stored message length {len} exceeds the slot size {}",
                    self.max
                ),
            ));
        }
        Ok(len)
    }

    /// Copies `len <= max` bytes of a claimed slot's body into `buf` (cleared first).
    fn copy_out(&self, c: Claim, len: usize, buf: &mut Vec<u8>) {
        debug_assert!(len <= self.max);
        buf.clear();
        buf.reserve(len);
        // SAFETY: `len <= max` bytes of the slot's body are readable and 8-aligned; `buf`
        // has room for `len` bytes (reserved above), all of which `load` writes before
        // `set_len`. Volatile loads: no `&[u8]` into bytes a peer might be writing.
        unsafe {
            super::copy::load(self.body(c), buf.as_mut_ptr(), len);
            buf.set_len(len);
        }
    }

    #[inline]
    fn recv_with(&self, buf: &mut Vec<u8>, timeout: Option<Duration>) -> Result<(), Fail> {
        let c = self.core.claim_recv(timeout)?;
        let len = self.stored_len(c)?;
        self.copy_out(c, len, buf);
        self.core.release(c);
        Ok(())
    }

    /// Sends `msg`, waiting while the queue is full ([`SendError::Disconnected`] once
    /// every consumer that attached is gone; a message longer than
    /// [`max_message`](Self::max_message) is `Other`).
    pub fn send<'m>(&self, msg: &'m [u8]) -> Result<(), SendError<&'m [u8]>> {
        self.send_with(msg, "send", None).map_err(|f| f.send(msg))
    }

    /// Sends if there is room now ([`TrySendError::Full`] otherwise).
    pub fn try_send<'m>(&self, msg: &'m [u8]) -> Result<(), TrySendError<&'m [u8]>> {
        self.send_with(msg, "try_send", Some(Duration::ZERO))
            .map_err(|f| f.try_send(msg))
    }

    /// Sends, waiting at most `timeout`.
    pub fn send_timeout<'m>(
        &self,
        msg: &'m [u8],
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<&'m [u8]>> {
        self.send_with(msg, "send_timeout", Some(timeout))
            .map_err(|f| f.send_timeout(msg))
    }

    /// Receives the next message into `buf` (cleared first; reuse it to avoid
    /// allocating); [`RecvError::Disconnected`] once the queue is empty and every
    /// producer that attached is gone.
    pub fn recv(&self, buf: &mut Vec<u8>) -> Result<(), RecvError> {
        self.recv_with(buf, None).map_err(Fail::recv)
    }

    /// Receives if a message is there ([`TryRecvError::Empty`] otherwise).
    pub fn try_recv(&self, buf: &mut Vec<u8>) -> Result<(), TryRecvError> {
        self.recv_with(buf, Some(Duration::ZERO))
            .map_err(Fail::try_recv)
    }

    /// Receives, waiting at most `timeout`.
    pub fn recv_timeout(
        &self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<(), RecvTimeoutError> {
        self.recv_with(buf, Some(timeout))
            .map_err(Fail::recv_timeout)
    }

    /// A blocking iterator over received messages (each a new `Vec`); ends at a
    /// disconnection or another error.
    pub fn iter(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        std::iter::from_fn(|| {
            let mut buf = Vec::new();
            self.recv(&mut buf).ok().map(|()| buf)
        })
    }

    /// An iterator over the messages there now; ends when empty or disconnected.
    pub fn try_iter(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        std::iter::from_fn(|| {
            let mut buf = Vec::new();
            self.try_recv(&mut buf).ok().map(|()| buf)
        })
    }

    /// Detaches this handle as a producer (see [`Queue::close`](super::Queue::close)).
    pub fn close(&self) {
        self.core.detach(ROLE_SENDER);
    }

    /// Attaches this handle as a producer now (see
    /// [`Queue::attach_producer`](super::Queue::attach_producer)).
    pub fn attach_producer(&self) {
        self.core.ensure_attached(ROLE_SENDER);
    }

    /// Attaches this handle as a consumer now (see
    /// [`Queue::attach_consumer`](super::Queue::attach_consumer)).
    pub fn attach_consumer(&self) {
        self.core.ensure_attached(ROLE_RECEIVER);
    }

    /// Whether every producer that ever attached is gone (see
    /// [`Queue::is_disconnected`](super::Queue::is_disconnected)).
    pub fn is_disconnected(&self) -> bool {
        self.core.ring.peers_gone(ROLE_SENDER)
    }

    /// A reader over this queue's byte stream: each message is read in order, split
    /// across `read` calls if the caller's buffer is smaller; end of file at a
    /// disconnection.
    pub fn reader(&self) -> ByteReader<'_> {
        ByteReader {
            q: self,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Claims a slot to write a message of `len` bytes in place (zero-copy); publish it
    /// with [`SendBytes::commit`] (dropping it sends nothing).
    ///
    /// The guard derefs to a `&mut [u8]` in shared memory: this trusts every process
    /// with write access to follow the protocol (see the [module docs](super), "Trust");
    /// use [`send`](Self::send) otherwise.
    ///
    /// ```
    /// use shmkit::queue::ByteQueue;
    /// let mut q = ByteQueue::options().anonymous(64)?;
    /// let mut m = q.reserve(3, None)?;
    /// m.copy_from_slice(b"abc");
    /// m.commit();
    /// assert_eq!(&*q.recv_ref(None)?, b"abc");
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    #[inline]
    pub fn reserve(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<SendBytes<'_>, SendTimeoutError<()>> {
        if let Err(e) = self.check_len(len, "reserve") {
            return Err(SendTimeoutError::Other((), Box::new(e)));
        }
        let c = self
            .core
            .claim_send_fast(timeout)
            .map_err(|f| f.send_timeout(()))?;
        Ok(SendBytes {
            q: self,
            claim: c,
            len,
            done: false,
        })
    }

    /// Receives in place (zero-copy); the slot is released when the [`RecvBytes`] drops.
    ///
    /// The guard derefs to a `&[u8]` in shared memory (its length checked against
    /// `max_message`): this trusts every process with write access to follow the
    /// protocol, or the bytes may change while they are read (see the
    /// [module docs](super), "Trust"). [`RecvBytes::copy_to`] copies them out with
    /// volatile loads instead; [`recv`](Self::recv) does so without a guard.
    #[inline]
    pub fn recv_ref(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<RecvBytes<'_>, RecvTimeoutError> {
        let c = self
            .core
            .claim_recv_fast(timeout)
            .map_err(Fail::recv_timeout)?;
        let len = self
            .stored_len(c)
            .map_err(|e| RecvTimeoutError::Other(Box::new(e)))?;
        Ok(RecvBytes {
            q: self,
            claim: c,
            len,
            _p: PhantomData,
        })
    }

    /// Marks a received message processed (joinable queues).
    pub fn task_done(&self) -> Result<()> {
        self.core.task_done()
    }

    /// Waits until every message sent is received and done (joinable queues); see
    /// [`Queue::join`](super::Queue::join).
    pub fn join(&self, timeout: Option<Duration>) -> Result<JoinOutcome> {
        self.core.join(timeout)
    }
}

/// Hooks for `crate::aio` (async zero-copy), see `Core::try_claim_send_hook`.
#[cfg(all(feature = "async", not(shmkit_loom)))]
impl ByteQueue {
    /// Whether `len` fits a slot.
    pub(crate) fn check_len_hook(&self, len: usize) -> Result<()> {
        self.check_len(len, "reserve_async")
    }

    /// The guard of a claim to send `len` bytes.
    pub(crate) fn send_bytes_hook(&self, claim: Claim, len: usize) -> SendBytes<'_> {
        SendBytes {
            q: self,
            claim,
            len,
            done: false,
        }
    }

    /// The guard of a claim to receive (its length checked).
    pub(crate) fn recv_bytes_hook(&self, claim: Claim) -> Result<RecvBytes<'_>> {
        let len = self.stored_len(claim)?;
        Ok(RecvBytes {
            q: self,
            claim,
            len,
            _p: PhantomData,
        })
    }
}

/// A message being written in place; see [`ByteQueue::reserve`]. Deref trusts the peers
/// to follow the protocol (see the [module docs](super), "Trust").
#[must_use = "dropping the reservation unused cancels it: write the message and call `commit`"]
pub struct SendBytes<'a> {
    q: &'a ByteQueue,
    claim: Claim,
    len: usize,
    done: bool,
}

impl SendBytes<'_> {
    /// Shortens the message to `len` bytes (at most the reserved length).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Copies `src` to the start of the reservation and shortens the message to
    /// `src.len()`: a copying send's store path (volatile stores; a length in
    /// [`cache_bypass`](super::cache_bypass) goes around the cache), for a message that
    /// is ready in private memory but is sent through a reservation (a header written in
    /// place first, say). An `src` longer than the reservation (its current length,
    /// after any [`truncate`](Self::truncate)) is [`Error::InvalidArgument`] and writes
    /// nothing.
    ///
    /// ```
    /// use shmkit::queue::ByteQueue;
    /// let mut q = ByteQueue::options().anonymous(1 << 16)?;
    /// let mut m = q.reserve(1 << 16, None)?;
    /// m.write_from_slice(&[7u8; 40_000])?;
    /// m.commit();
    /// assert_eq!(q.recv_ref(None)?.len(), 40_000);
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    #[inline]
    pub fn write_from_slice(&mut self, src: &[u8]) -> Result<()> {
        if src.len() > self.len {
            return Err(Error::invalid(
                self.q.core.resource(),
                "write_from_slice",
                format!(
                    "{} bytes do not fit the reservation of {}: reserve at least as many",
                    src.len(),
                    self.len
                ),
            ));
        }
        // `src` cannot borrow this guard's body: `&mut self` borrows the guard.
        self.q.store_body(self.claim, src);
        self.len = src.len();
        Ok(())
    }

    /// Publishes the message.
    #[inline]
    pub fn commit(mut self) {
        self.done = true;
        // SAFETY: the length word lies in the slot and is aligned; len <= max (checked in
        // reserve).
        unsafe { self.q.len_word(self.claim).write_volatile(self.len as u32) };
        self.q.core.publish_fast(self.claim);
    }
}

impl std::ops::Deref for SendBytes<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: exclusive claim; len <= max bytes of the body.
        unsafe { std::slice::from_raw_parts(self.q.body(self.claim), self.len) }
    }
}

impl std::ops::DerefMut for SendBytes<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for deref; &mut self makes it the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.q.body(self.claim), self.len) }
    }
}

impl Drop for SendBytes<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            self.q.core.cancel(self.claim);
        }
    }
}

/// A message read in place; see [`ByteQueue::recv_ref`]. Deref trusts the peers to
/// follow the protocol (see the [module docs](super), "Trust"); [`copy_to`](Self::copy_to)
/// does not.
#[must_use = "dropping it at once releases the message unread"]
pub struct RecvBytes<'a> {
    q: &'a ByteQueue,
    claim: Claim,
    len: usize,
    _p: PhantomData<&'a [u8]>,
}

impl RecvBytes<'_> {
    /// Copies the message into `buf` (cleared first) with volatile loads: no reference
    /// into shared memory.
    pub fn copy_to(&self, buf: &mut Vec<u8>) {
        self.q.copy_out(self.claim, self.len, buf);
    }
}

impl std::ops::Deref for RecvBytes<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: claimed slot; len was validated against max.
        unsafe { std::slice::from_raw_parts(self.q.body(self.claim), self.len) }
    }
}

impl Drop for RecvBytes<'_> {
    #[inline]
    fn drop(&mut self) {
        self.q.core.release_fast(self.claim);
    }
}

/// `std::io::Write` for a byte queue: each `write` sends one message of at most
/// [`max_message`](ByteQueue::max_message) bytes (the rest is left to the next `write`,
/// as `Write` allows), waiting while the queue is full; a disconnection is
/// [`std::io::ErrorKind::BrokenPipe`]. Message boundaries are the `write` calls: wrap it
/// in a `BufWriter` to batch small writes into fewer, larger messages.
impl std::io::Write for &ByteQueue {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.max);
        match self.send(&buf[..n]) {
            Ok(()) => Ok(n),
            Err(e) => Err(Error::from(e).into()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `std::io::Write` for an owned byte queue (see the impl for `&ByteQueue`).
impl std::io::Write for ByteQueue {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A byte-stream view of a queue's messages; see [`ByteQueue::reader`].
#[derive(Debug)]
pub struct ByteReader<'a> {
    q: &'a ByteQueue,
    buf: Vec<u8>,
    pos: usize,
}

impl std::io::Read for ByteReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.buf.len() {
            self.pos = 0;
            match self.q.recv(&mut self.buf) {
                Ok(()) => {}
                Err(RecvError::Disconnected) => {
                    self.buf.clear();
                    return Ok(0);
                }
                Err(e) => {
                    self.buf.clear();
                    return Err(Error::from(e).into());
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
