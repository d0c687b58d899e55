//! `event`, `sem`, `mutex`: operate shmkit synchronisation objects from the shell.

use std::time::Duration;

use clap::Subcommand;
use shmkit::sync::{Event, LockResult, NamedSemaphore, Semaphore};
use shmkit::{Error, Segment};

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
        name: String,
    },
    /// Set the flag, waking every waiter.
    Set {
        /// Segment name.
        name: String,
    },
    /// Clear the flag.
    Clear {
        /// Segment name.
        name: String,
    },
    /// Wait until the flag is set; exits 1 on timeout.
    Wait {
        /// Segment name.
        name: String,
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
        name: String,
        /// Initial count.
        value: u32,
        /// A POSIX named semaphore (`sem_open`, /dev/shm/sem.NAME).
        #[arg(long)]
        named: bool,
    },
    /// Increment.
    Post {
        /// Name.
        name: String,
        /// A POSIX named semaphore.
        #[arg(long)]
        named: bool,
    },
    /// Decrement, waiting at most `--timeout` seconds; exits 1 on timeout.
    Wait {
        /// Name.
        name: String,
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
        name: String,
        /// A POSIX named semaphore.
        #[arg(long)]
        named: bool,
    },
    /// Remove a POSIX named semaphore (segments: `shmkit rm`).
    Unlink {
        /// Name.
        name: String,
    },
}

/// `shmkit mutex ...`
#[derive(Subcommand, Debug)]
pub enum MutexCmd {
    /// Print the lock state: owner pid and whether it is alive.
    Status {
        /// Segment name.
        name: String,
    },
    /// Lock; if the last holder died, mark the data consistent *as it is* (use only when
    /// you know the data needs no repair, or have repaired it by other means).
    Repair {
        /// Segment name.
        name: String,
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
pub fn run(cmd: Command) -> Result<(), Error> {
    match cmd {
        Command::Event(c) => event(c),
        Command::Sem(c) => sem(c),
        Command::Mutex(c) => mutex(c),
    }
}

fn event(c: EventCmd) -> Result<(), Error> {
    match c {
        EventCmd::Create { name } => {
            Event::create(&name)?;
            println!("created event {name}");
        }
        EventCmd::Set { name } => Event::open(&name)?.set(),
        EventCmd::Clear { name } => Event::open(&name)?.clear(),
        EventCmd::Wait { name, timeout } => {
            let d = secs(&name, timeout)?;
            if !Event::open(&name)?.wait_timeout(d)? {
                return Err(Error::Timeout {
                    resource: name,
                    op: "event wait",
                    timeout: d,
                });
            }
            println!("set");
        }
    }
    Ok(())
}

fn sem(c: SemCmd) -> Result<(), Error> {
    match c {
        SemCmd::Create { name, value, named } => {
            if named {
                NamedSemaphore::create(&name, value)?;
            } else {
                Semaphore::create(&name, value)?;
            }
            println!("created semaphore {name} = {value}");
        }
        SemCmd::Post { name, named } => {
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
            let d = secs(&name, timeout)?;
            if named {
                NamedSemaphore::open(&name)?.wait_timeout(d)?;
            } else {
                Semaphore::open(&name)?.wait_timeout(d)?;
            }
        }
        SemCmd::Value { name, named } => {
            let v = if named {
                NamedSemaphore::open(&name)?.value()
            } else {
                Semaphore::open(&name)?.value()
            };
            println!("{v}");
        }
        SemCmd::Unlink { name } => NamedSemaphore::unlink(&name)?,
    }
    Ok(())
}

fn mutex(c: MutexCmd) -> Result<(), Error> {
    match c {
        MutexCmd::Status { name } => {
            let seg = Segment::open(&name)?;
            shmkit::sync::mutex::raw_mutex(&seg)?;
            for (k, v) in shmkit::sync::describe(&seg).unwrap_or_default() {
                println!("{k:<12} {v}");
            }
        }
        MutexCmd::Repair { name, timeout } => {
            let seg = Segment::open(&name)?;
            let raw = shmkit::sync::mutex::raw_mutex(&seg)?;
            let d = secs(&name, timeout)?;
            match raw.lock_timeout(seg.liveness(), d) {
                Ok(LockResult::Acquired(_)) => println!("{name}: consistent, nothing to repair"),
                Ok(LockResult::OwnerDied(mut g)) => {
                    g.make_consistent()?;
                    println!(
                        "{name}: the last holder had died; marked consistent (data kept as is)"
                    );
                }
                // The raw lock does not know its segment's name: put it back.
                Err(Error::Unrecoverable { .. }) => {
                    return Err(Error::Unrecoverable { resource: name });
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
