//! Bounded waits for descriptor readiness on the monotonic clock (shared by the kernel
//! transports).

use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;

/// Waits until `fd` reports one of `events` (or an error/hang-up condition), at most
/// `timeout` (`None`: forever). Returns the reported events, empty on timeout or `EINTR`
/// (callers loop and recompute what is left).
pub(crate) fn wait_fd(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    timeout: Option<Duration>,
) -> Result<PollFlags, Errno> {
    let mut fds = [PollFd::new(fd, PollFlags::from_bits_truncate(events))];
    // Callers loop and recompute; clamping keeps the timespec representable.
    let ts = timeout.map(|d| TimeSpec::from_duration(d.min(Duration::from_secs(1 << 30))));
    match ppoll(&mut fds, ts, None) {
        Ok(0) | Err(Errno::EINTR) => Ok(PollFlags::empty()),
        Ok(_) => Ok(fds[0].revents().unwrap_or(PollFlags::empty())),
        Err(e) => Err(e),
    }
}
