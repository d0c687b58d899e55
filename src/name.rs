//! Validated names for named kernel objects.
//!
//! A name is checked before any system call sees it. POSIX shared memory objects,
//! message queues and named semaphores share one syntax on Linux: a single path component
//! with an optional leading slash. shmkit accepts the name with or without that slash and
//! stores it without.
//!
//! Rules (all kinds): 1 to [`Name::max_len`] bytes after the optional leading slash; only
//! printable ASCII other than space and `/` (`0x21..=0x7e`); not `.` or `..`; must not
//! start with `.shmkit-` (reserved for shmkit's temporary files).

use std::ffi::CString;
use std::fmt;

use crate::error::{Error, Result};

/// What a [`Name`] names; decides the length limit and how it is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// A POSIX shared-memory object (`/dev/shm/NAME`).
    Shm,
    /// A POSIX message queue (`/dev/mqueue/NAME`).
    Mq,
    /// A named POSIX semaphore (`/dev/shm/sem.NAME`).
    Sem,
}

/// Prefix of shmkit's own temporary objects; user names may not start with it.
pub(crate) const RESERVED_PREFIX: &str = ".shmkit-";

/// A validated name of a POSIX named object, stored without the leading slash.
///
/// ```
/// use shmkit::Name;
/// let n = Name::shm("/orders").unwrap();
/// assert_eq!(n.as_str(), "orders");
/// assert_eq!(n.to_string(), "orders");
/// assert!(Name::shm("a/b").is_err());
/// assert!(Name::shm("").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name {
    kind: NameKind,
    name: String,
}

impl Name {
    /// Validates `name` for `kind`.
    pub fn new(kind: NameKind, name: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidName {
            name: name.to_owned(),
            reason: reason.into(),
        };
        let bare = name.strip_prefix('/').unwrap_or(name);
        if bare.is_empty() {
            return Err(bad("empty"));
        }
        let max = Self::max_len(kind);
        if bare.len() > max {
            return Err(bad(&format!("{} bytes, at most {max} allowed", bare.len())));
        }
        if bare == "." || bare == ".." {
            return Err(bad("`.` and `..` are not names"));
        }
        if bare.starts_with(RESERVED_PREFIX) {
            return Err(bad(
                "names starting with `.shmkit-` are reserved for shmkit",
            ));
        }
        if let Some(c) = bare
            .bytes()
            .find(|b| !(0x21..=0x7e).contains(b) || *b == b'/')
        {
            let shown = if c == b'/' {
                "`/`".to_owned()
            } else {
                format!("byte 0x{c:02x}")
            };
            return Err(bad(&format!(
                "contains {shown}; only printable ASCII without space or `/` is allowed"
            )));
        }
        Ok(Name {
            kind,
            name: bare.to_owned(),
        })
    }

    /// Validates a shared-memory object name.
    pub fn shm(name: &str) -> Result<Self> {
        Self::new(NameKind::Shm, name)
    }

    /// Validates a POSIX message queue name.
    pub fn mq(name: &str) -> Result<Self> {
        Self::new(NameKind::Mq, name)
    }

    /// Validates a named semaphore name.
    pub fn sem(name: &str) -> Result<Self> {
        Self::new(NameKind::Sem, name)
    }

    /// The longest name (without the slash) accepted for `kind`.
    ///
    /// `NAME_MAX` is 255; glibc stores a named semaphore as `sem.NAME`, which costs four.
    pub const fn max_len(kind: NameKind) -> usize {
        match kind {
            NameKind::Shm | NameKind::Mq => 255,
            NameKind::Sem => 251,
        }
    }

    /// What this name names.
    pub fn kind(&self) -> NameKind {
        self.kind
    }

    /// The name without the leading slash.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The name with a leading slash, as `shm_open`, `mq_open` and `sem_open` take it.
    pub fn to_slashed(&self) -> CString {
        // Validation excluded NUL bytes, so this cannot fail; fall back to an empty
        // string rather than panic should that invariant ever break.
        CString::new(format!("/{}", self.name)).unwrap_or_default()
    }

    /// Where the object shows up in the file system on Linux.
    pub fn fs_path(&self) -> std::path::PathBuf {
        match self.kind {
            NameKind::Shm => format!("/dev/shm/{}", self.name).into(),
            NameKind::Mq => format!("/dev/mqueue/{}", self.name).into(),
            NameKind::Sem => format!("/dev/shm/sem.{}", self.name).into(),
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Checks a file-system path given for a file-backed segment or a FIFO.
pub(crate) fn validate_path(path: &std::path::Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let bad = |reason: &str| Error::InvalidName {
        name: path.display().to_string(),
        reason: reason.into(),
    };
    if bytes.is_empty() {
        return Err(bad("empty path"));
    }
    if bytes.contains(&0) {
        return Err(bad("contains a NUL byte"));
    }
    if bytes.len() >= libc::PATH_MAX as usize {
        return Err(bad("longer than PATH_MAX"));
    }
    match path.file_name() {
        Some(f) if f.as_bytes().len() <= 255 => Ok(()),
        Some(_) => Err(bad("file name longer than 255 bytes")),
        None => Err(bad("does not end in a file name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_with_and_without_slash() {
        assert_eq!(Name::shm("abc").unwrap().as_str(), "abc");
        assert_eq!(Name::shm("/abc").unwrap().as_str(), "abc");
        assert_eq!(Name::shm("/abc").unwrap().to_slashed().as_bytes(), b"/abc");
        assert_eq!(
            Name::sem("s").unwrap().fs_path().to_str(),
            Some("/dev/shm/sem.s")
        );
    }

    #[test]
    fn rejects_hostile_names() {
        for bad in [
            "",
            "/",
            "//x",
            "a/b",
            ".",
            "..",
            "a b",
            "a\0b",
            "a\nb",
            "é",
            ".shmkit-x",
            "../etc",
        ] {
            assert!(Name::shm(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Name::shm(&"x".repeat(255)).is_ok());
        assert!(Name::shm(&"x".repeat(256)).is_err());
        assert!(Name::sem(&"x".repeat(252)).is_err());
    }

    #[test]
    fn paths() {
        use std::path::Path;
        assert!(validate_path(Path::new("/tmp/x")).is_ok());
        assert!(validate_path(Path::new("")).is_err());
        assert!(validate_path(Path::new("/")).is_err());
        assert!(validate_path(Path::new("/tmp/..")).is_err());
    }
}
