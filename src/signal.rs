//! Signal-driven events: notify a process with a real-time signal (`SIGRTMIN+n`) that
//! carries a 64-bit payload ([`SignalNotifier`]), and receive those notifications in
//! order through a pollable `signalfd` ([`SignalListener`]). No signal handler is ever
//! installed, so no user code runs in signal context.
//!
//! # Masking (read this before using it)
//! A real-time signal whose default action runs kills the process. The listener
//! therefore requires the signal to be **blocked in every thread** of the receiving
//! process; blocked signals stay queued until `signalfd` reads them. A thread inherits
//! its creator's mask, so:
//! - create the [`SignalListener`] (or call [`block`]) in `main` **before spawning any
//!   thread**; every later thread inherits the blocked mask;
//! - [`SignalListener::new`] blocks the signal in the calling thread, then checks every
//!   thread of the process (`/proc/self/task/*/status`, `SigBlk`) and fails, naming the
//!   threads, if one of them could still take the signal's default action (a thread
//!   that is being created at that very moment can escape the check: glibc starts new
//!   threads with all signals blocked and installs the inherited mask a moment later);
//! - every receive checks that the calling thread blocks it (one `pthread_sigmask`
//!   query) and fails otherwise.
//!
//! A notifier must only signal processes that have set up a listener (a process that
//! has not would be killed): hand out your pid only after the listener exists.
//!
//! # Ordering, capacity, overflow
//! Real-time signals are queued, not merged: every `sigqueue` is one queue entry,
//! delivered in sending order (per signal number; lower numbers first across numbers).
//! The queue is bounded by `RLIMIT_SIGPENDING` (`ulimit -i`, counted per receiving user
//! across all its processes); when it is full, [`SignalNotifier::notify`] fails with
//! `EAGAIN` and says so. Nothing is lost silently.
//!
//! ```
//! use shmkit::signal::{SignalListener, SignalNotifier};
//! match SignalListener::new(3) {
//!     Ok(listener) => {
//!         SignalNotifier::new(3)?.notify(std::process::id(), 42)?;
//!         let m = listener.recv_timeout(std::time::Duration::from_secs(5))?;
//!         assert_eq!(m.payload, 42);
//!     }
//!     // Another thread (here: the test runner's) was already running without the
//!     // signal blocked: the listener refuses rather than risk the process.
//!     Err(e) => assert!(e.to_string().contains("before spawning threads"), "{e}"),
//! }
//! # Ok::<(), shmkit::Error>(())
//! ```
//!
//! # References
//! `signal(7)` (real-time signals, queueing), `sigqueue(3)`, `signalfd(2)`,
//! `pthread_sigmask(3)`, `proc_pid_status(5)` (`SigBlk`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::error::{Error, Result};

/// The signal number of `SIGRTMIN+n`, checked against `SIGRTMAX`.
///
/// ```
/// let s = shmkit::signal::rt_signal(0)?;
/// assert_eq!(s, libc::SIGRTMIN());
/// assert!(shmkit::signal::rt_signal(1000).is_err());
/// # Ok::<(), shmkit::Error>(())
/// ```
pub fn rt_signal(n: u32) -> Result<libc::c_int> {
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    i32::try_from(n)
        .ok()
        .and_then(|n| min.checked_add(n))
        .filter(|s| *s <= max)
        .ok_or_else(|| {
            Error::invalid(
                format!("SIGRTMIN+{n}"),
                "real-time signal",
                format!(
                    "n must be at most {} (SIGRTMIN={min}, SIGRTMAX={max})",
                    max - min
                ),
            )
        })
}

fn sigset_of(signo: libc::c_int) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set; sigaddset only fails for invalid
    // signal numbers, and `signo` comes from `rt_signal`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signo);
        set
    }
}

fn signal_name(signo: libc::c_int) -> String {
    format!("SIGRTMIN+{}", signo - libc::SIGRTMIN())
}

/// Blocks `SIGRTMIN+n` in the calling thread (`pthread_sigmask(SIG_BLOCK)`). Call it in
/// `main` before spawning threads so that every thread inherits it.
///
/// ```
/// shmkit::signal::block(5)?;
/// assert!(shmkit::signal::is_blocked(5)?);
/// # Ok::<(), shmkit::Error>(())
/// ```
#[doc(alias("sigprocmask", "pthread_sigmask"))]
pub fn block(n: u32) -> Result<()> {
    let signo = rt_signal(n)?;
    let set = sigset_of(signo);
    // SAFETY: `set` is an initialised sigset; a null old-set pointer is allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(Error::os(
            signal_name(signo),
            "pthread_sigmask(SIG_BLOCK)",
            Errno::from_raw(r),
        ));
    }
    Ok(())
}

