//! Read-only inspection of an object in `/dev/shm` (or a file): what `shmkit ls`, `info`
//! and `gc` know about it, read with `pread` and lock probes, never mapped.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use crate::liveness::{self, CREATOR_BYTE, PRESENCE_BYTE};
use crate::process::{self as procid, ProcessId};

use super::header::HEADER_LEN;
use super::{Header, HeaderError, io_errno};

/// What `shmkit ls` and `shmkit info` know about one object in `/dev/shm` (or a file).
#[derive(Clone, Debug)]
pub struct Inspection {
    /// The object's path.
    pub path: PathBuf,
    /// Its length in bytes.
    pub len: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// The header, or why it is not a valid shmkit header (foreign objects give
    /// [`HeaderError::BadMagic`] or [`HeaderError::TooShort`]).
    pub header: std::result::Result<Header, HeaderError>,
    /// True if a creator holds the initialisation lock (a segment being created, or a
    /// `.shmkit-init.*` temporary whose creator is alive), whatever the object's size.
    pub initializing: bool,
    /// Whether some shmkit handle, in any process and any PID namespace, holds the object
    /// open (its presence lock, see [`crate::liveness`]); `None` if the kernel could not
    /// tell. Programs that map the object without shmkit (C, Python) hold no such lock.
    pub in_use: Option<bool>,
    /// Whether the creating handle is still open (the creator lock); `None` if unknown.
    pub creator_holds: Option<bool>,
    /// The creator recorded in the header, and what `/proc` says of that pid: a
    /// diagnostic only (pids are reused and PID namespaces hide processes; decisions use
    /// `in_use` and `creator_holds`).
    pub creator: Option<(ProcessId, procid::Liveness)>,
}

impl Inspection {
    /// True if the object is not a shmkit segment at all (no shmkit magic).
    pub fn is_foreign(&self) -> bool {
        matches!(
            self.header,
            Err(HeaderError::BadMagic { .. }) | Err(HeaderError::TooShort { .. })
        )
    }
}

/// Opens `path` to inspect it: no symlinks, no blocking on a FIFO, regular files only.
pub(crate) fn open_for_inspection(
    path: &Path,
    resource: &str,
    flags: OFlag,
) -> Result<(File, std::fs::Metadata)> {
    let file = nix::fcntl::open(
        path,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map(File::from)
    .map_err(|e| Error::os(resource, "open(O_NOFOLLOW)", e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::os(resource, "fstat", io_errno(&e)))?;
    if !meta.file_type().is_file() {
        return Err(Error::invalid(resource, "inspect", "not a regular file"));
    }
    Ok((file, meta))
}

/// Reads an object's header and state without modifying it, waiting or mapping it.
///
/// The header is read with `pread(2)`, never through a mapping: a process that resizes
/// the object meanwhile can make the read short or inconsistent (an error in `header`),
/// never a `SIGBUS`.
pub fn inspect_path(path: &Path) -> Result<Inspection> {
    let resource = path.display().to_string();
    let (file, meta) = open_for_inspection(path, &resource, OFlag::O_RDONLY)?;
    let len = meta.len();
    let mut buf = [0u8; HEADER_LEN];
    let got = pread_full(&file, &mut buf, 0, &resource)?;
    let header = if got < HEADER_LEN {
        Err(HeaderError::TooShort { len: got as u64 })
    } else {
        // The length may have changed since fstat: parse against the current one.
        let now = file.metadata().map(|m| m.len()).unwrap_or(len);
        Header::parse(&buf, now)
    };
    let in_use = liveness::byte_held(&file, libc::F_WRLCK, PRESENCE_BYTE).ok();
    let creator_holds = liveness::byte_held(&file, libc::F_WRLCK, CREATOR_BYTE).ok();
    let initializing = match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => false,
        Err((_, e)) => e == Errno::EWOULDBLOCK,
    };
    let creator = header.as_ref().ok().map(|h| {
        let id = ProcessId {
            pid: h.raw.creator_pid,
            start_time: h.raw.creator_start_time,
            boot_tag: h.raw.boot_tag,
        };
        (id, id.liveness())
    });
    Ok(Inspection {
        path: path.to_path_buf(),
        len,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        header,
        initializing,
        in_use,
        creator_holds,
        creator,
    })
}

/// Reads up to `buf.len()` bytes at `off` with `pread(2)` (retrying on `EINTR`); fewer only
/// at the end of the file. Never a mapping: a file that shrinks meanwhile gives a short
/// read, not a `SIGBUS`.
pub(crate) fn pread_full(file: &File, buf: &mut [u8], off: u64, resource: &str) -> Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::os(resource, "pread", io_errno(&e))),
        }
    }
    Ok(got)
}
