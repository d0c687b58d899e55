//! The peer process: `fork`, pin to a core, run one closure, `_exit`; a guard that kills and
//! reaps it on every path (error, panic, early return), so no child is left spinning.

use std::time::{Duration, Instant};

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use shmkit::{Error, Result};

/// How long the parent waits for a peer to exit once its work is done.
pub const EXIT_WAIT: Duration = Duration::from_secs(10);

/// Seconds after which a peer kills itself (`alarm`), whatever it is doing: the last line
/// of defence against a peer stuck in a blocking call.
pub const PEER_ALARM_SECS: u32 = 120;

/// The CPUs this process may run on, in increasing order.
pub fn available_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Which cores the two sides run on: the parent on the first allowed CPU, the peer on the
/// second; both on the same one when only one is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    /// Core of the measuring (parent) process.
    pub parent: Option<usize>,
    /// Core of the peer (child) process.
    pub child: Option<usize>,
}

impl Placement {
    /// The default placement: two different cores when there are two.
    pub fn detect() -> Placement {
        let cpus = available_cpus();
        match cpus.as_slice() {
            [] => Placement {
                parent: None,
                child: None,
            },
            [one] => Placement {
                parent: Some(*one),
                child: Some(*one),
            },
            [a, b, ..] => Placement {
                parent: Some(*a),
                child: Some(*b),
            },
        }
    }
}

/// Pins the calling thread to `cpu`; the previous mask is restored when the guard drops.
pub struct Pinned {
    previous: Option<CpuSet>,
}

impl Pinned {
    /// `sched_setaffinity(0, {cpu})`. `None` pins nothing.
    pub fn to(cpu: Option<usize>) -> Result<Pinned> {
        let Some(cpu) = cpu else {
            return Ok(Pinned { previous: None });
        };
        let previous = sched_getaffinity(Pid::from_raw(0))
            .map_err(|e| Error::os("this thread", "sched_getaffinity", e))?;
        pin_self(cpu)?;
        Ok(Pinned {
            previous: Some(previous),
        })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(prev) = self.previous.take() {
            let _ = sched_setaffinity(Pid::from_raw(0), &prev);
        }
    }
}

fn pin_self(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)
        .map_err(|e| Error::os(format!("cpu {cpu}"), "CpuSet::set", e))?;
    sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| Error::os(format!("cpu {cpu}"), "sched_setaffinity", e))
}

/// A forked peer process. Dropping it without [`Peer::join`] sends `SIGKILL` and reaps it.
#[derive(Debug)]
pub struct Peer {
    pid: Pid,
    reaped: bool,
}

