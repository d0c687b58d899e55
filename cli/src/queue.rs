//! `shmkit queue`: create, feed, drain and inspect shared-memory queues from the shell.
//!
//! Messages are bytes (a `ByteQueue`); `stat` and `rm` also work on typed queues made by
//! programs (`Queue<T>`).

use std::ffi::OsString;
use std::io::BufRead;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use serde_json::json;
use shmkit::queue::{ByteQueue, Mode, RecvTimeoutError, stats};
use shmkit::{Error, Segment};

use crate::out::{Out, utf8, with_note};

/// Queue modes, as the CLI spells them.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum CliMode {
    /// One producer, one consumer.
    Spsc,
    /// Any number of producers and consumers.
    Mpmc,
}

/// Queue commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a byte queue.
    Create {
        /// Queue name.
        name: OsString,
        /// Number of messages it holds (rounded up to a power of two).
        #[arg(long, default_value_t = 64)]
        capacity: u64,
        /// Largest message in bytes.
        #[arg(long, default_value_t = 4096)]
        max_message: usize,
        /// Mode.
        #[arg(long, value_enum, default_value_t = CliMode::Mpmc)]
        mode: CliMode,
        /// Joinable (task_done / join).
        #[arg(long)]
        joinable: bool,
    },
    /// Send messages: each argument is one message; with none, each line of stdin is one.
    Send {
        /// Queue name.
        name: OsString,
        /// Messages (bytes, UTF-8 or not).
        messages: Vec<OsString>,
        /// Give up after this many milliseconds of a full queue.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
    /// Receive messages and print them, one per line. A message is taken off the queue only
    /// once it is written and flushed to stdout; if the write fails, it is sent back (to the
    /// end of the queue) and the error says so. On an empty queue whose producers have all
    /// gone (closed, exited or died; at least one must have sent), returns at once with a
    /// "disconnected" line on stderr and exit status 3, not after the timeout.
    Recv {
        /// Queue name.
        name: OsString,
        /// How many messages to receive.
        #[arg(long, short = 'n', default_value_t = 1)]
        count: usize,
        /// Give up after this many milliseconds of an empty queue.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Print JSON (one array of strings; bytes that are not UTF-8 are replaced).
        #[arg(long)]
        json: bool,
    },
    /// Show a queue's mode, capacity, fill level, live handles and recovered dead peers.
    Stat {
        /// Queue name.
        name: OsString,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one queue command.
pub fn run(cmd: Command, out: &mut Out) -> Result<(), Error> {
    match cmd {
        Command::Create {
            name,
            capacity,
            max_message,
            mode,
            joinable,
        } => {
            let name = utf8("NAME", &name)?;
            let mode = match mode {
                CliMode::Spsc => Mode::Spsc,
                CliMode::Mpmc => Mode::Mpmc,
            };
            let q = ByteQueue::options()
                .mode(mode)
                .capacity(capacity)
                .joinable(joinable)
                .segment(Segment::options().persistent(true))
                .create(&name, max_message)?;
            writeln!(
                out,
                "created {name}: {:?}, {} messages of at most {} bytes",
                q.mode(),
                q.capacity(),
                q.max_message()
            )
        }
        Command::Send {
            name,
            messages,
            timeout_ms,
        } => {
            let name = utf8("NAME", &name)?;
            let q = ByteQueue::open(&name)?;
            let t = Duration::from_millis(timeout_ms);
            if messages.is_empty() {
                for line in std::io::stdin().lock().lines() {
                    let line =
                        line.map_err(|e| Error::invalid(&name, "read stdin", e.to_string()))?;
                    q.send_timeout(line.as_bytes(), t)?;
                }
            } else {
                for m in &messages {
                    q.send_timeout(m.as_os_str().as_bytes(), t)?;
                }
            }
            Ok(())
        }
        Command::Recv {
            name,
            count,
            timeout_ms,
            json,
        } => recv(
            &utf8("NAME", &name)?,
            count,
            Duration::from_millis(timeout_ms),
            json,
            out,
        ),
        Command::Stat { name, json } => {
            let name = utf8("NAME", &name)?;
            let s = stats(&name)?;
            let seg = Segment::open(&name)?;
            let ty = seg.header().type_name().to_owned();
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({
                        "name": name,
                        "kind": s.kind.name(),
                        "type": ty,
                        "mode": format!("{:?}", s.mode).to_lowercase(),
                        "joinable": s.joinable,
                        "capacity": s.capacity,
                        "slot_bytes": s.slot_bytes,
                        "max_handles": s.max_handles,
                        "len": s.len,
                        "sent": s.sent,
                        "received": s.received,
                        "live_handles": s.live_handles,
                        "pids": s.pids,
                        "peer_deaths": s.peer_deaths,
                        "last_dead_peer": s.last_dead_peer,
                    })
                )
            } else {
                writeln!(out, "{name}: {} {ty}", s.kind)?;
                writeln!(
                    out,
                    "  mode {:?}{}",
                    s.mode,
                    if s.joinable { ", joinable" } else { "" }
                )?;
                writeln!(
                    out,
                    "  capacity {} slots of {} bytes, {} in the queue ({} sent, {} received)",
                    s.capacity, s.slot_bytes, s.len, s.sent, s.received
                )?;
                writeln!(
                    out,
                    "  handles {} live of {} (pids {:?})",
                    s.live_handles, s.max_handles, s.pids
                )?;
                match s.last_dead_peer {
                    Some(p) => writeln!(
                        out,
                        "  dead peers recovered: {} (last pid {p})",
                        s.peer_deaths
                    ),
                    None => writeln!(out, "  dead peers recovered: {}", s.peer_deaths),
                }
            }
        }
    }
}

