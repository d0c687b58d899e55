//! [`AsyncPipe`]: one end of a [`Pipe`] driven by tokio.

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::fd;
use crate::error::Result;
use crate::pipe::Pipe;

fn resource(_p: &Pipe) -> String {
    "pipe".to_owned()
}

/// One end of a [`Pipe`] whose sends and receives are awaited.
///
/// Cancellation: `recv` is cancellation-safe (a large message received in part is kept
/// in the pipe end and completed by the next receive, exactly as for
/// [`Pipe::try_recv`]); `send` takes messages of at most [`crate::pipe::CHUNK`] bytes,
/// which go out as one packet, all or nothing, so it is cancellation-safe too (larger
/// messages: [`crate::Error::MessageTooLarge`]; send them with the blocking
/// [`Pipe::send`], e.g. from `spawn_blocking`).
///
/// ```
/// use shmkit::{aio::AsyncPipe, pipe::Pipe};
/// let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
/// rt.block_on(async {
///     let (a, b) = Pipe::pair()?;
///     let (a, mut b) = (AsyncPipe::new(a)?, AsyncPipe::new(b)?);
///     a.send(b"ping").await?;
///     assert_eq!(b.recv().await?, b"ping");
///     Ok::<(), shmkit::Error>(())
/// })?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct AsyncPipe {
    fd: AsyncFd<Pipe>,
}

impl AsyncPipe {
    /// Registers `p` with the current tokio runtime.
    pub fn new(p: Pipe) -> Result<Self> {
        Ok(AsyncPipe {
            fd: fd::register(p, resource)?,
        })
    }

    /// Sends one message of at most [`crate::pipe::CHUNK`] bytes, waiting for room.
    pub async fn send(&self, msg: &[u8]) -> Result<()> {
        fd::with(&self.fd, Interest::WRITABLE, resource, |p| p.try_send(msg)).await
    }

    /// Receives the next message, waiting until one is there.
    pub async fn recv(&mut self) -> Result<Vec<u8>> {
        fd::with_mut(&mut self.fd, Interest::READABLE, resource, |p| p.try_recv()).await
    }

    /// This end.
    pub fn get_ref(&self) -> &Pipe {
        self.fd.get_ref()
    }

    /// Deregisters and returns this end.
    pub fn into_inner(self) -> Pipe {
        self.fd.into_inner()
    }
}
