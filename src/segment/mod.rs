//! Segments: named (POSIX shm), file-backed and anonymous shared mappings with a validated
//! header.
//!
//! # Creation and the init protocol
//!
//! A named segment is never visible half-made *and unowned*:
//!
//! 1. The creator makes a temporary object (`.shmkit-init.` + 64 random bits, in the same
//!    directory, drawn again if taken, so nobody can pre-create it to make our create fail)
//!    with `O_CREAT|O_EXCL` and the requested mode, takes an exclusive `flock` on it,
//!    sizes it with `ftruncate` and reserves its pages with `posix_fallocate` (so a full
//!    `/dev/shm` is `ENOSPC` now, not `SIGBUS` later), maps it and writes the header with
//!    state `Initializing`.
//! 2. It publishes the object under its real name with `link(2)`, which fails with
//!    `EEXIST` if the name is taken: of many racing creators exactly one wins and only the
//!    winner runs the payload initialiser.
//! 3. It initialises the payload, stores state `Ready` with `Release` ordering and drops
//!    the lock.
//!
//! An opener takes a shared `flock` (waiting, bounded, while the creator holds its
//! exclusive one), then reads the state with `Acquire`. `Ready` means done. Anything else
//! means the lock was released without publishing, which happens only when the creator
//! died: the kernel drops a dead process's locks, so this detection cannot be fooled by pid
//! reuse. The opener marks the segment `Abandoned` and reports [`Error::Abandoned`];
//! [`SegmentOptions::open_or_create`] instead takes the exclusive lock and re-initialises
//! the segment in place.
//!
//! # Who holds a segment
//!
//! Every handle keeps the object's file open and holds a shared OFD lock on it for its
//! whole life; the creating handle also holds the creator lock; and each process draws a
//! token on first need (see [`crate::liveness`]). The kernel drops these locks when the
//! holder dies and shows them to every PID namespace: [`inspect_path`] reports whether the
//! object is in use, and [`remove_if_unused`] removes it only when nobody holds it, so
//! that `shmkit gc` cannot remove what is in use. [`SegmentOptions::persistent`] marks an
//! object meant to outlive its users (the CLI's objects): `gc` leaves those alone unless
//! asked.
//!
//! # Ownership
//!
//! A named segment outlives every handle until somebody unlinks it: call
//! [`Segment::unlink`] (by name) or [`Segment::unlink_self`], or ask for RAII removal with
//! [`SegmentOptions::unlink_on_drop`]. Unlinking removes the name; processes that have it
//! mapped keep their mapping. Anonymous segments vanish with the last mapping.
//!
//! # Trust
//!
//! Every process that can open a segment can write it. shmkit validates the header on
//! open (a corrupt one is an [`Error::Header`]; the payload offset must suit the element
//! alignment, so typed views are never misaligned) and primitives bounds-check every index
//! they read from shared memory. A peer that truncates the object under a live mapping
//! makes later accesses fault (`SIGBUS`); shmkit cannot prevent that for named objects,
//! and seals anonymous ones against it (`F_SEAL_SHRINK`).

mod foreign;
pub mod header;
mod init;
mod inspect;
mod layout;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use memmap2::MmapRaw;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

use crate::error::{Error, Result};
use crate::liveness::{self, Liveness, PRESENCE_BYTE};
use crate::name::{Name, validate_path};
use crate::process::ProcessId;

pub use foreign::ForeignMap;
pub use header::{Header, HeaderError, Kind, State};
pub use inspect::{Inspection, inspect_path};
pub use layout::{ElemInfo, Layout};

use header::STATE_OFFSET;
use init::{
    Location, attach_creator, finish_init, map_existing, map_file, plan, size_and_reserve,
    write_header,
};
pub(crate) use inspect::{open_for_inspection, pread_full};

/// Where the POSIX shm objects of this system live (glibc's `shm_open` opens files here).
pub const SHM_DIR: &str = "/dev/shm";

/// Default bound on waiting for a creator to finish initialising.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// What a segment is backed by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A POSIX shared-memory object (`/dev/shm/NAME`).
    Shm(Name),
    /// A file at a path (opened with `O_NOFOLLOW`).
    File(PathBuf),
    /// An anonymous `memfd`, shared with children after `fork`.
    Anonymous,
}

impl Backing {
    /// The resource name used in error messages and by the CLI.
    pub fn resource(&self) -> String {
        match self {
            Backing::Shm(n) => n.to_string(),
            Backing::File(p) => p.display().to_string(),
            Backing::Anonymous => "<anonymous segment>".into(),
        }
    }

