//! POSIX message queues ([`MessageQueue`]): `mq_open(3)` queues with a capacity, a
//! message size and a mode; send and receive with priority, blocking, with a timeout or
//! not at all; attributes; unlink; a pollable descriptor.
//!
//! The kernel delivers the oldest message of the highest priority first (priorities
//! `0..`[`MAX_PRIORITY`], FIFO within one priority). Every message is copied twice (into
//! and out of the kernel); a message is whole or absent, never torn, even when a peer is
//! killed mid-call.
//!
//! # Timeouts and non-blocking calls
//! - `send`/`recv` block in one `mq_send`/`mq_receive` call (no extra syscalls).
//! - `try_send`/`try_recv` call `mq_timedsend`/`mq_timedreceive` with an absolute
//!   `CLOCK_REALTIME` deadline in the past (the epoch): the kernel moves the message if it
//!   can and fails with `ETIMEDOUT` (reported as [`Error::WouldBlock`]) instead of
//!   sleeping. This gives a per-call non-blocking form without `mq_setattr(O_NONBLOCK)`,
//!   which would change the open file description under every thread and process that
//!   shares it.
//! - `send_timeout`/`recv_timeout` try once (one syscall when the queue is ready), then
//!   wait for readiness with `ppoll` (a relative, `CLOCK_MONOTONIC` timeout) and retry
//!   until the deadline. `mq_timed*` alone would take an absolute `CLOCK_REALTIME`
//!   deadline, which a clock step (NTP, `date -s`) lengthens or shortens; waiting on the
//!   monotonic clock keeps the timeout honest.
//!
//! # Limits (Linux)
//! `/proc/sys/fs/mqueue/msg_max` caps the capacity (10 by default), `msgsize_max` the
//! message size (8192), `queues_max` the number of queues system-wide (256), and
//! RLIMIT_MSGQUEUE (`ulimit -q`, 819200 bytes by default) the bytes a user's queues may
//! reserve (roughly `capacity * (msg_size + pointer overhead)` per queue). Hitting one
//! gives an [`Error::Os`] whose advice names the knob. Queues appear under `/dev/mqueue`
//! once the `mqueue` file system is mounted there (`mount -t mqueue none /dev/mqueue`);
//! `mq_open` works without it.
//!
//! ```
//! use shmkit::mq::MessageQueue;
//! let name = format!("doc-mq-{}", std::process::id());
//! let q = MessageQueue::create(&name, 4, 128)?;
//! q.send(b"low", 1)?;
//! q.send(b"high", 7)?;
//! let mut buf = [0u8; 128];
//! let (n, prio) = q.recv(&mut buf)?;
//! assert_eq!((&buf[..n], prio), (&b"high"[..], 7));
//! MessageQueue::unlink(&name)?;
//! # Ok::<(), shmkit::Error>(())
//! ```
//!
//! # References
//! `mq_overview(7)`, `mq_open(3)`, `mq_send(3)`, `mq_receive(3)`, `mq_getattr(3)`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, MqAttr, MqdT};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use crate::name::Name;

/// Priorities run from 0 (lowest) to `MAX_PRIORITY - 1` (Linux: 32768).
pub const MAX_PRIORITY: u32 = 32768;

/// Where the kernel publishes the mqueue limits.
const PROC_MQUEUE: &str = "/proc/sys/fs/mqueue";

/// How a queue is created: capacity, message size, mode.
///
/// ```
/// use shmkit::mq::{MessageQueue, MqOptions};
/// let name = format!("doc-mqopt-{}", std::process::id());
/// let q = MqOptions::new(4, 64).mode(0o644).create(&name)?;
/// assert_eq!(q.attributes()?.capacity, 4);
/// MessageQueue::unlink(&name)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqOptions {
    capacity: usize,
    msg_size: usize,
    mode: u32,
}

impl MqOptions {
    /// A queue of `capacity` messages of at most `msg_size` bytes, mode 0600.
    pub fn new(capacity: usize, msg_size: usize) -> Self {
        MqOptions {
            capacity,
            msg_size,
            mode: 0o600,
        }
    }

    /// Permission bits for a queue this creates (default 0600; the umask applies).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Creates a new queue (`O_CREAT|O_EXCL`); fails with `EEXIST` if it exists.
    #[doc(alias = "mq_open")]
    pub fn create(&self, name: &str) -> Result<MessageQueue> {
        MessageQueue::open_impl(name, Some(self), true)
    }

