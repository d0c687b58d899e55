//! Doorbells for [`SlotChannel`](crate::slot::SlotChannel): one per OS wake-up mechanism.
//! Each side has its own bell; `ring(to)` wakes the process on side `to`.

use std::os::fd::AsFd;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use nix::errno::Errno;
use nix::unistd::Pid;
use shmkit::{Error, Result};

use crate::channel::Side;
use crate::slot::Doorbell;

/// Busy-waiting: both sides spin on the slot's cache line. The floor.
pub struct Spin;

impl Doorbell for Spin {
    const SLEEPS: bool = false;
    fn create(_mem: *mut u8) -> Result<Self> {
        Ok(Spin)
    }
    fn sleep(&self, _: Side, _: &AtomicU32, _: u32, _: Duration) -> Result<()> {
        Ok(())
    }
    fn ring(&self, _: Side, _: &AtomicU32) -> Result<()> {
        Ok(())
    }
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// An absolute deadline `d` from now on `clock`.
fn abs_deadline(clock: libc::clockid_t, d: Duration) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the clocks used here always exist.
    unsafe { libc::clock_gettime(clock, &mut now) };
    let mut sec = now.tv_sec + d.as_secs() as libc::time_t;
    let mut nsec = now.tv_nsec + d.subsec_nanos() as libc::c_long;
    if nsec >= 1_000_000_000 {
        sec += 1;
        nsec -= 1_000_000_000;
    }
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

pub(crate) fn abs_realtime(d: Duration) -> libc::timespec {
    abs_deadline(libc::CLOCK_REALTIME, d)
}

/// Raw `futex(2)` on the slot's sequence word (shared, not `FUTEX_PRIVATE_FLAG`: the word
/// lives in a mapping shared by two processes).
pub struct Futex;

impl Doorbell for Futex {
    const SLEEPS: bool = true;
    fn create(_mem: *mut u8) -> Result<Self> {
        Ok(Futex)
    }
    fn sleep(&self, _: Side, word: &AtomicU32, seen: u32, timeout: Duration) -> Result<()> {
        let ts = timespec(timeout);
        // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word` (valid for the call) and
        // the relative timeout `ts`; the other arguments are unused by this operation.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                seen,
                &ts as *const libc::timespec,
                0usize,
                0u32,
            )
        };
        if r == -1 {
            match Errno::last() {
                Errno::EAGAIN | Errno::EINTR | Errno::ETIMEDOUT => {}
                e => return Err(Error::os("futex word", "futex(FUTEX_WAIT)", e)),
            }
        }
        Ok(())
    }
    fn ring(&self, _: Side, word: &AtomicU32) -> Result<()> {
        // SAFETY: FUTEX_WAKE only uses the address of the aligned u32 and the count.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE,
                1i32,
                0usize,
                0usize,
                0u32,
            )
        };
        if r == -1 {
            return Err(Error::os("futex word", "futex(FUTEX_WAKE)", Errno::last()));
        }
        Ok(())
    }
}

/// One `eventfd` per side: `write(1)` rings, `poll` + `read` sleeps (the `poll` bounds the
/// wait; it costs one extra syscall per sleep).
pub struct EventFd {
    fds: [nix::sys::eventfd::EventFd; 2],
}

impl Doorbell for EventFd {
    const SLEEPS: bool = true;
    fn create(_mem: *mut u8) -> Result<Self> {
        let make = || {
            nix::sys::eventfd::EventFd::from_value_and_flags(
                0,
                nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
            )
            .map_err(|e| Error::os("eventfd", "eventfd(EFD_NONBLOCK)", e))
        };
        Ok(EventFd {
            fds: [make()?, make()?],
        })
    }
    fn sleep(&self, side: Side, _: &AtomicU32, _: u32, timeout: Duration) -> Result<()> {
        let fd = &self.fds[side.index()];
        let mut pfd = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = nix::poll::PollTimeout::try_from(timeout.as_millis().min(60_000) as i32)
            .unwrap_or(nix::poll::PollTimeout::MAX);
        match nix::poll::poll(&mut pfd, ms) {
            Ok(0) | Err(Errno::EINTR) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(Error::os("eventfd", "poll", e)),
        }
        match fd.read() {
            Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(Error::os("eventfd", "read", e)),
        }
    }
    fn ring(&self, to: Side, _: &AtomicU32) -> Result<()> {
        match self.fds[to.index()].write(1) {
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(Error::os("eventfd", "write", e)),
        }
    }
}

