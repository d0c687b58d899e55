//! `shmkit queue`: create, feed, drain and inspect shared-memory queues from the shell.
//!
//! A byte queue (`ByteQueue`) carries byte messages; a typed queue (`Queue<T>`, made by a
//! program or by `create --type`) of an integer or float type carries numbers, and
//! `send`/`recv` read its element type from its header (`--type` only asserts it), as
//! `value get` does.

use std::ffi::OsString;
use std::io::BufRead;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use serde_json::json;
use shmkit::queue::{ByteQueue, Mode, Queue, RecvTimeoutError, stats};
use shmkit::segment::Kind;
use shmkit::{Error, Segment};

use crate::out::{Out, message, record, utf8, with_note};
use crate::segments::{Names, rm_kind};
use crate::values::{Ty, element_type, parse_messages, ty_name, with_ty};

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
    /// Create a byte queue, or with `--type` a typed queue of numbers.
    Create {
        /// Queue name.
        name: OsString,
        /// Number of messages it holds (rounded up to a power of two).
        #[arg(long, default_value_t = 64)]
        capacity: u64,
        /// Largest message in bytes (byte queues).
        #[arg(long, default_value_t = 4096, conflicts_with = "ty")]
        max_message: usize,
        /// A typed queue (`Queue<T>`) of this element type instead of a byte queue.
        #[arg(long = "type", value_enum)]
        ty: Option<Ty>,
        /// Mode.
        #[arg(long, value_enum, default_value_t = CliMode::Mpmc)]
        mode: CliMode,
        /// Joinable (task_done / join).
        #[arg(long)]
        joinable: bool,
    },
    /// Send messages: each argument is one message; with none, each line of stdin is one.
    /// On a typed queue each message is a number of its element type.
    Send {
        /// Queue name.
        name: OsString,
        /// Messages (bytes, UTF-8 or not; numbers on a typed queue: negative ones after
        /// `--`).
        messages: Vec<OsString>,
        /// Give up after this long of a full queue (e.g. 1.5s, 250ms).
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "5s", alias = "timeout-ms")]
        timeout: Duration,
        /// Fail unless the queue is a typed queue of this element type.
        #[arg(long = "type", value_enum)]
        ty: Option<Ty>,
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
        /// Give up after this long of an empty queue (e.g. 1.5s, 250ms).
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "5s", alias = "timeout-ms")]
        timeout: Duration,
        /// Fail unless the queue is a typed queue of this element type.
        #[arg(long = "type", value_enum)]
        ty: Option<Ty>,
        /// Print JSON: one line per message, as it is received.
        #[arg(long)]
        json: bool,
    },
    /// Show a queue's mode, capacity, fill level, live handles and recovered dead peers.
    Stat {
        /// Queue name.
        name: OsString,
        /// Print JSON (one line).
        #[arg(long)]
        json: bool,
    },
    /// Remove queues (byte or typed; checks the kind first).
    Rm(Names),
}

