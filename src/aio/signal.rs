//! [`AsyncSignalListener`]: a `signalfd` listener driven by tokio.

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::fd;
use crate::error::Result;
use crate::signal::{SignalListener, SignalMessage};

fn resource(l: &SignalListener) -> String {
    format!("signalfd (signal {})", l.signal())
}

/// A [`SignalListener`] whose receives are awaited.
///
/// `recv` is cancellation-safe: a notification is dequeued only in the poll that returns
/// it. The masking rules of [`crate::signal`] apply unchanged (block the signal in every
/// thread, tokio's worker threads included: create the listener before the runtime).
#[derive(Debug)]
pub struct AsyncSignalListener {
    fd: AsyncFd<SignalListener>,
}

impl AsyncSignalListener {
    /// Registers `l` with the current tokio runtime.
    pub fn new(l: SignalListener) -> Result<Self> {
        Ok(AsyncSignalListener {
            fd: fd::register(l, resource)?,
        })
    }

    /// Receives the next notification, waiting until one is pending.
    pub async fn recv(&self) -> Result<SignalMessage> {
        fd::with(&self.fd, Interest::READABLE, resource, |l| l.try_recv()).await
    }

    /// The listener.
    pub fn get_ref(&self) -> &SignalListener {
        self.fd.get_ref()
    }

    /// Deregisters and returns the listener.
    pub fn into_inner(self) -> SignalListener {
        self.fd.into_inner()
    }
}