/// Two process-shared `sem_t` in the shared mapping: `sem_post` rings, `sem_timedwait`
/// sleeps.
pub struct Sem {
    sems: [*mut libc::sem_t; 2],
}

const SEM_STRIDE: usize = 64;

impl Doorbell for Sem {
    const SLEEPS: bool = true;
    fn shm_bytes() -> usize {
        2 * SEM_STRIDE
    }
    fn create(mem: *mut u8) -> Result<Self> {
        const { assert!(std::mem::size_of::<libc::sem_t>() <= SEM_STRIDE) };
        let sems = [
            mem.cast::<libc::sem_t>(),
            mem.wrapping_add(SEM_STRIDE).cast::<libc::sem_t>(),
        ];
        for s in sems {
            // SAFETY: `s` points at SEM_STRIDE zeroed, 64-byte aligned bytes of the shared
            // mapping reserved for this bell (shm_bytes); pshared = 1 for a cross-process sem.
            if unsafe { libc::sem_init(s, 1, 0) } != 0 {
                return Err(Error::os("sem_t", "sem_init(pshared)", Errno::last()));
            }
        }
        Ok(Sem { sems })
    }
    fn sleep(&self, side: Side, _: &AtomicU32, _: u32, timeout: Duration) -> Result<()> {
        let ts = abs_realtime(timeout);
        // SAFETY: the sem_t was initialised by `create` and lives as long as the mapping.
        if unsafe { libc::sem_timedwait(self.sems[side.index()], &ts) } != 0 {
            match Errno::last() {
                Errno::ETIMEDOUT | Errno::EINTR => {}
                e => return Err(Error::os("sem_t", "sem_timedwait", e)),
            }
        }
        Ok(())
    }
    fn ring(&self, to: Side, _: &AtomicU32) -> Result<()> {
        // SAFETY: as in `sleep`.
        if unsafe { libc::sem_post(self.sems[to.index()]) } != 0 {
            return Err(Error::os("sem_t", "sem_post", Errno::last()));
        }
        Ok(())
    }
}

/// A process-shared `pthread_mutex_t` + `pthread_cond_t` (CLOCK_MONOTONIC) per side.
pub struct CondVar {
    pairs: [(*mut libc::pthread_mutex_t, *mut libc::pthread_cond_t); 2],
}

const CV_STRIDE: usize = 128;

