//! Named pipes ([`Fifo`]): `mkfifo` with a mode, bounded opens, framed messages and plain
//! byte streams, and a vanished peer reported as [`Error::Disconnected`] — never a
//! `SIGPIPE` death.
//!
//! # Framing and atomicity
//! [`FifoWriter::send`] writes one frame ([`crate::frame`]: 4-byte length + payload) with a
//! single `write(2)`. POSIX makes writes of at most `PIPE_BUF` (4096 on Linux) bytes to a
//! pipe atomic, so frames of up to [`MAX_ATOMIC_PAYLOAD`] (4092) bytes from any number of
//! writers — other processes, other languages — never interleave. Larger messages would
//! be split by the kernel and could interleave with other writers' frames, so `send`
//! refuses them with [`Error::MessageTooLarge`] (serialising them with a lock would not be
//! enough: a writer killed half-way would leave a partial frame for the next writer's
//! bytes to complete, undetectably); send big payloads through a
//! [`Pipe`](crate::pipe::Pipe), a message queue or shared memory, or use the plain byte
//! stream ([`std::io::Write`]) when there is a single writer.
//!
//! # Opening
//! Both ends are opened with `O_NONBLOCK|O_NOFOLLOW|O_CLOEXEC`, checked to be FIFOs, then
//! switched to blocking mode: waiting forever is one plain `read`/`write`, exactly as with a
//! raw FIFO, while the `try_` and `_timeout` forms use `preadv2`/`pwritev2(RWF_NOWAIT)` per
//! call plus `ppoll` (falling back to `O_NONBLOCK` on kernels without `RWF_NOWAIT` for
//! pipes). A reader opens at once; until a writer connects, receiving waits (bounded). Opening a
//! writer fails with `ENXIO` while no reader has the FIFO open, so
//! [`Fifo::open_writer`] retries (backing off from 20 µs to 2 ms) until a reader appears
//! or the timeout passes. All waiting is done with `ppoll` on the monotonic clock.
//!
//! # SIGPIPE
//! Writing to a FIFO without readers raises `SIGPIPE`, whose default action kills the
//! process. When the writer is opened, shmkit looks at `SIGPIPE`'s disposition: if it is
//! ignored (Rust's runtime and Python both ignore it at start-up), writes are plain
//! `write(2)` calls and `EPIPE` becomes [`Error::Disconnected`]. Otherwise (default
//! action or a user handler) every write blocks `SIGPIPE` in the calling thread with
//! `pthread_sigmask`, and on `EPIPE` consumes the signal the write raised with a
//! zero-timeout `sigtimedwait` before restoring the mask — so no handler runs and nothing
//! dies. If the thread already blocked `SIGPIPE`, shmkit leaves it pending for the
//! caller. Change `SIGPIPE`'s disposition before opening writers, not after.
//!
//! ```
//! use shmkit::fifo::Fifo;
//! let path = std::env::temp_dir().join(format!("doc-fifo-{}", std::process::id()));
//! Fifo::create(&path, 0o600)?;
//! let mut rx = Fifo::open_reader(&path)?;
//! let tx = Fifo::open_writer(&path, Some(std::time::Duration::from_secs(1)))?;
//! tx.send(b"hello")?;
//! assert_eq!(rx.recv()?, b"hello");
//! drop(tx);
//! assert!(matches!(rx.try_recv(), Err(shmkit::Error::Disconnected { .. })));
//! Fifo::remove(&path)?;
//! # Ok::<(), shmkit::Error>(())
//! ```
//!
//! # References
//! `fifo(7)`, `pipe(7)` (atomicity, `PIPE_BUF`), `mkfifo(3)`, `open(2)` (`ENXIO`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::stat::{Mode, SFlag};

use crate::error::{Error, Result};
use crate::frame::{self, Decoded};

/// `PIPE_BUF` on Linux: writes up to this many bytes to a pipe are atomic.
pub const PIPE_BUF: usize = libc::PIPE_BUF;

/// The largest payload [`FifoWriter::send`] accepts: `PIPE_BUF` minus the frame header.
pub const MAX_ATOMIC_PAYLOAD: usize = PIPE_BUF - frame::HEADER_LEN;

/// Size of a reader's buffer (the default pipe capacity).
const READ_BUF: usize = 64 * 1024;

