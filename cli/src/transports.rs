//! `shmkit mq ...` (POSIX message queues) and `shmkit fifo ...` (named pipes).

use std::ffi::OsString;
use std::io::BufRead;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use shmkit::Error;
use shmkit::fifo::Fifo;
use shmkit::mq::{MessageQueue, MqOptions};

use crate::out::{Out, mode_bits, utf8, utf8_all, warn, with_note};

/// Message-queue commands.
#[derive(Subcommand, Debug)]
pub enum MqCommand {
    /// Create a queue (fails if it exists).
    Create {
        /// Queue name (with or without the leading slash).
        name: OsString,
        /// Most messages held (at most /proc/sys/fs/mqueue/msg_max).
        #[arg(long, default_value_t = 10)]
        capacity: usize,
        /// Largest message in bytes (at most /proc/sys/fs/mqueue/msgsize_max).
        #[arg(long, default_value_t = 8192)]
        msg_size: usize,
        /// Permission bits, octal, 0..=777.
        #[arg(long, default_value = "600")]
        mode: OsString,
    },
    /// Send one message (`-` reads it from stdin).
    Send {
        /// Queue name.
        name: OsString,
        /// The message (bytes), or `-` for stdin.
        message: OsString,
        /// Priority (0 lowest .. 32767).
        #[arg(long, default_value_t = 0)]
        prio: u32,
        /// Give up after this long when the queue is full (e.g. 2, 1.5s, 250ms); default:
        /// wait forever; 0: do not wait.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// Receive messages (highest priority first) and print them.
    Recv {
        /// Queue name.
        name: OsString,
        /// How many messages to receive.
        #[arg(long, short = 'n', default_value_t = 1)]
        count: usize,
        /// Give up after this long per message (e.g. 2, 1.5s, 250ms); default: wait
        /// forever; 0: do not wait.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// Print one JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// Show a queue's attributes.
    Info {
        /// Queue name.
        name: OsString,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove queues (mq_unlink).
    Rm {
        /// Queue names.
        #[arg(required = true)]
        names: Vec<OsString>,
    },
    /// List queues (/dev/mqueue; mounts the mqueue file system there if needed and
    /// permitted).
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Named-pipe commands.
#[derive(Subcommand, Debug)]
pub enum FifoCommand {
    /// Create a named pipe.
    Create {
        /// Where.
        path: PathBuf,
        /// Permission bits, octal, 0..=777.
        #[arg(long, default_value = "600")]
        mode: OsString,
    },
    /// Send messages as frames (each argument is one message; `-` sends each stdin line).
    Send {
        /// The FIFO.
        path: PathBuf,
        /// Messages (bytes).
        #[arg(required = true)]
        messages: Vec<OsString>,
        /// Wait at most this long for a reader to open the FIFO and for room (e.g. 5,
        /// 250ms); default 5s.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        timeout: Duration,
    },
    /// Receive frames and print them, one per line.
    Recv {
        /// The FIFO.
        path: PathBuf,
        /// How many messages; default: until every writer has closed.
        #[arg(long, short = 'n')]
        count: Option<usize>,
        /// Give up after this long per message; default: wait forever.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// Keep receiving when writers come and go (server mode) instead of stopping
        /// when the last writer closes.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print one JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// Remove a named pipe (refuses anything else).
    Rm {
        /// The FIFO.
        path: PathBuf,
    },
}

/// `2`, `1.5`, `2s`, `250ms`, `10us`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .and_then(|v| Duration::try_from_secs_f64(v * scale).ok())
        .ok_or_else(|| format!("{s:?} is not a duration like 2, 1.5s or 250ms"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A JSON object for one received message.
fn message_json(data: &[u8], prio: Option<u32>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "len": data.len(),
        "text": std::str::from_utf8(data).ok(),
        "hex": hex(data),
    });
    if let Some(p) = prio {
        v["priority"] = p.into();
    }
    v
}

fn print_message(out: &mut Out, data: &[u8], prio: Option<u32>, json: bool) -> Result<(), Error> {
    if json {
        writeln!(out, "{}", message_json(data, prio))
    } else {
        out.bytes(data)?;
        out.bytes(b"\n")
    }
}

/// Runs an `mq` command.
pub fn run_mq(cmd: MqCommand, out: &mut Out) -> Result<(), Error> {
    match cmd {
        MqCommand::Create {
            name,
            capacity,
            msg_size,
            mode,
        } => {
            let name = utf8("NAME", &name)?;
            MqOptions::new(capacity, msg_size)
                .mode(mode_bits(&mode)?)
                .create(&name)?;
            Ok(())
        }
        MqCommand::Send {
            name,
            message,
            prio,
            timeout,
        } => {
            let q = MessageQueue::open(&utf8("NAME", &name)?)?;
            let msg = if message == "-" {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                    .map_err(|e| Error::invalid("stdin", "read", e.to_string()))?;
                v
            } else {
                message.into_vec()
            };
            match timeout {
                None => q.send(&msg, prio),
                Some(d) if d.is_zero() => q.try_send(&msg, prio),
                Some(d) => q.send_timeout(&msg, prio, d),
            }
        }
        MqCommand::Recv {
            name,
            count,
            timeout,
            json,
        } => {
            let name = utf8("NAME", &name)?;
            let q = MessageQueue::open(&name)?;
            let mut buf = vec![0u8; q.msg_size()];
            for _ in 0..count {
                // A pipe whose reader has gone: fail before taking a message.
                out.check_reader()?;
                let (n, prio) = match timeout {
                    None => q.recv(&mut buf)?,
                    Some(d) if d.is_zero() => q.try_recv(&mut buf)?,
                    Some(d) => q.recv_timeout(&mut buf, d)?,
                };
                if let Err(e) =
                    print_message(out, &buf[..n], Some(prio), json).and_then(|()| out.flush())
                {
                    // Not delivered: send it back (behind the messages of its priority).
                    let note = match q.try_send(&buf[..n], prio) {
                        Ok(()) => {
                            format!("queue {name}: the message was not delivered and was put back")
                        }
                        Err(e2) => format!(
                            "queue {name}: the message was not delivered and is LOST (putting it back failed: {e2})"
                        ),
                    };
                    return Err(with_note(e, note));
                }
            }
            Ok(())
        }
        MqCommand::Info { name, json } => {
            let q = MessageQueue::open(&utf8("NAME", &name)?)?;
            let a = q.attributes()?;
            if json {
                let v = serde_json::json!({
                    "name": q.name().as_str(),
                    "capacity": a.capacity,
                    "msg_size": a.msg_size,
                    "current": a.current,
                });
                writeln!(out, "{v}")
            } else {
                writeln!(
                    out,
                    "name      {}\ncapacity  {}\nmsg_size  {}\ncurrent   {}",
                    q.name(),
                    a.capacity,
                    a.msg_size,
                    a.current
                )
            }
        }
        MqCommand::Rm { names } => {
            // Report every failure; the last one is returned (and printed by main).
            let mut last_err = None;
            for n in utf8_all("NAMES", &names)? {
                if let Err(e) = MessageQueue::unlink(&n) {
                    if let Some(prev) = last_err.replace(e) {
                        warn(format_args!("{prev}"));
                    }
                }
            }
            last_err.map_or(Ok(()), Err)
        }
        MqCommand::Ls { json } => mq_ls(out, json),
    }
}

/// Where the mqueue file system is mounted, if anywhere.
fn mqueue_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "mqueue").then(|| PathBuf::from(dir.replace("\\040", " ")))
    })
}

/// Mounts the mqueue file system on /dev/mqueue (root only).
fn mount_mqueue() -> Result<PathBuf, Error> {
    let dir = Path::new("/dev/mqueue");
    let advice = "mount it yourself: `sudo mkdir -p /dev/mqueue && sudo mount -t mqueue none /dev/mqueue` (mq_open works without it; only listing needs it)";
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Unsupported {
            what: "listing message queues",
            reason: format!(
                "the mqueue file system is not mounted and only root may mount it; {advice}"
            ),
        });
    }
    if let Err(e) = std::fs::create_dir(dir) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(Error::os_with_advice(
                "/dev/mqueue",
                "mkdir",
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                advice,
            ));
        }
    }
    // SAFETY: all pointers are valid NUL-terminated strings (or null data), as mount(2)
    // expects.
    let r = unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/dev/mqueue".as_ptr(),
            c"mqueue".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    nix::errno::Errno::result(r)
        .map_err(|e| Error::os_with_advice("/dev/mqueue", "mount -t mqueue", e, advice))?;
    warn(format_args!(
        "mounted the mqueue file system on /dev/mqueue"
    ));
    Ok(dir.to_owned())
}