impl Doorbell for CondVar {
    const SLEEPS: bool = true;
    fn shm_bytes() -> usize {
        2 * CV_STRIDE
    }
    fn create(mem: *mut u8) -> Result<Self> {
        const {
            assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= 64);
            assert!(std::mem::size_of::<libc::pthread_cond_t>() <= 64);
        };
        let mut pairs = [(std::ptr::null_mut(), std::ptr::null_mut()); 2];
        for (i, pair) in pairs.iter_mut().enumerate() {
            let m = mem
                .wrapping_add(i * CV_STRIDE)
                .cast::<libc::pthread_mutex_t>();
            let c = mem
                .wrapping_add(i * CV_STRIDE + 64)
                .cast::<libc::pthread_cond_t>();
            crate::locks::init_pshared_mutex(m, false)?;
            // SAFETY: `c` points at 64 zeroed, aligned bytes of the shared mapping reserved
            // for this bell; the attribute object is initialised before use and destroyed.
            unsafe {
                let mut attr = std::mem::MaybeUninit::<libc::pthread_condattr_t>::uninit();
                let mut rc = libc::pthread_condattr_init(attr.as_mut_ptr());
                if rc == 0 {
                    rc = libc::pthread_condattr_setpshared(
                        attr.as_mut_ptr(),
                        libc::PTHREAD_PROCESS_SHARED,
                    );
                }
                if rc == 0 {
                    rc = libc::pthread_condattr_setclock(attr.as_mut_ptr(), libc::CLOCK_MONOTONIC);
                }
                if rc == 0 {
                    rc = libc::pthread_cond_init(c, attr.as_ptr());
                    libc::pthread_condattr_destroy(attr.as_mut_ptr());
                }
                if rc != 0 {
                    return Err(Error::os(
                        "pthread_cond_t",
                        "pthread_cond_init(pshared)",
                        Errno::from_raw(rc),
                    ));
                }
            }
            *pair = (m, c);
        }
        Ok(CondVar { pairs })
    }
    fn sleep(&self, side: Side, word: &AtomicU32, seen: u32, timeout: Duration) -> Result<()> {
        let (m, c) = self.pairs[side.index()];
        let ts = abs_deadline(libc::CLOCK_MONOTONIC, timeout);
        // SAFETY: mutex and condvar were initialised (pshared) by `create` in the shared
        // mapping; we lock, maybe wait (which re-locks before returning), and unlock.
        unsafe {
            let rc = libc::pthread_mutex_lock(m);
            if rc != 0 {
                return Err(Error::os(
                    "pthread_mutex_t",
                    "pthread_mutex_lock",
                    Errno::from_raw(rc),
                ));
            }
            if word.load(std::sync::atomic::Ordering::SeqCst) == seen {
                let _ = libc::pthread_cond_timedwait(c, m, &ts);
            }
            libc::pthread_mutex_unlock(m);
        }
        Ok(())
    }
    fn ring(&self, to: Side, _: &AtomicU32) -> Result<()> {
        let (m, c) = self.pairs[to.index()];
        // SAFETY: as in `sleep`. Locking before signalling closes the window between the
        // waiter's check of the word and its cond_wait.
        unsafe {
            let rc = libc::pthread_mutex_lock(m);
            if rc != 0 {
                return Err(Error::os(
                    "pthread_mutex_t",
                    "pthread_mutex_lock",
                    Errno::from_raw(rc),
                ));
            }
            libc::pthread_cond_signal(c);
            libc::pthread_mutex_unlock(m);
        }
        Ok(())
    }
}

/// A real-time signal (`SIGRTMIN+2`) sent with `sigqueue` (the slot's sequence value as the
/// payload), received with `sigtimedwait`; the signal is blocked in both processes, so no
/// handler runs. The message bytes travel in shared memory.
///
/// The signal is sent to the process, so every thread of the measuring process must block
/// it: the harness is single-threaded (a second thread with the signal unblocked would be
/// killed by its default action).
pub struct RtSignal {
    sig: libc::c_int,
    peer: Option<Pid>,
    old_mask: libc::sigset_t,
    creator: Pid,
}

impl RtSignal {
    fn set(&self) -> libc::sigset_t {
        // SAFETY: sigemptyset/sigaddset write into the local set.
        unsafe {
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, self.sig);
            set
        }
    }
}

