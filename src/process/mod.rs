//! Processes: identity and liveness of any process ([`ProcessId`], [`Liveness`],
//! `/proc/*/maps`), and (feature `process`) Python's `multiprocessing.Process` and `Pool`
//! done robustly.
//!
//! # `Process` (feature `process`)
//!
//! A [`Process`] runs an [`Entry`] (a named `fn(A) -> R` of the current program) in a
//! child; the argument goes to the child and the return value comes back over a
//! [`Pipe`](crate::pipe::Pipe), with serde (postcard) for `entry!(f)`, or as their own
//! bytes for a plain-data entry, `entry!(pod f)` (both [`bytemuck::Pod`]: no
//! serialisation at all). `main` dispatches roles with one call,
//! [`init`], before it does anything else:
//!
//! ```no_run
//! use shmkit::process::{Entry, Process};
//!
//! fn double(x: u64) -> u64 { x * 2 }
//! static DOUBLE: Entry<u64, u64> = shmkit::entry!(double);
//!
//! fn main() -> shmkit::Result<()> {
//!     // In a child started by `Process`, this runs the entry and exits; here it returns.
//!     shmkit::process::init(&[&DOUBLE]);
//!     let mut p = Process::new(&DOUBLE, 21).name("doubler").start()?;
//!     assert_eq!(p.join()?, 42);
//!     Ok(())
//! }
//! ```
//!
//! ## Start methods
//! - [`StartMethod::Spawn`] (the default, Python's `spawn`): the child re-executes the
//!   current executable (`/proc/self/exe`, the very file this process runs even if it was
//!   replaced on disk) with a role marker in its environment; [`init`] at the top of
//!   `main` sees it, runs the entry and exits. The child starts from a clean process:
//!   no lock held by another thread of the parent can be inherited. It costs an `exec`
//!   (about a millisecond).
//! - [`StartMethod::Fork`] (Python's `fork`, on explicit request): `fork()` without
//!   `exec`; the entry runs in a copy of the parent. **Hazard:** only the forking thread
//!   exists in the child, but every lock of the parent is copied in the state it had —
//!   a lock another thread held at that instant (the allocator's, stdout's, a logging
//!   handler's, any `std::sync::Mutex`) is held forever in the child, and the child
//!   deadlocks the first time it takes it. Use `Fork` only when the parent has no other
//!   threads, or when the entry touches nothing another thread may lock. shmkit's own
//!   hot paths hold no process-private lock (see [`crate::logging`]), and segments fix
//!   up inherited liveness tokens after `fork` ([`crate::liveness`]).
//!
//! ## Children never outlive their parent
//! Every child is started from one long-lived "spawner" thread of the parent and sets
//! `PR_SET_PDEATHSIG(SIGKILL)` before it execs (or right after `fork`): the kernel kills
//! it when that thread — so, the parent process — dies, however it dies. A parent that
//! died before the child set it is caught by comparing `getppid()` with the parent's pid,
//! after setting it: the child exits at once. (The death signal is tied to the *thread*
//! that forked; starting children from a dedicated thread that never exits is what makes
//! it mean "the parent process".) A [`Child`] handle dropped while the process runs kills
//! it with `SIGKILL` and reaps it; `join` first to let it finish.
//!
//! ## Waiting and signalling without pid races
//! The parent holds a pidfd (`pidfd_open(2)`, Linux ≥ 5.3) for each child: `join` with a
//! timeout polls it, [`Child::is_alive`] asks it, and [`Child::terminate`] /
//! [`Child::kill`] signal through it (`pidfd_send_signal(2)`): they can never reach
//! another process that reused the pid.
//!
//! # Identity of any process
//! [`ProcessId`] (pid + start time + boot id) is a diagnostic; no decision in shmkit rests
//! on it (see [`crate::liveness`]).
//!
// Without the features, the links above lead to this page (whose headings name the
// feature) rather than nowhere: `cargo doc` builds warning-free in every combination.
#![cfg_attr(
    not(feature = "process"),
    doc = "[`Process`]: self\n[`Entry`]: self\n[`init`]: self\n[`StartMethod::Spawn`]: self\n\
           [`StartMethod::Fork`]: self\n[`Child`]: self\n[`Child::is_alive`]: self\n\
           [`Child::terminate`]: self\n[`Child::kill`]: self"
)]
#![cfg_attr(not(feature = "log"), doc = "[`crate::logging`]: self")]

mod id;

pub use id::*;

#[cfg(feature = "process")]
mod spawn;
#[cfg(feature = "process")]
pub use spawn::*;
#[cfg(feature = "process")]
pub mod pool;
#[cfg(feature = "process")]
pub use pool::{Pool, PoolOptions};

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }

    /// The exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        match *self {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(_) => None,
        }
    }

    /// The signal that killed it, if one did.
    pub fn signal(&self) -> Option<i32> {
        match *self {
            ExitStatus::Signal(s) => Some(s),
            ExitStatus::Code(_) => None,
        }
    }

    /// Python's `Process.exitcode`: the exit code, or minus the signal number.
    pub fn exitcode(&self) -> i32 {
        match *self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => -s,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => write!(f, "killed by signal {s} ({})", sig.as_str()),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

/// Why a child process or a pool task delivered no result ([`Error::Failed`](crate::Error::Failed)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The entry panicked; the panic message.
    Panicked(String),
    /// The arguments or the result could not be (de)serialised; what serde said.
    Codec(String),
    /// The process died (or exited) before delivering a result.
    Died {
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
    },
    /// The child does not know the entry: `init` in the child was not given it.
    NotRegistered(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Panicked(m) => write!(f, "panicked: {m}"),
            Failure::Codec(m) => write!(f, "could not (de)serialise: {m}"),
            Failure::Died { pid, status } => {
                write!(
                    f,
                    "process {pid} died ({status}) before delivering a result"
                )
            }
            Failure::NotRegistered(name) => write!(
                f,
                "entry {name:?} is not registered: pass it to shmkit::process::init at the top of main"
            ),
        }
    }
}