/// Creating, removing and opening named pipes.
///
/// ```
/// use shmkit::fifo::Fifo;
/// let path = std::env::temp_dir().join(format!("doc-fifo2-{}", std::process::id()));
/// Fifo::create(&path, 0o600)?;
/// assert!(Fifo::create(&path, 0o600).unwrap_err().is_already_exists());
/// Fifo::remove(&path)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Fifo;

/// How long to wait in a receive or send.
#[derive(Clone, Copy, Debug)]
enum Wait {
    No,
    Forever,
    Until(Instant, Duration),
}

impl Wait {
    fn from(timeout: Option<Duration>) -> Self {
        match timeout {
            None => Wait::Forever,
            // A deadline beyond what Instant can represent is no deadline.
            Some(d) => Instant::now()
                .checked_add(d)
                .map_or(Wait::Forever, |at| Wait::Until(at, d)),
        }
    }

    /// Time left: `None` forever, `Some(ZERO)` expired or no waiting.
    fn left(self) -> Option<Duration> {
        match self {
            Wait::No => Some(Duration::ZERO),
            Wait::Forever => None,
            Wait::Until(d, _) => Some(d.saturating_duration_since(Instant::now())),
        }
    }

    fn expired_error(self, resource: &Path, op: &'static str) -> Error {
        match self {
            Wait::Until(_, timeout) => Error::Timeout {
                resource: resource.display().to_string(),
                op,
                timeout,
            },
            _ => Error::WouldBlock {
                resource: resource.display().to_string(),
                op,
            },
        }
    }
}

/// A named pipe's file facts ([`Fifo::stat`]). How many readers and writers have it open
/// and how many bytes it holds are not visible without opening it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FifoStat {
    /// Permission bits (with set-id and sticky bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last modification (a write to the pipe updates it), when the file system says.
    pub modified: Option<std::time::SystemTime>,
}

impl Fifo {
    /// Creates a named pipe at `path` with permission bits `mode` (the umask applies);
    /// fails with `EEXIST` if anything is there (`mkfifo(3)`).
    #[doc(alias = "mkfifo")]
    pub fn create(path: impl AsRef<Path>, mode: u32) -> Result<()> {
        let path = path.as_ref();
        crate::name::validate_path(path)?;
        nix::unistd::mkfifo(
            path,
            Mode::from_bits_truncate((mode & 0o777) as libc::mode_t),
        )
        .map_err(|e| Error::os(path.display().to_string(), "mkfifo", e))
    }