impl Doorbell for RtSignal {
    const SLEEPS: bool = true;
    fn create(_mem: *mut u8) -> Result<Self> {
        let mut me = RtSignal {
            sig: libc::SIGRTMIN() + 2,
            peer: None,
            // SAFETY: sigset_t is plain data; all-zero is a valid (empty) set.
            old_mask: unsafe { std::mem::zeroed() },
            creator: nix::unistd::getpid(),
        };
        let set = me.set();
        // SAFETY: blocks our signal in the calling thread; the old mask is saved for Drop.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut me.old_mask) };
        if rc != 0 {
            return Err(Error::os(
                "SIGRTMIN+2",
                "pthread_sigmask",
                Errno::from_raw(rc),
            ));
        }
        Ok(me)
    }
    fn attach(&mut self, _: Side, peer: Pid) -> Result<()> {
        self.peer = Some(peer);
        Ok(())
    }
    fn sleep(&self, _: Side, _: &AtomicU32, _: u32, timeout: Duration) -> Result<()> {
        let set = self.set();
        let ts = timespec(timeout);
        // SAFETY: waits for our (blocked) signal; `info` is a valid out-parameter.
        let r = unsafe {
            let mut info = std::mem::zeroed::<libc::siginfo_t>();
            libc::sigtimedwait(&set, &mut info, &ts)
        };
        if r == -1 {
            match Errno::last() {
                Errno::EAGAIN | Errno::EINTR => {}
                e => return Err(Error::os("SIGRTMIN+2", "sigtimedwait", e)),
            }
        }
        Ok(())
    }
    fn ring(&self, _: Side, word: &AtomicU32) -> Result<()> {
        let Some(peer) = self.peer else {
            return Err(Error::invalid(
                "rt-signal",
                "ring",
                "not attached to a peer",
            ));
        };
        let value = libc::sigval {
            sival_ptr: word.load(std::sync::atomic::Ordering::Relaxed) as usize
                as *mut libc::c_void,
        };
        // SAFETY: sigqueue takes a pid, a signal number and a by-value sigval.
        if unsafe { libc::sigqueue(peer.as_raw(), self.sig, value) } != 0 {
            return Err(Error::os(format!("pid {peer}"), "sigqueue", Errno::last()));
        }
        Ok(())
    }
}

impl Drop for RtSignal {
    fn drop(&mut self) {
        if nix::unistd::getpid() != self.creator {
            return;
        }
        let set = self.set();
        let zero = timespec(Duration::ZERO);
        // SAFETY: drains pending instances of our blocked signal (so unblocking it cannot
        // deliver one with the default, fatal action), then restores the saved mask.
        unsafe {
            let mut info = std::mem::zeroed::<libc::siginfo_t>();
            while libc::sigtimedwait(&set, &mut info, &zero) > 0 {}
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut());
        }
    }
}

/// The `raw_sync` crate's `Event` (pthread mutex + condvar, auto-reset), one per side.
pub struct RawSyncEvent {
    events: [Box<dyn raw_sync::events::EventImpl>; 2],
}

const RS_STRIDE: usize = 256;

impl Doorbell for RawSyncEvent {
    const SLEEPS: bool = true;
    fn shm_bytes() -> usize {
        2 * RS_STRIDE
    }
    fn create(mem: *mut u8) -> Result<Self> {
        use raw_sync::events::{Event, EventInit};
        if Event::size_of(None) + 16 > RS_STRIDE {
            return Err(Error::invalid(
                "raw_sync::Event",
                "create",
                "event larger than reserved",
            ));
        }
        let make = |p: *mut u8| {
            // SAFETY: `p` points at RS_STRIDE zeroed shared bytes reserved for this event.
            unsafe { Event::new(p, true) }
                .map(|(e, _)| e)
                .map_err(|e| Error::Unsupported {
                    what: "raw_sync::Event::new",
                    reason: e.to_string(),
                })
        };
        Ok(RawSyncEvent {
            events: [make(mem)?, make(mem.wrapping_add(RS_STRIDE))?],
        })
    }
    fn sleep(&self, side: Side, _: &AtomicU32, _: u32, timeout: Duration) -> Result<()> {
        // A timeout is reported by raw_sync as an error; the caller re-checks the word and
        // its own deadline either way.
        let _ = self.events[side.index()].wait(raw_sync::Timeout::Val(timeout));
        Ok(())
    }
    fn ring(&self, to: Side, _: &AtomicU32) -> Result<()> {
        self.events[to.index()]
            .set(raw_sync::events::EventState::Signaled)
            .map_err(|e| Error::Unsupported {
                what: "raw_sync::Event::set",
                reason: e.to_string(),
            })
    }
}
