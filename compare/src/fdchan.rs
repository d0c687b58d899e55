//! Byte-stream channels over file descriptors: `pipe`, `fifo` (two named pipes in a
//! private temporary directory) and `unix-socket` (`socketpair(AF_UNIX, SOCK_STREAM)`).
//! A message is `size` bytes written with `write` until all are out and read with `read`
//! until all are in. Blocking calls are bounded by the peer: when it dies its ends close and
//! `read` sees EOF (`write` sees EPIPE; Rust ignores SIGPIPE).

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use shmkit::{Error, Result};

use crate::channel::{Channel, ChannelParams, Side};

/// Read and write ends of one side.
#[derive(Default)]
struct Ends {
    rd: Option<OwnedFd>,
    wr: Option<OwnedFd>,
}

/// A channel over two unidirectional byte streams (or one socket pair).
pub struct FdChannel {
    what: &'static str,
    sides: [Ends; 2],
    _dir: Option<tempfile::TempDir>,
}

impl FdChannel {
    /// Two anonymous pipes.
    pub fn pipe(_: ChannelParams) -> Result<Box<dyn Channel>> {
        let p = |what| nix::unistd::pipe().map_err(|e| Error::os(what, "pipe", e));
        let (c_rd, p_wr) = p("pipe parent->child")?;
        let (p_rd, c_wr) = p("pipe child->parent")?;
        Ok(Box::new(FdChannel {
            what: "pipe",
            sides: [
                Ends {
                    rd: Some(p_rd),
                    wr: Some(p_wr),
                },
                Ends {
                    rd: Some(c_rd),
                    wr: Some(c_wr),
                },
            ],
            _dir: None,
        }))
    }

    /// Two FIFOs created with `mkfifo(0600)` in a fresh temporary directory.
    pub fn fifo(_: ChannelParams) -> Result<Box<dyn Channel>> {
        let dir = tempfile::Builder::new()
            .prefix("shmkit-bench-")
            .tempdir()
            .map_err(|e| {
                Error::os(
                    "temporary directory",
                    "mkdtemp",
                    Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                )
            })?;
        let mut ends: [(Option<OwnedFd>, Option<OwnedFd>); 2] = Default::default();
        for (i, end) in ends.iter_mut().enumerate() {
            let path = dir.path().join(format!("fifo{i}"));
            let res = path.display().to_string();
            nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)
                .map_err(|e| Error::os(&res, "mkfifo", e))?;
            // Open the read end non-blocking first (an O_RDONLY open would wait for a
            // writer), then the write end, then make the read end blocking again.
            let rd = open(
                &path,
                OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
            .map_err(|e| Error::os(&res, "open(O_RDONLY|O_NONBLOCK)", e))?;
            let wr = open(&path, OFlag::O_WRONLY | OFlag::O_NOFOLLOW, Mode::empty())
                .map_err(|e| Error::os(&res, "open(O_WRONLY)", e))?;
            fcntl(&rd, FcntlArg::F_SETFL(OFlag::empty()))
                .map_err(|e| Error::os(&res, "fcntl(F_SETFL)", e))?;
            *end = (Some(rd), Some(wr));
        }
        let [(c_rd, p_wr), (p_rd, c_wr)] = ends;
        Ok(Box::new(FdChannel {
            what: "fifo",
            sides: [Ends { rd: p_rd, wr: p_wr }, Ends { rd: c_rd, wr: c_wr }],
            _dir: Some(dir),
        }))
    }

    /// `socketpair(AF_UNIX, SOCK_STREAM)`.
    pub fn unix_socket(_: ChannelParams) -> Result<Box<dyn Channel>> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::empty(),
        )
        .map_err(|e| Error::os("unix socket pair", "socketpair", e))?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone().map_err(|e| {
                Error::os(
                    "unix socket",
                    "dup",
                    Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                )
            })
        };
        let (a2, b2) = (dup(&a)?, dup(&b)?);
        Ok(Box::new(FdChannel {
            what: "unix-socket",
            sides: [
                Ends {
                    rd: Some(a),
                    wr: Some(a2),
                },
                Ends {
                    rd: Some(b),
                    wr: Some(b2),
                },
            ],
            _dir: None,
        }))
    }

    fn end(&self, side: Side, write: bool) -> Result<&OwnedFd> {
        let e = &self.sides[side.index()];
        let fd = if write { e.wr.as_ref() } else { e.rd.as_ref() };
        fd.ok_or_else(|| Error::invalid(self.what, "use", "end closed"))
    }
}

impl Channel for FdChannel {
    fn attach(&mut self, side: Side, _peer: Pid) -> Result<()> {
        // Close the other side's ends so the peer's death shows as EOF / EPIPE.
        self.sides[side.peer().index()] = Ends::default();
        Ok(())
    }

    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        let fd = self.end(side, true)?;
        let mut off = 0;
        while off < msg.len() {
            match nix::unistd::write(fd.as_fd(), &msg[off..]) {
                Ok(n) => off += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EPIPE) => {
                    return Err(Error::Disconnected {
                        resource: self.what.into(),
                        op: "write",
                        detail: None,
                    });
                }
                Err(e) => return Err(Error::os(self.what, "write", e)),
            }
        }
        Ok(())
    }

    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        let fd = self.end(side, false)?;
        let mut off = 0;
        while off < buf.len() {
            match nix::unistd::read(fd, &mut buf[off..]) {
                Ok(0) => {
                    return Err(Error::Disconnected {
                        resource: self.what.into(),
                        op: "read",
                        detail: None,
                    });
                }
                Ok(n) => off += n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::os(self.what, "read", e)),
            }
        }
        Ok(())
    }
}
