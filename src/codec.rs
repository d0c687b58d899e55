//! Typed messages (feature `serde`): send and receive any serde value over a
//! [`ByteQueue`], a [`Pipe`], a FIFO ([`FifoWriter`] / [`FifoReader`]) or a
//! [`MessageQueue`].
//!
//! [`Typed<C, T, R>`](Typed) wraps a transport `C`; it sends `T` and receives `R` (`R`
//! defaults to `T`; the two differ on a duplex [`Pipe`] carrying requests one way and
//! replies the other), like ipc-channel's `IpcSender<T>` / `IpcReceiver<T>` or a
//! tokio-serde `Framed`. Each value is one message of the transport, encoded with
//! [postcard](https://postcard.jamesmunns.com/wire-format) (compact, varint integers, a
//! stable and documented wire format; no framing of its own: the transport frames).
//! Both ends must agree on the type: postcard carries no field names or type tags.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use shmkit::codec::Typed;
//! use shmkit::queue::ByteQueue;
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! enum Job { Resize { path: String, width: u32 }, Stop }
//!
//! let name = format!("doc-codec-{}", std::process::id());
//! let mut tx: Typed<ByteQueue, Job> = Typed::new(ByteQueue::create(&name, 16, 256)?);
//! let mut rx: Typed<ByteQueue, Job> = Typed::new(ByteQueue::open(&name)?);
//! shmkit::Segment::unlink(&name)?; // both handles keep the queue mapped
//! tx.send(&Job::Resize { path: "a.png".into(), width: 640 })?;
//! tx.send(&Job::Stop)?;
//! assert_eq!(rx.recv()?, Job::Resize { path: "a.png".into(), width: 640 });
//! assert_eq!(rx.try_recv()?, Job::Stop);
//! assert!(matches!(rx.try_recv(), Err(shmkit::Error::WouldBlock { .. })));
//! # Ok::<(), shmkit::Error>(())
//! ```
//!
//! # Errors and limits
//! - A value whose encoding exceeds the transport's limit is one
//!   [`Error::MessageTooLarge`] naming both sizes (the encoded length and the limit: a
//!   byte queue's `max_message`, a FIFO's [`MAX_ATOMIC_PAYLOAD`] of 4092 bytes, a message
//!   queue's `msg_size`, a pipe's [`pipe::MAX_MESSAGE`](crate::pipe::MAX_MESSAGE) or, for
//!   `try_send`, one packet ([`CHUNK`])); nothing is sent and the transport stays usable.
//! - A value serde cannot encode (a sequence of unknown length, a `Serialize` impl that
//!   fails) is [`Error::InvalidArgument`].
//! - A message that does not decode as the receiving type, or has bytes left over after
//!   it, is [`Error::Corrupt`] naming the type and the message length; the message is
//!   consumed and the transport stays usable. Decoding is total: garbage from a buggy or
//!   hostile peer is an error, never a panic; a hostile length can make serde preallocate
//!   at most about 1 MiB per sequence before the data runs out.
//!
//! # Cost
//! No allocation per message in steady state: [`ByteQueue`] sends encode straight into
//! the claimed slot, the other transports encode into a buffer the wrapper owns and
//! reuses, and receives decode out of a reused buffer (or the slot). A value containing
//! `String`s or `Vec`s allocates those when decoded, as with any serde format;
//! [`Typed::recv_borrowed`] decodes `&str` / `&[u8]` fields without allocating.
//!
//! # Byte queues and trust
//! A byte queue's slots live in shared memory that every process with the segment open
//! can write (see the [queue module docs](crate::queue), "Trust"). So:
//! - **Sending** claims a slot of `max_message` bytes ([`ByteQueue::reserve`]), encodes
//!   into it with `postcard::to_slice` and commits the encoded length: no intermediate
//!   buffer. Encoding only writes the slot, never reads it back, so a peer that breaks
//!   the protocol can at worst garble the message, as it could after it is published.
//!   The size is known only once encoded, so a too-large value is reported after a slot
//!   was claimed (and given back): with a full queue, `try_send` says `WouldBlock` first.
//! - **Receiving** ([`Typed::recv`]) copies the message out of the slot with volatile
//!   loads ([`RecvBytes::copy_to`]) and decodes the private copy: safe against any peer.
//!   Decoding straight from the slot would not be: serde checks that a string is UTF-8
//!   and then copies it (or borrows it), so bytes changed between the two reads would
//!   produce a `String` / `&str` that is not UTF-8, which is undefined behaviour.
//!   [`Typed::recv_in_place`] decodes from the slot without the copy; it is `unsafe`, for
//!   peers that follow the protocol. The copy costs little (see ARCHITECTURE.md, "Typed
//!   messages", for the measured difference).
//!
//! # Pipes, FIFOs and message queues
//! One value is one message: one packet (or chunk sequence) on a [`Pipe`], one atomic
//! frame on a FIFO, one message of priority 0 on a [`MessageQueue`] (or the priority given
//! to [`Typed::send_priority`]). These transports copy through the kernel, so receiving
//! is safe as it is.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fifo::{FifoReader, FifoWriter, MAX_ATOMIC_PAYLOAD};
use crate::mq::MessageQueue;
use crate::pipe::{CHUNK, Pipe};
use crate::queue::{ByteQueue, RecvBytes};