/// `queue recv`: each message is received in place, written and flushed to stdout, and
/// only then released (consumed). The queue cannot put a claimed message back in its
/// place, so a message whose write fails is sent again, to the end of the queue.
fn recv(name: &str, count: usize, t: Duration, json: bool, out: &mut Out) -> Result<(), Error> {
    let mut q = ByteQueue::open(name)?;
    for i in 0..count {
        // A pipe whose reader has gone: fail before taking anything.
        out.check_reader()?;
        let m = match q.recv_ref(Some(t)) {
            Ok(m) => m,
            Err(e) => {
                // Close the array of what was delivered (best effort: we fail anyway).
                if json && i > 0 {
                    let _ = writeln!(out, "]");
                }
                return Err(match e {
                    RecvTimeoutError::Disconnected => Error::Disconnected {
                        resource: name.to_owned(),
                        op: "queue recv",
                        detail: Some(
                            "the queue is empty and every producer has gone (closed, exited or died)"
                                .into(),
                        ),
                    },
                    RecvTimeoutError::Timeout => Error::Timeout {
                        resource: name.to_owned(),
                        op: "queue recv",
                        timeout: t,
                    },
                    other => other.into(),
                });
            }
        };
        let written = write_message(out, &m, json, i == 0).and_then(|()| out.flush());
        let Err(e) = written else {
            drop(m); // delivered: consume it
            continue;
        };
        let copy = m.to_vec();
        drop(m);
        let note = match q.try_send(&copy).map_err(Error::from) {
            Ok(()) => format!(
                "queue {name}: writing the message failed (part of it may have been written) and it was put back at the end of the queue"
            ),
            Err(e2) => format!(
                "queue {name}: writing the message failed (part of it may have been written) and it is LOST (putting it back failed: {e2})"
            ),
        };
        return Err(with_note(e, note));
    }
    if json {
        if count == 0 {
            out.bytes(b"[")?;
        }
        writeln!(out, "]")?;
    }
    Ok(())
}

/// One message: a line of bytes, or an element of a JSON array written as it goes.
pub(crate) fn write_message(out: &mut Out, m: &[u8], json: bool, first: bool) -> Result<(), Error> {
    if json {
        out.bytes(if first { b"[" } else { b"," })?;
        write!(out, "{}", json!(String::from_utf8_lossy(m)))
    } else {
        out.bytes(m)?;
        out.bytes(b"\n")
    }
}
