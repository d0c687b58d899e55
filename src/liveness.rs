//! Liveness the kernel vouches for: open-file-description (OFD) locks on a segment's own
//! file.
//!
//! A pid says nothing reliable about a peer: pids are reused (within the same clock tick
//! of start time, so pid + start time is fooled too), and a process in another PID
//! namespace has another pid or none at all. An OFD lock (`fcntl(F_OFD_SETLK)`) is
//! different: the kernel drops it when the last descriptor of the open file description
//! closes — when its holder exits or is killed — and `F_OFD_GETLK` sees it from any
//! process in any PID namespace. shmkit therefore decides every liveness question with
//! one-byte OFD locks on the segment's file (POSIX shm object, file or memfd), at offsets
//! far beyond its end, where they guard no data:
//!
//! | byte | lock | held by | answers |
//! |------|------|---------|---------|
//! | [`PRESENCE_BYTE`] | shared | every [`Segment`](crate::Segment) handle, for its whole life | "does anybody hold this object open?" (`gc`, `ls`) |
//! | [`CREATOR_BYTE`] | exclusive | the creating handle | "is the creator's handle still open?" (`ls`) |
//! | [`TOKEN_BASE`] + *t* | exclusive | the process that drew token *t* ([`Liveness::token`]) | "is the owner of this lock / claim alive?" (locks, queues) |
//!
//! `gc` removes an object only while holding [`PRESENCE_BYTE`] exclusively
//! ([`remove_if_unused`](crate::segment::remove_if_unused)); an opener takes its shared
//! lock and then checks that the object still has a name, so an object cannot be removed
//! under a process that is opening it.
//!
//! # Tokens
//!
//! A token is a random number in `1..=`[`TOKEN_MAX`], drawn the first time a handle needs
//! one, made exclusive by the lock at `TOKEN_BASE + token` (a collision is refused by the
//! kernel and another number is drawn), and held on a separate open file description until
//! the segment handle drops. Shared state records owners by token
//! (mutex lock words, queue claims); a waiter that suspects a dead owner asks the kernel
//! with one `fcntl(F_OFD_GETLK)`. A hostile peer can write any token into shared state:
//! at worst a live owner is taken for dead (the lock's data is `Pod`, and the victim is
//! told `OwnerDied`) or a dead one for alive (a timeout the caller asked for).
//!
//! # fork
//!
//! A child inherits its parent's descriptors, hence its open file descriptions and their
//! locks: a token inherited that way would keep a dead parent "alive". shmkit registers a
//! `pthread_atfork` child handler that closes, in the child only, every token descriptor
//! inherited (the parent's locks are untouched) and starts a new fork generation; the
//! child draws its own token on first use. The presence lock *is* meant to be shared: a
//! forked child holds the segment too.
//!
//! # References
//! - fcntl(2) "Open file description locks (non-POSIX)"; pthread_atfork(3).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

/// The byte every handle locks shared for as long as it is open.
pub const PRESENCE_BYTE: i64 = 1 << 40;
/// The byte the creating handle locks exclusively for as long as it is open.
pub const CREATOR_BYTE: i64 = PRESENCE_BYTE + 1;
/// Token *t* is the exclusive lock on byte `TOKEN_BASE + t`.
pub const TOKEN_BASE: i64 = 1 << 41;
/// The largest token (tokens are `1..=TOKEN_MAX`; 0 means "nobody"). 30 bits, so that
/// lock words can keep two flag bits beside a token.
pub const TOKEN_MAX: u32 = (1 << 30) - 1;

/// Incremented in every forked child (see the module docs).
static FORK_GENERATION: AtomicU32 = AtomicU32::new(1);

/// Token descriptors to close in a forked child: `id << 32 | fd`, 0 for a free slot.
static TOKEN_FDS: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];
/// Source of registry ids (never 0).
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

extern "C" fn after_fork_in_child() {
    for slot in &TOKEN_FDS {
        let v = slot.swap(0, Ordering::Relaxed);
        if v != 0 {
            // Closing affects only the child's descriptor table (close(2) is
            // async-signal-safe); the owning `Liveness` sees its entry gone and never
            // closes the number again.
            // SAFETY: the fd was registered by a live `Liveness` of the parent, so it is
            // open in this child (inherited) and owned by nobody else here.
            unsafe { libc::close(v as u32 as RawFd) };
        }
    }
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

fn register_atfork(resource: &str) -> Result<()> {
    static RC: std::sync::OnceLock<libc::c_int> = std::sync::OnceLock::new();
    // SAFETY: registers a handler that only touches atomics and calls close(2), both
    // safe in the child of a multi-threaded fork.
    let rc =
        *RC.get_or_init(|| unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) });
    if rc != 0 {
        return Err(Error::os(resource, "pthread_atfork", Errno::from_raw(rc)));
    }
    Ok(())
}

