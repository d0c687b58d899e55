//! The shared loop of the descriptor-based transports: try the non-blocking form, and on
//! `WouldBlock` wait for tokio's readiness event (edge-triggered epoll) and try again.

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};

/// An I/O error of tokio's reactor as a shmkit error.
pub(super) fn reactor_error(resource: String, op: &'static str, e: std::io::Error) -> Error {
    Error::os_with_advice(
        resource,
        op,
        Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        "async transports need a tokio runtime with its I/O driver (Builder::enable_io or enable_all)",
    )
}

/// The transports whose descriptor is owned by the value and never replaced.
pub(super) trait OwnsFd: AsRawFd {}
impl OwnsFd for crate::mq::MessageQueue {}
impl OwnsFd for crate::fifo::FifoReader {}
impl OwnsFd for crate::fifo::FifoWriter {}
impl OwnsFd for crate::pipe::Pipe {}
impl OwnsFd for crate::signal::SignalListener {}

/// Registers `inner` with the current tokio runtime: an error outside a runtime (tokio
/// itself panics if the runtime's I/O driver is disabled).
pub(super) fn register<T: OwnsFd>(
    inner: T,
    resource: impl FnOnce(&T) -> String,
) -> Result<AsyncFd<T>> {
    let res = resource(&inner);
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::invalid(
            res,
            "register with tokio",
            "not called from inside a tokio runtime",
        ));
    }
    // Every `OwnsFd` type owns its descriptor (OwnedFd, or the mq descriptor it closes
    // on drop) from construction to drop and never replaces it; this module hands out
    // only `&T` and calls only `try_` methods through `&mut T`, which keep it.
    // SAFETY: so `as_raw_fd` names the same open descriptor for the AsyncFd's whole
    // life, as `AsyncFd::register` requires.
    unsafe { AsyncFd::register(inner) }
        .map_err(|e| reactor_error(res, "epoll_ctl (tokio AsyncFd)", e.into_parts().1))
}

/// Runs `op` until it does not report `WouldBlock`, waiting for `interest` in between.
/// `op` is one non-blocking call: it either completes or changes nothing, so the future
/// is cancellation-safe whenever `op` is.
pub(super) async fn with<T: AsRawFd, R>(
    fd: &AsyncFd<T>,
    interest: Interest,
    resource: impl Fn(&T) -> String,
    mut op: impl FnMut(&T) -> Result<R>,
) -> Result<R> {
    match op(fd.get_ref()) {
        Err(Error::WouldBlock { .. }) => {}
        r => return r,
    }
    loop {
        let mut guard = fd
            .ready(interest)
            .await
            .map_err(|e| reactor_error(resource(fd.get_ref()), "epoll_wait (tokio AsyncFd)", e))?;
        match op(guard.get_inner()) {
            Err(Error::WouldBlock { .. }) => guard.clear_ready(),
            r => return r,
        }
    }
}

/// [`with`] for operations that need `&mut T`.
pub(super) async fn with_mut<T: AsRawFd, R>(
    fd: &mut AsyncFd<T>,
    interest: Interest,
    resource: impl Fn(&T) -> String,
    mut op: impl FnMut(&mut T) -> Result<R>,
) -> Result<R> {
    match op(fd.get_mut()) {
        Err(Error::WouldBlock { .. }) => {}
        r => return r,
    }
    loop {
        let mut guard = fd.ready_mut(interest).await.map_err(|e| {
            // The guard's borrow ended with the error; the descriptor is still there.
            reactor_error(String::from("descriptor"), "epoll_wait (tokio AsyncFd)", e)
        })?;
        match op(guard.get_inner_mut()) {
            Err(Error::WouldBlock { .. }) => guard.clear_ready(),
            r => return r,
        }
        let _ = &resource;
    }
}
