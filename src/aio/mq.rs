//! [`AsyncMessageQueue`]: a POSIX message queue driven by tokio.

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::fd;
use crate::error::Result;
use crate::mq::MessageQueue;

fn resource(q: &MessageQueue) -> String {
    q.name().to_string()
}

/// A [`MessageQueue`] whose sends and receives are awaited (its descriptor registered
/// with the current tokio runtime's I/O driver).
///
/// Both operations are cancellation-safe: each is one non-blocking
/// `mq_timedsend`/`mq_timedreceive` in the poll that completes, so a dropped future has
/// sent or taken nothing.
///
/// ```
/// use shmkit::{aio::AsyncMessageQueue, mq::MessageQueue};
/// let name = format!("doc-amq-{}", std::process::id());
/// let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
/// rt.block_on(async {
///     let q = AsyncMessageQueue::new(MessageQueue::create(&name, 4, 64)?)?;
///     q.send(b"hi", 0).await?;
///     let mut buf = [0u8; 64];
///     let (n, _prio) = q.recv(&mut buf).await?;
///     assert_eq!(&buf[..n], b"hi");
///     MessageQueue::unlink(&name)
/// })?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct AsyncMessageQueue {
    fd: AsyncFd<MessageQueue>,
}

impl AsyncMessageQueue {
    /// Registers `q` with the current tokio runtime (call it inside the runtime).
    pub fn new(q: MessageQueue) -> Result<Self> {
        Ok(AsyncMessageQueue {
            fd: fd::register(q, resource)?,
        })
    }

    /// Sends `msg` with priority `prio`, waiting while the queue is full.
    pub async fn send(&self, msg: &[u8], prio: u32) -> Result<()> {
        fd::with(&self.fd, Interest::WRITABLE, resource, |q| {
            q.try_send(msg, prio)
        })
        .await
    }

    /// Receives the oldest highest-priority message into `buf` (at least
    /// [`MessageQueue::msg_size`] bytes), waiting while the queue is empty.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<(usize, u32)> {
        fd::with(&self.fd, Interest::READABLE, resource, |q| q.try_recv(buf)).await
    }

    /// The queue.
    pub fn get_ref(&self) -> &MessageQueue {
        self.fd.get_ref()
    }

    /// Deregisters and returns the queue.
    pub fn into_inner(self) -> MessageQueue {
        self.fd.into_inner()
    }
}
