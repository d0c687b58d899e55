//! `shmkit topic`: create, publish to, subscribe to and inspect publish/subscribe topics.
//!
//! Messages are bytes (a `ByteTopic`); `stat` also works on typed topics made by programs
//! (`Topic<T>`).

use std::ffi::OsString;
use std::io::BufRead;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use serde_json::json;
use shmkit::topic::{ByteTopic, Policy, RecvTimeoutError, stat};
use shmkit::{Error, Segment};

use crate::out::{Out, note, utf8};

/// Slow-subscriber policies, as the CLI spells them.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum CliPolicy {
    /// The publisher waits (bounded) for the slowest live subscriber.
    Block,
    /// The publisher never waits; a subscriber that falls behind is told how much it lost.
    Overwrite,
}

/// Topic commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a byte topic (it persists until `shmkit rm`).
    Create {
        /// Topic name.
        name: OsString,
        /// Messages it retains (rounded up to a power of two, at least 2).
        #[arg(long, default_value_t = 64)]
        capacity: u64,
        /// Largest message in bytes.
        #[arg(long, default_value_t = 4096)]
        max_message: usize,
        /// Most subscribers at once.
        #[arg(long, default_value_t = 16)]
        max_subscribers: u64,
        /// Most publishers at once.
        #[arg(long, default_value_t = 1)]
        publishers: u64,
        /// What the publisher does when a subscriber is `capacity` messages behind.
        #[arg(long, value_enum, default_value_t = CliPolicy::Overwrite)]
        policy: CliPolicy,
    },
    /// Publish messages: each argument is one message; with none, each line of stdin is one.
    Pub {
        /// Topic name.
        name: OsString,
        /// Messages (bytes, UTF-8 or not).
        messages: Vec<OsString>,
        /// Give up after this many milliseconds of waiting for a slow subscriber (Block).
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
    /// Subscribe and print messages, one per line. Lost messages (Overwrite) are reported
    /// on stderr. Once every publisher has gone and nothing is left, returns with a
    /// "disconnected" line on stderr and exit status 3.
    Sub {
        /// Topic name.
        name: OsString,
        /// How many messages to print.
        #[arg(long, short = 'n', default_value_t = 1)]
        count: usize,
        /// Also receive up to this many messages published before subscribing.
        #[arg(long, default_value_t = 0)]
        history: u64,
        /// Give up after this many milliseconds without a message.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Print JSON (one array of strings; bytes that are not UTF-8 are replaced).
        #[arg(long)]
        json: bool,
    },
    /// Show a topic's policy, messages published, and every participant: role, position,
    /// lag, alive or dead.
    Stat {
        /// Topic name.
        name: OsString,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one topic command.
pub fn run(cmd: Command, out: &mut Out) -> Result<(), Error> {
    match cmd {
        Command::Create {
            name,
            capacity,
            max_message,
            max_subscribers,
            publishers,
            policy,
        } => {
            let name = utf8("NAME", &name)?;
            let t = ByteTopic::options()
                .capacity(capacity)
                .max_subscribers(max_subscribers)
                .publishers(publishers)
                .policy(match policy {
                    CliPolicy::Block => Policy::Block,
                    CliPolicy::Overwrite => Policy::Overwrite,
                })
                .segment(Segment::options().persistent(true))
                .create(&name, max_message)?;
            writeln!(
                out,
                "created {name}: {:?}, {} messages of at most {} bytes",
                t.policy(),
                t.capacity(),
                t.max_message()
            )
        }
        Command::Pub {
            name,
            messages,
            timeout_ms,
        } => {
            let name = utf8("NAME", &name)?;
            let t = ByteTopic::open(&name)?;
            let p = t.publisher()?;
            let d = Duration::from_millis(timeout_ms);
            if messages.is_empty() {
                for line in std::io::stdin().lock().lines() {
                    let line =
                        line.map_err(|e| Error::invalid(&name, "read stdin", e.to_string()))?;
                    p.send_timeout(line.as_bytes(), d)?;
                }
            } else {
                for m in &messages {
                    p.send_timeout(m.as_os_str().as_bytes(), d)?;
                }
            }
            Ok(())
        }
        Command::Sub {
            name,
            count,
            history,
            timeout_ms,
            json,
        } => sub(
            &utf8("NAME", &name)?,
            count,
            history,
            Duration::from_millis(timeout_ms),
            json,
            out,
        ),
        Command::Stat { name, json } => {
            let name = utf8("NAME", &name)?;
            let s = stat(&name)?;
            if json {
                let parts: Vec<_> = s
                    .participants
                    .iter()
                    .map(|p| {
                        json!({
                            "entry": p.entry,
                            "pid": p.pid,
                            "publisher": p.publisher,
                            "subscriber": p.subscriber,
                            "cursor": p.cursor,
                            "lag": p.lag,
                            "alive": p.alive,
                        })
                    })
                    .collect();
                writeln!(
                    out,
                    "{}",
                    json!({
                        "name": name,
                        "capacity": s.capacity,
                        "message_bytes": s.message_bytes,
                        "policy": format!("{:?}", s.policy).to_lowercase(),
                        "multi_publisher": s.multi_publisher,
                        "published": s.published,
                        "peer_deaths": s.peer_deaths,
                        "participants": parts,
                    })
                )
            } else {
                writeln!(
                    out,
                    "{name}: topic, {:?}, {} slots of {} bytes, {} published{}",
                    s.policy,
                    s.capacity,
                    s.message_bytes,
                    s.published,
                    if s.multi_publisher {
                        ", several publishers"
                    } else {
                        ""
                    }
                )?;
                let subs = s.participants.iter().filter(|p| p.subscriber).count();
                writeln!(
                    out,
                    "  subscribers {subs}, dead peers noticed {}",
                    s.peer_deaths
                )?;
                for p in &s.participants {
                    let role = match (p.publisher, p.subscriber) {
                        (true, true) => "publisher+subscriber",
                        (true, false) => "publisher",
                        (false, true) => "subscriber",
                        (false, false) => "idle",
                    };
                    let lag = if p.subscriber {
                        format!(" lag {}", p.lag)
                    } else {
                        String::new()
                    };
                    writeln!(
                        out,
                        "  entry {} pid {} {role}{lag} {}",
                        p.entry,
                        p.pid,
                        if p.alive { "alive" } else { "dead" }
                    )?;
                }
                Ok(())
            }
        }
    }
}

fn sub(
    name: &str,
    count: usize,
    history: u64,
    t: Duration,
    json: bool,
    out: &mut Out,
) -> Result<(), Error> {
    let topic = ByteTopic::open(name)?;
    let s = topic.subscribe_with_history(history)?;
    let mut buf = Vec::with_capacity(topic.max_message());
    let mut i = 0;
    while i < count {
        out.check_reader()?;
        match s.recv_timeout(&mut buf, t) {
            Ok(_) => {
                crate::queue::write_message(out, &buf, json, i == 0)?;
                out.flush()?;
                i += 1;
            }
            Err(RecvTimeoutError::Lagged(n)) => {
                note(format_args!(
                    "topic {name}: {n} messages were overwritten before this subscriber read them"
                ));
            }
            Err(e) => {
                if json && i > 0 {
                    let _ = writeln!(out, "]");
                }
                return Err(match e {
                    RecvTimeoutError::Disconnected => Error::Disconnected {
                        resource: name.to_owned(),
                        op: "topic sub",
                        detail: Some(
                            "every publisher has gone (exited or died) and nothing is left".into(),
                        ),
                    },
                    RecvTimeoutError::Timeout => Error::Timeout {
                        resource: name.to_owned(),
                        op: "topic sub",
                        timeout: t,
                    },
                    other => other.into(),
                });
            }
        }
    }
    if json {
        if count == 0 {
            out.bytes(b"[")?;
        }
        writeln!(out, "]")?;
    }
    Ok(())
}
