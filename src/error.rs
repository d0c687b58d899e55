//! The one error type of shmkit.
//!
//! Every message names the resource (a segment name, a path, a queue name, a pid), the
//! operation that failed and, for system calls, the errno; where the fix is known the
//! message ends with what to do about it (which limit to raise, which command to run).

use std::fmt;
use std::time::Duration;

use nix::errno::Errno;

use crate::segment::HeaderError;

/// Result alias used throughout shmkit.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in shmkit.
///
/// ```
/// let err = shmkit::Name::shm("bad/name").unwrap_err();
/// assert!(err.to_string().contains("bad/name"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    #[error("{op} {resource}: {errno} (errno {code}){advice}", code = *errno as i32, advice = Advice(advice))]
    Os {
        /// The object the call was about (name, path, pid).
        resource: String,
        /// The operation, e.g. `shm_open(O_CREAT|O_EXCL)`.
        op: &'static str,
        /// The errno the kernel or libc returned.
        errno: Errno,
        /// What the caller can do about it, when known.
        advice: Option<String>,
    },

    /// A name or path was rejected before any system call was made.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was rejected.
        reason: String,
    },

    /// An argument was out of range (a size, a length, a count, a value).
    #[error("{op} {resource}: invalid argument: {reason}")]
    InvalidArgument {
        /// The object concerned.
        resource: String,
        /// The operation.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },

    /// The segment header is corrupt or comes from an incompatible build.
    #[error("{resource}: {source}; {}", source.advice(resource))]
    Header {
        /// The segment.
        resource: String,
        /// The precise validation failure.
        #[source]
        source: HeaderError,
    },

    /// The segment is valid but is not what the caller asked for (kind, type, length).
    #[error(
        "{resource}: {what} mismatch: expected {expected}, found {found}; open it with the type it was created with (see `shmkit info {resource}`)"
    )]
    Mismatch {
        /// The segment.
        resource: String,
        /// Which property differs (`kind`, `element type`, `length`, ...).
        what: &'static str,
        /// What the caller asked for.
        expected: String,
        /// What the segment holds.
        found: String,
    },

    /// The creator of a segment died before it finished initialising it.
    #[error(
        "{resource}: abandoned: its creator (pid {pid}) died during initialisation; remove it with `shmkit rm {resource}` or recover it with `open_or_create`"
    )]
    Abandoned {
        /// The segment.
        resource: String,
        /// The pid of the creator that died.
        pid: u32,
    },

    /// A bounded wait ran out.
    #[error("{op} {resource}: timed out after {timeout:?}")]
    Timeout {
        /// The object waited on.
        resource: String,
        /// What was waited for.
        op: &'static str,
        /// How long the wait lasted.
        timeout: Duration,
    },

    /// A non-blocking operation could not proceed now (queue full or empty, lock held).
    #[error("{op} {resource}: would block")]
    WouldBlock {
        /// The object.
        resource: String,
        /// The operation.
        op: &'static str,
    },

    /// The peer closed its end or died; no more data will come.
    #[error("{op} {resource}: peer disconnected{detail}", detail = Advice(detail))]
    Disconnected {
        /// The channel or pipe.
        resource: String,
        /// The operation.
        op: &'static str,
        /// What is known about the peer (e.g. which pid died).
        detail: Option<String>,
    },

    /// A subscriber fell behind a topic's publisher and `skipped` messages were
    /// overwritten before it read them (the `Overwrite` policy); it continues with the
    /// oldest message still retained.
    #[error("{op} {resource}: lagged: {skipped} messages were overwritten before they were read")]
    Lagged {
        /// The topic.
        resource: String,
        /// The operation.
        op: &'static str,
        /// How many messages this subscriber missed.
        skipped: u64,
    },

    /// A message does not fit the transport.
    #[error("{op} {resource}: message of {len} bytes exceeds the limit of {max} bytes{advice}", advice = Advice(advice))]
    MessageTooLarge {
        /// The transport.
        resource: String,
        /// The operation.
        op: &'static str,
        /// The message length.
        len: usize,
        /// The largest message the transport accepts.
        max: usize,
        /// How to raise the limit, when it can be raised.
        advice: Option<String>,
    },

    /// Shared state written by another process failed validation (a hostile or corrupt
    /// peer); nothing was read out of bounds.
    #[error("{resource}: corrupt shared state: {detail}")]
    Corrupt {
        /// The object.
        resource: String,
        /// What was inconsistent.
        detail: String,
    },

    /// A robust lock was given up (`MutexGuard::mark_unrecoverable`): locking fails until reset.
    #[error(
        "{resource}: unrecoverable: a holder gave up on the protected data (mark_unrecoverable); reset it in place with reset_unrecoverable or `shmkit mutex repair`"
    )]
    Unrecoverable {
        /// The lock.
        resource: String,
    },

    /// A child process or a pool task delivered no result: it panicked, its arguments or
    /// result could not be (de)serialised, or the process died (exit status named).
    #[error("{resource}: {failure}")]
    Failed {
        /// The process or task (name, pid, task id).
        resource: String,
        /// What happened.
        failure: crate::process::Failure,
    },

    /// The platform or kernel lacks something shmkit needs.
    #[error("{what} is not supported here: {reason}")]
    Unsupported {
        /// The feature.
        what: &'static str,
        /// Why, and what to do.
        reason: String,
    },
}

/// Formats an optional piece of advice as `"; advice"` or nothing.
struct Advice<'a>(&'a Option<String>);

impl fmt::Display for Advice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "; {a}"),
            None => Ok(()),
        }
    }
}

