//! The init protocol of named segments (create, open, open-or-create, recovery of an
//! abandoned segment): a temporary object published with `link(2)`, an exclusive `flock`
//! held while the creator initialises, openers that wait for `Ready` or find the creator
//! dead. The steps and the reasons are in the [module docs](super).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use crate::liveness::{self, Liveness};
use crate::name::Name;
use crate::process::{ProcessId, boot_tag};

use super::header::{self, HEADER_LEN, MAX_ELEM_ALIGN, PAYLOAD_ALIGN, RawHeader};
use super::{
    Backing, Header, HeaderError, Layout, SHM_DIR, Segment, SegmentOptions, State, io_errno,
};

/// Where a named segment lives, with the operations the init protocol needs.
pub(super) enum Location {
    Shm(Name),
    File(PathBuf),
}

impl Location {
    fn resource(&self) -> String {
        match self {
            Location::Shm(n) => n.to_string(),
            Location::File(p) => p.display().to_string(),
        }
    }

    fn path(&self) -> PathBuf {
        match self {
            Location::Shm(n) => n.fs_path(),
            Location::File(p) => p.clone(),
        }
    }

    fn backing(&self) -> Backing {
        match self {
            Location::Shm(n) => Backing::Shm(n.clone()),
            Location::File(p) => Backing::File(p.clone()),
        }
    }

    fn open_existing(&self, write: bool) -> Result<File> {
        let acc = if write {
            OFlag::O_RDWR
        } else {
            OFlag::O_RDONLY
        };
        let fd: OwnedFd = match self {
            Location::Shm(n) => nix::sys::mman::shm_open(
                n.to_slashed().as_c_str(),
                acc | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
            .map_err(|e| Error::os(self.resource(), "shm_open", e))?,
            Location::File(p) => nix::fcntl::open(
                p.as_path(),
                acc | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::os(self.resource(), "open(O_NOFOLLOW)", e))?,
        };
        Ok(File::from(fd))
    }

    /// A fresh temporary object next to the final name, under an unguessable name
    /// (`.shmkit-init.` + 64 random bits; drawn again if taken).
    fn create_temp(&self, mode: u32) -> Result<(File, PathBuf)> {
        let mut tries = 0;
        loop {
            match self.create_temp_once(mode) {
                Err(Error::Os {
                    errno: Errno::EEXIST,
                    ..
                }) if tries < 16 => tries += 1,
                other => return other,
            }
        }
    }

    fn create_temp_once(&self, mode: u32) -> Result<(File, PathBuf)> {
        let tmp_name = format!(
            "{}init.{:016x}",
            crate::name::RESERVED_PREFIX,
            liveness::random_u64()
        );
        let mode_t = Mode::from_bits_truncate(mode as libc::mode_t);
        let (fd, path): (OwnedFd, PathBuf) = match self {
            Location::Shm(_) => {
                let c = std::ffi::CString::new(format!("/{tmp_name}"))
                    .map_err(|_| Error::invalid(self.resource(), "create", "NUL in name"))?;
                let fd = nix::sys::mman::shm_open(
                    c.as_c_str(),
                    OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
                    mode_t,
                )
                .map_err(|e| Error::os(self.resource(), "shm_open(O_CREAT|O_EXCL)", e))?;
                (fd, Path::new(SHM_DIR).join(&tmp_name))
            }
            Location::File(p) => {
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let tmp = dir.join(&tmp_name);
                let fd = nix::fcntl::open(
                    tmp.as_path(),
                    OFlag::O_RDWR
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    mode_t,
                )
                .map_err(|e| Error::os(self.resource(), "open(O_CREAT|O_EXCL|O_NOFOLLOW)", e))?;
                (fd, tmp)
            }
        };
        // The umask may have narrowed the mode; the caller asked for exactly this one.
        if let Err(e) = nix::sys::stat::fchmod(&fd, mode_t) {
            let _ = std::fs::remove_file(&path);
            return Err(Error::os(self.resource(), "fchmod", e));
        }
        Ok((File::from(fd), path))
    }
}

fn payload_offset_for(align: u64) -> u64 {
    (HEADER_LEN as u64)
        .max(align)
        .next_multiple_of(PAYLOAD_ALIGN as u64)
}

/// Checks a layout and returns (payload offset, total length).
pub(super) fn plan(resource: &str, layout: &Layout) -> Result<(u64, u64)> {
    let e = &layout.elem;
    let bad = |reason: String| Error::invalid(resource, "create", reason);
    if !e.align.is_power_of_two() || e.align > MAX_ELEM_ALIGN {
        return Err(bad(format!(
            "element alignment {} is not a power of two up to 4096",
            e.align
        )));
    }
    if e.size % e.align != 0 {
        return Err(bad(format!(
            "element size {} is not a multiple of alignment {}",
            e.size, e.align
        )));
    }
    match e.total_bytes() {
        Some(n) if n <= layout.payload_len => {}
        _ => {
            return Err(bad(format!(
                "{} elements of {} bytes do not fit a payload of {} bytes",
                e.count, e.size, layout.payload_len
            )));
        }
    }
    let off = payload_offset_for(e.align);
    match off.checked_add(layout.payload_len) {
        Some(total) if total <= isize::MAX as u64 / 2 => Ok((off, total)),
        _ => Err(bad(format!(
            "payload of {} bytes is too large",
            layout.payload_len
        ))),
    }
}

fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Polls a non-blocking `flock` until it succeeds or `timeout` passes.
///
/// `flock(2)` has no timed form; polling with a capped exponential back-off keeps the
/// uncontended case to one system call and the contended one bounded.
fn lock_bounded(
    mut file: File,
    arg: FlockArg,
    timeout: Duration,
    resource: &str,
    what: &'static str,
) -> Result<Flock<File>> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(20);
    loop {
        match Flock::lock(file, arg) {
            Ok(l) => return Ok(l),
            Err((f, Errno::EWOULDBLOCK)) | Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(Error::os(resource, "flock", e)),
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                resource: resource.to_owned(),
                op: what,
                timeout,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(2));
    }
}

