//! `event`, `sem`, `mutex`: operate shmkit synchronisation objects from the shell.

use std::ffi::OsString;
use std::time::Duration;

use clap::Subcommand;
use shmkit::sync::{Event, LockResult, NamedSemaphore, Semaphore};
use shmkit::{Error, Segment};

use crate::out::{Out, utf8};

/// Synchronisation commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, set, clear or wait for a shared `Event`.
    #[command(subcommand)]
    Event(EventCmd),
    /// Create, post, wait for or read a semaphore (in a segment, or `--named` for a POSIX
    /// named semaphore shared with C and Python's posix_ipc).
    #[command(subcommand)]
    Sem(SemCmd),
    /// Inspect or repair a robust mutex.
    #[command(subcommand)]
    Mutex(MutexCmd),
}

/// `shmkit event ...`
#[derive(Subcommand, Debug)]
pub enum EventCmd {
    /// Create a cleared event.
    Create {
        /// Segment name.
        name: OsString,
    },
    /// Set the flag, waking every waiter.
    Set {
        /// Segment name.
        name: OsString,
    },
    /// Clear the flag.
    Clear {
        /// Segment name.
        name: OsString,
    },
    /// Wait until the flag is set; exits 1 on timeout.
    Wait {
        /// Segment name.
        name: OsString,
        /// Give up after this many seconds (default: 10).
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
}

/// `shmkit sem ...`
#[derive(Subcommand, Debug)]
pub enum SemCmd {
    /// Create a semaphore with an initial count.
    Create {
        /// Name.
        name: OsString,
        /// Initial count.
        value: u32,
        /// A POSIX named semaphore (`sem_open`, /dev/shm/sem.NAME).
        #[arg(long)]
        named: bool,
    },
    /// Increment.
    Post {
        /// Name.
        name: OsString,
        /// A POSIX named semaphore.
        #[arg(long)]
        named: bool,
    },
    /// Decrement, waiting at most `--timeout` seconds; exits 1 on timeout.
    Wait {
        /// Name.
        name: OsString,
        /// Give up after this many seconds (default: 10).
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// A POSIX named semaphore.
        #[arg(long)]
        named: bool,
    },
    /// Print the current count.
    Value {
        /// Name.
        name: OsString,
        /// A POSIX named semaphore.
        #[arg(long)]
        named: bool,
    },
    /// Remove a POSIX named semaphore (segments: `shmkit rm`).
    Unlink {
        /// Name.
        name: OsString,
    },
}

/// `shmkit mutex ...`
#[derive(Subcommand, Debug)]
pub enum MutexCmd {
    /// Print the lock state: owner pid and whether it is alive.
    Status {
        /// Segment name.
        name: OsString,
    },
    /// Lock; if a holder died (or the mutex was given up: unrecoverable), mark the data
    /// consistent *as it is* (use only when you know the data needs no repair, or have
    /// repaired it by other means). Safe while other processes use the mutex.
    Repair {
        /// Segment name.
        name: OsString,
        /// Give up after this many seconds (default: 10).
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
}

fn secs(name: &str, t: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(t)
        .map_err(|_| Error::invalid(name, "--timeout", "not a non-negative number of seconds"))
}

/// Runs a synchronisation command.
pub fn run(cmd: Command, out: &mut Out) -> Result<(), Error> {
    match cmd {
        Command::Event(c) => event(c, out),
        Command::Sem(c) => sem(c, out),
        Command::Mutex(c) => mutex(c, out),
    }
}

fn event(c: EventCmd, out: &mut Out) -> Result<(), Error> {
    match c {
        EventCmd::Create { name } => {
            let name = utf8("NAME", &name)?;
            Event::create_with(&Segment::options().persistent(true), &name)?;
            writeln!(out, "created event {name}")?;
        }
        EventCmd::Set { name } => Event::open(&utf8("NAME", &name)?)?.set(),
        EventCmd::Clear { name } => Event::open(&utf8("NAME", &name)?)?.clear(),
        EventCmd::Wait { name, timeout } => {
            let name = utf8("NAME", &name)?;
            let d = secs(&name, timeout)?;
            if !Event::open(&name)?.wait_timeout(d)? {
                return Err(Error::Timeout {
                    resource: name,
                    op: "event wait",
                    timeout: d,
                });
            }
            writeln!(out, "set")?;
        }
    }
    Ok(())
}

fn sem(c: SemCmd, out: &mut Out) -> Result<(), Error> {
    match c {
        SemCmd::Create { name, value, named } => {
            let name = utf8("NAME", &name)?;
            if named {
                NamedSemaphore::create(&name, value)?;
            } else {
                Semaphore::create_with(&Segment::options().persistent(true), &name, value)?;
            }
            writeln!(out, "created semaphore {name} = {value}")?;
        }
        SemCmd::Post { name, named } => {
            let name = utf8("NAME", &name)?;
            if named {
                NamedSemaphore::open(&name)?.post()?;
            } else {
                Semaphore::open(&name)?.post()?;
            }
        }
        SemCmd::Wait {
            name,
            timeout,
            named,
        } => {
            let name = utf8("NAME", &name)?;
            let d = secs(&name, timeout)?;
            if named {
                NamedSemaphore::open(&name)?.wait_timeout(d)?;
            } else {
                Semaphore::open(&name)?.wait_timeout(d)?;
            }
        }
        SemCmd::Value { name, named } => {
            let name = utf8("NAME", &name)?;
            let v = if named {
                NamedSemaphore::open(&name)?.value()
            } else {
                Semaphore::open(&name)?.value()
            };
            writeln!(out, "{v}")?;
        }
        SemCmd::Unlink { name } => NamedSemaphore::unlink(&utf8("NAME", &name)?)?,
    }
    Ok(())
}

fn mutex(c: MutexCmd, out: &mut Out) -> Result<(), Error> {
    match c {
        MutexCmd::Status { name } => {
            let name = utf8("NAME", &name)?;
            // Read with pread, never a mapping (a peer resizing the file cannot kill us).
            let n = shmkit::name::Name::shm(&name)?;
            let is_mutex = shmkit::segment::inspect_path(&n.fs_path())?
                .header
                .is_ok_and(|h| h.kind() == shmkit::segment::Kind::Mutex);
            if !is_mutex {
                // Not a mutex (or no longer one): open it for the precise mismatch error.
                shmkit::sync::mutex::raw_mutex(&Segment::open(&name)?)?;
            }
            let details = crate::segments::sync_details(n.as_str(), &n.fs_path())?;
            for (k, v) in details.unwrap_or_default() {
                writeln!(out, "{k:<12} {v}")?;
            }
        }
        MutexCmd::Repair { name, timeout } => {
            let name = utf8("NAME", &name)?;
            let seg = Segment::open(&name)?;
            let raw = shmkit::sync::mutex::raw_mutex(&seg)?;
            let d = secs(&name, timeout)?;
            // reset_unrecoverable locks like lock_timeout, and also brings back a mutex
            // that was given up (unrecoverable) as an inconsistent one.
            let was_unrecoverable = raw.owner().unrecoverable;
            match raw.reset_unrecoverable(seg.liveness(), d) {
                Ok(LockResult::Acquired(_)) => {
                    writeln!(out, "{name}: consistent, nothing to repair")?
                }
                Ok(LockResult::OwnerDied(mut g)) => {
                    g.make_consistent()?;
                    let why = if was_unrecoverable {
                        "was NOT RECOVERABLE (given up); reset"
                    } else {
                        "a holder had died"
                    };
                    writeln!(out, "{name}: {why}; marked consistent (data kept as is)")?;
                }
                Err(Error::Timeout { op, timeout, .. }) => {
                    return Err(Error::Timeout {
                        resource: name,
                        op,
                        timeout,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