/// Whether `SIGRTMIN+n` is blocked in the calling thread.
pub fn is_blocked(n: u32) -> Result<bool> {
    thread_blocks(rt_signal(n)?)
}

fn thread_blocks(signo: libc::c_int) -> Result<bool> {
    // SAFETY: querying the mask: a null new set, an out-parameter that sigemptyset
    // initialises first.
    unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut cur);
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
        if r != 0 {
            return Err(Error::os(
                signal_name(signo),
                "pthread_sigmask",
                Errno::from_raw(r),
            ));
        }
        Ok(libc::sigismember(&cur, signo) == 1)
    }
}

/// Threads of this process that do not block `signo`, from `/proc/self/task/*/status`.
fn threads_not_blocking(signo: libc::c_int) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let bit = 1u64 << (signo - 1);
    let mut bad = Vec::new();
    for ent in dir.flatten() {
        let Ok(status) = std::fs::read_to_string(ent.path().join("status")) else {
            continue; // the thread exited meanwhile
        };
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
        if blocked.is_some_and(|m| m & bit == 0) {
            if let Some(tid) = ent.file_name().to_str().and_then(|t| t.parse().ok()) {
                bad.push(tid);
            }
        }
    }
    bad
}

/// Sends `SIGRTMIN+n` with a payload to other processes (`sigqueue(3)`).
///
/// ```
/// let n = shmkit::signal::SignalNotifier::new(2)?;
/// assert_eq!(n.signal(), libc::SIGRTMIN() + 2);
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct SignalNotifier {
    signo: libc::c_int,
}

impl SignalNotifier {
    /// A notifier for `SIGRTMIN+n`.
    pub fn new(n: u32) -> Result<Self> {
        Ok(SignalNotifier {
            signo: rt_signal(n)?,
        })
    }

    /// The signal number it sends.
    pub fn signal(&self) -> libc::c_int {
        self.signo
    }

    /// Queues the signal with `payload` for process `pid`. The receiver must have a
    /// [`SignalListener`] for this signal (see the module docs). Errors: `pid` gone →
    /// [`Error::Disconnected`]; the receiver's queue full (`EAGAIN`) → [`Error::Os`]
    /// naming `RLIMIT_SIGPENDING`.
    #[doc(alias = "sigqueue")]
    pub fn notify(&self, pid: u32, payload: u64) -> Result<()> {
        let resource = format!("pid {pid} ({})", signal_name(self.signo));
        let Ok(pid_t) = libc::pid_t::try_from(pid) else {
            return Err(Error::invalid(resource, "sigqueue", "pid out of range"));
        };
        if pid_t <= 0 {
            return Err(Error::invalid(resource, "sigqueue", "pid must be positive"));
        }
        let value = libc::sigval {
            sival_ptr: payload as usize as *mut libc::c_void,
        };
        // SAFETY: plain system call with a valid pid, signal number and sigval; the
        // pointer member only carries the integer payload and is never dereferenced.
        let r = unsafe { libc::sigqueue(pid_t, self.signo, value) };
        match Errno::result(r) {
            Ok(_) => Ok(()),
            Err(Errno::ESRCH) => Err(Error::Disconnected {
                resource,
                op: "sigqueue",
                detail: Some("no such process".into()),
            }),
            Err(e @ Errno::EAGAIN) => Err(Error::os_with_advice(
                resource,
                "sigqueue",
                e,
                "the queue of pending signals is full: RLIMIT_SIGPENDING (`ulimit -i`, per receiving user) is reached; the receiver is not draining its listener; retry later or raise the limit",
            )),
            Err(e @ Errno::EPERM) => Err(Error::os_with_advice(
                resource,
                "sigqueue",
                e,
                "not allowed to signal that process (different user, no CAP_KILL)",
            )),
            Err(e) => Err(Error::os(resource, "sigqueue", e)),
        }
    }
}