impl Peer {
    /// Forks a child that pins itself to `cpu`, runs `body` and `_exit`s with 0 on success,
    /// 1 on error (printed to stderr), 2 on panic. The child never returns into the caller,
    /// never runs destructors of the parent's objects, and dies with its parent
    /// (`PR_SET_PDEATHSIG`).
    ///
    /// Call this before the process starts threads, or make sure `body` only touches
    /// objects the fork copied consistently (the adapters' loops allocate nothing but
    /// their buffers; glibc's `malloc` is fork-safe).
    pub fn spawn(cpu: Option<usize>, body: impl FnOnce() -> Result<()>) -> Result<Peer> {
        let parent = nix::unistd::getpid();
        // SAFETY: the child branch only runs `body` (code of this crate that uses the
        // objects the parent prepared before the fork) and then calls `_exit`, never
        // returning into the caller's frames; the parent branch continues normally.
        match unsafe { fork() }.map_err(|e| Error::os("bench peer", "fork", e))? {
            ForkResult::Parent { child } => Ok(Peer {
                pid: child,
                reaped: false,
            }),
            ForkResult::Child => {
                // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and no pointers.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                if nix::unistd::getppid() != parent {
                    // SAFETY: _exit ends the process immediately; nothing else runs.
                    unsafe { libc::_exit(3) };
                }
                nix::unistd::alarm::set(PEER_ALARM_SECS);
                let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    if let Some(cpu) = cpu {
                        pin_self(cpu)?;
                    }
                    body()
                })) {
                    Ok(Ok(())) => 0,
                    Ok(Err(e)) => {
                        eprintln!("shmkit bench peer: {e}");
                        1
                    }
                    Err(_) => 2,
                };
                // SAFETY: _exit ends the child without running the parent's atexit handlers
                // or destructors of objects it shares with the parent.
                unsafe { libc::_exit(code) }
            }
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits (bounded by `timeout`) for the child to exit; an exit status other than 0 is
    /// an error. On timeout the child is killed.
    pub fn join(mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(50);
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(WaitStatus::Exited(_, code)) => {
                    self.reaped = true;
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(Error::Disconnected {
                            resource: format!("bench peer {}", self.pid),
                            op: "join",
                            detail: Some(format!("peer exited with status {code}")),
                        })
                    };
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    self.reaped = true;
                    return Err(Error::Disconnected {
                        resource: format!("bench peer {}", self.pid),
                        op: "join",
                        detail: Some(format!("peer killed by {sig}")),
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    self.reaped = true;
                    return Err(Error::os(format!("bench peer {}", self.pid), "waitpid", e));
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    resource: format!("bench peer {}", self.pid),
                    op: "waiting for the peer to exit",
                    timeout,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// CPU time (user + system, all threads) the child has used so far, in nanoseconds.
    pub fn cpu_ns(&self) -> Option<u64> {
        cpu_ns(Some(self.pid))
    }

    /// The child's scheduler state letter from `/proc/PID/stat` (`R`, `S`, `D`, ...).
    pub fn sched_state(&self) -> Option<u8> {
        let stat = std::fs::read(format!("/proc/{}/stat", self.pid)).ok()?;
        // The state follows the last ')' (the command name may contain parentheses).
        let close = stat.iter().rposition(|&b| b == b')')?;
        stat.get(close + 2).copied()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            // SIGKILL cannot be caught: this wait ends as soon as the kernel tears the
            // child down.
            let _ = waitpid(self.pid, None);
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in both processes.
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time (user + system, all threads) of process `pid` (`None`: this process) so far,
/// in nanoseconds: `clock_gettime` on the process's CPU-time clock
/// (`clock_getcpuclockid`), which the scheduler keeps to the nanosecond, unlike the
/// clock ticks of `/proc/PID/stat` or `getrusage`. `None` if the clock cannot be read.
pub fn cpu_ns(pid: Option<Pid>) -> Option<u64> {
    use nix::time::{ClockId, clock_getcpuclockid, clock_gettime};
    let clock = match pid {
        None => ClockId::CLOCK_PROCESS_CPUTIME_ID,
        Some(pid) => clock_getcpuclockid(pid).ok()?,
    };
    let ts = clock_gettime(clock).ok()?;
    Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
}

/// CPU time of this process and of a peer, read together at the start of a measured
/// interval; [`CpuMark::since`] gives what both used since.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    own: Option<u64>,
    peer: Option<u64>,
}

impl CpuMark {
    /// Reads both clocks now (`peer`: `None` for a one-process workload).
    pub fn now(peer: Option<&Peer>) -> CpuMark {
        CpuMark {
            own: cpu_ns(None),
            peer: peer.and_then(Peer::cpu_ns),
        }
    }

    /// CPU nanoseconds both processes used since `self` (the peer's only when it was read
    /// at the start), or `None` if a clock could not be read.
    pub fn since(&self, peer: Option<&Peer>) -> Option<u64> {
        let own = cpu_ns(None)?.checked_sub(self.own?)?;
        match (self.peer, peer) {
            (None, None) => Some(own),
            (Some(start), Some(p)) => Some(own + p.cpu_ns()?.checked_sub(start)?),
            _ => None,
        }
    }
}