/// 64 random bits from the kernel (`getrandom(2)`), falling back to a mix of the clock,
/// the pid and a counter if it fails (only for names and tokens, never for secrets).
pub(crate) fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: the buffer is 8 writable bytes owned by this frame.
    let n = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, 0) };
    if n == 8 {
        return v;
    }
    static C: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    crate::segment::header::fnv1a64(
        &[
            t.to_le_bytes(),
            u64::from(std::process::id()).to_le_bytes(),
            C.fetch_add(1, Ordering::Relaxed).to_le_bytes(),
        ]
        .concat(),
    )
}

fn flock_at(kind: libc::c_int, byte: i64) -> libc::flock {
    // SAFETY: libc::flock is a plain C struct for which all-zero bytes are valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    fl
}

/// Tries to take a one-byte OFD lock (`F_RDLCK` or `F_WRLCK`) without waiting:
/// `Ok(false)` if another open file description holds a conflicting one.
pub(crate) fn try_lock_byte(fd: impl AsFd, kind: libc::c_int, byte: i64) -> Result<bool, Errno> {
    let fl = flock_at(kind, byte);
    match nix::fcntl::fcntl(fd, FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN) | Err(Errno::EACCES) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Like [`try_lock_byte`], retrying with a capped back-off until `timeout` (OFD locks have
/// no timed form; the blocking `F_OFD_SETLKW` could wait forever).
pub(crate) fn lock_byte_bounded(
    fd: impl AsFd,
    kind: libc::c_int,
    byte: i64,
    timeout: Duration,
) -> Result<bool, Errno> {
    let fd = fd.as_fd();
    let start = Instant::now();
    let mut pause = Duration::from_micros(10);
    loop {
        match try_lock_byte(fd, kind, byte) {
            Ok(true) => return Ok(true),
            Ok(false) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(2));
    }
}

/// Whether an open file description other than `fd`'s holds a lock on `byte` that
/// conflicts with `kind` (`F_OFD_GETLK`). Needs only read access to the file.
pub(crate) fn byte_held(fd: impl AsFd, kind: libc::c_int, byte: i64) -> Result<bool, Errno> {
    let mut fl = flock_at(kind, byte);
    nix::fcntl::fcntl(fd, FcntlArg::F_OFD_GETLK(&mut fl))?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Whether some process holds `token` on the object open as `file` (any open file
/// description but `file`'s own): one `fcntl(F_OFD_GETLK)`, which needs only read access,
/// so a tool can ask without mapping or opening the object as a segment. 0 and values
/// above [`TOKEN_MAX`] are nobody's (`Some(false)`); `None` if the kernel refused.
pub fn token_held(file: &File, token: u32) -> Option<bool> {
    if token == 0 || token > TOKEN_MAX {
        return Some(false);
    }
    byte_held(file, libc::F_WRLCK, TOKEN_BASE + i64::from(token)).ok()
}

/// The liveness context of one segment handle: the object's file (holding the presence
/// lock, and the creator lock for the creating handle) and this handle's token on it.
///
/// Obtained with [`Segment::liveness`](crate::Segment::liveness). Costs one file
/// descriptor per handle, plus one more once a token is drawn (locks and queues draw one;
/// `Value`, `Array` and `Event` never do).
#[derive(Debug)]
pub struct Liveness {
    file: File,
    resource: String,
    /// `generation << 32 | token` of the token this handle holds (0: none yet).
    cached: AtomicU64,
    /// The token's descriptor (-1: none), published only once it is registered for the
    /// fork handler and locked.
    token_fd: AtomicI32,
    /// Its registry slot and entry (`id << 32 | fd`), set before `token_fd` is published.
    token_slot: AtomicI32,
    token_entry: AtomicU64,
    /// Serialises the slow path; holds the fork generation of the thread inside (0: free),
    /// so that a child can take over a slow path its parent was in at fork time.
    slow: AtomicU32,
}

impl Liveness {
    /// Wraps the object's file and takes the presence lock on it (shared), waiting at most
    /// `wait` while `gc` holds it exclusively (`timeout` is what the caller configured, for
    /// the error). Returns `Ok(None)` for a named object that lost its name meanwhile
    /// (removed by `gc` or `rm`: the caller opens or creates again).
    pub(crate) fn attach(
        file: File,
        named: bool,
        wait: Duration,
        timeout: Duration,
        resource: &str,
    ) -> Result<Option<Liveness>> {
        register_atfork(resource)?;
        match lock_byte_bounded(&file, libc::F_RDLCK, PRESENCE_BYTE, wait) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::Timeout {
                    resource: resource.to_owned(),
                    op: "take the presence lock (is shmkit gc removing the object?)",
                    timeout,
                });
            }
            Err(e) => return Err(Error::os(resource, "fcntl(F_OFD_SETLK, presence)", e)),
        }
        if named {
            let st = nix::sys::stat::fstat(&file).map_err(|e| Error::os(resource, "fstat", e))?;
            if st.st_nlink == 0 {
                return Ok(None);
            }
        }
        Ok(Some(Liveness {
            file,
            resource: resource.to_owned(),
            cached: AtomicU64::new(0),
            token_fd: AtomicI32::new(-1),
            token_slot: AtomicI32::new(-1),
            token_entry: AtomicU64::new(0),
            slow: AtomicU32::new(0),
        }))
    }

    /// Marks this handle as the creator's (exclusive lock on [`CREATOR_BYTE`]).
    pub(crate) fn claim_creator(&self) -> Result<()> {
        match try_lock_byte(&self.file, libc::F_WRLCK, CREATOR_BYTE) {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::os(&self.resource, "fcntl(F_OFD_SETLK, creator)", e)),
        }
    }

    /// The object's file (the open file description holding the presence lock).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// This handle's token on this object (`1..=TOKEN_MAX`): drawn and locked on the
    /// first call, held until the handle drops. After that, one atomic load and a
    /// compare: no system call, no allocation. In a forked child, the first call draws a
    /// new one (the parent's was closed by the fork handler).
    #[inline]
    pub fn token(&self) -> Result<u32> {
        match self.token_if_drawn() {
            Some(t) => Ok(t),
            None => self.token_slow(),
        }
    }

    /// This handle's token if this process has already drawn it (`None` before the first
    /// [`token`](Self::token) call, and in a forked child until it draws its own): one
    /// atomic load and a compare, never a system call. For releases, which only concern
    /// a token drawn earlier.
    #[inline]
    pub(crate) fn token_if_drawn(&self) -> Option<u32> {
        let c = self.cached.load(Ordering::Acquire);
        (c != 0 && (c >> 32) as u32 == FORK_GENERATION.load(Ordering::Relaxed)).then_some(c as u32)
    }

    #[cold]
    fn token_slow(&self) -> Result<u32> {
        let generation = FORK_GENERATION.load(Ordering::Relaxed);
        // Take the slow-path lock; one held by a thread of an earlier generation (the
        // parent, before fork) is stale and taken over.
        loop {
            let cur = self.slow.load(Ordering::Acquire);
            if (cur == 0 || cur != generation)
                && self
                    .slow
                    .compare_exchange(cur, generation, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                break;
            }
            std::thread::yield_now();
        }
        let result = self.draw_token(generation);
        self.slow.store(0, Ordering::Release);
        result
    }

    fn draw_token(&self, generation: u32) -> Result<u32> {
        let c = self.cached.load(Ordering::Acquire);
        if c != 0 && (c >> 32) as u32 == generation {
            return Ok(c as u32);
        }
        // A token of an earlier generation is the parent's: the fork handler closed our
        // copy; forget it.
        self.release_token();
        let resource = self.resource.as_str();
        let path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        let fd = nix::fcntl::open(
            path.as_str(),
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            Error::os_with_advice(
                resource,
                "open(/proc/self/fd/N) for a liveness token",
                e,
                "shmkit needs /proc mounted to reopen a segment",
            )
        })?;
        // Register the descriptor for the fork handler *before* it holds any lock, so that
        // a child forked at any point from here on closes its copy, and publish it in
        // `token_fd` only once registered and locked: a child forked in between has
        // nothing of ours to close twice.
        let raw = std::os::fd::IntoRawFd::into_raw_fd(File::from(fd));
        let Some((slot, entry)) = register(raw) else {
            // SAFETY: `raw` came from into_raw_fd just above and was never shared.
            drop(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(raw) });
            return Err(Error::invalid(
                resource,
                "draw a liveness token",
                "more than 1024 segment handles of this process hold a liveness token; drop some handles",
            ));
        };
        self.token_slot.store(slot as i32, Ordering::Release);
        self.token_entry.store(entry, Ordering::Release);
        for _ in 0..64 {
            let t = (random_u64() % u64::from(TOKEN_MAX)) as u32 + 1;
            // SAFETY: `raw` is open: registered above and owned by this call until
            // published (only a fork handler in a *child* closes registered fds).
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
            match try_lock_byte(fd, libc::F_WRLCK, TOKEN_BASE + i64::from(t)) {
                Ok(true) => {
                    self.token_fd.store(raw, Ordering::Release);
                    self.cached.store(
                        u64::from(generation) << 32 | u64::from(t),
                        Ordering::Release,
                    );
                    return Ok(t);
                }
                Ok(false) => continue,
                Err(e) => {
                    self.token_fd.store(raw, Ordering::Release);
                    self.release_token();
                    return Err(Error::os(resource, "fcntl(F_OFD_SETLK, token)", e));
                }
            }
        }
        self.token_fd.store(raw, Ordering::Release);
        self.release_token();
        Err(Error::invalid(
            resource,
            "draw a liveness token",
            "64 random tokens in a row were taken: some process holds locks on most token bytes",
        ))
    }

    /// Gives up the token this handle holds, if this process owns its descriptor.
    fn release_token(&self) {
        let token = self.cached.swap(0, Ordering::AcqRel) as u32;
        let fd = self.token_fd.swap(-1, Ordering::AcqRel);
        let slot = self.token_slot.swap(-1, Ordering::AcqRel);
        let entry = self.token_entry.swap(0, Ordering::AcqRel);
        if fd < 0 || slot < 0 {
            return;
        }
        let reg = &TOKEN_FDS[slot as usize];
        // The entry is still there only in the process that registered it: a forked child
        // finds it cleared by its fork handler, which already closed the child's copy
        // (the open file description is the parent's: never unlock it from here).
        if reg.load(Ordering::Acquire) != entry {
            return;
        }
        if token != 0 {
            // Unlock first, so that a copy leaked into a child forked from here on holds
            // nothing.
            // SAFETY: `fd` is open: its registry entry is still ours (see above).
            let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let fl = flock_at(libc::F_UNLCK, TOKEN_BASE + i64::from(token));
            let _ = nix::fcntl::fcntl(bfd, FcntlArg::F_OFD_SETLK(&fl));
        }
        if reg
            .compare_exchange(entry, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: `fd` came from into_raw_fd in draw_token and is owned by this
            // Liveness alone (swapped out above); its registry entry was still ours, so no
            // fork handler closed it in this process.
            drop(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
    }

    /// Whether the holder of `token` on this object is alive: one `fcntl(F_OFD_GETLK)`
    /// (none for this handle's own current token). 0 and values above [`TOKEN_MAX`] are
    /// never alive. An error from the kernel counts as alive (waiting is safe; taking a
    /// live owner's lock is not).
    pub fn token_alive(&self, token: u32) -> bool {
        if token == 0 || token > TOKEN_MAX {
            return false;
        }
        let c = self.cached.load(Ordering::Acquire);
        if c != 0
            && c as u32 == token
            && (c >> 32) as u32 == FORK_GENERATION.load(Ordering::Relaxed)
        {
            return true; // our own, drawn in this process
        }
        token_held(&self.file, token).unwrap_or(true)
    }

    /// Whether another handle (any process, any PID namespace) holds this object open.
    /// Errors count as "yes".
    pub fn others_present(&self) -> bool {
        byte_held(&self.file, libc::F_WRLCK, PRESENCE_BYTE).unwrap_or(true)
    }
}

/// Puts `fd` in the fork handler's registry: `(slot, entry)`, or `None` if it is full.
fn register(fd: RawFd) -> Option<(usize, u64)> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed).max(1);
    let entry = u64::from(id) << 32 | u64::from(fd as u32);
    TOKEN_FDS.iter().enumerate().find_map(|(i, slot)| {
        slot.compare_exchange(0, entry, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
            .then_some((i, entry))
    })
}

