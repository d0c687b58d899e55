//! `event`, `sem`, `mutex`, `rwlock`, `barrier`, `condvar`: operate shmkit
//! synchronisation objects from the shell.

use std::ffi::OsString;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;
use shmkit::segment::Kind;
use shmkit::sync::{Event, LockResult, MutexArray, NamedSemaphore, Semaphore};
use shmkit::{Error, Segment};

use crate::out::{Out, note, record, utf8, utf8_all};
use crate::segments::{InspectCmd, NameJson, Names, rm_kind, run_inspect, stat_kind};
use crate::values::{Ty, TypedCreate, ty_name, ty_of, with_ty};

/// Synchronisation commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, set, clear, read or wait for a shared `Event`.
    #[command(subcommand)]
    Event(EventCmd),
    /// Create, post, wait for or read a semaphore (in a segment, or `--named` for a POSIX
    /// named semaphore shared with C and Python's posix_ipc).
    #[command(subcommand)]
    Sem(SemCmd),
    /// Create, read (under the lock), inspect or repair a robust mutex.
    #[command(subcommand)]
    Mutex(MutexCmd),
    /// Inspect or remove a reader-writer lock.
    #[command(subcommand)]
    Rwlock(InspectCmd),
    /// Inspect or remove a barrier.
    #[command(subcommand)]
    Barrier(InspectCmd),
    /// Inspect or remove a condition variable.
    #[command(subcommand)]
    Condvar(InspectCmd),
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
    /// Print whether the flag is set (`set` or `clear`), without waiting.
    Get(NameJson),
    /// Wait until the flag is set; exits 1 on timeout.
    Wait {
        /// Segment name.
        name: OsString,
        /// Give up after this long (e.g. 1.5s, 250ms).
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "10s")]
        timeout: Duration,
        /// Print JSON (one line; `data` is "set").
        #[arg(long)]
        json: bool,
    },
    /// Show the event (what `shmkit info` shows).
    Stat(NameJson),
    /// Remove events (checks the kind first).
    Rm(Names),
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
    /// Decrement, waiting at most `--timeout`; exits 1 on timeout.
    Wait {
        /// Name.
        name: OsString,
        /// Give up after this long (e.g. 1.5s, 250ms).
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "10s")]
        timeout: Duration,
        /// A POSIX named semaphore.
        #[arg(long)]
        named: bool,
    },
    /// Print the current count.
    #[command(visible_alias = "get")]
    Value {
        /// Name.
        name: OsString,
        /// A POSIX named semaphore.
        #[arg(long)]
        named: bool,
        /// Print JSON (one line; `data` is the count).
        #[arg(long)]
        json: bool,
    },
    /// Show the semaphore (what `shmkit info` shows; `--named`: its count).
    Stat {
        /// Name.
        name: OsString,
        /// A POSIX named semaphore.
        #[arg(long)]
        named: bool,
        /// Print JSON (one line).
        #[arg(long)]
        json: bool,
    },
    /// Remove semaphores (`--named`: sem_unlink; else segments, after checking the kind).
    Rm {
        /// Names.
        #[arg(required = true)]
        names: Vec<OsString>,
        /// POSIX named semaphores.
        #[arg(long)]
        named: bool,
    },
    /// Remove a POSIX named semaphore (the older spelling of `rm --named`).
    #[command(hide = true)]
    Unlink {
        /// Name.
        name: OsString,
    },
}

/// `shmkit mutex ...`
#[derive(Subcommand, Debug)]
pub enum MutexCmd {
    /// Create a mutex protecting one value of `--type`.
    Create(TypedCreate),
    /// Print the protected data, read under the lock (waiting at most `--timeout`): the
    /// value, or every element of a `MutexArray`. If a holder died, the data is printed,
    /// a warning says it may be inconsistent, and the mutex stays marked so.
    Get {
        /// Name.
        name: OsString,
        /// Give up after this long waiting for the lock (e.g. 1.5s, 250ms).
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "10s")]
        timeout: Duration,
        /// Print JSON (one line: `type`, `data`, `consistent`).
        #[arg(long)]
        json: bool,
    },
    /// Print the lock state: owner pid and whether it is alive (read without locking).
    #[command(visible_alias = "status")]
    Stat(NameJson),
    /// Lock; if a holder died (or the mutex was given up: unrecoverable), mark the data
    /// consistent *as it is* (use only when you know the data needs no repair, or have
    /// repaired it by other means). Safe while other processes use the mutex.
    Repair {
        /// Segment name.
        name: OsString,
        /// Give up after this long (e.g. 1.5s, 250ms).
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "10s")]
        timeout: Duration,
        /// Print JSON (one line; `data`: "consistent" (nothing to do), "owner-died" or
        /// "unrecoverable" (what was repaired)).
        #[arg(long)]
        json: bool,
    },
    /// Remove mutexes (checks the kind first).
    Rm(Names),
}