/// One received notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalMessage {
    /// The payload given to [`SignalNotifier::notify`] (0 for a plain `kill`).
    pub payload: u64,
    /// The sender's pid.
    pub sender_pid: u32,
    /// The sender's real uid.
    pub sender_uid: u32,
    /// True when sent with `sigqueue` (`SI_QUEUE`), false for `kill` and others.
    pub queued: bool,
}

/// Receives `SIGRTMIN+n` notifications through a `signalfd` (pollable). See the
/// [module docs](self) for the masking rules. Dropping it closes the `signalfd` but leaves
/// the signal blocked: a notification arriving later stays queued instead of killing the
/// process. Two listeners for one signal in one process share one queue.
#[doc(alias = "SignalEvent")]
#[derive(Debug)]
pub struct SignalListener {
    signo: libc::c_int,
    fd: OwnedFd,
}

impl SignalListener {
    /// Blocks `SIGRTMIN+n` in the calling thread, checks that every thread of the
    /// process blocks it, and opens a `signalfd` for it (`SFD_NONBLOCK|SFD_CLOEXEC`).
    #[doc(alias = "signalfd")]
    pub fn new(n: u32) -> Result<Self> {
        let signo = rt_signal(n)?;
        block(n)?;
        let bad = threads_not_blocking(signo);
        if !bad.is_empty() {
            return Err(Error::invalid(
                signal_name(signo),
                "SignalListener::new",
                format!(
                    "threads {bad:?} do not block the signal, so it could kill the process; create the listener (or call shmkit::signal::block({n})) in main before spawning threads"
                ),
            ));
        }
        let set = sigset_of(signo);
        // SAFETY: -1 asks for a new descriptor; `set` is an initialised sigset.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        let fd = Errno::result(fd).map_err(|e| Error::os(signal_name(signo), "signalfd", e))?;
        // SAFETY: signalfd returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SignalListener { signo, fd })
    }

    /// The signal number it receives.
    pub fn signal(&self) -> libc::c_int {
        self.signo
    }

    /// Receives the next notification, waiting as long as it takes.
    pub fn recv(&self) -> Result<SignalMessage> {
        self.recv_wait(None, false)
    }

    /// Receives the next notification, waiting at most `timeout`: [`Error::Timeout`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<SignalMessage> {
        self.recv_wait(Some(timeout), false)
    }

    /// Receives a pending notification: [`Error::WouldBlock`] when there is none.
    pub fn try_recv(&self) -> Result<SignalMessage> {
        self.recv_wait(Some(Duration::ZERO), true)
    }

    fn recv_wait(&self, timeout: Option<Duration>, no_wait: bool) -> Result<SignalMessage> {
        let name = signal_name(self.signo);
        if !thread_blocks(self.signo)? {
            return Err(Error::invalid(
                name,
                "recv",
                "the calling thread does not block the signal (it was started before the listener, or unblocked it); block it in main before spawning threads",
            ));
        }
        // A deadline beyond what Instant can represent is no deadline.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            // SAFETY: a zeroed signalfd_siginfo is a valid buffer of its own size.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: `info` is writable for `size` bytes; the descriptor is ours.
            let r = unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut info).cast(), size) };
            match Errno::result(r) {
                Ok(n) if n as usize == size => {
                    return Ok(SignalMessage {
                        payload: info.ssi_ptr,
                        sender_pid: info.ssi_pid,
                        sender_uid: info.ssi_uid,
                        queued: info.ssi_code == libc::SI_QUEUE,
                    });
                }
                Ok(n) => {
                    return Err(Error::corrupt(name, format!("signalfd returned {n} bytes")));
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(Error::os(name, "read(signalfd)", e)),
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(if no_wait {
                    Error::WouldBlock {
                        resource: name,
                        op: "recv",
                    }
                } else {
                    Error::Timeout {
                        resource: name,
                        op: "recv",
                        timeout: timeout.unwrap_or_default(),
                    }
                });
            }
            crate::fdwait::wait_fd(self.fd.as_fd(), libc::POLLIN, left)
                .map_err(|e| Error::os(signal_name(self.signo), "ppoll", e))?;
        }
    }
}

impl AsFd for SignalListener {
    /// The `signalfd` (non-blocking): readable when a notification is pending.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for SignalListener {
    /// The `signalfd` (see [`AsFd`]); it stays owned by the listener.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}