impl Error {
    /// An OS error with the default advice for its errno.
    pub fn os(resource: impl Into<String>, op: &'static str, errno: Errno) -> Self {
        let resource = resource.into();
        let advice = default_advice(&resource, errno);
        Error::Os {
            resource,
            op,
            errno,
            advice,
        }
    }

    /// An OS error with specific advice.
    pub fn os_with_advice(
        resource: impl Into<String>,
        op: &'static str,
        errno: Errno,
        advice: impl Into<String>,
    ) -> Self {
        Error::Os {
            resource: resource.into(),
            op,
            errno,
            advice: Some(advice.into()),
        }
    }

    /// An invalid-argument error.
    pub fn invalid(
        resource: impl Into<String>,
        op: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidArgument {
            resource: resource.into(),
            op,
            reason: reason.into(),
        }
    }

    /// A corrupt-state error.
    pub fn corrupt(resource: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            resource: resource.into(),
            detail: detail.into(),
        }
    }

    /// The errno behind this error, if it came from a system call.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Os { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// True when the object does not exist (`ENOENT`).
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(Errno::ENOENT)
    }

    /// True when the object already exists (`EEXIST`).
    pub fn is_already_exists(&self) -> bool {
        self.errno() == Some(Errno::EEXIST)
    }
}

/// Advice that holds for an errno whatever the call, naming the resource's file system
/// where that matters.
fn default_advice(resource: &str, errno: Errno) -> Option<String> {
    if errno == Errno::ENOSPC {
        return Some(enospc_advice(resource));
    }
    Some(match errno {
        Errno::ENOENT => "it does not exist: check the name (`shmkit ls` lists segments)",
        Errno::EEXIST => {
            "it already exists: open it instead, or remove the stale one (`shmkit rm`, `shmkit gc`)"
        }
        Errno::EACCES | Errno::EPERM => {
            "permission denied: check the owner and mode of the object (ls -l /dev/shm) or create it with a wider mode"
        }
        Errno::ENOMEM => "out of memory or over the mapping limit (/proc/sys/vm/max_map_count)",
        Errno::EMFILE => "too many open files in this process: raise RLIMIT_NOFILE (ulimit -n)",
        Errno::ENFILE => "too many open files system-wide: raise /proc/sys/fs/file-max",
        Errno::ENAMETOOLONG => "the name is too long (255 bytes at most)",
        Errno::ELOOP => "the path is a symbolic link, which shmkit refuses to follow (O_NOFOLLOW)",
        Errno::EFBIG => "the size exceeds the file size limit (RLIMIT_FSIZE)",
        _ => return None,
    }
    .to_owned())
}

/// `ENOSPC` advice for the file system actually involved: stdout, a file-backed segment's
/// directory, an anonymous segment's memory, or /dev/shm for a named segment (a bare name).
fn enospc_advice(resource: &str) -> String {
    const SHM: &str = "no space left: /dev/shm (tmpfs) is full or too small; free segments (`shmkit gc`) or enlarge it (mount -o remount,size=... /dev/shm)";
    if resource == "stdout" {
        return "no space left on the device stdout writes to (a full disk, or /dev/full): free space there or redirect the output elsewhere".into();
    }
    if resource == "<anonymous segment>" {
        return "no memory left for the anonymous segment (memfd, backed like tmpfs): free memory or make it smaller".into();
    }
    let path = std::path::Path::new(resource);
    if !resource.contains('/') || path.starts_with("/dev/shm") {
        return SHM.into();
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.display().to_string(),
        _ => ".".into(),
    };
    format!(
        "no space left on the file system holding {dir}: free space there (`df {dir}`) or put the segment elsewhere"
    )
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Os { errno, .. } => std::io::Error::from_raw_os_error(*errno as i32).kind(),
            Error::Timeout { .. } => std::io::ErrorKind::TimedOut,
            Error::WouldBlock { .. } => std::io::ErrorKind::WouldBlock,
            Error::Disconnected { .. } => std::io::ErrorKind::BrokenPipe,
            Error::InvalidName { .. } | Error::InvalidArgument { .. } => {
                std::io::ErrorKind::InvalidInput
            }
            Error::Header { .. } | Error::Corrupt { .. } => std::io::ErrorKind::InvalidData,
            Error::Unsupported { .. } => std::io::ErrorKind::Unsupported,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_names_resource_op_errno_and_advice() {
        let e = Error::os("/dev/shm/x", "shm_open(O_CREAT|O_EXCL)", Errno::EEXIST);
        let s = e.to_string();
        assert!(s.contains("/dev/shm/x"), "{s}");
        assert!(s.contains("shm_open"), "{s}");
        assert!(s.contains("EEXIST"), "{s}");
        assert!(s.contains("errno 17"), "{s}");
        assert!(s.contains("shmkit rm"), "{s}");
        assert!(e.is_already_exists());
    }

    #[test]
    fn enospc_advice_names_the_file_system_involved() {
        let adv = |r: &str| Error::os(r, "write", Errno::ENOSPC).to_string();
        assert!(adv("seg").contains("/dev/shm"), "{}", adv("seg"));
        assert!(adv("/dev/shm/x").contains("/dev/shm"));
        let f = adv("/var/tmp/data/seg.bin");
        assert!(
            f.contains("/var/tmp/data") && !f.contains("/dev/shm"),
            "{f}"
        );
        let o = adv("stdout");
        assert!(o.contains("stdout") && !o.contains("/dev/shm"), "{o}");
        assert!(!adv("<anonymous segment>").contains("/dev/shm"));
    }

    #[test]
    fn io_error_conversion_keeps_kind() {
        let e: std::io::Error = Error::Timeout {
            resource: "q".into(),
            op: "recv",
            timeout: Duration::from_millis(5),
        }
        .into();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    }
}