    /// What `lstat` says about the named pipe at `path` (never opens it: opening a FIFO's
    /// read end would release a writer blocked in `open`); refuses anything that is not a
    /// FIFO, and does not follow a symbolic link.
    #[doc(alias = "lstat")]
    pub fn stat(path: impl AsRef<Path>) -> Result<FifoStat> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let path = path.as_ref();
        crate::name::validate_path(path)?;
        let res = path.display().to_string();
        let meta = std::fs::symlink_metadata(path).map_err(|e| io_err(&res, "lstat", e))?;
        if !meta.file_type().is_fifo() {
            return Err(Error::invalid(res, "stat FIFO", "not a FIFO"));
        }
        Ok(FifoStat {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            modified: meta.modified().ok(),
        })
    }

    /// Removes the named pipe at `path`; refuses to remove anything that is not a FIFO.
    pub fn remove(path: impl AsRef<Path>) -> Result<()> {
        use std::os::unix::fs::FileTypeExt;
        let path = path.as_ref();
        crate::name::validate_path(path)?;
        let res = path.display().to_string();
        let meta = std::fs::symlink_metadata(path).map_err(|e| io_err(&res, "lstat", e))?;
        if !meta.file_type().is_fifo() {
            return Err(Error::invalid(
                res,
                "remove FIFO",
                "not a FIFO; not removed",
            ));
        }
        std::fs::remove_file(path).map_err(|e| io_err(&res, "unlink", e))
    }

    /// Opens the read end. Never blocks: receiving waits for writers and data.
    pub fn open_reader(path: impl AsRef<Path>) -> Result<FifoReader> {
        let path = path.as_ref();
        let fd = open_fifo(path, OFlag::O_RDONLY)?;
        Ok(FifoReader {
            path: path.to_owned(),
            fd: PipeFd::new(fd, path)?,
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            keepalive: None,
        })
    }

    /// Opens the write end, waiting at most `timeout` (`None`: forever) for a reader to
    /// open the FIFO (`open(O_WRONLY|O_NONBLOCK)` retried while it fails with `ENXIO`).
    ///
    /// Any open read end counts, whoever holds it. Readers here are opened `O_CLOEXEC`,
    /// but a child another thread is spawning holds copies of this process's descriptors
    /// from its `fork` (or `clone`) until its `exec`: if this process held a read end at
    /// that moment, the writer can open through that passing copy and then get
    /// [`Error::Disconnected`] on a send made after the copy closed (at the child's `exec`)
    /// and before the intended reader opened (frames sent earlier stay in the pipe). When a
    /// process reads and later writes the same FIFO, let the reader announce itself (as
    /// `tests/fifo.rs`, `interop_with_python`, does) rather than relying on the open alone.
    pub fn open_writer(path: impl AsRef<Path>, timeout: Option<Duration>) -> Result<FifoWriter> {
        let path = path.as_ref();
        let wait = Wait::from(timeout);
        let mut pause = Duration::from_micros(20);
        loop {
            match open_fifo(path, OFlag::O_WRONLY) {
                Ok(fd) => {
                    return Ok(FifoWriter {
                        path: path.to_owned(),
                        fd: PipeFd::new(fd, path)?,
                        sigpipe_ignored: sigpipe_ignored(),
                    });
                }
                Err(e) if e.errno() == Some(Errno::ENXIO) => {
                    let left = wait.left();
                    if left == Some(Duration::ZERO) {
                        return Err(Error::Timeout {
                            resource: path.display().to_string(),
                            op: "open FIFO for writing (waiting for a reader)",
                            timeout: timeout.unwrap_or_default(),
                        });
                    }
                    std::thread::sleep(left.map_or(pause, |l| l.min(pause)));
                    pause = (pause * 2).min(Duration::from_millis(2));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn io_err(resource: &str, op: &'static str, e: io::Error) -> Error {
    Error::os(
        resource,
        op,
        Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    )
}

fn open_fifo(path: &Path, access: OFlag) -> Result<OwnedFd> {
    crate::name::validate_path(path)?;
    let res = path.display().to_string();
    let op = if access == OFlag::O_RDONLY {
        "open FIFO for reading"
    } else {
        "open FIFO for writing"
    };
    let flags = access | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(path, flags, Mode::empty()).map_err(|e| match e {
        Errno::ENOENT => Error::os_with_advice(
            res.clone(),
            op,
            e,
            "no such FIFO: create it first (`shmkit fifo create PATH` or Fifo::create)",
        ),
        Errno::ENXIO => Error::os_with_advice(res.clone(), op, e, "no reader has the FIFO open"),
        _ => Error::os(res.clone(), op, e),
    })?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| Error::os(res.clone(), "fstat", e))?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFIFO {
        return Err(Error::invalid(
            res,
            op,
            "not a FIFO (create one with `shmkit fifo create PATH`)",
        ));
    }
    Ok(fd)
}

/// A FIFO descriptor in blocking mode (so that waiting forever is one plain `read` or
/// `write`, as with a raw FIFO) with per-call non-blocking I/O through
/// `preadv2`/`pwritev2(RWF_NOWAIT)` for the `try_` and `_timeout` forms. On kernels without
/// `RWF_NOWAIT` support for pipes (`EOPNOTSUPP`) it switches the descriptor to `O_NONBLOCK`
/// for good, and waiting forever becomes poll + non-blocking I/O.
#[derive(Debug)]
struct PipeFd {
    fd: OwnedFd,
    nonblocking: AtomicBool,
}

impl PipeFd {
    fn new(fd: OwnedFd, path: &Path) -> Result<Self> {
        let res = || path.display().to_string();
        let fl =
            fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| Error::os(res(), "fcntl(F_GETFL)", e))?;
        let fl = OFlag::from_bits_truncate(fl) - OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(fl)).map_err(|e| Error::os(res(), "fcntl(F_SETFL)", e))?;
        Ok(PipeFd {
            fd,
            nonblocking: AtomicBool::new(false),
        })
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Gives up on `RWF_NOWAIT`: the descriptor becomes `O_NONBLOCK`.
    fn fall_back(&self) -> Result<(), Errno> {
        let fl = OFlag::from_bits_truncate(fcntl(&self.fd, FcntlArg::F_GETFL)?);
        fcntl(&self.fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
        self.nonblocking.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn read(&self, buf: &mut [u8], nowait: bool) -> Result<usize, Errno> {
        if nowait && !self.nonblocking.load(Ordering::Relaxed) {
            let iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: `iov` describes `buf`, writable for its length; offset -1 means the
            // current position (required for pipes).
            let r = unsafe { libc::preadv2(self.fd.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
            match Errno::result(r) {
                Err(Errno::EOPNOTSUPP) => self.fall_back()?,
                r => return r.map(|n| n as usize),
            }
        }
        nix::unistd::read(&self.fd, buf)
    }

    fn write(&self, buf: &[u8], nowait: bool) -> Result<usize, Errno> {
        if nowait && !self.nonblocking.load(Ordering::Relaxed) {
            let iov = libc::iovec {
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: `iov` describes `buf`, readable for its length (the kernel only
            // reads through it); offset -1 means the current position.
            let r = unsafe { libc::pwritev2(self.fd.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
            match Errno::result(r) {
                Err(Errno::EOPNOTSUPP) => self.fall_back()?,
                r => return r.map(|n| n as usize),
            }
        }
        nix::unistd::write(&self.fd, buf)
    }
}

/// Whether `SIGPIPE` is ignored process-wide right now.
fn sigpipe_ignored() -> bool {
    // SAFETY: a zeroed sigaction is a valid out-parameter; passing a null new action only
    // queries the disposition.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// The read end of a named pipe: framed messages ([`recv`](Self::recv)) or a byte stream
/// ([`std::io::Read`]), buffered.
///
/// End of stream — every writer closed or died — is [`Error::Disconnected`] for messages
/// and `Ok(0)` for reads; a writer that opens later is picked up again. A long-lived
/// server that outlives its writers calls [`FifoReader::stay_open`] instead.
#[derive(Debug)]
pub struct FifoReader {
    path: PathBuf,
    fd: PipeFd,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// A write end held by the reader itself (`stay_open`), so the stream never ends.
    keepalive: Option<OwnedFd>,
}

impl FifoReader {
    /// Receives the next message, waiting as long as it takes.
    pub fn recv(&mut self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.recv_into(&mut v, None)?;
        Ok(v)
    }

    /// Receives the next message, waiting at most `timeout`: [`Error::Timeout`] if none.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.recv_into(&mut v, Some(timeout))?;
        Ok(v)
    }

    /// Receives a message if one is already there: [`Error::WouldBlock`] otherwise.
    pub fn try_recv(&mut self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        let r = self.next_frame(Wait::No)?;
        v.extend_from_slice(&self.buf[r]);
        Ok(v)
    }

    /// Receives the next message into `out` (cleared first, its allocation reused);
    /// `timeout` `None` waits forever.
    pub fn recv_into(&mut self, out: &mut Vec<u8>, timeout: Option<Duration>) -> Result<()> {
        let r = self.next_frame(Wait::from(timeout))?;
        out.clear();
        out.extend_from_slice(&self.buf[r]);
        Ok(())
    }

    /// Server mode: the reader holds a write end of its own FIFO, so writers may come and
    /// go without ever ending the stream — receives wait (bounded by their timeouts) for
    /// the next writer instead of reporting [`Error::Disconnected`]. Writers still see
    /// `Disconnected` when this reader goes away.
    ///
    /// ```
    /// use shmkit::fifo::Fifo;
    /// use std::time::Duration;
    /// let path = std::env::temp_dir().join(format!("doc-fifo-srv-{}", std::process::id()));
    /// Fifo::create(&path, 0o600)?;
    /// let mut rx = Fifo::open_reader(&path)?;
    /// rx.stay_open()?;
    /// Fifo::open_writer(&path, Some(Duration::from_secs(1)))?.send(b"one")?; // closes
    /// assert_eq!(rx.recv()?, b"one");
    /// assert!(rx.recv_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// Fifo::remove(&path)?;
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    pub fn stay_open(&mut self) -> Result<()> {
        if self.keepalive.is_none() {
            // Cannot fail with ENXIO: this reader has the FIFO open.
            self.keepalive = Some(open_fifo(&self.path, OFlag::O_WRONLY)?);
        }
        Ok(())
    }

    /// The FIFO's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn next_frame(&mut self, wait: Wait) -> Result<std::ops::Range<usize>> {
        loop {
            match frame::decode(&self.buf[self.start..self.end], MAX_ATOMIC_PAYLOAD) {
                Ok(Decoded::Frame { payload, consumed }) => {
                    let r = self.start + payload.start..self.start + payload.end;
                    self.start += consumed;
                    return Ok(r);
                }
                Ok(Decoded::Incomplete { .. }) => {}
                Err(e) => {
                    return Err(Error::corrupt(
                        self.path.display().to_string(),
                        format!(
                            "{e}: a writer does not use shmkit's framing (4-byte little-endian length, payload of at most {MAX_ATOMIC_PAYLOAD} bytes)"
                        ),
                    ));
                }
            }
            if !self.fill(wait, "recv")? {
                return Err(if self.start == self.end {
                    Error::Disconnected {
                        resource: self.path.display().to_string(),
                        op: "recv",
                        detail: Some("every writer closed the FIFO".into()),
                    }
                } else {
                    Error::corrupt(
                        self.path.display().to_string(),
                        format!(
                            "the writers closed the FIFO in the middle of a frame ({} stray bytes)",
                            self.end - self.start
                        ),
                    )
                });
            }
        }
    }

    /// Reads more bytes into the buffer. `Ok(false)` at end of stream.
    fn fill(&mut self, wait: Wait, op: &'static str) -> Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            let nowait = !matches!(wait, Wait::Forever);
            let eof = match self.fd.read(&mut self.buf[self.end..], nowait) {
                Ok(0) => true,
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(Errno::EAGAIN) => false,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::os(self.path.display().to_string(), "read", e)),
            };
            // No data: either writers exist (EAGAIN) or none is connected (EOF). poll
            // reports POLLHUP only once a writer has come and gone; before the first
            // writer it sleeps, which is what a reader wants.
            let left = wait.left();
            if left == Some(Duration::ZERO) {
                if eof && self.hung_up()? {
                    return Ok(false);
                }
                return Err(wait.expired_error(&self.path, op));
            }
            let ev = crate::fdwait::wait_fd(self.fd.as_fd(), libc::POLLIN, left)
                .map_err(|e| Error::os(self.path.display().to_string(), "ppoll", e))?;
            if eof
                && ev.contains(nix::poll::PollFlags::POLLHUP)
                && !ev.contains(nix::poll::PollFlags::POLLIN)
            {
                return Ok(false);
            }
        }
    }

    fn hung_up(&self) -> Result<bool> {
        let ev = crate::fdwait::wait_fd(self.fd.as_fd(), libc::POLLIN, Some(Duration::ZERO))
            .map_err(|e| Error::os(self.path.display().to_string(), "ppoll", e))?;
        Ok(
            ev.contains(nix::poll::PollFlags::POLLHUP)
                && !ev.contains(nix::poll::PollFlags::POLLIN),
        )
    }
}

impl io::Read for FifoReader {
    /// Reads raw bytes (buffered bytes first), blocking until some arrive; `Ok(0)` once
    /// every writer has closed.
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.start == self.end && !self.fill(Wait::Forever, "read")? {
            return Ok(0);
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

impl AsFd for FifoReader {
    /// The descriptor (blocking mode); poll it for `POLLIN`. Bytes already buffered by
    /// this reader do not show up there: call [`FifoReader::try_recv`] until it reports
    /// `WouldBlock` before polling.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for FifoReader {
    /// The descriptor (see [`AsFd`]); it stays owned by this end.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_fd().as_raw_fd()
    }
}

/// The write end of a named pipe: framed messages of at most [`MAX_ATOMIC_PAYLOAD`] bytes
/// that never interleave with other writers' ([`send`](Self::send)), or a byte stream
/// ([`std::io::Write`]).
#[derive(Debug)]
pub struct FifoWriter {
    path: PathBuf,
    fd: PipeFd,
    sigpipe_ignored: bool,
}

impl FifoWriter {
    /// Sends one message, waiting while the pipe is full.
    pub fn send(&self, msg: &[u8]) -> Result<()> {
        self.send_wait(msg, Wait::Forever)
    }

    /// Sends one message, waiting at most `timeout` for room: [`Error::Timeout`].
    pub fn send_timeout(&self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.send_wait(msg, Wait::from(Some(timeout)))
    }

    /// Sends one message if the pipe has room now: [`Error::WouldBlock`] otherwise.
    pub fn try_send(&self, msg: &[u8]) -> Result<()> {
        self.send_wait(msg, Wait::No)
    }

    /// The FIFO's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send_wait(&self, msg: &[u8], wait: Wait) -> Result<()> {
        if msg.len() > MAX_ATOMIC_PAYLOAD {
            return Err(Error::MessageTooLarge {
                resource: self.path.display().to_string(),
                op: "send",
                len: msg.len(),
                max: MAX_ATOMIC_PAYLOAD,
                advice: Some(format!(
                    "only writes of up to PIPE_BUF ({PIPE_BUF}) bytes are atomic, so a larger frame could interleave with other writers' frames; split the message, or use shmkit::pipe::Pipe, a message queue or shared memory"
                )),
            });
        }
        // Header and payload go out in one write(2) (atomic up to PIPE_BUF), assembled on
        // the stack; a small buffer for small messages keeps the zeroing cheap.
        let total = frame::HEADER_LEN + msg.len();
        let mut small = [0u8; 512];
        let mut large;
        let frame_buf: &mut [u8] = if total <= small.len() {
            &mut small
        } else {
            large = [0u8; PIPE_BUF];
            &mut large
        };
        // The length was checked above, so the header always fits a u32.
        frame_buf[..frame::HEADER_LEN].copy_from_slice(&(msg.len() as u32).to_le_bytes());
        frame_buf[frame::HEADER_LEN..total].copy_from_slice(msg);
        let n = self.write_wait(&frame_buf[..total], wait, "send")?;
        if n != total {
            // Impossible for writes of at most PIPE_BUF bytes (pipe(7)); never hide it.
            return Err(Error::corrupt(
                self.path.display().to_string(),
                format!("partial write of {n} of {total} bytes to a pipe"),
            ));
        }
        Ok(())
    }

    /// One write that transfers at least one byte, waiting for room per `wait`.
    fn write_wait(&self, bytes: &[u8], wait: Wait, op: &'static str) -> Result<usize> {
        loop {
            match self.raw_write(bytes, !matches!(wait, Wait::Forever)) {
                Ok(n) => return Ok(n),
                Err(Errno::EAGAIN) => {}
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) => {
                    return Err(Error::Disconnected {
                        resource: self.path.display().to_string(),
                        op,
                        detail: Some("no reader has the FIFO open any more".into()),
                    });
                }
                Err(e) => return Err(Error::os(self.path.display().to_string(), "write", e)),
            }
            let left = wait.left();
            if left == Some(Duration::ZERO) {
                return Err(wait.expired_error(&self.path, op));
            }
            // POLLERR (no readers) also wakes us; the next write then reports EPIPE.
            crate::fdwait::wait_fd(self.fd.as_fd(), libc::POLLOUT, left)
                .map_err(|e| Error::os(self.path.display().to_string(), "ppoll", e))?;
        }
    }

    /// `write(2)` that never raises a deadly `SIGPIPE` (see the module docs).
    fn raw_write(&self, bytes: &[u8], nowait: bool) -> Result<usize, Errno> {
        if self.sigpipe_ignored {
            return self.fd.write(bytes, nowait);
        }
        sigpipe_safe(|| self.fd.write(bytes, nowait))
    }
}

/// Runs `write` with `SIGPIPE` blocked in this thread, consuming the `SIGPIPE` an `EPIPE`
/// raised.
fn sigpipe_safe(write: impl FnOnce() -> Result<usize, Errno>) -> Result<usize, Errno> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    let mut pipe_only = SigSet::empty();
    pipe_only.add(Signal::SIGPIPE);
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&pipe_only), Some(&mut old))?;
    let r = write();
    if old.contains(Signal::SIGPIPE) {
        // The caller blocks SIGPIPE itself: leave any pending one to it.
        return r;
    }
    if r == Err(Errno::EPIPE) {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `pipe_only` is a valid initialised sigset; a null siginfo pointer is
        // allowed; `zero` is a valid timespec (poll, do not wait). The signal is blocked
        // in this thread, so this dequeues the thread-directed SIGPIPE the write raised.
        unsafe {
            libc::sigtimedwait(pipe_only.as_ref(), std::ptr::null_mut(), &zero);
        }
    }
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    r
}

impl io::Write for FifoWriter {
    /// Writes raw bytes (blocking while the pipe is full); `BrokenPipe` once no reader is
    /// left. Writes above `PIPE_BUF` may interleave with other writers' bytes.
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if bytes.is_empty() {
            return Ok(0);
        }
        Ok(self.write_wait(bytes, Wait::Forever, "write")?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for FifoWriter {
    /// The descriptor (blocking mode); poll it for `POLLOUT`.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for FifoWriter {
    /// The descriptor (see [`AsFd`]); it stays owned by this end.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_fd().as_raw_fd()
    }
}