/// A transport carrying values of type `T` out and `R` in, encoded with postcard. See the
/// [module docs](self).
///
/// Owns the transport (get it back with [`into_inner`](Self::into_inner)) and one
/// reusable buffer. It is `Send` / `Sync` exactly when `C` is, whatever `T` and `R` are.
pub struct Typed<C, T, R = T> {
    inner: C,
    buf: Vec<u8>,
    /// The transport's name, for errors (computed once, not per message).
    resource: String,
    _t: PhantomData<fn(T) -> R>,
}

/// A transport [`Typed`] can wrap: [`ByteQueue`], [`Pipe`], [`FifoWriter`],
/// [`FifoReader`], [`MessageQueue`]. Sealed.
pub trait Transport: private::Named {}

/// A [`Transport`] that sends: [`ByteQueue`], [`Pipe`], [`FifoWriter`],
/// [`MessageQueue`]. Sealed.
pub trait SendTransport: Transport + private::Send {}

/// A [`Transport`] that receives: [`ByteQueue`], [`Pipe`], [`FifoReader`],
/// [`MessageQueue`]. Sealed.
pub trait RecvTransport: Transport + private::Recv {}

impl<C: Transport, T, R> Typed<C, T, R> {
    /// Wraps `inner`.
    pub fn new(inner: C) -> Self {
        Typed {
            resource: inner.resource(),
            inner,
            buf: Vec::new(),
            _t: PhantomData,
        }
    }
}

impl<C, T, R> Typed<C, T, R> {
    /// The transport.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// The transport, mutably (to use its untyped API alongside).
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.inner
    }

    /// Unwraps the transport.
    pub fn into_inner(self) -> C {
        self.inner
    }
}

impl<C: Transport, T, R> From<C> for Typed<C, T, R> {
    fn from(inner: C) -> Self {
        Typed::new(inner)
    }
}

impl<C: fmt::Debug, T, R> fmt::Debug for Typed<C, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Typed")
            .field("inner", &self.inner)
            .field("sends", &std::any::type_name::<T>())
            .field("receives", &std::any::type_name::<R>())
            .finish()
    }
}

impl<C: SendTransport, T: Serialize, R> Typed<C, T, R> {
    /// Sends `value`, waiting while the transport is full.
    pub fn send(&mut self, value: &T) -> Result<()> {
        self.inner
            .send_value(&mut self.buf, value, Wait::Forever, &self.resource)
    }

    /// Sends `value` if there is room now: [`Error::WouldBlock`] otherwise.
    pub fn try_send(&mut self, value: &T) -> Result<()> {
        self.inner
            .send_value(&mut self.buf, value, Wait::Now, &self.resource)
    }