    /// The object's path in the file system, if it has one.
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            Backing::Shm(n) => Some(n.fs_path()),
            Backing::File(p) => Some(p.clone()),
            Backing::Anonymous => None,
        }
    }
}

/// Options for creating and opening segments: mode, timeout, RAII unlinking.
///
/// ```
/// use shmkit::{Segment, Layout, ElemInfo, segment::Kind};
/// let name = format!("doc-opts-{}", std::process::id());
/// let layout = Layout::new(Kind::Bytes, ElemInfo::bytes(100));
/// let seg = Segment::options()
///     .mode(0o600)
///     .unlink_on_drop(true)
///     .create(&name, &layout, |payload| { payload[0] = 7; Ok(()) })?;
/// let other = Segment::open(&name)?;
/// // SAFETY: the creator finished writing before publishing; nobody writes now.
/// assert_eq!(unsafe { *other.payload_ptr() }, 7);
/// drop(seg); // unlinks the name
/// assert!(Segment::open(&name).unwrap_err().is_not_found());
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct SegmentOptions {
    mode: u32,
    timeout: Duration,
    unlink_on_drop: bool,
    persistent: bool,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            mode: 0o600,
            timeout: DEFAULT_OPEN_TIMEOUT,
            unlink_on_drop: false,
            persistent: false,
        }
    }
}

/// A mapped segment: header plus payload.
///
/// The mapping is shared with every other process that maps the same object; `Segment`
/// hands out raw pointers to the payload, and the typed primitives built on it decide how
/// the bytes are accessed (atomically, under a lock, or through `unsafe` methods).
#[derive(Debug)]
pub struct Segment {
    map: MmapRaw,
    header: Header,
    backing: Backing,
    /// (device, inode) of the object, to unlink only our own object on drop.
    identity: Option<(u64, u64)>,
    unlink_on_drop: bool,
    /// The object's file with this handle's presence lock, and this process's token.
    liveness: Liveness,
}

// A Segment is a mapping plus immutable metadata (MmapRaw is Send + Sync): it may move
// between and be shared by threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Segment>();
};

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

impl SegmentOptions {
    /// Permission bits for new objects (default `0o600`). Applied exactly, whatever the
    /// umask.
    ///
    /// Only permission bits (`0o777`) are accepted: a mode with setuid, setgid or sticky
    /// bits (or anything above) makes `create` fail with [`Error::InvalidArgument`].
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Marks new objects persistent (header flag [`header::FLAG_PERSISTENT`]): meant to
    /// outlive every process that uses it, such as one made from the command line.
    /// `shmkit gc` never removes a persistent object unless told to (`--include-persistent`
    /// or `--older-than`); `shmkit rm` and [`Segment::unlink`] always can.
    pub fn persistent(mut self, yes: bool) -> Self {
        self.persistent = yes;
        self
    }

    fn checked_mode(&self, resource: &str) -> Result<u32> {
        if self.mode & !0o777 != 0 {
            return Err(Error::invalid(
                resource,
                "create",
                format!(
                    "mode {:#o} has bits beyond the permission bits 0o777 (setuid, setgid, sticky or invalid); pass permission bits only",
                    self.mode
                ),
            ));
        }
        Ok(self.mode)
    }

    /// How long to wait for a creator that is still initialising (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Unlink the name when this handle is dropped (only if the name still refers to the
    /// object this handle maps).
    pub fn unlink_on_drop(mut self, yes: bool) -> Self {
        self.unlink_on_drop = yes;
        self
    }