    /// Opens the queue, creating it with these options if it does not exist. An existing
    /// queue keeps its own capacity and message size (see [`MessageQueue::attributes`]).
    #[doc(alias = "mq_open")]
    pub fn open_or_create(&self, name: &str) -> Result<MessageQueue> {
        MessageQueue::open_impl(name, Some(self), false)
    }
}

/// Which directions a descriptor opened with [`MessageQueue::open_access`] allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqAccess {
    /// Send only (`O_WRONLY`).
    Send,
    /// Receive only (`O_RDONLY`).
    Receive,
    /// Both (`O_RDWR`), what [`MessageQueue::open`] uses.
    SendReceive,
}

/// A queue's attributes (`mq_getattr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqAttributes {
    /// Most messages the queue holds (`mq_maxmsg`).
    pub capacity: usize,
    /// Largest message in bytes (`mq_msgsize`).
    pub msg_size: usize,
    /// Messages queued now (`mq_curmsgs`).
    pub current: usize,
    /// Whether this descriptor is in `O_NONBLOCK` mode (shmkit never sets it).
    pub nonblocking: bool,
}

/// A POSIX message queue descriptor. Send and receive take `&self`: one queue can be used
/// from several threads. Closed on drop; the queue itself lives until
/// [`MessageQueue::unlink`] and the last close.
///
/// ```
/// use shmkit::mq::MessageQueue;
/// let name = format!("doc-mqq-{}", std::process::id());
/// let q = MessageQueue::create(&name, 2, 16)?;
/// q.try_send(b"a", 0)?;
/// q.try_send(b"b", 0)?;
/// assert!(matches!(q.try_send(b"c", 0), Err(shmkit::Error::WouldBlock { .. })));
/// let mut buf = [0u8; 16];
/// assert_eq!(q.try_recv(&mut buf)?, (1, 0));
/// MessageQueue::unlink(&name)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
#[doc(alias = "mqd_t")]
pub struct MessageQueue {
    name: Name,
    mqd: MqdT,
    msg_size: usize,
    capacity: usize,
}

impl MessageQueue {
    /// Creates a new queue of `capacity` messages of at most `msg_size` bytes, mode 0600
    /// (`mq_open(O_CREAT|O_EXCL|O_RDWR)`).
    #[doc(alias = "mq_open")]
    pub fn create(name: &str, capacity: usize, msg_size: usize) -> Result<Self> {
        MqOptions::new(capacity, msg_size).create(name)
    }

    /// Opens an existing queue for sending and receiving (`mq_open(O_RDWR)`).
    #[doc(alias = "mq_open")]
    pub fn open(name: &str) -> Result<Self> {
        Self::open_impl(name, None, false)
    }

    /// Opens an existing queue with the given access, for queues whose mode grants only
    /// one direction (e.g. a 0622 queue another user reads). Sending on a receive-only
    /// descriptor (or the reverse) fails with `EBADF`.
    ///
    /// ```
    /// use shmkit::mq::{MessageQueue, MqAccess};
    /// let name = format!("doc-mqacc-{}", std::process::id());
    /// let owner = MessageQueue::create(&name, 2, 16)?;
    /// let tx = MessageQueue::open_access(&name, MqAccess::Send)?;
    /// tx.send(b"hi", 0)?;
    /// let mut buf = [0u8; 16];
    /// assert!(tx.try_recv(&mut buf).is_err());
    /// assert_eq!(owner.try_recv(&mut buf)?, (2, 0));
    /// MessageQueue::unlink(&name)?;
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    #[doc(alias = "mq_open")]
    pub fn open_access(name: &str, access: MqAccess) -> Result<Self> {
        Self::open_flags(name, None, false, access)
    }

    /// Removes the queue's name (`mq_unlink`); open descriptors keep working.
    #[doc(alias = "mq_unlink")]
    pub fn unlink(name: &str) -> Result<()> {
        let n = Name::mq(name)?;
        nix::mqueue::mq_unlink(n.to_slashed().as_c_str()).map_err(|e| match e {
            Errno::ENOENT => Error::os_with_advice(
                n.as_str(),
                "mq_unlink",
                e,
                "no such queue (`shmkit mq ls` lists them)",
            ),
            _ => Error::os(n.as_str(), "mq_unlink", e),
        })
    }