impl Drop for Liveness {
    fn drop(&mut self) {
        self.release_token();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd() -> File {
        File::from(
            nix::sys::memfd::memfd_create(c"liveness-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .expect("memfd_create"),
        )
    }

    #[test]
    fn tokens_are_exclusive_and_released_on_drop() {
        let f = memfd();
        let g = f.try_clone().expect("dup"); // same open file description
        let a = Liveness::attach(
            f,
            false,
            Duration::from_secs(1),
            Duration::from_secs(1),
            "t",
        )
        .expect("attach")
        .expect("named");
        let t = a.token().expect("token");
        assert!((1..=TOKEN_MAX).contains(&t));
        assert_eq!(a.token().expect("token again"), t);
        assert!(a.token_alive(t));
        assert!(!a.token_alive(0));
        assert!(!a.token_alive(TOKEN_MAX + 1));
        // Another view of the object (a new open file description) sees the token.
        let other = File::open(format!("/proc/self/fd/{}", g.as_raw_fd())).expect("reopen");
        assert!(byte_held(&other, libc::F_WRLCK, TOKEN_BASE + i64::from(t)).expect("getlk"));
        assert!(byte_held(&other, libc::F_WRLCK, PRESENCE_BYTE).expect("getlk"));
        drop(a);
        assert!(!byte_held(&other, libc::F_WRLCK, TOKEN_BASE + i64::from(t)).expect("getlk"));
        // The presence lock belongs to the description `g` still shares.
        assert!(byte_held(&other, libc::F_WRLCK, PRESENCE_BYTE).expect("getlk"));
        drop(g);
        assert!(!byte_held(&other, libc::F_WRLCK, PRESENCE_BYTE).expect("getlk"));
    }

    #[test]
    fn random_values_differ() {
        assert_ne!(random_u64(), random_u64());
    }
}