    /// Sends `value`, waiting at most `timeout` for room: [`Error::Timeout`].
    pub fn send_timeout(&mut self, value: &T, timeout: Duration) -> Result<()> {
        self.inner
            .send_value(&mut self.buf, value, Wait::For(timeout), &self.resource)
    }
}

impl<C: RecvTransport, T, R: DeserializeOwned> Typed<C, T, R> {
    /// Receives the next value, waiting as long as it takes.
    pub fn recv(&mut self) -> Result<R> {
        self.recv_wait(Wait::Forever)
    }

    /// Receives a value that is already there: [`Error::WouldBlock`] otherwise.
    pub fn try_recv(&mut self) -> Result<R> {
        self.recv_wait(Wait::Now)
    }

    /// Receives, waiting at most `timeout`: [`Error::Timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<R> {
        self.recv_wait(Wait::For(timeout))
    }

    fn recv_wait(&mut self, wait: Wait) -> Result<R> {
        let n = self.inner.recv_bytes(&mut self.buf, wait)?;
        decode(&self.buf[..n], &self.resource)
    }
}

impl<C: RecvTransport, T, R> Typed<C, T, R> {
    /// Receives the next message and decodes a `U` that may borrow from it (`&str`,
    /// `&[u8]` with `serde_bytes`, `Cow`), out of this wrapper's buffer: no allocation
    /// for those fields. `timeout` `None` waits forever.
    ///
    /// ```
    /// use shmkit::codec::Typed;
    /// use shmkit::pipe::Pipe;
    /// let (a, b) = Pipe::pair()?;
    /// let (mut a, mut b) = (Typed::<_, (u32, String)>::new(a), Typed::<_, (u32, String)>::new(b));
    /// a.send(&(7, "seven".to_owned()))?;
    /// let (n, s): (u32, &str) = b.recv_borrowed(None)?;
    /// assert_eq!((n, s), (7, "seven"));
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    pub fn recv_borrowed<'a, U: Deserialize<'a>>(
        &'a mut self,
        timeout: Option<Duration>,
    ) -> Result<U> {
        let n = self.inner.recv_bytes(&mut self.buf, Wait::from(timeout))?;
        decode(&self.buf[..n], &self.resource)
    }
}

impl<T, R> Typed<ByteQueue, T, R> {
    /// Receives the next message **in place**: the returned guard holds the slot (released
    /// when it drops) and decodes straight from it, with no copy.
    ///
    /// # Safety
    /// While the guard lives, no process may write the slot: every process with write
    /// access to the queue's segment must follow the queue protocol (see the
    /// [queue module docs](crate::queue), "Trust"). Decoding reads string bytes twice
    /// (once to check UTF-8, once to copy or borrow them); a concurrent writer could make
    /// it produce a `str` that is not UTF-8. [`recv`](Self::recv) copies the message out
    /// first and has no such requirement.
    ///
    /// ```
    /// use shmkit::codec::Typed;
    /// use shmkit::queue::ByteQueue;
    /// let mut q = Typed::<_, (u8, String)>::new(ByteQueue::options().anonymous(64)?);
    /// q.send(&(1, "one".to_owned()))?;
    /// // SAFETY: an anonymous queue that only this process maps.
    /// let msg = unsafe { q.recv_in_place(None)? };
    /// let (n, s): (u8, &str) = msg.decode_borrowed()?; // borrows the slot
    /// assert_eq!((n, s), (1, "one"));
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    pub unsafe fn recv_in_place(&mut self, timeout: Option<Duration>) -> Result<InPlace<'_, R>> {
        Ok(InPlace {
            slot: self.inner.recv_ref(timeout)?,
            resource: &self.resource,
            _r: PhantomData,
        })
    }
}