    fn open_impl(name: &str, opts: Option<&MqOptions>, excl: bool) -> Result<Self> {
        Self::open_flags(name, opts, excl, MqAccess::SendReceive)
    }

    fn open_flags(
        name: &str,
        opts: Option<&MqOptions>,
        excl: bool,
        access: MqAccess,
    ) -> Result<Self> {
        let n = Name::mq(name)?;
        let mut flags = MQ_OFlag::O_CLOEXEC
            | match access {
                MqAccess::Send => MQ_OFlag::O_WRONLY,
                MqAccess::Receive => MQ_OFlag::O_RDONLY,
                MqAccess::SendReceive => MQ_OFlag::O_RDWR,
            };
        let mut attr = None;
        let mut mode = Mode::empty();
        if let Some(o) = opts {
            if o.capacity == 0 || o.msg_size == 0 {
                return Err(Error::invalid(
                    n.as_str(),
                    "mq_open(O_CREAT)",
                    format!(
                        "capacity {} and message size {} must both be at least 1",
                        o.capacity, o.msg_size
                    ),
                ));
            }
            let cap = libc::c_long::try_from(o.capacity).map_err(|_| too_big(&n, o))?;
            let size = libc::c_long::try_from(o.msg_size).map_err(|_| too_big(&n, o))?;
            flags |= MQ_OFlag::O_CREAT;
            if excl {
                flags |= MQ_OFlag::O_EXCL;
            }
            mode = Mode::from_bits_truncate(o.mode as libc::mode_t);
            attr = Some(MqAttr::new(0, cap, size, 0));
        }
        let op = match (opts.is_some(), excl) {
            (true, true) => "mq_open(O_CREAT|O_EXCL)",
            (true, false) => "mq_open(O_CREAT)",
            _ => "mq_open",
        };
        let mqd = nix::mqueue::mq_open(n.to_slashed().as_c_str(), flags, mode, attr.as_ref())
            .map_err(|e| open_error(&n, op, e, opts))?;
        let a =
            nix::mqueue::mq_getattr(&mqd).map_err(|e| Error::os(n.as_str(), "mq_getattr", e))?;
        Ok(MessageQueue {
            name: n,
            msg_size: usize::try_from(a.msgsize()).unwrap_or(0),
            capacity: usize::try_from(a.maxmsg()).unwrap_or(0),
            mqd,
        })
    }

    /// The queue's name (without the leading slash).
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Largest message this queue takes, in bytes (fixed at creation).
    pub fn msg_size(&self) -> usize {
        self.msg_size
    }

    /// Most messages the queue holds (fixed at creation).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Current attributes, including how many messages are queued (`mq_getattr`).
    #[doc(alias = "mq_getattr")]
    pub fn attributes(&self) -> Result<MqAttributes> {
        let a = nix::mqueue::mq_getattr(&self.mqd)
            .map_err(|e| Error::os(self.name.as_str(), "mq_getattr", e))?;
        Ok(MqAttributes {
            capacity: usize::try_from(a.maxmsg()).unwrap_or(0),
            msg_size: usize::try_from(a.msgsize()).unwrap_or(0),
            current: usize::try_from(a.curmsgs()).unwrap_or(0),
            nonblocking: a.flags() & libc::c_long::from(libc::O_NONBLOCK) != 0,
        })
    }

    /// Sends `msg` with priority `prio`, blocking while the queue is full (`mq_send`).
    #[doc(alias = "mq_send")]
    pub fn send(&self, msg: &[u8], prio: u32) -> Result<()> {
        self.check_send(msg, prio)?;
        loop {
            match nix::mqueue::mq_send(&self.mqd, msg, prio) {
                Ok(()) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(self.send_error(msg, e)),
            }
        }
    }

    /// Sends without blocking: [`Error::WouldBlock`] when the queue is full.
    #[doc(alias = "mq_send")]
    pub fn try_send(&self, msg: &[u8], prio: u32) -> Result<()> {
        self.check_send(msg, prio)?;
        self.send_expired(msg, prio)?
            .then_some(())
            .ok_or_else(|| self.would_block("mq_send"))
    }

