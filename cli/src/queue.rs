//! `shmkit queue`: create, feed, drain and inspect shared-memory queues from the shell.
//!
//! Messages are bytes (a `ByteQueue`); `stat` and `rm` also work on typed queues made by
//! programs (`Queue<T>`).

use std::io::{BufRead, Write};
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use serde_json::json;
use shmkit::queue::{ByteQueue, Mode, stats};
use shmkit::{Error, Segment};

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
        name: String,
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
        name: String,
        /// Messages.
        messages: Vec<String>,
        /// Give up after this many milliseconds of a full queue.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
    /// Receive messages and print them, one per line.
    Recv {
        /// Queue name.
        name: String,
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
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one queue command.
pub fn run(cmd: Command) -> Result<(), Error> {
    match cmd {
        Command::Create {
            name,
            capacity,
            max_message,
            mode,
            joinable,
        } => {
            let mode = match mode {
                CliMode::Spsc => Mode::Spsc,
                CliMode::Mpmc => Mode::Mpmc,
            };
            let q = ByteQueue::options()
                .mode(mode)
                .capacity(capacity)
                .joinable(joinable)
                .create_bytes(&name, max_message)?;
            println!(
                "created {name}: {:?}, {} messages of at most {} bytes",
                q.mode(),
                q.capacity(),
                q.max_message()
            );
            Ok(())
        }
        Command::Send {
            name,
            messages,
            timeout_ms,
        } => {
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
                    q.send_timeout(m.as_bytes(), t)?;
                }
            }
            Ok(())
        }
        Command::Recv {
            name,
            count,
            timeout_ms,
            json,
        } => {
            let q = ByteQueue::open(&name)?;
            let t = Duration::from_millis(timeout_ms);
            let mut buf = Vec::new();
            let mut out = Vec::new();
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            for _ in 0..count {
                q.recv_timeout(&mut buf, t)?;
                if json {
                    out.push(String::from_utf8_lossy(&buf).into_owned());
                } else {
                    let _ = lock.write_all(&buf);
                    let _ = lock.write_all(b"\n");
                }
            }
            if json {
                println!("{}", json!(out));
            }
            Ok(())
        }
        Command::Stat { name, json } => {
            let s = stats(&name)?;
            let seg = Segment::open(&name)?;
            let ty = seg.header().type_name().to_owned();
            if json {
                println!(
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
                );
            } else {
                println!("{name}: {} {ty}", s.kind);
                println!(
                    "  mode {:?}{}",
                    s.mode,
                    if s.joinable { ", joinable" } else { "" }
                );
                println!(
                    "  capacity {} slots of {} bytes, {} in the queue ({} sent, {} received)",
                    s.capacity, s.slot_bytes, s.len, s.sent, s.received
                );
                println!(
                    "  handles {} live of {} (pids {:?})",
                    s.live_handles, s.max_handles, s.pids
                );
                match s.last_dead_peer {
                    Some(p) => println!("  dead peers recovered: {} (last pid {p})", s.peer_deaths),
                    None => println!("  dead peers recovered: {}", s.peer_deaths),
                }
            }
            Ok(())
        }
    }
}