/// Runs a synchronisation command.
pub fn run(cmd: Command, out: &mut Out) -> Result<(), Error> {
    match cmd {
        Command::Event(c) => event(c, out),
        Command::Sem(c) => sem(c, out),
        Command::Mutex(c) => mutex(c, out),
        Command::Rwlock(c) => run_inspect(&[Kind::RwLock], c, out),
        Command::Barrier(c) => run_inspect(&[Kind::Barrier], c, out),
        Command::Condvar(c) => run_inspect(&[Kind::Condvar], c, out),
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
        EventCmd::Get(a) => {
            let name = utf8("NAME", &a.name)?;
            let state = if Event::open(&name)?.is_set() {
                "set"
            } else {
                "clear"
            };
            if a.json {
                out.json(&record("event", &name, "get", json!({ "data": state })))?;
            } else {
                writeln!(out, "{state}")?;
            }
        }
        EventCmd::Stat(a) => stat_kind(&[Kind::Event], &a.name, a.json, out)?,
        EventCmd::Rm(a) => rm_kind(&[Kind::Event], &a.names, out)?,
        EventCmd::Wait {
            name,
            timeout: d,
            json,
        } => {
            let name = utf8("NAME", &name)?;
            if !Event::open(&name)?.wait_timeout(d)? {
                return Err(Error::Timeout {
                    resource: name,
                    op: "event wait",
                    timeout: d,
                });
            }
            if json {
                out.json(&record("event", &name, "wait", json!({ "data": "set" })))?;
            } else {
                writeln!(out, "set")?;
            }
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
            timeout: d,
            named,
        } => {
            let name = utf8("NAME", &name)?;
            if named {
                NamedSemaphore::open(&name)?.wait_timeout(d)?;
            } else {
                Semaphore::open(&name)?.wait_timeout(d)?;
            }
        }
        SemCmd::Value { name, named, json } => sem_value(&name, named, json, "get", out)?,
        SemCmd::Stat { name, named, json } if named => sem_value(&name, named, json, "stat", out)?,
        SemCmd::Stat { name, json, .. } => stat_kind(&[Kind::Semaphore], &name, json, out)?,
        SemCmd::Rm { names, named } if named => {
            for n in utf8_all("NAMES", &names)? {
                NamedSemaphore::unlink(&n)?;
                writeln!(out, "removed {n}")?;
            }
        }
        SemCmd::Rm { names, .. } => rm_kind(&[Kind::Semaphore], &names, out)?,
        SemCmd::Unlink { name } => NamedSemaphore::unlink(&utf8("NAME", &name)?)?,
    }
    Ok(())
}

/// `sem value` / `sem get`, and `sem stat --named`.
fn sem_value(
    name: &OsString,
    named: bool,
    json: bool,
    op: &str,
    out: &mut Out,
) -> Result<(), Error> {
    let name = utf8("NAME", name)?;
    let (kind, v) = if named {
        ("posix-semaphore", NamedSemaphore::open(&name)?.value())
    } else {
        ("semaphore", Semaphore::open(&name)?.value())
    };
    if json {
        out.json(&record(kind, &name, op, json!({ "data": v })))
    } else {
        writeln!(out, "{v}")
    }
}