/// Copies the header out of a mapping with volatile reads: another process may write the
/// `state` word concurrently, and the copy must not be assumed stable by the compiler.
///
/// # Safety
/// `base` must be valid for reads of [`HEADER_LEN`] bytes and 8-byte aligned.
unsafe fn snapshot(base: *const u8) -> [u8; HEADER_LEN] {
    let mut words = [0u64; HEADER_LEN / 8];
    for (i, w) in words.iter_mut().enumerate() {
        // SAFETY: the caller guarantees HEADER_LEN readable, 8-aligned bytes at `base`.
        *w = unsafe { std::ptr::read_volatile((base as *const u64).add(i)) };
    }
    bytemuck::cast(words)
}

impl SegmentOptions {
    pub(super) fn create_at(
        &self,
        loc: &Location,
        layout: &Layout,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Segment> {
        match self.try_create(loc, layout, init)? {
            Ok(seg) => Ok(seg),
            Err(_init) => Err(Error::os(
                loc.resource(),
                "link (publish new segment)",
                Errno::EEXIST,
            )),
        }
    }

    /// Creates and publishes; `Ok(Err(init))` hands `init` back when the name was taken.
    #[allow(clippy::type_complexity)]
    fn try_create<F: FnOnce(&mut [u8]) -> Result<()>>(
        &self,
        loc: &Location,
        layout: &Layout,
        init: F,
    ) -> Result<Result<Segment, F>> {
        let resource = loc.resource();
        let mode = self.checked_mode(&resource)?;
        let (payload_offset, total) = plan(&resource, layout)?;
        let remove_tmp = |p: &Path| {
            let _ = std::fs::remove_file(p);
        };
        // Until our presence lock is on it, `gc` may take a fresh temporary for a dead
        // creator's and remove it: then draw another.
        let mut tries = 0;
        let (file, tmp_path, live) = loop {
            let (file, tmp_path) = loc.create_temp(mode)?;
            match attach_creator(&file, true, self.timeout, &resource) {
                Ok(Some(live)) => break (file, tmp_path, live),
                Ok(None) if tries < 16 => tries += 1,
                Ok(None) => {
                    return Err(Error::invalid(
                        resource,
                        "create",
                        "16 temporaries in a row were removed before they could be locked (is something deleting .shmkit-init.* files?)",
                    ));
                }
                Err(e) => {
                    remove_tmp(&tmp_path);
                    return Err(e);
                }
            }
        };
        // `ls`/`gc` probe the temporary with a brief shared flock: wait them out, bounded.
        let lock = match lock_bounded(
            file,
            FlockArg::LockExclusiveNonblock,
            self.timeout,
            &resource,
            "lock the new segment",
        ) {
            Ok(l) => l,
            Err(e) => {
                remove_tmp(&tmp_path);
                return Err(e);
            }
        };
        let prepared = size_and_reserve(&lock, total, &resource)
            .and_then(|()| map_file(&lock, total, &resource))
            .map(|map| {
                let ident = lock.metadata().map(|m| (m.dev(), m.ino())).ok();
                write_header(&map, layout, payload_offset, total, self.persistent);
                (map, ident)
            });
        let (map, ident) = match prepared {
            Ok(x) => x,
            Err(e) => {
                remove_tmp(&tmp_path);
                return Err(e);
            }
        };
        let final_path = loc.path();
        let linked = std::fs::hard_link(&tmp_path, &final_path);
        remove_tmp(&tmp_path);
        if let Err(e) = linked {
            return match io_errno(&e) {
                Errno::EEXIST => Ok(Err(init)),
                errno => Err(Error::os(resource, "link (publish new segment)", errno)),
            };
        }
        let seg = finish_init(map, ident, loc.backing(), self.unlink_on_drop, live, init)?;
        drop(lock);
        Ok(Ok(seg))
    }

    pub(super) fn open_at(&self, loc: &Location) -> Result<Segment> {
        let resource = loc.resource();
        let (file, live) = self.open_attached(loc)?;
        let lock = lock_bounded(
            file,
            FlockArg::LockSharedNonblock,
            self.timeout,
            &resource,
            "wait for initialisation",
        )?;
        let seg = map_existing(live, loc.backing(), self.unlink_on_drop)?;
        drop(lock);
        match seg.state() {
            State::Ready => Ok(seg),
            _ => {
                // We hold a shared lock, so the creator's exclusive lock is gone while the
                // segment is not ready: the creator died.
                let pid = seg.header.raw.creator_pid;
                let _ = seg.state_word().compare_exchange(
                    State::Initializing.to_raw(),
                    State::Abandoned.to_raw(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                Err(Error::Abandoned { resource, pid })
            }
        }
    }

    pub(super) fn open_or_create_at(
        &self,
        loc: &Location,
        layout: &Layout,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<(Segment, bool)> {
        let mut init = init;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.open_at(loc) {
                Ok(seg) => {
                    seg.check_layout(layout)?;
                    return Ok((seg, false));
                }
                Err(e) if e.is_not_found() => match self.try_create(loc, layout, init)? {
                    Ok(seg) => return Ok((seg, true)),
                    Err(back) => init = back, // lost the race: open the winner's
                },
                Err(Error::Abandoned { .. }) => {
                    return self.recover(loc, layout, init).map(|s| (s, true));
                }
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    resource: loc.resource(),
                    op: "open_or_create",
                    timeout: self.timeout,
                });
            }
        }
    }

    /// Opens the object and takes this handle's presence lock. An object that lost its
    /// name meanwhile (`gc` or `rm` removed it between our open and our lock) is opened
    /// again by name, so an opener never ends up holding a removed object.
    fn open_attached(&self, loc: &Location) -> Result<(File, Liveness)> {
        let resource = loc.resource();
        let deadline = Instant::now() + self.timeout;
        loop {
            let file = loc.open_existing(true)?;
            let dup = file
                .try_clone()
                .map_err(|e| Error::os(&resource, "dup", io_errno(&e)))?;
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(live) = Liveness::attach(dup, true, left, self.timeout, &resource)? {
                return Ok((file, live));
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    resource,
                    op: "open (the object kept being removed under us)",
                    timeout: self.timeout,
                });
            }
        }
    }

    /// Re-initialises an abandoned segment in place, under the exclusive lock.
    fn recover(
        &self,
        loc: &Location,
        layout: &Layout,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Segment> {
        let resource = loc.resource();
        let (file, live) = self.open_attached(loc)?;
        let lock = lock_bounded(
            file,
            FlockArg::LockExclusiveNonblock,
            self.timeout,
            &resource,
            "recover abandoned segment",
        )?;
        // Someone else may have recovered it while we waited for the lock.
        let current = map_existing(live, loc.backing(), self.unlink_on_drop)?;
        if current.state() == State::Ready {
            drop(lock);
            current.check_layout(layout)?;
            return Ok(current);
        }
        let live = current.into_liveness();
        live.claim_creator()?;
        let (payload_offset, total) = plan(&resource, layout)?;
        size_and_reserve(&lock, total, &resource)?;
        let map = map_file(&lock, total, &resource)?;
        let ident = lock.metadata().map(|m| (m.dev(), m.ino())).ok();
        // Zero the payload: the dead creator may have written part of it.
        // SAFETY: the map is `total` bytes long; we hold the exclusive lock, and no
        // process uses a segment that is not Ready.
        unsafe { std::ptr::write_bytes(map.as_mut_ptr(), 0, total as usize) };
        write_header(&map, layout, payload_offset, total, self.persistent);
        let seg = finish_init(map, ident, loc.backing(), self.unlink_on_drop, live, init)?;
        drop(lock);
        Ok(seg)
    }
}