/// Runs one queue command.
pub fn run(cmd: Command, out: &mut Out) -> Result<(), Error> {
    match cmd {
        Command::Create {
            name,
            capacity,
            max_message,
            ty,
            mode,
            joinable,
        } => {
            let name = utf8("NAME", &name)?;
            let mode = match mode {
                CliMode::Spsc => Mode::Spsc,
                CliMode::Mpmc => Mode::Mpmc,
            };
            if let Some(ty) = ty {
                return with_ty!(ty, T => {
                    let q = Queue::<T>::options()
                        .mode(mode)
                        .capacity(capacity)
                        .joinable(joinable)
                        .segment(Segment::options().persistent(true))
                        .create(&name)?;
                    writeln!(
                        out,
                        "created {name}: {:?}, {} messages of type {}",
                        q.mode(),
                        q.capacity(),
                        ty_name(ty)
                    )
                });
            }
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
            timeout: t,
            ty,
        } => {
            let name = utf8("NAME", &name)?;
            if let Some(ty) = element_type(&name, Kind::Queue, ty)? {
                return send_typed(&name, ty, &messages, t);
            }
            let q = ByteQueue::open(&name)?;
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
            timeout,
            ty,
            json,
        } => {
            let name = utf8("NAME", &name)?;
            match element_type(&name, Kind::Queue, ty)? {
                Some(ty) => recv_typed(&name, ty, count, timeout, json, out),
                None => recv(&name, count, timeout, json, out),
            }
        }
        Command::Rm(a) => rm_kind(&[Kind::Queue, Kind::ByteQueue], &a.names, out),
        Command::Stat { name, json } => {
            let name = utf8("NAME", &name)?;
            let obj = shmkit::inspect::object(&name, shmkit::inspect::Reads::Open)?;
            // Not a queue (or no longer): `stats` gives the precise error.
            let s = match obj.state {
                shmkit::inspect::ObjectState::Queue(s) => s,
                _ => stats(&name)?,
            };
            let ty = match &obj.file.header {
                Ok(h) => h.type_name().to_owned(),
                Err(_) => Segment::open(&name)?.header().type_name().to_owned(),
            };
            if json {
                out.json(&record(
                    &s.kind.name(),
                    &name,
                    "stat",
                    json!({
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
                    }),
                ))
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
    for _ in 0..count {
        // A pipe whose reader has gone: fail before taking anything.
        out.check_reader()?;
        let m = match q.recv_ref(Some(t)) {
            Ok(m) => m,
            Err(e) => return Err(recv_error(name, e, t)),
        };
        let written =
            write_message(out, "bytequeue", name, "recv", &m, json).and_then(|()| out.flush());
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
    Ok(())
}

/// The error for a failed `queue recv`.
fn recv_error(name: &str, e: RecvTimeoutError, t: Duration) -> Error {
    match e {
        RecvTimeoutError::Disconnected => Error::Disconnected {
            resource: name.to_owned(),
            op: "queue recv",
            detail: Some(
                "the queue is empty and every producer has gone (closed, exited or died)".into(),
            ),
        },
        RecvTimeoutError::Timeout => Error::Timeout {
            resource: name.to_owned(),
            op: "queue recv",
            timeout: t,
        },
        other => other.into(),
    }
}

/// One message: a line of bytes, or (`--json`) one line with the message record.
pub(crate) fn write_message(
    out: &mut Out,
    kind: &str,
    name: &str,
    op: &str,
    m: &[u8],
    json: bool,
) -> Result<(), Error> {
    if json {
        out.json(&message(kind, name, op, m))
    } else {
        out.bytes(m)?;
        out.bytes(b"\n")
    }
}

/// `queue send` on a typed queue: every message is parsed before any is sent.
fn send_typed(name: &str, ty: Ty, messages: &[OsString], t: Duration) -> Result<(), Error> {
    with_ty!(ty, T => {
        let values: Vec<T> = parse_messages(name, messages)?;
        let q = Queue::<T>::open(name)?;
        for v in values {
            q.send_timeout(v, t)?;
        }
        Ok(())
    })
}

/// `queue recv` on a typed queue: a value whose write fails is sent back (to the end).
fn recv_typed(
    name: &str,
    ty: Ty,
    count: usize,
    t: Duration,
    json: bool,
    out: &mut Out,
) -> Result<(), Error> {
    with_ty!(ty, T => {
        let q = Queue::<T>::open(name)?;
        for _ in 0..count {
            out.check_reader()?;
            let v = q.recv_timeout(t).map_err(|e| recv_error(name, e, t))?;
            let written = if json {
                out.json(&record("queue", name, "recv", json!({ "type": ty_name(ty), "data": v })))
            } else {
                writeln!(out, "{v}")
            }
            .and_then(|()| out.flush());
            if let Err(e) = written {
                let note = match q.try_send(v).map_err(Error::from) {
                    Ok(()) => format!("queue {name}: writing {v} failed and it was put back at the end of the queue"),
                    Err(e2) => format!("queue {name}: writing {v} failed and it is LOST (putting it back failed: {e2})"),
                };
                return Err(with_note(e, note));
            }
        }
        Ok(())
    })
}