    /// Creates a new POSIX shm segment; fails with `EEXIST` if the name is taken.
    ///
    /// `init` receives the zero-filled payload, exclusively: no other process uses the
    /// segment until it returns. If it fails, the segment is marked abandoned and removed.
    #[doc(alias = "shm_open")]
    pub fn create(
        &self,
        name: &str,
        layout: &Layout,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Segment> {
        let loc = Location::Shm(Name::shm(name)?);
        self.create_at(&loc, layout, init)
    }

    /// Opens an existing, initialised POSIX shm segment of any kind.
    #[doc(alias = "shm_open")]
    pub fn open(&self, name: &str) -> Result<Segment> {
        let loc = Location::Shm(Name::shm(name)?);
        self.open_at(&loc)
    }

    /// Opens the segment if it exists, creates it otherwise. Returns the segment and
    /// whether this call created it. An abandoned segment (creator died while
    /// initialising) is re-initialised in place. An existing segment must match `layout`.
    #[doc(alias = "shm_open")]
    pub fn open_or_create(
        &self,
        name: &str,
        layout: &Layout,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<(Segment, bool)> {
        let loc = Location::Shm(Name::shm(name)?);
        self.open_or_create_at(&loc, layout, init)
    }

    /// Creates a file-backed segment at `path` (`O_EXCL`, `O_NOFOLLOW`).
    pub fn create_file(
        &self,
        path: impl AsRef<Path>,
        layout: &Layout,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Segment> {
        validate_path(path.as_ref())?;
        self.create_at(&Location::File(path.as_ref().to_path_buf()), layout, init)
    }

    /// Opens a file-backed segment (`O_NOFOLLOW`).
    pub fn open_file(&self, path: impl AsRef<Path>) -> Result<Segment> {
        validate_path(path.as_ref())?;
        self.open_at(&Location::File(path.as_ref().to_path_buf()))
    }

    /// [`open_or_create`](Self::open_or_create) for a file-backed segment.
    pub fn open_or_create_file(
        &self,
        path: impl AsRef<Path>,
        layout: &Layout,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<(Segment, bool)> {
        validate_path(path.as_ref())?;
        self.open_or_create_at(&Location::File(path.as_ref().to_path_buf()), layout, init)
    }

    /// Creates an anonymous segment (a sealed `memfd`), shared with children forked after
    /// this call.
    #[doc(alias = "memfd_create")]
    pub fn anonymous(
        &self,
        layout: &Layout,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Segment> {
        let resource = "<anonymous segment>";
        let (payload_offset, total) = plan(resource, layout)?;
        let fd = nix::sys::memfd::memfd_create(
            c"shmkit-anonymous",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| Error::os(resource, "memfd_create", e))?;
        let file = File::from(fd);
        size_and_reserve(&file, total, resource)?;
        let map = map_file(&file, total, resource)?;
        let live = attach_creator(&file, false, self.timeout, resource)?.ok_or_else(|| {
            Error::invalid(resource, "create", "memfd without a name (unreachable)")
        })?;
        write_header(&map, layout, payload_offset, total, self.persistent);
        let seg = finish_init(map, None, Backing::Anonymous, false, live, init)?;
        // Seal the size: nobody holding the fd can shrink the object under the mapping.
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        nix::fcntl::fcntl(
            &file,
            nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::from_bits_truncate(seals)),
        )
        .map_err(|e| Error::os(resource, "fcntl(F_ADD_SEALS)", e))?;
        Ok(seg)
    }

    /// Opens the segment behind `fd`, a descriptor of its object that another process
    /// handed over (e.g. an anonymous segment inherited across `exec` by a
    /// [`Pool`][pool] worker). This handle reopens the object through
    /// `/proc/self/fd/N` (its own open file description, hence its own liveness locks)
    /// and closes `fd`. The header is validated as for [`open`](Self::open); a segment
    /// not yet `Ready` is an error.
    ///
    #[cfg_attr(feature = "process", doc = "[pool]: crate::process::Pool")]
    #[cfg_attr(not(feature = "process"), doc = "[pool]: crate::process")]
    pub fn open_fd(&self, fd: std::os::fd::OwnedFd) -> Result<Segment> {
        use std::os::unix::fs::OpenOptionsExt;
        let resource = "<inherited segment>";
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::os(resource, "open(/proc/self/fd/N)", io_errno(&e)))?;
        drop(fd);
        let live = Liveness::attach(file, false, self.timeout, self.timeout, resource)?
            .ok_or_else(|| Error::invalid(resource, "open_fd", "unnamed object (unreachable)"))?;
        let seg = map_existing(live, Backing::Anonymous, false)?;
        match seg.state() {
            State::Ready => Ok(seg),
            s => Err(Error::corrupt(
                resource,
                format!("segment state {s:?}, expected Ready"),
            )),
        }
    }
}

impl Segment {
    /// Default options (mode 0600, 5 s open timeout, no RAII unlink).
    pub fn options() -> SegmentOptions {
        SegmentOptions::default()
    }

    /// Creates a POSIX shm segment with default options. See [`SegmentOptions::create`].
    #[doc(alias = "shm_open")]
    pub fn create(
        name: &str,
        layout: &Layout,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Segment> {
        SegmentOptions::default().create(name, layout, init)
    }

    /// Opens a POSIX shm segment with default options. See [`SegmentOptions::open`].
    #[doc(alias = "shm_open")]
    pub fn open(name: &str) -> Result<Segment> {
        SegmentOptions::default().open(name)
    }

    /// Opens or creates with default options. See [`SegmentOptions::open_or_create`].
    #[doc(alias = "shm_open")]
    pub fn open_or_create(
        name: &str,
        layout: &Layout,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<(Segment, bool)> {
        SegmentOptions::default().open_or_create(name, layout, init)
    }

    /// Creates an anonymous segment. See [`SegmentOptions::anonymous`].
    #[doc(alias = "memfd_create")]
    pub fn anonymous(
        layout: &Layout,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Segment> {
        SegmentOptions::default().anonymous(layout, init)
    }

    /// Removes a POSIX shm object by name (`shm_unlink`). Mappings stay valid.
    #[doc(alias = "shm_unlink")]
    pub fn unlink(name: &str) -> Result<()> {
        let n = Name::shm(name)?;
        nix::sys::mman::shm_unlink(n.to_slashed().as_c_str())
            .map_err(|e| Error::os(n.to_string(), "shm_unlink", e))
    }

    /// Removes this segment's name, if it still refers to this segment's object.
    pub fn unlink_self(&self) -> Result<()> {
        let Some(path) = self.backing.path() else {
            return Ok(());
        };
        let resource = self.backing.resource();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if Some((m.dev(), m.ino())) == self.identity => {
                std::fs::remove_file(&path).map_err(|e| Error::os(resource, "unlink", io_errno(&e)))
            }
            Ok(_) => Ok(()), // replaced by another object: not ours to remove
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::os(resource, "stat", io_errno(&e))),
        }
    }

    /// The kernel-vouched liveness context of this handle: this process's token on the
    /// object and the means to ask whether another holder's token is alive (see
    /// [`crate::liveness`]).
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    fn into_liveness(self) -> Liveness {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again; each field is moved out exactly
        // once (the map is dropped in place to unmap it, the liveness is returned).
        unsafe {
            drop(std::ptr::read(&this.map));
            drop(std::ptr::read(&this.backing));
            std::ptr::read(&this.liveness)
        }
    }

    /// The validated header, as read when the segment was opened.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// What backs the segment.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// The name (or path) used in error messages.
    pub fn resource(&self) -> String {
        self.backing.resource()
    }

    /// The current initialisation state (read with `Acquire`).
    pub fn state(&self) -> State {
        State::from_raw(self.state_word().load(Ordering::Acquire)).unwrap_or(State::Abandoned)
    }

    fn state_word(&self) -> &AtomicU32 {
        // SAFETY: the mapping is at least HEADER_LEN bytes and page-aligned, so offset 16
        // is in bounds and 4-aligned; the word is only ever accessed atomically once the
        // segment is shared.
        unsafe { &*(self.map.as_ptr().add(STATE_OFFSET) as *const AtomicU32) }
    }

    /// Start of the payload: aligned to at least 64 bytes and to the element alignment.
    ///
    /// Valid for [`payload_len`](Self::payload_len) bytes for as long as `self` lives.
    /// Other processes may read and write these bytes concurrently: access them only
    /// through atomics, under a lock, or under a protocol that excludes races.
    pub fn payload_ptr(&self) -> *mut u8 {
        // SAFETY: payload_range() was validated against the mapped length.
        unsafe { self.map.as_mut_ptr().add(self.header.payload_range().start) }
    }

    /// Length of the payload in bytes.
    pub fn payload_len(&self) -> usize {
        self.header.payload_range().len()
    }

    /// Length of the whole mapping (header included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false: a segment has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Who created the segment.
    pub fn creator(&self) -> ProcessId {
        ProcessId {
            pid: self.header.raw.creator_pid,
            start_time: self.header.raw.creator_start_time,
            boot_tag: self.header.raw.boot_tag,
        }
    }

    /// Checks that the segment holds exactly `layout`: kind, element size, alignment,
    /// count, type tag (when both have one), payload length, flags and parameters.
    pub fn check_layout(&self, layout: &Layout) -> Result<()> {
        self.check_elements(layout.kind, &layout.elem, Some(layout.elem.count))?;
        let raw = &self.header.raw;
        let m = |what, expected: String, found: String| Error::Mismatch {
            resource: self.resource(),
            what,
            expected,
            found,
        };
        if raw.payload_len != layout.payload_len {
            return Err(m(
                "payload length",
                layout.payload_len.to_string(),
                raw.payload_len.to_string(),
            ));
        }
        let flags = self.header.kind_flags();
        if flags != layout.flags & !header::FLAG_PERSISTENT {
            return Err(m(
                "flags",
                format!("{:#x}", layout.flags),
                format!("{flags:#x}"),
            ));
        }
        if raw.params != layout.params {
            return Err(m(
                "parameters",
                format!("{:?}", layout.params),
                format!("{:?}", raw.params),
            ));
        }
        Ok(())
    }

    /// Checks kind and element type; the count only when `count` is given.
    pub fn check_elements(&self, kind: Kind, elem: &ElemInfo, count: Option<u64>) -> Result<()> {
        let raw = &self.header.raw;
        let m = |what, expected: String, found: String| Error::Mismatch {
            resource: self.resource(),
            what,
            expected,
            found,
        };
        if self.header.kind() != kind {
            return Err(m("kind", kind.name(), self.header.kind().name()));
        }
        let found_ty = || {
            format!(
                "{} ({} bytes, align {})",
                self.header.type_name(),
                raw.elem_size,
                raw.elem_align
            )
        };
        let want_ty = format!(
            "{} ({} bytes, align {})",
            elem.type_name(),
            elem.size,
            elem.align
        );
        if raw.elem_size != elem.size || raw.elem_align != elem.align {
            return Err(m("element type", want_ty, found_ty()));
        }
        if raw.type_tag != 0 && elem.tag != 0 && raw.type_tag != elem.tag {
            return Err(m("element type", want_ty, found_ty()));
        }
        if let Some(c) = count {
            if raw.elem_count != c {
                return Err(m("length", c.to_string(), raw.elem_count.to_string()));
            }
        }
        Ok(())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.unlink_on_drop {
            let _ = self.unlink_self();
        }
    }
}

impl std::os::fd::AsFd for Segment {
    /// The descriptor of the mapped object (shm object, file or memfd), which also
    /// carries this handle's liveness locks (see [`crate::liveness`]): `fstat` it, seal
    /// it, pass it on; do not take or release `fcntl` locks on it.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.liveness.file().as_fd()
    }
}

impl std::os::fd::AsRawFd for Segment {
    /// See [`AsFd`](std::os::fd::AsFd); the descriptor stays owned by the segment.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.liveness.file().as_raw_fd()
    }
}

/// What [`remove_if_unused`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Removal {
    /// The name was removed: no shmkit handle held the object, and none can have opened
    /// it meanwhile (an opener that raced with us sees the object nameless and opens the
    /// name again).
    Removed,
    /// A shmkit handle holds it open (in some process, in any PID namespace).
    InUse,
    /// A creator is still initialising it (or it is a temporary whose creator is alive).
    Initializing,
    /// The name now refers to another object than the one inspected.
    Replaced,
    /// The name no longer exists.
    Gone,
}

/// Removes the object at `path` only if no shmkit handle holds it, atomically with
/// respect to openers: the presence lock is taken exclusively (which fails while any
/// handle holds it shared), the name is unlinked while we hold it, and an opener that got
/// a descriptor just before checks, after taking its own shared lock, that the object
/// still has a name. Objects mapped by programs that do not use shmkit hold no lock: the
/// caller checks `/proc/*/maps` for those (`shmkit gc` does, once per run, so a foreign
/// program that maps the object after that scan is not seen).
///
/// What this cannot rule out: Linux unlinks by name, not by descriptor, so if another
/// process removes the name and creates a new object under it between our identity check
/// and our `unlink` (a window of two system calls), the new object loses its name.
///
/// A non-persistent segment counts as unused as soon as no handle is open, even if the
/// process that created it still runs: keep a handle for as long as the object must
/// exist, or create it with [`SegmentOptions::persistent`].
pub fn remove_if_unused(path: &Path) -> Result<Removal> {
    let resource = path.display().to_string();
    let (file, meta) = match open_for_inspection(path, &resource, OFlag::O_RDWR) {
        Ok(x) => x,
        Err(e) if e.is_not_found() => return Ok(Removal::Gone),
        Err(e) => return Err(e),
    };
    match liveness::try_lock_byte(&file, libc::F_WRLCK, PRESENCE_BYTE) {
        Ok(true) => {}
        Ok(false) => return Ok(Removal::InUse),
        Err(e) => return Err(Error::os(&resource, "fcntl(F_OFD_SETLK, presence)", e)),
    }
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(Removal::Initializing),
        Err((_, e)) => return Err(Error::os(&resource, "flock", e)),
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if (m.dev(), m.ino()) == (meta.dev(), meta.ino()) => {}
        Ok(_) => return Ok(Removal::Replaced),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Removal::Gone),
        Err(e) => return Err(Error::os(&resource, "stat", io_errno(&e))),
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Removal::Gone),
        Err(e) => return Err(Error::os(&resource, "unlink", io_errno(&e))),
    }
    drop(file);
    Ok(Removal::Removed)
}