/// `ftruncate` plus `posix_fallocate`, so that a full tmpfs fails here.
pub(super) fn size_and_reserve(file: &File, total: u64, resource: &str) -> Result<()> {
    nix::unistd::ftruncate(file, total as libc::off_t)
        .map_err(|e| Error::os(resource, "ftruncate", e))?;
    match nix::fcntl::posix_fallocate(file, 0, total as libc::off_t) {
        Ok(()) => Ok(()),
        Err(Errno::EOPNOTSUPP) | Err(Errno::EINVAL) if total == 0 => Ok(()),
        Err(Errno::EOPNOTSUPP) => Ok(()), // file systems without fallocate: best effort
        Err(e) => {
            let _ = nix::unistd::ftruncate(file, 0);
            Err(Error::os(
                resource,
                "posix_fallocate (reserving the segment's pages)",
                e,
            ))
        }
    }
}

pub(super) fn map_file(file: &File, len: u64, resource: &str) -> Result<MmapRaw> {
    MmapOptions::new()
        .len(len as usize)
        .map_raw(file)
        .map_err(|e| Error::os(resource, "mmap(MAP_SHARED)", io_errno(&e)))
}

/// Writes the header (state `Initializing`) into a fresh mapping.
pub(super) fn write_header(
    map: &MmapRaw,
    layout: &Layout,
    payload_offset: u64,
    total: u64,
    persistent: bool,
) {
    let me = ProcessId::current();
    let mut layout = *layout;
    if persistent {
        layout.flags |= header::FLAG_PERSISTENT;
    }
    let layout = &layout;
    let raw = header::build(
        layout.kind,
        layout,
        total,
        payload_offset,
        me.pid,
        me.start_time,
        now_unix_ns(),
        boot_tag(),
    );
    // SAFETY: the mapping is at least HEADER_LEN bytes (plan() adds the header) and
    // page-aligned; the object is not yet Ready, so by protocol no other process reads or
    // writes it.
    unsafe { std::ptr::write_volatile(map.as_mut_ptr() as *mut RawHeader, raw) };
}

