//! The lock adapters: one lock object in shared memory, locked and unlocked by one process
//! (uncontended) or by two processes in turn (contended).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use nix::errno::Errno;
use shmkit::{Error, Result};

use crate::shm::SharedMem;

/// A lock living in shared memory, usable from both sides of a fork.
///
/// Lock-and-unlock adapters implement [`Lock::lock`] and [`Lock::unlock`]; guard-based
/// APIs (shmkit's `Mutex`) override [`Lock::critical`] instead and leave the other two
/// unreachable through the harness.
pub trait Lock {
    /// Acquires the lock (bounded: fails rather than waiting forever).
    fn lock(&self) -> Result<()>;
    /// Releases it.
    fn unlock(&self) -> Result<()>;
    /// Runs `f` with the lock held: what the workloads call.
    #[inline]
    fn critical(&self, f: &mut dyn FnMut()) -> Result<()> {
        self.lock()?;
        f();
        self.unlock()
    }
}

/// One lock mechanism: stable id, a note, and a constructor (called before the fork).
#[derive(Clone, Copy)]
pub struct LockSpec {
    /// Stable id (`cas-spinlock`, `pthread-mutex`, ...).
    pub id: &'static str,
    /// Spinning or sleeping when contended.
    pub style: crate::Style,
    /// A short note for the table.
    pub note: &'static str,
    /// Creates the lock in fresh shared memory.
    pub make: fn() -> Result<Box<dyn Lock>>,
}

impl std::fmt::Debug for LockSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockSpec").field("id", &self.id).finish()
    }
}

/// Initialises a process-shared (optionally robust) `pthread_mutex_t` at `m`, which must
/// point at zeroed, aligned shared memory reserved for it.
pub(crate) fn init_pshared_mutex(m: *mut libc::pthread_mutex_t, robust: bool) -> Result<()> {
    // SAFETY: the caller reserved `m` for this mutex; the attribute object is local,
    // initialised before use and destroyed after.
    let rc = unsafe {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        let mut rc = libc::pthread_mutexattr_init(attr.as_mut_ptr());
        if rc == 0 {
            rc =
                libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        }
        if rc == 0 && robust {
            rc = libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
        }
        if rc == 0 {
            rc = libc::pthread_mutex_init(m, attr.as_ptr());
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        }
        rc
    };
    if rc != 0 {
        return Err(Error::os(
            "pthread_mutex_t",
            "pthread_mutex_init(pshared)",
            Errno::from_raw(rc),
        ));
    }
    Ok(())
}

/// Test-and-test-and-set spinlock on one `AtomicU32`.
pub struct CasSpinlock {
    mem: SharedMem,
}

impl CasSpinlock {
    /// A spinlock in a fresh anonymous segment.
    pub fn boxed() -> Result<Box<dyn Lock>> {
        Ok(Box::new(CasSpinlock {
            mem: SharedMem::anonymous(64)?,
        }))
    }
    fn word(&self) -> &AtomicU32 {
        // SAFETY: the mapping is at least 64 bytes, 64-byte aligned, lives as long as self;
        // AtomicU32 may alias memory the peer writes.
        unsafe { &*(self.mem.ptr() as *const AtomicU32) }
    }
}

impl Lock for CasSpinlock {
    #[inline]
    fn lock(&self) -> Result<()> {
        let w = self.word();
        if w.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(());
        }
        let mut start: Option<Instant> = None;
        let mut spins = 0u32;
        loop {
            while w.load(Ordering::Relaxed) != 0 {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins & 0xFFFF == 0 {
                    let now = Instant::now();
                    if now.duration_since(*start.get_or_insert(now)) > crate::slot::WAIT_LIMIT {
                        return Err(Error::Timeout {
                            resource: "cas-spinlock".into(),
                            op: "lock",
                            timeout: crate::slot::WAIT_LIMIT,
                        });
                    }
                }
            }
            if w.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(());
            }
        }
    }
    #[inline]
    fn unlock(&self) -> Result<()> {
        self.word().store(0, Ordering::Release);
        Ok(())
    }
}