fn mq_ls(out: &mut Out, json: bool) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let dir = match mqueue_mount() {
        Some(d) => d,
        None => mount_mqueue()?,
    };
    let res = dir.display().to_string();
    let rd = std::fs::read_dir(&dir).map_err(|e| {
        Error::os(
            res.clone(),
            "read_dir",
            nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        )
    })?;
    let mut rows = Vec::new();
    for ent in rd.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        let meta = ent.metadata().ok();
        // The file reads "QSIZE:n NOTIFY:n SIGNO:n NOTIFY_PID:n"; QSIZE is queued bytes.
        let qsize = std::fs::read_to_string(ent.path()).ok().and_then(|s| {
            s.split_whitespace()
                .find_map(|f| f.strip_prefix("QSIZE:"))
                .and_then(|v| v.parse::<u64>().ok())
        });
        let attrs = MessageQueue::open(&name).and_then(|q| q.attributes()).ok();
        rows.push(serde_json::json!({
            "name": name,
            "mode": meta.as_ref().map(|m| format!("{:o}", m.mode() & 0o7777)),
            "uid": meta.as_ref().map(MetadataExt::uid),
            "queued_bytes": qsize,
            "capacity": attrs.map(|a| a.capacity),
            "msg_size": attrs.map(|a| a.msg_size),
            "current": attrs.map(|a| a.current),
        }));
    }
    rows.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    if json {
        return writeln!(out, "{}", serde_json::Value::Array(rows));
    }
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "?".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    writeln!(
        out,
        "{:<40} {:>5} {:>6} {:>8} {:>8} {:>7}",
        "NAME", "MODE", "UID", "CAPACITY", "MSGSIZE", "CURRENT"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<40} {:>5} {:>6} {:>8} {:>8} {:>7}",
            cell(&r["name"]),
            cell(&r["mode"]),
            cell(&r["uid"]),
            cell(&r["capacity"]),
            cell(&r["msg_size"]),
            cell(&r["current"])
        )?;
    }
    Ok(())
}