    /// Sends, waiting at most `timeout` for room: [`Error::Timeout`] when none came.
    #[doc(alias = "mq_timedsend")]
    pub fn send_timeout(&self, msg: &[u8], prio: u32, timeout: Duration) -> Result<()> {
        self.check_send(msg, prio)?;
        // A deadline beyond what Instant can represent is no deadline.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if self.send_expired(msg, prio)? {
                return Ok(());
            }
            self.wait_ready(libc::POLLOUT, deadline, timeout, "mq_send")?;
        }
    }

    /// Receives the oldest highest-priority message into `buf`, blocking while the queue
    /// is empty; returns its length and priority. `buf` must hold [`Self::msg_size`]
    /// bytes (the kernel refuses smaller buffers).
    #[doc(alias = "mq_receive")]
    pub fn recv(&self, buf: &mut [u8]) -> Result<(usize, u32)> {
        self.check_buf(buf)?;
        let mut prio = 0;
        loop {
            match nix::mqueue::mq_receive(&self.mqd, buf, &mut prio) {
                Ok(n) => return Ok((n, prio)),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(self.recv_error(e)),
            }
        }
    }

    /// Receives without blocking: [`Error::WouldBlock`] when the queue is empty.
    #[doc(alias = "mq_receive")]
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<(usize, u32)> {
        self.check_buf(buf)?;
        self.recv_expired(buf)?
            .ok_or_else(|| self.would_block("mq_receive"))
    }

    /// Receives, waiting at most `timeout` for a message: [`Error::Timeout`] when none
    /// came.
    #[doc(alias = "mq_timedreceive")]
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<(usize, u32)> {
        self.check_buf(buf)?;
        // A deadline beyond what Instant can represent is no deadline.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(r) = self.recv_expired(buf)? {
                return Ok(r);
            }
            self.wait_ready(libc::POLLIN, deadline, timeout, "mq_receive")?;
        }
    }

    /// Receives into a fresh `Vec` of the right length; `None` waits forever, `Some(d)` at
    /// most `d`.
    #[doc(alias("mq_receive", "mq_timedreceive"))]
    pub fn recv_vec(&self, timeout: Option<Duration>) -> Result<(Vec<u8>, u32)> {
        let mut buf = vec![0u8; self.msg_size];
        let (n, prio) = match timeout {
            None => self.recv(&mut buf)?,
            Some(d) => self.recv_timeout(&mut buf, d)?,
        };
        buf.truncate(n);
        Ok((buf, prio))
    }

    fn check_send(&self, msg: &[u8], prio: u32) -> Result<()> {
        if msg.len() > self.msg_size {
            return Err(self.too_large(msg.len()));
        }
        if prio >= MAX_PRIORITY {
            return Err(Error::invalid(
                self.name.as_str(),
                "mq_send",
                format!("priority {prio} is above the maximum {}", MAX_PRIORITY - 1),
            ));
        }
        Ok(())
    }

    fn check_buf(&self, buf: &[u8]) -> Result<()> {
        if buf.len() < self.msg_size {
            return Err(Error::invalid(
                self.name.as_str(),
                "mq_receive",
                format!(
                    "buffer of {} bytes is smaller than the queue's message size {}",
                    buf.len(),
                    self.msg_size
                ),
            ));
        }
        Ok(())
    }

    fn too_large(&self, len: usize) -> Error {
        Error::MessageTooLarge {
            resource: self.name.as_str().to_owned(),
            op: "mq_send",
            len,
            max: self.msg_size,
            advice: Some(format!(
                "recreate the queue with a larger message size (at most {} = {PROC_MQUEUE}/msgsize_max)",
                read_knob("msgsize_max").map_or_else(|| "?".to_owned(), |v| v.to_string())
            )),
        }
    }

    fn would_block(&self, op: &'static str) -> Error {
        Error::WouldBlock {
            resource: self.name.as_str().to_owned(),
            op,
        }
    }

    fn send_error(&self, msg: &[u8], e: Errno) -> Error {
        match e {
            Errno::EMSGSIZE => self.too_large(msg.len()),
            Errno::EBADF => Error::os_with_advice(
                self.name.as_str(),
                "mq_send",
                e,
                "the descriptor is not open for sending (opened with MqAccess::Receive)",
            ),
            _ => Error::os(self.name.as_str(), "mq_send", e),
        }
    }

    fn recv_error(&self, e: Errno) -> Error {
        match e {
            Errno::EBADF => Error::os_with_advice(
                self.name.as_str(),
                "mq_receive",
                e,
                "the descriptor is not open for receiving (opened with MqAccess::Send)",
            ),
            _ => Error::os(self.name.as_str(), "mq_receive", e),
        }
    }

    /// `mq_timedsend` with an already expired deadline: true if sent, false if full.
    fn send_expired(&self, msg: &[u8], prio: u32) -> Result<bool> {
        loop {
            // SAFETY: the descriptor is open for the life of `self`; `msg` is a valid
            // slice of `msg.len()` bytes; `EXPIRED` is a valid timespec.
            let r = unsafe {
                libc::mq_timedsend(
                    self.mqd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    prio,
                    &EXPIRED,
                )
            };
            match Errno::result(r) {
                Ok(_) => return Ok(true),
                Err(Errno::ETIMEDOUT | Errno::EAGAIN) => return Ok(false),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(self.send_error(msg, e)),
            }
        }
    }

    /// `mq_timedreceive` with an already expired deadline: `None` if empty.
    fn recv_expired(&self, buf: &mut [u8]) -> Result<Option<(usize, u32)>> {
        let mut prio = 0u32;
        loop {
            // SAFETY: the descriptor is open for the life of `self`; `buf` is a valid
            // writable slice of `buf.len()` bytes; `prio` and `EXPIRED` are valid.
            let r = unsafe {
                libc::mq_timedreceive(
                    self.mqd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut prio,
                    &EXPIRED,
                )
            };
            match Errno::result(r) {
                Ok(n) => return Ok(Some((n as usize, prio))),
                Err(Errno::ETIMEDOUT | Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(self.recv_error(e)),
            }
        }
    }

    /// Waits (monotonic clock) until the descriptor reports `events` or `deadline`.
    fn wait_ready(
        &self,
        events: libc::c_short,
        deadline: Option<Instant>,
        timeout: Duration,
        op: &'static str,
    ) -> Result<()> {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            return Err(Error::Timeout {
                resource: self.name.as_str().to_owned(),
                op,
                timeout,
            });
        }
        crate::fdwait::wait_fd(self.mqd.as_fd(), events, left)
            .map(drop)
            .map_err(|e| Error::os(self.name.as_str(), "ppoll", e))
    }
}

