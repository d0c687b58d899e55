//! [`AsyncFifoReader`], [`AsyncFifoWriter`]: named pipe ends driven by tokio.

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::fd;
use crate::error::Result;
use crate::fifo::{FifoReader, FifoWriter};

fn reader_resource(r: &FifoReader) -> String {
    r.path().display().to_string()
}

fn writer_resource(w: &FifoWriter) -> String {
    w.path().display().to_string()
}

/// A [`FifoReader`] whose receives are awaited.
///
/// `recv` is cancellation-safe: bytes read from the pipe are buffered in the reader until
/// a whole frame is there, so a dropped future loses nothing. Before the first writer
/// connects it waits; once every writer has gone it reports
/// [`crate::Error::Disconnected`], like [`FifoReader::recv`].
#[derive(Debug)]
pub struct AsyncFifoReader {
    fd: AsyncFd<FifoReader>,
}

impl AsyncFifoReader {
    /// Registers `r` with the current tokio runtime.
    pub fn new(r: FifoReader) -> Result<Self> {
        Ok(AsyncFifoReader {
            fd: fd::register(r, reader_resource)?,
        })
    }

    /// Receives the next message.
    pub async fn recv(&mut self) -> Result<Vec<u8>> {
        fd::with_mut(&mut self.fd, Interest::READABLE, reader_resource, |r| {
            r.try_recv()
        })
        .await
    }

    /// The reader.
    pub fn get_ref(&self) -> &FifoReader {
        self.fd.get_ref()
    }

    /// Deregisters and returns the reader.
    pub fn into_inner(self) -> FifoReader {
        self.fd.into_inner()
    }
}

/// A [`FifoWriter`] whose sends are awaited.
///
/// `send` is cancellation-safe: a frame (at most [`crate::fifo::MAX_ATOMIC_PAYLOAD`]
/// bytes) goes out in one atomic `write`, whole or not at all.
#[derive(Debug)]
pub struct AsyncFifoWriter {
    fd: AsyncFd<FifoWriter>,
}

impl AsyncFifoWriter {
    /// Registers `w` with the current tokio runtime.
    pub fn new(w: FifoWriter) -> Result<Self> {
        Ok(AsyncFifoWriter {
            fd: fd::register(w, writer_resource)?,
        })
    }

    /// Sends one message, waiting while the pipe is full.
    pub async fn send(&self, msg: &[u8]) -> Result<()> {
        fd::with(&self.fd, Interest::WRITABLE, writer_resource, |w| {
            w.try_send(msg)
        })
        .await
    }

    /// The writer.
    pub fn get_ref(&self) -> &FifoWriter {
        self.fd.get_ref()
    }

    /// Deregisters and returns the writer.
    pub fn into_inner(self) -> FifoWriter {
        self.fd.into_inner()
    }
}