/// Runs a `fifo` command.
pub fn run_fifo(cmd: FifoCommand, out: &mut Out) -> Result<(), Error> {
    match cmd {
        FifoCommand::Create { path, mode } => Fifo::create(&path, mode_bits(&mode)?),
        FifoCommand::Rm { path } => Fifo::remove(&path),
        FifoCommand::Send {
            path,
            messages,
            timeout,
        } => {
            let tx = Fifo::open_writer(&path, Some(timeout))?;
            for m in messages {
                if m == "-" {
                    for line in std::io::stdin().lock().lines() {
                        let line =
                            line.map_err(|e| Error::invalid("stdin", "read", e.to_string()))?;
                        tx.send_timeout(line.as_bytes(), timeout)?;
                    }
                } else {
                    tx.send_timeout(m.as_bytes(), timeout)?;
                }
            }
            Ok(())
        }
        FifoCommand::Recv {
            path,
            count,
            timeout,
            follow,
            json,
        } => {
            let mut rx = Fifo::open_reader(&path)?;
            if follow {
                rx.stay_open()?;
            }
            let mut buf = Vec::new();
            let mut got = 0;
            while count.is_none_or(|c| got < c) {
                out.check_reader()?;
                match rx.recv_into(&mut buf, timeout) {
                    Ok(()) => {}
                    // Without a count, the end of the stream is the normal end.
                    Err(Error::Disconnected { .. }) if count.is_none() && got > 0 => break,
                    Err(e) => return Err(e),
                }
                print_message(out, &buf, None, json)?;
                out.flush()?;
                got += 1;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
