//! [`Pipe`]: an anonymous duplex message channel between a parent and a child, like
//! Python's `multiprocessing.Pipe()`: framed `send`/`recv` of bytes, `poll(timeout)`, and
//! end-of-stream ([`Error::Disconnected`]) once the peer closes or dies.
//!
//! # Why `socketpair(AF_UNIX, SOCK_SEQPACKET)` and not two pipes
//! - The kernel keeps message boundaries and delivers each packet whole or not at all: a
//!   peer killed in the middle of `send` never leaves half a message behind, and no
//!   length prefix has to be parsed out of a byte stream.
//! - `send` uses `MSG_NOSIGNAL`, so a vanished peer is `EPIPE` → [`Error::Disconnected`]
//!   without touching the process's `SIGPIPE` disposition or signal mask.
//! - One descriptor per end, both directions; poll it like any socket.
//!
//! # Wire format
//! Every packet ends with a one-byte tag: `1` = a whole message; `2` = the first packet
//! of a message larger than [`CHUNK`] bytes (first chunk, then the total length as `u64`
//! LE, then the tag); `3` = a continuation chunk. A trailing tag lets the receiver `recv`
//! straight into the caller's buffer and drop the last byte (no shifting); the sender
//! copies small packets (≤ 512 bytes) into one buffer for `send(2)` and gives larger ones
//! to `sendmsg(2)` as two segments (no copy). The tag also tells an empty message (1 byte
//! on the wire) from end-of-stream (0 bytes), which a bare `SOCK_SEQPACKET` cannot.
//! Messages up to `CHUNK` bytes are one packet and one system call on each side. A multi-packet message is
//! written by one `send` call at a time per [`Pipe`] value (an internal lock); if two
//! processes share one end (e.g. after `fork` without closing it) and send large messages
//! concurrently, their packets could interleave and the receiver reports
//! [`Error::Corrupt`]. A sender killed mid-way through a large message makes the receiver
//! report `Disconnected` (the partial message is dropped).
//!
//! ```
//! use shmkit::pipe::Pipe;
//! let (mut a, mut b) = Pipe::pair()?;
//! a.send(b"ping")?;
//! assert!(b.poll(Some(std::time::Duration::from_secs(1)))?);
//! assert_eq!(b.recv()?, b"ping");
//! b.send(&vec![7u8; 100_000])?; // larger than one packet: chunked
//! assert_eq!(a.recv()?.len(), 100_000);
//! drop(b);
//! assert!(matches!(a.recv(), Err(shmkit::Error::Disconnected { .. })));
//! # Ok::<(), shmkit::Error>(())
//! ```
//!
//! After `fork`, each process must drop the end it does not use; otherwise it keeps the
//! channel open and end-of-stream never arrives. To hand an end to a child started with
//! [`std::process::Command`], use [`Pipe::pass_to`].
//!
//! # References
//! `socketpair(2)`, `unix(7)` (`SOCK_SEQPACKET`), `sendmsg(2)` (`MSG_NOSIGNAL`).

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, getsockopt, send, sendmsg, socketpair, sockopt,
};

use crate::error::{Error, Result};

/// Largest payload carried by one packet (and so by one system call).
pub const CHUNK: usize = 32 * 1024;

/// The largest message [`Pipe::send`] accepts (1 GiB), a guard against hostile lengths.
pub const MAX_MESSAGE: usize = 1 << 30;

/// Packets up to this size are copied into one buffer and sent with `send(2)`.
const SMALL: usize = 512;

const TAG_WHOLE: u8 = 1;
const TAG_FIRST: u8 = 2;
const TAG_MORE: u8 = 3;

/// One end of a duplex message channel. See the [module docs](self).
#[derive(Debug)]
pub struct Pipe {
    fd: OwnedFd,
    /// Serialises multi-packet sends from this value (threads sharing `&Pipe`).
    send_lock: Mutex<()>,
    /// A large message whose receipt ran out of time part-way: (bytes so far, total).
    /// The next receive resumes it, so a timeout never loses or tears a message.
    partial: Option<(Vec<u8>, usize)>,
}

/// How long to wait.
#[derive(Clone, Copy)]
enum Wait {
    No,
    Forever,
    Until(Instant, Duration),
}

impl Wait {
    fn from(t: Option<Duration>) -> Self {
        // A deadline beyond what Instant can represent is no deadline.
        t.and_then(|d| Instant::now().checked_add(d).map(|at| Wait::Until(at, d)))
            .unwrap_or(Wait::Forever)
    }
}