/// Runs `init` on the payload, then publishes `Ready`.
pub(super) fn finish_init(
    map: MmapRaw,
    identity: Option<(u64, u64)>,
    backing: Backing,
    unlink_on_drop: bool,
    liveness: Liveness,
    init: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<Segment> {
    // SAFETY: we wrote a valid header into this mapping just before.
    let bytes = unsafe { snapshot(map.as_ptr()) };
    let header = Header::parse(&bytes, map.len() as u64).map_err(|source| Error::Header {
        resource: backing.resource(),
        source,
    })?;
    let seg = Segment {
        map,
        header,
        backing,
        identity,
        unlink_on_drop,
        liveness,
    };
    let range = seg.header.payload_range();
    // SAFETY: the payload range was validated to lie inside the mapping; the segment is
    // not Ready and we hold the exclusive lock (or it is anonymous and unshared), so this
    // is the only reference to these bytes until `init` returns.
    let payload = unsafe {
        std::slice::from_raw_parts_mut(seg.map.as_mut_ptr().add(range.start), range.len())
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init(payload))) {
        Ok(Ok(())) => {
            seg.state_word()
                .store(State::Ready.to_raw(), Ordering::Release);
            Ok(seg)
        }
        Ok(Err(e)) => {
            seg.state_word()
                .store(State::Abandoned.to_raw(), Ordering::Release);
            let _ = seg.unlink_self();
            Err(e)
        }
        Err(panic) => {
            seg.state_word()
                .store(State::Abandoned.to_raw(), Ordering::Release);
            let _ = seg.unlink_self();
            std::panic::resume_unwind(panic)
        }
    }
}

/// Maps an existing object and validates its header (any state).
pub(super) fn map_existing(
    liveness: Liveness,
    backing: Backing,
    unlink_on_drop: bool,
) -> Result<Segment> {
    let resource = backing.resource();
    let file = liveness.file();
    let meta = file
        .metadata()
        .map_err(|e| Error::os(&resource, "fstat", io_errno(&e)))?;
    let len = meta.len();
    if len < HEADER_LEN as u64 {
        return Err(Error::Header {
            resource,
            source: HeaderError::TooShort { len },
        });
    }
    let map = map_file(file, len, &resource)?;
    // SAFETY: the mapping is `len >= HEADER_LEN` bytes and page-aligned.
    let bytes = unsafe { snapshot(map.as_ptr()) };
    let header = Header::parse(&bytes, len).map_err(|source| Error::Header { resource, source })?;
    Ok(Segment {
        map,
        header,
        backing,
        identity: Some((meta.dev(), meta.ino())),
        unlink_on_drop,
        liveness,
    })
}

/// Takes the presence and creator locks for a new object (a temporary, or a memfd),
/// through a duplicate of `file` (same open file description). `None`: the temporary was
/// removed before we locked it.
pub(super) fn attach_creator(
    file: &File,
    named: bool,
    timeout: Duration,
    resource: &str,
) -> Result<Option<Liveness>> {
    let dup = file
        .try_clone()
        .map_err(|e| Error::os(resource, "dup", io_errno(&e)))?;
    let Some(live) = Liveness::attach(dup, named, timeout, timeout, resource)? else {
        return Ok(None);
    };
    live.claim_creator()?;
    Ok(Some(live))
}