/// A process-shared `pthread_mutex_t` (`robust` selects `PTHREAD_MUTEX_ROBUST`).
pub struct PthreadMutex {
    mem: SharedMem,
    robust: bool,
}

impl PthreadMutex {
    /// A default-type pshared mutex.
    pub fn plain() -> Result<Box<dyn Lock>> {
        Self::make(false)
    }
    /// A robust pshared mutex.
    pub fn robust() -> Result<Box<dyn Lock>> {
        Self::make(true)
    }
    fn make(robust: bool) -> Result<Box<dyn Lock>> {
        let mem = SharedMem::anonymous(64)?;
        init_pshared_mutex(mem.ptr().cast(), robust)?;
        Ok(Box::new(PthreadMutex { mem, robust }))
    }
    fn ptr(&self) -> *mut libc::pthread_mutex_t {
        self.mem.ptr().cast()
    }
}

impl Lock for PthreadMutex {
    #[inline]
    fn lock(&self) -> Result<()> {
        // SAFETY: the mutex was initialised by `make` in shared memory that lives as long
        // as self.
        let rc = unsafe { libc::pthread_mutex_lock(self.ptr()) };
        match rc {
            0 => Ok(()),
            libc::EOWNERDEAD if self.robust => {
                // The benchmark's peer died holding it: repair and report.
                // SAFETY: we own the mutex after EOWNERDEAD.
                unsafe {
                    libc::pthread_mutex_consistent(self.ptr());
                    libc::pthread_mutex_unlock(self.ptr());
                }
                Err(Error::Disconnected {
                    resource: "pthread-robust-mutex".into(),
                    op: "lock",
                    detail: Some("the other process died holding the lock".into()),
                })
            }
            e => Err(Error::os(
                "pthread_mutex_t",
                "pthread_mutex_lock",
                Errno::from_raw(e),
            )),
        }
    }
    #[inline]
    fn unlock(&self) -> Result<()> {
        // SAFETY: as in `lock`; called only by the holder.
        let rc = unsafe { libc::pthread_mutex_unlock(self.ptr()) };
        if rc != 0 {
            return Err(Error::os(
                "pthread_mutex_t",
                "pthread_mutex_unlock",
                Errno::from_raw(rc),
            ));
        }
        Ok(())
    }
}

/// The `raw_sync` crate's `Mutex` (a pshared, non-robust `pthread_mutex_t`).
pub struct RawSyncMutex {
    _mem: SharedMem,
    inner: Box<dyn raw_sync::locks::LockImpl>,
}

impl RawSyncMutex {
    /// A raw_sync mutex in a fresh anonymous segment.
    pub fn boxed() -> Result<Box<dyn Lock>> {
        use raw_sync::locks::{LockInit, Mutex};
        let mem = SharedMem::anonymous(256)?;
        // SAFETY: 256 zeroed shared bytes reserved for the mutex (it needs ~48) and a data
        // pointer into the same mapping that we never dereference through raw_sync.
        let (inner, _) =
            unsafe { Mutex::new(mem.ptr(), mem.ptr().wrapping_add(128)) }.map_err(|e| {
                Error::Unsupported {
                    what: "raw_sync::Mutex::new",
                    reason: e.to_string(),
                }
            })?;
        Ok(Box::new(RawSyncMutex { _mem: mem, inner }))
    }
}

impl Lock for RawSyncMutex {
    #[inline]
    fn lock(&self) -> Result<()> {
        let guard = self.inner.lock().map_err(|e| Error::Unsupported {
            what: "raw_sync::Mutex::lock",
            reason: e.to_string(),
        })?;
        // Keep it locked past the guard: `unlock` releases it.
        std::mem::forget(guard);
        Ok(())
    }
    #[inline]
    fn unlock(&self) -> Result<()> {
        self.inner.release().map_err(|e| Error::Unsupported {
            what: "raw_sync::Mutex::release",
            reason: e.to_string(),
        })
    }
}