/// A message still in its byte-queue slot; see [`Typed::recv_in_place`]. The slot is
/// released when this drops.
#[must_use = "the message is dropped unread when the guard drops"]
pub struct InPlace<'a, R> {
    slot: RecvBytes<'a>,
    resource: &'a str,
    _r: PhantomData<fn() -> R>,
}

impl<R> InPlace<'_, R> {
    /// Decodes the message as `R`.
    pub fn decode(&self) -> Result<R>
    where
        R: DeserializeOwned,
    {
        decode(&self.slot, self.resource)
    }

    /// Decodes the message as a `U` that may borrow from the slot.
    pub fn decode_borrowed<'de, U: Deserialize<'de>>(&'de self) -> Result<U> {
        decode(&self.slot, self.resource)
    }

    /// The encoded length.
    pub fn len(&self) -> usize {
        self.slot.len()
    }

    /// Whether the message is empty (a unit value, or a peer's empty message).
    pub fn is_empty(&self) -> bool {
        self.slot.is_empty()
    }
}

impl<T: Serialize, R> Typed<MessageQueue, T, R> {
    /// Sends `value` with priority `prio` (see [`MessageQueue::send`]); `timeout` `None`
    /// waits forever.
    pub fn send_priority(&mut self, value: &T, prio: u32, timeout: Option<Duration>) -> Result<()> {
        let wait = Wait::from(timeout);
        mq_send(
            &self.inner,
            &mut self.buf,
            value,
            prio,
            wait,
            &self.resource,
        )
    }
}

impl<T, R: DeserializeOwned> Typed<MessageQueue, T, R> {
    /// Receives the oldest highest-priority value and its priority; `timeout` `None`
    /// waits forever.
    pub fn recv_priority(&mut self, timeout: Option<Duration>) -> Result<(R, u32)> {
        let (n, prio) = mq_recv(&self.inner, &mut self.buf, Wait::from(timeout))?;
        Ok((decode(&self.buf[..n], &self.resource)?, prio))
    }
}

/// Decodes exactly one `U` from `msg`: leftover bytes are an error too.
fn decode<'de, U: Deserialize<'de>>(msg: &'de [u8], resource: &str) -> Result<U> {
    let what = || {
        format!(
            "a message of {} bytes does not decode as {}",
            msg.len(),
            std::any::type_name::<U>()
        )
    };
    match postcard::take_from_bytes::<U>(msg) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(Error::corrupt(
            resource,
            format!("{}: {} bytes left over", what(), rest.len()),
        )),
        Err(e) => Err(Error::corrupt(resource, format!("{}: {e}", what()))),
    }
}

/// The error for a value that could not be encoded within `max` bytes.
fn encode_error<V: Serialize + ?Sized>(
    e: postcard::Error,
    value: &V,
    max: usize,
    resource: &str,
    advice: &str,
    op: &'static str,
) -> Error {
    match e {
        postcard::Error::SerializeBufferFull => Error::MessageTooLarge {
            resource: resource.to_owned(),
            op,
            // The encoder stopped at the limit: measure the whole encoding (slow path).
            len: postcard::experimental::serialized_size(value).unwrap_or(max.saturating_add(1)),
            max,
            advice: Some(advice.to_owned()),
        },
        e => Error::invalid(
            resource,
            op,
            format!("cannot encode {}: {e}", std::any::type_name::<V>()),
        ),
    }
}

/// Encodes `value` into `buf` (cleared first, capacity reused), at most `max` bytes.
fn encode_into<V: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    value: &V,
    max: usize,
    resource: &str,
    advice: &str,
    op: &'static str,
) -> Result<()> {
    buf.clear();
    postcard::serialize_with_flavor(
        value,
        Limited {
            buf: &mut *buf,
            max,
        },
    )
    .map_err(|e| encode_error(e, value, max, resource, advice, op))
}

/// A postcard output that appends to a `Vec` and refuses to grow it past `max` bytes.
struct Limited<'a> {
    buf: &'a mut Vec<u8>,
    max: usize,
}