/// An absolute `CLOCK_REALTIME` deadline that has always passed.
const EXPIRED: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

impl Drop for MessageQueue {
    fn drop(&mut self) {
        // nix's MqdT does not close on drop: close it here, exactly once.
        // SAFETY: the descriptor was opened by mq_open, is owned by `self` alone and is
        // never used again (MqdT itself has no Drop, so there is no double close).
        unsafe {
            libc::mq_close(self.mqd.as_raw_fd());
        }
    }
}

impl AsFd for MessageQueue {
    /// The queue descriptor: poll it for `POLLIN` (a message is queued) and `POLLOUT`
    /// (there is room).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.mqd.as_fd()
    }
}

impl AsRawFd for MessageQueue {
    /// The queue descriptor (see [`AsFd`]); it stays owned by the queue.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.mqd.as_raw_fd()
    }
}

/// Reads one of `/proc/sys/fs/mqueue/*`.
pub(crate) fn read_knob(knob: &str) -> Option<u64> {
    std::fs::read_to_string(format!("{PROC_MQUEUE}/{knob}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn too_big(n: &Name, o: &MqOptions) -> Error {
    Error::invalid(
        n.as_str(),
        "mq_open(O_CREAT)",
        format!(
            "capacity {} / message size {} do not fit a C long",
            o.capacity, o.msg_size
        ),
    )
}

/// Turns an `mq_open` errno into an error that names the limit to raise.
fn open_error(n: &Name, op: &'static str, e: Errno, opts: Option<&MqOptions>) -> Error {
    let knob = |k: &str| read_knob(k).map_or_else(|| "unknown".to_owned(), |v| v.to_string());
    let advice = match (e, opts) {
        (Errno::EINVAL, Some(o)) => {
            let (msg_max, size_max) = (read_knob("msg_max"), read_knob("msgsize_max"));
            let mut parts = Vec::new();
            if msg_max.is_none_or(|m| o.capacity as u64 > m) {
                parts.push(format!(
                    "capacity {} exceeds {PROC_MQUEUE}/msg_max ({})",
                    o.capacity,
                    knob("msg_max")
                ));
            }
            if size_max.is_none_or(|m| o.msg_size as u64 > m) {
                parts.push(format!(
                    "message size {} exceeds {PROC_MQUEUE}/msgsize_max ({})",
                    o.msg_size,
                    knob("msgsize_max")
                ));
            }
            if parts.is_empty() {
                parts.push(format!(
                    "the kernel refused capacity {} x message size {}; check {PROC_MQUEUE}/msg_max and msgsize_max",
                    o.capacity, o.msg_size
                ));
            }
            format!(
                "{}; use smaller values or raise the limit as root (echo N > {PROC_MQUEUE}/...; needs CAP_SYS_RESOURCE above the hard ceiling, or a private namespace: unshare --ipc)",
                parts.join(" and ")
            )
        }
        (Errno::EINVAL, None) => "the name is not a valid queue name".to_owned(),
        (Errno::EMFILE, _) => format!(
            "either this user's queues would exceed RLIMIT_MSGQUEUE ({} bytes; raise with `ulimit -q` or setrlimit, or remove unused queues: `shmkit mq ls`, `shmkit mq rm`) or the process is out of descriptors (RLIMIT_NOFILE, `ulimit -n`)",
            rlimit_msgqueue().map_or_else(|| "unknown".to_owned(), |v| v.to_string())
        ),
        (Errno::ENOSPC, _) => format!(
            "the system-wide number of queues reached {PROC_MQUEUE}/queues_max ({}); remove unused queues (`shmkit mq ls`, `shmkit mq rm`) or raise queues_max as root",
            knob("queues_max")
        ),
        (Errno::ENOENT, _) => {
            "the queue does not exist: create it first (`shmkit mq create NAME`)".to_owned()
        }
        (Errno::EEXIST, _) => {
            "the queue already exists: open it, or remove it (`shmkit mq rm NAME`)".to_owned()
        }
        (Errno::EACCES, _) => {
            "permission denied: check the queue's owner and mode (ls -l /dev/mqueue)".to_owned()
        }
        _ => return Error::os(n.as_str(), op, e),
    };
    Error::os_with_advice(n.as_str(), op, e, advice)
}

fn rlimit_msgqueue() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MSGQUEUE)
        .ok()
        .map(|(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniq(tag: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "shmkit-unit-mq-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    #[test]
    fn roundtrip_priority_and_attrs() {
        let name = uniq("rt");
        let q = MessageQueue::create(&name, 4, 32).unwrap();
        let _ = MessageQueue::unlink(&name);
        q.send(b"a", 1).unwrap();
        q.send(b"b", 3).unwrap();
        q.send(b"c", 1).unwrap();
        assert_eq!(q.attributes().unwrap().current, 3);
        let mut buf = [0u8; 32];
        let got: Vec<_> = (0..3)
            .map(|_| {
                let (n, p) = q.try_recv(&mut buf).unwrap();
                (buf[..n].to_vec(), p)
            })
            .collect();
        assert_eq!(
            got,
            vec![(b"b".to_vec(), 3), (b"a".to_vec(), 1), (b"c".to_vec(), 1)]
        );
        assert!(matches!(
            q.try_recv(&mut buf),
            Err(Error::WouldBlock { .. })
        ));
    }

    #[test]
    fn drop_closes_the_descriptor() {
        use std::os::fd::AsRawFd;
        let name = uniq("drop");
        let q = MessageQueue::create(&name, 1, 8).unwrap();
        let _ = MessageQueue::unlink(&name);
        let fd = q.as_fd().as_raw_fd();
        let path = format!("/proc/self/fd/{fd}");
        assert!(std::fs::symlink_metadata(&path).is_ok());
        drop(q);
        // The number may be reused by another test's descriptor meanwhile; if it still
        // exists it must no longer be this queue.
        let target = std::fs::read_link(&path).map(|p| p.display().to_string());
        assert!(
            !target.is_ok_and(|t| t.contains(&name)),
            "queue descriptor leaked"
        );
    }

    #[test]
    fn argument_errors() {
        let name = uniq("args");
        assert!(MessageQueue::create(&name, 0, 8).is_err());
        assert!(MessageQueue::create("a/b", 1, 8).is_err());
        let q = MessageQueue::create(&name, 1, 8).unwrap();
        let _ = MessageQueue::unlink(&name);
        assert!(matches!(
            q.send(&[0; 9], 0),
            Err(Error::MessageTooLarge { max: 8, .. })
        ));
        assert!(q.send(b"x", MAX_PRIORITY).is_err());
        let mut small = [0u8; 4];
        assert!(q.try_recv(&mut small).is_err());
    }
}