fn mutex(c: MutexCmd, out: &mut Out) -> Result<(), Error> {
    match c {
        MutexCmd::Create(c) => {
            let (name, opts) = c.parts()?;
            with_ty!(c.ty, T => {
                let v: T = c.init(&name)?;
                shmkit::sync::Mutex::<T>::create_with(&opts, &name, v)?;
                writeln!(out, "created mutex {name}: {} = {v}", ty_name(c.ty))?;
            })
        }
        MutexCmd::Get {
            name,
            timeout,
            json,
        } => mutex_get(&utf8("NAME", &name)?, timeout, json, out)?,
        MutexCmd::Rm(a) => rm_kind(&[Kind::Mutex], &a.names, out)?,
        MutexCmd::Stat(NameJson { name, json }) => {
            let name = utf8("NAME", &name)?;
            // Read with pread, never a mapping (a peer resizing the file cannot kill us).
            let obj = shmkit::inspect::object(&name, shmkit::inspect::Reads::Snapshot)?;
            let is_mutex = obj
                .file
                .header
                .as_ref()
                .is_ok_and(|h| h.kind() == shmkit::segment::Kind::Mutex);
            if !is_mutex {
                // Not a mutex (or no longer one): open it for the precise mismatch error.
                shmkit::sync::mutex::raw_mutex(&Segment::open(&name)?)?;
            }
            let details = crate::segments::state_rows(&obj);
            if json {
                let fields: serde_json::Map<String, serde_json::Value> =
                    details.into_iter().map(|(k, v)| (k, json!(v))).collect();
                out.json(&record("mutex", &name, "stat", fields.into()))?;
            } else {
                for (k, v) in details {
                    writeln!(out, "{k:<12} {v}")?;
                }
            }
        }
        MutexCmd::Repair {
            name,
            timeout: d,
            json,
        } => {
            let name = utf8("NAME", &name)?;
            let seg = Segment::open(&name)?;
            let raw = shmkit::sync::mutex::raw_mutex(&seg)?;
            // reset_unrecoverable locks like lock_timeout, and also brings back a mutex
            // that was given up (unrecoverable) as an inconsistent one.
            let was_unrecoverable = raw.owner().unrecoverable;
            let (found, text) = match raw.reset_unrecoverable(seg.liveness(), d) {
                Ok(LockResult::Acquired(_)) => ("consistent", "consistent, nothing to repair"),
                Ok(LockResult::OwnerDied(mut g)) => {
                    g.make_consistent()?;
                    if was_unrecoverable {
                        (
                            "unrecoverable",
                            "was NOT RECOVERABLE (given up); reset; marked consistent (data kept as is)",
                        )
                    } else {
                        (
                            "owner-died",
                            "a holder had died; marked consistent (data kept as is)",
                        )
                    }
                }
                Err(Error::Timeout { op, timeout, .. }) => {
                    return Err(Error::Timeout {
                        resource: name,
                        op,
                        timeout,
                    });
                }
                Err(e) => return Err(e),
            };
            if json {
                out.json(&record("mutex", &name, "repair", json!({ "data": found })))?;
            } else {
                writeln!(out, "{name}: {text}")?;
            }
        }
    }
    Ok(())
}

/// `mutex get`: locks (bounded), copies the data out, unlocks, then prints. A guard taken
/// from a dead holder is dropped unrepaired, so the mutex stays marked inconsistent for
/// the next locker (or `mutex repair`).
fn mutex_get(name: &str, timeout: Duration, json: bool, out: &mut Out) -> Result<(), Error> {
    let seg = Segment::open(name)?;
    // The kind first, for the precise error (`ty_of` would complain about the type).
    shmkit::sync::mutex::raw_mutex(&seg)?;
    let ty = ty_of(&seg.resource(), seg.header())?;
    with_ty!(ty, T => {
        let m = MutexArray::<T>::from_segment(seg)?;
        let (data, consistent) = match m.lock_timeout(timeout)? {
            LockResult::Acquired(g) => (g.to_vec(), true),
            LockResult::OwnerDied(g) => (g.to_vec(), false),
        };
        drop(m);
        if !consistent {
            note(format_args!(
                "shmkit: warning: mutex {name}: a holder died while holding it; the data may be \
                 inconsistent (left marked so; `shmkit mutex repair {name}` once it is checked)"
            ));
        }
        let one = data.len() == 1;
        if json {
            let d = if one { json!(data[0]) } else { json!(data) };
            out.json(&record("mutex", name, "get", json!({ "type": ty_name(ty), "data": d, "consistent": consistent })))
        } else {
            let text: Vec<String> = data.iter().map(|v| v.to_string()).collect();
            writeln!(out, "{}", text.join(" "))
        }
    })
}