impl postcard::ser_flavors::Flavor for Limited<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.try_extend(&[b])
    }

    #[inline]
    fn try_extend(&mut self, b: &[u8]) -> postcard::Result<()> {
        if b.len() > self.max - self.buf.len() {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.buf.extend_from_slice(b);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

const QUEUE_ADVICE: &str = "create the queue with a larger max_message";
const FIFO_ADVICE: &str = "FIFO frames are atomic only up to PIPE_BUF; send larger values through a Pipe, a MessageQueue or a ByteQueue";
const MQ_ADVICE: &str =
    "create the queue with a larger msg_size (at most /proc/sys/fs/mqueue/msgsize_max)";
const PIPE_ADVICE: &str = "send has no one-packet limit; share very large data through a segment";

/// Encodes `value` into `buf` and sends it with priority `prio`.
fn mq_send<V: Serialize + ?Sized>(
    q: &MessageQueue,
    buf: &mut Vec<u8>,
    value: &V,
    prio: u32,
    wait: Wait,
    resource: &str,
) -> Result<()> {
    encode_into(
        buf,
        value,
        q.msg_size(),
        resource,
        MQ_ADVICE,
        wait.send_op(),
    )?;
    let msg = &buf[..];
    match wait {
        Wait::Forever => q.send(msg, prio),
        Wait::Now => q.try_send(msg, prio),
        Wait::For(d) => q.send_timeout(msg, prio, d),
    }
}

fn mq_recv(q: &MessageQueue, buf: &mut Vec<u8>, wait: Wait) -> Result<(usize, u32)> {
    // The kernel wants room for msg_size bytes; keep the buffer that long (zeroed once).
    if buf.len() < q.msg_size() {
        buf.resize(q.msg_size(), 0);
    }
    match wait {
        Wait::Forever => q.recv(buf),
        Wait::Now => q.try_recv(buf),
        Wait::For(d) => q.recv_timeout(buf, d),
    }
}

/// A zero timeout means "now" for every transport: reported as `WouldBlock`, not `Timeout`.
fn would_block(e: Error, op: &'static str) -> Error {
    match e {
        Error::Timeout { resource, .. } => Error::WouldBlock { resource, op },
        e => e,
    }
}

use private::Wait;

mod private {
    use super::*;

    /// How long to wait.
    #[derive(Clone, Copy, Debug)]
    pub enum Wait {
        Forever,
        Now,
        For(Duration),
    }

    impl Wait {
        pub fn from(timeout: Option<Duration>) -> Self {
            timeout.map_or(Wait::Forever, Wait::For)
        }

        /// The name of the sending call, for errors.
        pub fn send_op(self) -> &'static str {
            match self {
                Wait::Forever => "send",
                Wait::Now => "try_send",
                Wait::For(_) => "send_timeout",
            }
        }

        /// A zero timeout is reported as `Timeout` by the transports: a `try_` call says
        /// `WouldBlock`.
        pub fn error(self, e: impl Into<Error>, op: &'static str) -> Error {
            match self {
                Wait::Now => would_block(e.into(), op),
                _ => e.into(),
            }
        }

        pub fn timeout(self) -> Option<Duration> {
            match self {
                Wait::Forever => None,
                Wait::Now => Some(Duration::ZERO),
                Wait::For(d) => Some(d),
            }
        }
    }

    pub trait Named {
        /// The transport's name in errors.
        fn resource(&self) -> String;
    }

    pub trait Send {
        /// Encodes `value` and sends it as one message (`buf` is scratch space).
        fn send_value<V: Serialize + ?Sized>(
            &mut self,
            buf: &mut Vec<u8>,
            value: &V,
            wait: Wait,
            resource: &str,
        ) -> Result<()>;
    }

    pub trait Recv {
        /// Receives one message into `buf`; it is `buf[..n]`.
        fn recv_bytes(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<usize>;
    }

    // ---- ByteQueue: encode into the claimed slot; copy out, then decode.

    impl Named for ByteQueue {
        fn resource(&self) -> String {
            self.segment().resource()
        }
    }

    impl Send for ByteQueue {
        fn send_value<V: Serialize + ?Sized>(
            &mut self,
            _buf: &mut Vec<u8>,
            value: &V,
            wait: Wait,
            resource: &str,
        ) -> Result<()> {
            let max = self.max_message();
            let mut slot = self
                .reserve(max, wait.timeout())
                .map_err(|e| wait.error(e, "try_send"))?;
            match postcard::to_slice(value, &mut slot) {
                Ok(used) => {
                    let n = used.len();
                    slot.truncate(n);
                    slot.commit();
                    Ok(())
                }
                Err(e) => {
                    drop(slot); // gives the slot back: nothing is sent
                    Err(encode_error(
                        e,
                        value,
                        max,
                        resource,
                        QUEUE_ADVICE,
                        wait.send_op(),
                    ))
                }
            }
        }
    }

    impl Recv for ByteQueue {
        fn recv_bytes(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<usize> {
            // Volatile copy out of the slot: decoding must not read shared bytes twice.
            self.recv_ref(wait.timeout())
                .map_err(|e| wait.error(e, "try_recv"))?
                .copy_to(buf);
            Ok(buf.len())
        }
    }

    // ---- Pipe.

    impl Named for Pipe {
        fn resource(&self) -> String {
            use std::os::fd::{AsFd, AsRawFd};
            format!("pipe (fd {})", self.as_fd().as_raw_fd())
        }
    }

    impl Send for Pipe {
        fn send_value<V: Serialize + ?Sized>(
            &mut self,
            buf: &mut Vec<u8>,
            value: &V,
            wait: Wait,
            resource: &str,
        ) -> Result<()> {
            // try_send is all-or-nothing only for one packet.
            let max = match wait {
                Wait::Now => CHUNK,
                _ => crate::pipe::MAX_MESSAGE,
            };
            encode_into(buf, value, max, resource, PIPE_ADVICE, wait.send_op())?;
            match wait {
                Wait::Forever => self.send(buf),
                Wait::Now => self.try_send(buf),
                Wait::For(d) => self.send_timeout(buf, d),
            }
        }
    }

    impl Recv for Pipe {
        fn recv_bytes(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<usize> {
            self.recv_into(buf, wait.timeout())
                .map_err(|e| wait.error(e, "try_recv"))?;
            Ok(buf.len())
        }
    }

    // ---- FIFO.

    impl Named for FifoWriter {
        fn resource(&self) -> String {
            self.path().display().to_string()
        }
    }

    impl Named for FifoReader {
        fn resource(&self) -> String {
            self.path().display().to_string()
        }
    }

    impl Send for FifoWriter {
        fn send_value<V: Serialize + ?Sized>(
            &mut self,
            buf: &mut Vec<u8>,
            value: &V,
            wait: Wait,
            resource: &str,
        ) -> Result<()> {
            encode_into(
                buf,
                value,
                MAX_ATOMIC_PAYLOAD,
                resource,
                FIFO_ADVICE,
                wait.send_op(),
            )?;
            match wait {
                Wait::Forever => self.send(buf),
                Wait::Now => self.try_send(buf),
                Wait::For(d) => self.send_timeout(buf, d),
            }
        }
    }

    impl Recv for FifoReader {
        fn recv_bytes(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<usize> {
            self.recv_into(buf, wait.timeout())
                .map_err(|e| wait.error(e, "try_recv"))?;
            Ok(buf.len())
        }
    }

    // ---- MessageQueue.

    impl Named for MessageQueue {
        fn resource(&self) -> String {
            self.name().as_str().to_owned()
        }
    }

    impl Send for MessageQueue {
        fn send_value<V: Serialize + ?Sized>(
            &mut self,
            buf: &mut Vec<u8>,
            value: &V,
            wait: Wait,
            resource: &str,
        ) -> Result<()> {
            mq_send(self, buf, value, 0, wait, resource)
        }
    }

    impl Recv for MessageQueue {
        fn recv_bytes(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<usize> {
            Ok(mq_recv(self, buf, wait)?.0)
        }
    }
}

impl Transport for ByteQueue {}
impl SendTransport for ByteQueue {}
impl RecvTransport for ByteQueue {}
impl Transport for Pipe {}
impl SendTransport for Pipe {}
impl RecvTransport for Pipe {}
impl Transport for FifoWriter {}
impl SendTransport for FifoWriter {}
impl Transport for FifoReader {}
impl RecvTransport for FifoReader {}
impl Transport for MessageQueue {}
impl SendTransport for MessageQueue {}
impl RecvTransport for MessageQueue {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Msg {
        name: String,
        tags: Vec<u16>,
        kind: Kind,
        note: Option<String>,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Kind {
        A,
        B(u64),
        C { x: i32 },
    }

    fn sample() -> Msg {
        Msg {
            name: "héllo".into(),
            tags: vec![1, 300, 65535],
            kind: Kind::C { x: -5 },
            note: None,
        }
    }

    /// `Typed` is `Send` / `Sync` exactly when the transport is, whatever `T` and `R` are.
    #[test]
    fn auto_traits_follow_the_transport() {
        fn send<X: std::marker::Send>() {}
        fn sync<X: Sync>() {}
        type NotSend = std::rc::Rc<u8>;
        send::<Typed<ByteQueue, NotSend>>();
        send::<Typed<Pipe, NotSend, std::cell::Cell<u8>>>();
        sync::<Typed<Pipe, NotSend, std::cell::Cell<u8>>>();
        send::<Typed<FifoWriter, NotSend>>();
        send::<Typed<FifoReader, NotSend>>();
        send::<Typed<MessageQueue, NotSend>>();
        sync::<Typed<MessageQueue, NotSend>>();
    }

    #[test]
    fn limited_flavor_stops_at_the_limit_and_reports_the_full_size() {
        let mut buf = Vec::new();
        let full = postcard::to_stdvec(&sample()).unwrap();
        encode_into(&mut buf, &sample(), full.len(), "r", "advice", "send").unwrap();
        assert_eq!(buf, full);
        let e = encode_into(&mut buf, &sample(), full.len() - 1, "r", "a", "send").unwrap_err();
        match e {
            Error::MessageTooLarge { len, max, .. } => {
                assert_eq!((len, max), (full.len(), full.len() - 1))
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn decode_rejects_garbage_and_leftovers_without_panicking() {
        let good = postcard::to_stdvec(&sample()).unwrap();
        assert_eq!(decode::<Msg>(&good, "r").unwrap(), sample());
        let mut long = good.clone();
        long.push(0);
        let e = decode::<Msg>(&long, "r").unwrap_err().to_string();
        assert!(e.contains("1 bytes left over"), "{e}");
        // Every prefix and a spread of byte patterns: errors, never panics.
        for n in 0..good.len() {
            assert!(decode::<Msg>(&good[..n], "r").is_err());
        }
        // A hostile length: huge varint string length.
        let e = decode::<Msg>(&[0xff, 0xff, 0xff, 0xff, 0x0f], "r").unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }

    proptest::proptest! {
        /// Any bytes: a value or an error, never a panic.
        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
            if let Ok(m) = decode::<Msg>(&bytes, "r") {
                // Not byte-identical: postcard accepts non-canonical varints.
                let again = postcard::to_stdvec(&m).unwrap();
                proptest::prop_assert_eq!(decode::<Msg>(&again, "r").unwrap(), m);
            }
        }
    }

    #[test]
    fn unencodable_values_are_invalid_argument() {
        struct Unknown;
        impl Serialize for Unknown {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let seq = s.serialize_seq(None)?;
                seq.end()
            }
        }
        let e = encode_into(&mut Vec::new(), &Unknown, 100, "r", "a", "send").unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }
}