impl Pipe {
    /// Creates a connected pair (`socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`).
    #[doc(alias("pipe2", "pipe"))]
    pub fn pair() -> Result<(Pipe, Pipe)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::os("pipe", "socketpair(AF_UNIX, SOCK_SEQPACKET)", e))?;
        Ok((Pipe::wrap(a), Pipe::wrap(b)))
    }

    fn wrap(fd: OwnedFd) -> Pipe {
        Pipe {
            fd,
            send_lock: Mutex::new(()),
            partial: None,
        }
    }

    fn resource(&self) -> String {
        format!("pipe (fd {})", self.fd.as_raw_fd())
    }

    fn disconnected(&self, op: &'static str) -> Error {
        Error::Disconnected {
            resource: self.resource(),
            op,
            detail: Some("the other end was closed or its process exited".into()),
        }
    }

    /// Arranges for `cmd`'s child to receive this end as descriptor `child_fd` (via
    /// `dup2` between fork and exec; the parent's descriptors stay close-on-exec, so
    /// other children spawned concurrently do not inherit it). In the child, take it
    /// with `Pipe::try_from(OwnedFd::from_raw_fd(child_fd))` (an `unsafe` call: the child
    /// asserts that it owns that descriptor). Drop `cmd` after
    /// spawning so that the parent's copy of this end is closed.
    ///
    /// ```
    /// use shmkit::pipe::Pipe;
    /// let (mut mine, theirs) = Pipe::pair()?;
    /// let mut cmd = std::process::Command::new("sh");
    /// // The child writes one whole message ("hi", then the tag byte 1) to descriptor 3.
    /// cmd.args(["-c", "printf 'hi\\001' >&3"]);
    /// theirs.pass_to(&mut cmd, 3);
    /// let mut child = cmd.spawn().unwrap();
    /// drop(cmd);
    /// assert_eq!(mine.recv_timeout(std::time::Duration::from_secs(10))?, b"hi");
    /// child.wait().unwrap();
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    pub fn pass_to(self, cmd: &mut std::process::Command, child_fd: RawFd) {
        use std::os::unix::process::CommandExt;
        let fd = self.fd;
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // dup2 and fcntl, which are async-signal-safe; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                let src = fd.as_raw_fd();
                if src == child_fd {
                    // dup2 onto itself keeps FD_CLOEXEC: clear it explicitly.
                    if libc::fcntl(src, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(src, child_fd) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Sends one message, waiting while the channel is full.
    pub fn send(&self, msg: &[u8]) -> Result<()> {
        self.send_wait(msg, Wait::Forever)
    }

    /// Sends one message, waiting at most `timeout` for room: [`Error::Timeout`].
    ///
    /// Messages of at most [`CHUNK`] bytes are all-or-nothing. If a larger message runs
    /// out of time after its first packet went out, this end's sending side is shut down
    /// (`shutdown(SHUT_WR)`): the peer drops the partial message and sees
    /// [`Error::Disconnected`], and later sends here fail the same way — never a torn
    /// message, never a hang.
    pub fn send_timeout(&self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.send_wait(msg, Wait::from(Some(timeout)))
    }

    /// Sends a message of at most [`CHUNK`] bytes if there is room now:
    /// [`Error::WouldBlock`] otherwise.
    pub fn try_send(&self, msg: &[u8]) -> Result<()> {
        if msg.len() > CHUNK {
            return Err(Error::MessageTooLarge {
                resource: self.resource(),
                op: "try_send",
                len: msg.len(),
                max: CHUNK,
                advice: Some("a non-blocking send is all-or-nothing only for messages of one packet; use send or send_timeout".into()),
            });
        }
        self.send_wait(msg, Wait::No)
    }

    fn send_wait(&self, msg: &[u8], wait: Wait) -> Result<()> {
        if msg.len() <= CHUNK {
            return self.send_packet(msg, &[TAG_WHOLE], wait);
        }
        if msg.len() > MAX_MESSAGE {
            return Err(Error::MessageTooLarge {
                resource: self.resource(),
                op: "send",
                len: msg.len(),
                max: MAX_MESSAGE,
                advice: Some("share large data through a shared-memory segment".into()),
            });
        }
        // A poisoned lock only means another sender panicked; the guard protects no data.
        let _g = self.send_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut first = [0u8; 9];
        first[..8].copy_from_slice(&(msg.len() as u64).to_le_bytes());
        first[8] = TAG_FIRST;
        let mut chunks = msg.chunks(CHUNK);
        if let Some(c) = chunks.next() {
            self.send_packet(c, &first, wait)?;
        }
        for c in chunks {
            if let Err(e) = self.send_packet(c, &[TAG_MORE], wait) {
                if e.is_timeout() {
                    // The peer holds a partial message: end the stream rather than let
                    // it wait forever or glue the next message onto this one.
                    let _ = nix::sys::socket::shutdown(
                        self.fd.as_raw_fd(),
                        nix::sys::socket::Shutdown::Write,
                    );
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Sends one packet: `body` followed by `trailer` (the tag, and for a first chunk the
    /// total length before it).
    fn send_packet(&self, body: &[u8], trailer: &[u8], wait: Wait) -> Result<()> {
        // Waiting forever is one blocking call, as with a raw socket; the other forms are
        // non-blocking per call (MSG_DONTWAIT) plus ppoll.
        let flags = match wait {
            Wait::Forever => MsgFlags::MSG_NOSIGNAL,
            _ => MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        };
        // Small packets: one contiguous buffer and send(2), which the kernel handles
        // faster than a two-segment sendmsg(2); the copy costs less than the difference.
        let mut small = [0u8; SMALL];
        let contiguous = body.len() + trailer.len() <= SMALL;
        if contiguous {
            small[..body.len()].copy_from_slice(body);
            small[body.len()..body.len() + trailer.len()].copy_from_slice(trailer);
        }
        let iov = [IoSlice::new(body), IoSlice::new(trailer)];
        loop {
            let r = if contiguous {
                send(
                    self.fd.as_raw_fd(),
                    &small[..body.len() + trailer.len()],
                    flags,
                )
            } else {
                sendmsg::<()>(self.fd.as_raw_fd(), &iov, &[], flags, None)
            };
            match r {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => self.wait_for(PollFlags::POLLOUT, wait, "send")?,
                Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => {
                    return Err(self.disconnected("send"));
                }
                Err(Errno::EMSGSIZE) => {
                    return Err(Error::MessageTooLarge {
                        resource: self.resource(),
                        op: "send",
                        len: body.len(),
                        max: CHUNK,
                        advice: Some("the socket send buffer (SO_SNDBUF) is smaller than one packet; do not shrink it below 64 KiB".into()),
                    });
                }
                Err(e) => return Err(Error::os(self.resource(), "sendmsg", e)),
            }
        }
    }

    /// Receives the next message, waiting as long as it takes.
    pub fn recv(&mut self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.recv_wait(&mut v, Wait::Forever)?;
        Ok(v)
    }

    /// Receives the next message, waiting at most `timeout`: [`Error::Timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.recv_wait(&mut v, Wait::from(Some(timeout)))?;
        Ok(v)
    }

    /// Receives a message that is already there: [`Error::WouldBlock`] otherwise.
    ///
    /// If only part of a large (chunked) message has arrived, this and the timed forms
    /// keep the part and report `WouldBlock`/`Timeout`; the next receive continues the
    /// same message, so nothing is lost or torn.
    pub fn try_recv(&mut self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.recv_wait(&mut v, Wait::No)?;
        Ok(v)
    }

    /// Receives the next message into `out` (cleared first; its allocation is reused);
    /// `None` waits forever.
    pub fn recv_into(&mut self, out: &mut Vec<u8>, timeout: Option<Duration>) -> Result<()> {
        self.recv_wait(out, Wait::from(timeout))
    }

    /// Whether a message (or end-of-stream) is ready to be received, waiting at most
    /// `timeout` (`None`: until one is). Like Python's `Connection.poll`.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        let ev = crate::fdwait::wait_fd(self.fd.as_fd(), libc::POLLIN, timeout)
            .map_err(|e| Error::os(self.resource(), "ppoll", e))?;
        Ok(!ev.is_empty())
    }

    fn recv_wait(&mut self, out: &mut Vec<u8>, wait: Wait) -> Result<()> {
        out.clear();
        let total = match self.partial.take() {
            Some((bytes, total)) => {
                *out = bytes;
                total
            }
            None => match self.recv_packet(out, CHUNK + 9, wait)? {
                TAG_WHOLE if out.len() <= CHUNK => return Ok(()),
                TAG_FIRST => {
                    let total = self.first_packet(out)?;
                    // Exactly the message plus one trailing tag byte: a peer that sends
                    // more than announced is caught as a truncated packet, never a
                    // reallocation.
                    out.reserve_exact(total - out.len() + 1);
                    total
                }
                t => return Err(self.corrupt(&format!("unexpected packet tag {t}"))),
            },
        };
        while out.len() < total {
            let before = out.len();
            let max = (total - out.len()).min(CHUNK) + 1;
            match self.recv_packet(out, max, wait) {
                Ok(TAG_MORE) if out.len() > before => {}
                Ok(_) => return Err(self.corrupt("large message packets out of sequence")),
                Err(e @ (Error::Timeout { .. } | Error::WouldBlock { .. })) => {
                    // Keep what arrived; the next receive continues from here.
                    self.partial = Some((std::mem::take(out), total));
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Splits the total length off a first packet (already in `out`) and checks it.
    fn first_packet(&self, out: &mut Vec<u8>) -> Result<usize> {
        let Some(at) = out.len().checked_sub(8) else {
            return Err(self.corrupt("first packet of a large message is too short"));
        };
        let mut le = [0u8; 8];
        le.copy_from_slice(&out[at..]);
        out.truncate(at);
        let total = u64::from_le_bytes(le);
        usize::try_from(total)
            .ok()
            .filter(|t| *t <= MAX_MESSAGE && *t > CHUNK && *t > out.len())
            .ok_or_else(|| self.corrupt(&format!("bad message length {total}")))
    }

    fn corrupt(&self, what: &str) -> Error {
        Error::corrupt(
            self.resource(),
            format!(
                "{what}; the peer does not speak shmkit's Pipe protocol or two senders shared one end"
            ),
        )
    }

    /// Receives one packet of at most `max` bytes (tag included), appends it to `out` and
    /// pops its trailing tag, which it returns.
    fn recv_packet(&self, out: &mut Vec<u8>, max: usize, wait: Wait) -> Result<u8> {
        out.reserve(max);
        // MSG_TRUNC makes recv return the packet's real length, so an oversized
        // (hostile) packet is detected instead of silently cut.
        let flags = match wait {
            Wait::Forever => libc::MSG_TRUNC,
            _ => libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        };
        loop {
            let spare = out.spare_capacity_mut();
            let cap = spare.len().min(max);
            // SAFETY: `spare` is `out`'s unused capacity, writable for `cap` bytes, and
            // lives until we return; the kernel writes at most `cap` bytes into it.
            let r =
                unsafe { libc::recv(self.fd.as_raw_fd(), spare.as_mut_ptr().cast(), cap, flags) };
            match Errno::result(r) {
                Ok(0) => return Err(self.disconnected("recv")),
                Ok(n) => {
                    let n = n as usize;
                    if n > cap {
                        return Err(self.corrupt(&format!(
                            "a packet of {n} bytes exceeds the expected {cap} and was truncated"
                        )));
                    }
                    // SAFETY: the kernel initialised `n <= cap` bytes of the spare capacity.
                    unsafe { out.set_len(out.len() + n) };
                    // n >= 1, so there is a last byte: the tag.
                    return Ok(out.pop().unwrap_or(0));
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => self.wait_for(PollFlags::POLLIN, wait, "recv")?,
                Err(Errno::ECONNRESET) => return Err(self.disconnected("recv")),
                Err(e) => return Err(Error::os(self.resource(), "recv", e)),
            }
        }
    }

    fn wait_for(&self, events: PollFlags, wait: Wait, op: &'static str) -> Result<()> {
        let left = match wait {
            Wait::No => {
                return Err(Error::WouldBlock {
                    resource: self.resource(),
                    op,
                });
            }
            Wait::Forever => None,
            Wait::Until(deadline, timeout) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout {
                        resource: self.resource(),
                        op,
                        timeout,
                    });
                }
                Some(left)
            }
        };
        crate::fdwait::wait_fd(self.fd.as_fd(), events.bits(), left)
            .map(drop)
            .map_err(|e| Error::os(self.resource(), "ppoll", e))
    }
}

impl TryFrom<OwnedFd> for Pipe {
    type Error = Error;

    /// Adopts an inherited end, checking that it is a `SOCK_SEQPACKET` socket.
    fn try_from(fd: OwnedFd) -> Result<Pipe> {
        let res = format!("pipe (fd {})", fd.as_raw_fd());
        match getsockopt(&fd, sockopt::SockType) {
            Ok(SockType::SeqPacket) => Ok(Pipe::wrap(fd)),
            Ok(t) => Err(Error::invalid(
                res,
                "adopt pipe end",
                format!("socket type {t:?}, expected SOCK_SEQPACKET"),
            )),
            Err(e) => Err(Error::os_with_advice(
                res,
                "getsockopt(SO_TYPE)",
                e,
                "not a socket: pass an end created by Pipe::pair (Pipe::pass_to)",
            )),
        }
    }
}

impl FromRawFd for Pipe {
    /// Adopts a raw descriptor without checking it (prefer `Pipe::try_from(OwnedFd)`).
    ///
    /// # Safety
    /// `fd` must be an open `SOCK_SEQPACKET` socket owned by nobody else.
    unsafe fn from_raw_fd(fd: RawFd) -> Pipe {
        // SAFETY: the caller guarantees `fd` is open and exclusively ours.
        Pipe::wrap(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl AsFd for Pipe {
    /// The socket (readable: a message or end-of-stream is ready).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Pipe {
    /// The socket (see [`AsFd`]); it stays owned by this end.
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<Pipe> for OwnedFd {
    fn from(p: Pipe) -> OwnedFd {
        p.fd
    }
}
