//! `shmkit topic`: create, publish to, subscribe to and inspect publish/subscribe topics.
//!
//! A byte topic (`ByteTopic`) carries byte messages; a typed topic (`Topic<T>`, made by a
//! program or by `create --type`) of an integer or float type carries numbers, and
//! `pub`/`sub` read its element type from its header (`--type` only asserts it).

use std::ffi::OsString;
use std::io::BufRead;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use serde_json::json;
use shmkit::segment::Kind;
use shmkit::topic::{ByteTopic, Policy, RecvTimeoutError, Topic, TopicOptions, stat};
use shmkit::{Error, Segment};

use crate::out::{Out, note, record, utf8};
use crate::segments::{Names, rm_kind};
use crate::values::{Ty, element_type, parse_messages, ty_name, with_ty};

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
    /// Create a byte topic, or with `--type` a typed topic of numbers (it persists until
    /// `shmkit rm`).
    Create {
        /// Topic name.
        name: OsString,
        /// Messages it retains (rounded up to a power of two, at least 2).
        #[arg(long, default_value_t = 64)]
        capacity: u64,
        /// Largest message in bytes (byte topics).
        #[arg(long, default_value_t = 4096, conflicts_with = "ty")]
        max_message: usize,
        /// A typed topic (`Topic<T>`) of this element type instead of a byte topic.
        #[arg(long = "type", value_enum)]
        ty: Option<Ty>,
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
        /// Give up after this long waiting for a slow subscriber (Block; e.g. 1.5s, 250ms).
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "5s", alias = "timeout-ms")]
        timeout: Duration,
        /// Fail unless the topic is a typed topic of this element type.
        #[arg(long = "type", value_enum)]
        ty: Option<Ty>,
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
        /// Give up after this long without a message (e.g. 1.5s, 250ms).
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "5s", alias = "timeout-ms")]
        timeout: Duration,
        /// Fail unless the topic is a typed topic of this element type.
        #[arg(long = "type", value_enum)]
        ty: Option<Ty>,
        /// Print JSON: one line per message, as it is received.
        #[arg(long)]
        json: bool,
    },
    /// Show a topic's policy, messages published, and every participant: role, position,
    /// lag, alive or dead.
    Stat {
        /// Topic name.
        name: OsString,
        /// Print JSON (one line).
        #[arg(long)]
        json: bool,
    },
    /// Remove topics (byte or typed; checks the kind first).
    Rm(Names),
}

/// What `create` sets, for byte and typed topics alike.
struct Params {
    capacity: u64,
    max_subscribers: u64,
    publishers: u64,
    policy: Policy,
}

impl Params {
    fn apply<T>(&self, o: TopicOptions<T>) -> TopicOptions<T> {
        o.capacity(self.capacity)
            .max_subscribers(self.max_subscribers)
            .publishers(self.publishers)
            .policy(self.policy)
            .segment(Segment::options().persistent(true))
    }
}

/// Runs one topic command.
pub fn run(cmd: Command, out: &mut Out) -> Result<(), Error> {
    match cmd {
        Command::Create {
            name,
            capacity,
            max_message,
            ty,
            max_subscribers,
            publishers,
            policy,
        } => {
            let name = utf8("NAME", &name)?;
            let policy = match policy {
                CliPolicy::Block => Policy::Block,
                CliPolicy::Overwrite => Policy::Overwrite,
            };
            let params = Params {
                capacity,
                max_subscribers,
                publishers,
                policy,
            };
            if let Some(ty) = ty {
                return with_ty!(ty, T => {
                    let t = params.apply(Topic::<T>::options()).create(&name)?;
                    writeln!(
                        out,
                        "created {name}: {:?}, {} messages of type {}",
                        t.policy(),
                        t.capacity(),
                        ty_name(ty)
                    )
                });
            }
            let t = ByteTopic::options()
                .capacity(params.capacity)
                .max_subscribers(params.max_subscribers)
                .publishers(params.publishers)
                .policy(params.policy)
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
        Command::Rm(a) => rm_kind(&[Kind::Topic, Kind::ByteTopic], &a.names, out),
        Command::Pub {
            name,
            messages,
            timeout: d,
            ty,
        } => {
            let name = utf8("NAME", &name)?;
            if let Some(ty) = element_type(&name, Kind::Topic, ty)? {
                return with_ty!(ty, T => {
                    let values: Vec<T> = parse_messages(&name, &messages)?;
                    let p = Topic::<T>::open(&name)?.publisher()?;
                    for v in values {
                        p.send_timeout(v, d)?;
                    }
                    Ok(())
                });
            }
            let t = ByteTopic::open(&name)?;
            let p = t.publisher()?;
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
            timeout,
            ty,
            json,
        } => {
            let name = utf8("NAME", &name)?;
            match element_type(&name, Kind::Topic, ty)? {
                Some(ty) => with_ty!(ty, T => {
                    let s = Topic::<T>::open(&name)?.subscribe_with_history(history)?;
                    sub_loop(&name, count, timeout, out, |out| {
                        let v = match s.recv_timeout(timeout) {
                            Ok(v) => v,
                            Err(e) => return Ok(Some(e)),
                        };
                        if json {
                            let f = json!({ "type": ty_name(ty), "data": v });
                            out.json(&record("topic", &name, "sub", f))?;
                        } else {
                            writeln!(out, "{v}")?;
                        }
                        Ok(None)
                    })
                }),
                None => sub(&name, count, history, timeout, json, out),
            }
        }
        Command::Stat { name, json } => {
            let name = utf8("NAME", &name)?;
            let obj = shmkit::inspect::object(&name, shmkit::inspect::Reads::Open)?;
            // Not a topic (or no longer): `stat` gives the precise error.
            let s = match obj.state {
                shmkit::inspect::ObjectState::Topic(s) => s,
                _ => stat(&name)?,
            };
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
                let kind = match &obj.file.header {
                    Ok(h) => h.kind().name(),
                    Err(_) => Segment::open(&name)?.header().kind().name(),
                };
                out.json(&record(
                    &kind,
                    &name,
                    "stat",
                    json!({
                        "capacity": s.capacity,
                        "message_bytes": s.message_bytes,
                        "policy": format!("{:?}", s.policy).to_lowercase(),
                        "multi_publisher": s.multi_publisher,
                        "published": s.published,
                        "peer_deaths": s.peer_deaths,
                        "participants": parts,
                    }),
                ))
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
    sub_loop(name, count, t, out, |out| {
        if let Err(e) = s.recv_timeout(&mut buf, t) {
            return Ok(Some(e));
        }
        crate::queue::write_message(out, "bytetopic", name, "sub", &buf, json)?;
        Ok(None)
    })
}

/// Runs `step` (receive one message and print it: `Ok(None)`; or the receive error)
/// until `count` messages are out; reports lost messages (Overwrite) on stderr.
fn sub_loop(
    name: &str,
    count: usize,
    t: Duration,
    out: &mut Out,
    mut step: impl FnMut(&mut Out) -> Result<Option<RecvTimeoutError>, Error>,
) -> Result<(), Error> {
    let mut i = 0;
    while i < count {
        out.check_reader()?;
        match step(out)? {
            None => {
                out.flush()?;
                i += 1;
            }
            Some(RecvTimeoutError::Lagged(n)) => {
                note(format_args!(
                    "topic {name}: {n} messages were overwritten before this subscriber read them"
                ));
            }
            Some(e) => {
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
    Ok(())
}
