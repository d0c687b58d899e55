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
//! A token is a random number in `1..=`[`TOKEN_MAX`], drawn the first time a process needs
//! one on a segment, made exclusive by the lock at `TOKEN_BASE + token` (a collision is
//! refused by the kernel and another number is drawn), and held on a separate open file
//! description until the segment handle drops. Shared state records owners by token
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
use std::sync::Once;
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
            // SAFETY: the fd was registered by a live `Liveness` of the parent, so it is
            // open in this child (inherited); closing it here affects only the child's
            // descriptor table (close(2) is async-signal-safe). The owning `Liveness`
            // sees its registry entry gone and will not close the number again.
            unsafe { libc::close(v as u32 as RawFd) };
        }
    }
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

fn register_atfork() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only touches atomics and calls close(2), both
        // safe in the child of a multi-threaded fork.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
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

/// The liveness context of one segment handle: the object's file (holding the presence
/// lock, and the creator lock for the creating handle) and this process's token on it.
///
/// Obtained with [`Segment::liveness`](crate::Segment::liveness).
#[derive(Debug)]
pub struct Liveness {
    file: File,
    resource_hint: &'static str,
    /// `generation << 32 | token` of the token this process holds (0: none yet).
    cached: AtomicU64,
    /// The token's descriptor (-1: none) and its registry entry (`id << 32 | fd`, 0: not
    /// registered).
    token_fd: AtomicI32,
    token_entry: AtomicU64,
    token_slot: AtomicI32,
    /// Serialises the slow path; holds the fork generation of the thread inside (0: free),
    /// so that a child can take over a slow path its parent was in at fork time.
    slow: AtomicU32,
}

impl Liveness {
    /// Wraps the object's file and takes the presence lock on it (shared), waiting at most
    /// `timeout` while `gc` holds it exclusively. Returns `Ok(None)` when the object lost
    /// its name while we waited (removed by `gc` or `rm`: the caller opens again).
    pub(crate) fn attach(
        file: File,
        named: bool,
        timeout: Duration,
        resource: &str,
    ) -> Result<Option<Liveness>> {
        register_atfork();
        match lock_byte_bounded(&file, libc::F_RDLCK, PRESENCE_BYTE, timeout) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::Timeout {
                    resource: resource.to_owned(),
                    op: "take the presence lock (shmkit gc is removing the object?)",
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
            resource_hint: if named {
                "segment"
            } else {
                "<anonymous segment>"
            },
            cached: AtomicU64::new(0),
            token_fd: AtomicI32::new(-1),
            token_entry: AtomicU64::new(0),
            token_slot: AtomicI32::new(-1),
            slow: AtomicU32::new(0),
        }))
    }

    /// Marks this handle as the creator's (exclusive lock on [`CREATOR_BYTE`]).
    pub(crate) fn claim_creator(&self, resource: &str) -> Result<()> {
        match try_lock_byte(&self.file, libc::F_WRLCK, CREATOR_BYTE) {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::os(resource, "fcntl(F_OFD_SETLK, creator)", e)),
        }
    }

    /// The object's file (the open file description holding the presence lock).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// This process's token on this object (`1..=TOKEN_MAX`): drawn and locked on the
    /// first call, held until the segment handle drops. After that, one atomic load and a
    /// compare: no system call, no allocation. A forked child draws its own on its first
    /// call.
    #[inline]
    pub fn token(&self) -> Result<u32> {
        let c = self.cached.load(Ordering::Acquire);
        if c != 0 && (c >> 32) as u32 == FORK_GENERATION.load(Ordering::Relaxed) {
            return Ok(c as u32);
        }
        self.token_slow()
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
        // copy if it was registered; close it here if it was not.
        self.release_token();
        let resource = self.resource_hint;
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
        let file = File::from(fd);
        for _ in 0..64 {
            let t = (random_u64() % u64::from(TOKEN_MAX)) as u32 + 1;
            match try_lock_byte(&file, libc::F_WRLCK, TOKEN_BASE + i64::from(t)) {
                Ok(true) => {
                    let raw = std::os::fd::IntoRawFd::into_raw_fd(file);
                    self.token_fd.store(raw, Ordering::Release);
                    self.register(raw);
                    self.cached.store(
                        u64::from(generation) << 32 | u64::from(t),
                        Ordering::Release,
                    );
                    return Ok(t);
                }
                Ok(false) => continue,
                Err(e) => return Err(Error::os(resource, "fcntl(F_OFD_SETLK, token)", e)),
            }
        }
        Err(Error::invalid(
            resource,
            "draw a liveness token",
            "64 random tokens in a row were taken: some process holds locks on most token bytes",
        ))
    }

    fn register(&self, fd: RawFd) {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed).max(1);
        let entry = u64::from(id) << 32 | u64::from(fd as u32);
        for (i, slot) in TOKEN_FDS.iter().enumerate() {
            if slot
                .compare_exchange(0, entry, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.token_entry.store(entry, Ordering::Release);
                self.token_slot.store(i as i32, Ordering::Release);
                return;
            }
        }
        // Registry full: a forked child then closes this descriptor on its first
        // token() call rather than at fork.
        self.token_entry.store(0, Ordering::Release);
        self.token_slot.store(-1, Ordering::Release);
    }

    /// Closes the token descriptor this process still owns, if any.
    fn release_token(&self) {
        let fd = self.token_fd.swap(-1, Ordering::AcqRel);
        self.cached.store(0, Ordering::Release);
        if fd < 0 {
            return;
        }
        let slot = self.token_slot.swap(-1, Ordering::AcqRel);
        let entry = self.token_entry.swap(0, Ordering::AcqRel);
        let owned = if slot >= 0 {
            // Still ours only if the fork handler did not take the entry away (ids make
            // a new entry with the same fd number distinguishable).
            TOKEN_FDS[slot as usize]
                .compare_exchange(entry, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        } else {
            true
        };
        if owned {
            // SAFETY: `fd` came from into_raw_fd in draw_token, is owned by this Liveness
            // alone (swapped out above), and was not closed by the fork handler (its
            // registry entry was still ours, or it was never registered).
            drop(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
    }

    /// Whether the holder of `token` on this object is alive: one `fcntl(F_OFD_GETLK)`.
    /// 0 and values above [`TOKEN_MAX`] are never alive. An error from the kernel counts
    /// as alive (waiting is safe; taking a live owner's lock is not).
    pub fn token_alive(&self, token: u32) -> bool {
        if token == 0 || token > TOKEN_MAX {
            return false;
        }
        if token as u64 == self.cached.load(Ordering::Acquire) & 0xffff_ffff
            && self.token_fd.load(Ordering::Acquire) >= 0
        {
            return true; // our own
        }
        byte_held(&self.file, libc::F_WRLCK, TOKEN_BASE + i64::from(token)).unwrap_or(true)
    }

    /// Whether another handle (any process, any PID namespace) holds this object open.
    /// Errors count as "yes".
    pub fn others_present(&self) -> bool {
        byte_held(&self.file, libc::F_WRLCK, PRESENCE_BYTE).unwrap_or(true)
    }
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
        let a = Liveness::attach(f, false, Duration::from_secs(1), "t")
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
