//! `posix-mq`: two POSIX message queues (one per direction), opened with `O_EXCL`, mode
//! 0600, `mq_maxmsg` 10 and `mq_msgsize` = the message size, and unlinked at once (the
//! forked peer inherits the descriptors; `O_CLOEXEC`, so nothing exec'd does), closed when
//! the channel drops ([`OwnedMq`]). Sends and receives are `mq_timedsend` /
//! `mq_timedreceive` with a deadline. Messages above `msgsize_max` (8192 here) cannot be
//! sent: the workloads report the limit instead of a number.

use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, MqAttr, MqdT, mq_close, mq_open, mq_timedreceive, mq_unlink};
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;
use nix::unistd::Pid;
use shmkit::{Error, Result};

use crate::channel::{Channel, ChannelParams, Side};
use crate::slot::WAIT_LIMIT;

/// The message size limit in force (`/proc/sys/fs/mqueue/msgsize_max`), 8192 when the file
/// cannot be read.
pub fn msgsize_max() -> usize {
    read_knob("msgsize_max").unwrap_or(8192)
}

/// The queue depth limit in force (`/proc/sys/fs/mqueue/msg_max`), 10 when unreadable.
pub fn msg_max() -> usize {
    read_knob("msg_max").unwrap_or(10)
}

fn read_knob(name: &str) -> Option<usize> {
    std::fs::read_to_string(format!("/proc/sys/fs/mqueue/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A queue descriptor that is closed when dropped. nix's `MqdT` has no `Drop`: a dropped
/// `MqdT` leaks its descriptor, and an unlinked queue stays charged to the user's
/// `RLIMIT_MSGQUEUE` (819200 bytes here) while any descriptor is open, so a harness run
/// that made enough queues failed `mq_open` with `EMFILE` (the 4 KiB `shmkit-mq` stream
/// row of full runs).
pub struct OwnedMq(ManuallyDrop<MqdT>);

impl OwnedMq {
    /// The descriptor, for `mq_*` calls.
    pub fn mqd(&self) -> &MqdT {
        &self.0
    }
}

impl Drop for OwnedMq {
    fn drop(&mut self) {
        // SAFETY: `self.0` is taken exactly once, here, and never used afterwards (the
        // value is being dropped).
        let q = unsafe { ManuallyDrop::take(&mut self.0) };
        // Nothing to do about a failed close of a descriptor we own.
        let _ = mq_close(q);
    }
}

/// Two message queues, one per direction.
pub struct MqChannel {
    queues: [OwnedMq; 2],
}

impl MqChannel {
    /// Opens and unlinks two queues for messages of `p.size` bytes.
    pub fn boxed(p: ChannelParams) -> Result<Box<dyn Channel>> {
        Ok(Box::new(MqChannel {
            queues: [open_unlinked(p)?, open_unlinked(p)?],
        }))
    }
}

/// One queue for messages of `p.size` bytes, depth `min(p.depth, msg_max)`, opened with
/// `O_EXCL` and unlinked at once (forked children inherit the descriptor).
pub(crate) fn open_unlinked(p: ChannelParams) -> Result<OwnedMq> {
    static N: AtomicU32 = AtomicU32::new(0);
    let max = msgsize_max();
    if p.size > max {
        return Err(Error::MessageTooLarge {
            resource: "posix-mq".into(),
            op: "mq_open",
            len: p.size,
            max,
            advice: Some("raise /proc/sys/fs/mqueue/msgsize_max (needs CAP_SYS_RESOURCE)".into()),
        });
    }
    let depth = p.depth.clamp(1, msg_max().max(1));
    let attr = MqAttr::new(0, depth as _, p.size as _, 0);
    let open_one = || -> Result<OwnedMq> {
        let name = format!(
            "/shmkit-bench-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let q = mq_open(
                name.as_str(),
                MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR | MQ_OFlag::O_CLOEXEC,
                Mode::S_IRUSR | Mode::S_IWUSR,
                Some(&attr),
            )
            .map_err(|e| {
                Error::os_with_advice(
                    name.clone(),
                    "mq_open(O_CREAT|O_EXCL)",
                    e,
                    "queues are limited by /proc/sys/fs/mqueue/{msg_max,msgsize_max,queues_max} and RLIMIT_MSGQUEUE (819200 bytes per user here)",
                )
            })?;
        let q = OwnedMq(ManuallyDrop::new(q));
        mq_unlink(name.as_str()).map_err(|e| Error::os(name, "mq_unlink", e))?;
        Ok(q)
    };
    open_one()
}

impl Channel for MqChannel {
    fn attach(&mut self, _: Side, _: Pid) -> Result<()> {
        Ok(())
    }

    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        send(self.queues[side.index()].mqd(), msg)
    }

    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        recv(self.queues[side.peer().index()].mqd(), buf)
    }
}

/// `mq_timedsend` of all of `msg`, bounded by [`WAIT_LIMIT`].
pub(crate) fn send(q: &MqdT, msg: &[u8]) -> Result<()> {
    loop {
        let ts = crate::bells::abs_realtime(WAIT_LIMIT);
        // SAFETY: `q` is an open queue descriptor, `msg` a valid buffer of `msg.len()`
        // bytes, `ts` a valid absolute timeout.
        let r =
            unsafe { libc::mq_timedsend(q.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0, &ts) };
        if r == 0 {
            return Ok(());
        }
        match Errno::last() {
            Errno::EINTR => {}
            Errno::ETIMEDOUT => {
                return Err(Error::Timeout {
                    resource: "posix-mq".into(),
                    op: "mq_timedsend",
                    timeout: WAIT_LIMIT,
                });
            }
            e => return Err(Error::os("posix-mq", "mq_timedsend", e)),
        }
    }
}

/// `mq_timedreceive` of exactly `buf.len()` bytes, bounded by [`WAIT_LIMIT`].
pub(crate) fn recv(q: &MqdT, buf: &mut [u8]) -> Result<()> {
    loop {
        let ts = TimeSpec::from(crate::bells::abs_realtime(WAIT_LIMIT));
        let mut prio = 0;
        match mq_timedreceive(q, buf, &mut prio, &ts) {
            Ok(n) if n == buf.len() => return Ok(()),
            Ok(n) => {
                return Err(Error::corrupt(
                    "posix-mq",
                    format!("received {n} bytes, expected {}", buf.len()),
                ));
            }
            Err(Errno::EINTR) => {}
            Err(Errno::ETIMEDOUT) => {
                return Err(Error::Timeout {
                    resource: "posix-mq".into(),
                    op: "mq_timedreceive",
                    timeout: WAIT_LIMIT,
                });
            }
            Err(e) => return Err(Error::os("posix-mq", "mq_timedreceive", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(fd: i32) -> Option<std::path::PathBuf> {
        std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
    }

    #[test]
    fn a_dropped_queue_closes_its_descriptor() {
        let q = open_unlinked(ChannelParams { size: 64, depth: 1 }).expect("mq_open");
        let fd = q.mqd().as_raw_fd();
        let target = link(fd).expect("the queue's descriptor is open");
        assert!(
            target.to_string_lossy().contains("shmkit-bench-"),
            "{target:?}"
        );
        drop(q);
        // Another test thread may get the same number, but never for this queue (names
        // are unique in the process).
        assert_ne!(link(fd), Some(target));
    }
}
