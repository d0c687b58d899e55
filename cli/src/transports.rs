//! `shmkit mq ...` (POSIX message queues) and `shmkit fifo ...` (named pipes).

use std::ffi::OsString;
use std::io::BufRead;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use shmkit::Error;
use shmkit::fifo::Fifo;
use shmkit::mq::{MessageQueue, MqOptions};

use crate::out::{Out, message, mode_bits, record, utf8, utf8_all, warn, with_note};

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
        /// Give up after this long when the queue is full (e.g. 1.5s, 250ms); default:
        /// wait forever; 0s: do not wait.
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
        timeout: Option<Duration>,
    },
    /// Receive messages (highest priority first) and print them.
    Recv {
        /// Queue name.
        name: OsString,
        /// How many messages to receive.
        #[arg(long, short = 'n', default_value_t = 1)]
        count: usize,
        /// Give up after this long per message (e.g. 1.5s, 250ms); default: wait
        /// forever; 0s: do not wait.
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
        timeout: Option<Duration>,
        /// Print JSON: one line per message (with its `priority`), as it is received.
        #[arg(long)]
        json: bool,
    },
    /// Show a queue's attributes.
    #[command(visible_alias = "info")]
    Stat {
        /// Queue name.
        name: OsString,
        /// Print JSON (one line).
        #[arg(long)]
        json: bool,
    },
    /// Remove queues (mq_unlink).
    Rm {
        /// Queue names.
        #[arg(required = true)]
        names: Vec<OsString>,
    },
    /// List queues (from wherever the mqueue file system is mounted; if it is not, says
    /// how to mount it: `mount -t mqueue none /dev/mqueue`).
    Ls {
        /// Print JSON (one line per queue).
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
        /// Wait at most this long for a reader to open the FIFO and for room (e.g. 1.5s,
        /// 250ms).
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "5s")]
        timeout: Duration,
    },
    /// Receive frames and print them, one per line.
    Recv {
        /// The FIFO.
        path: PathBuf,
        /// How many messages; default: until every writer has closed.
        #[arg(long, short = 'n')]
        count: Option<usize>,
        /// Give up after this long per message (e.g. 1.5s, 250ms); default: wait forever.
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
        timeout: Option<Duration>,
        /// Keep receiving when writers come and go (server mode) instead of stopping
        /// when the last writer closes.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print JSON: one line per message, as it is received.
        #[arg(long)]
        json: bool,
    },
    /// Show a named pipe's mode and owner (lstat only: never opens it).
    Stat {
        /// The FIFO.
        path: PathBuf,
        /// Print JSON (one line).
        #[arg(long)]
        json: bool,
    },
    /// Remove a named pipe (refuses anything else).
    Rm {
        /// The FIFO.
        path: PathBuf,
    },
}

/// One received message: a line of bytes, or (`--json`) one line with its record.
fn print_message(
    out: &mut Out,
    kind: &str,
    name: &str,
    data: &[u8],
    prio: Option<u32>,
    json: bool,
) -> Result<(), Error> {
    if !json {
        out.bytes(data)?;
        return out.bytes(b"\n");
    }
    let mut v = message(kind, name, "recv", data);
    if let Some(p) = prio {
        v["priority"] = p.into();
    }
    out.json(&v)
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
                if let Err(e) = print_message(out, "mq", &name, &buf[..n], Some(prio), json)
                    .and_then(|()| out.flush())
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
        MqCommand::Stat { name, json } => {
            let q = MessageQueue::open(&utf8("NAME", &name)?)?;
            let a = q.attributes()?;
            if json {
                let v = serde_json::json!({
                    "capacity": a.capacity,
                    "msg_size": a.msg_size,
                    "current": a.current,
                });
                out.json(&record("mq", q.name().as_str(), "stat", v))
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
                match MessageQueue::unlink(&n) {
                    Ok(()) => writeln!(out, "removed {n}")?,
                    Err(e) => {
                        if let Some(prev) = last_err.replace(e) {
                            warn(format_args!("{prev}"));
                        }
                    }
                }
            }
            last_err.map_or(Ok(()), Err)
        }
        MqCommand::Ls { json } => mq_ls(out, json),
    }
}

/// Where the mqueue file system is mounted, if anywhere (from `/proc/self/mounts`).
fn mqueue_mount() -> Option<PathBuf> {
    mqueue_mount_in(&std::fs::read_to_string("/proc/self/mounts").ok()?)
}

/// The mount point of the first `mqueue` entry of a mounts table (fstab format, spaces
/// in paths escaped as `\040`).
fn mqueue_mount_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "mqueue").then(|| PathBuf::from(dir.replace("\\040", " ")))
    })
}

/// `mq ls` without a mounted mqueue file system: says how to mount it (it does not mount
/// anything itself: a listing command changes no system state).
fn not_mounted() -> Error {
    Error::Unsupported {
        what: "listing message queues",
        reason: "mqueue filesystem not mounted; mount it with `mount -t mqueue none /dev/mqueue` \
                 (as root; `mkdir -p /dev/mqueue` first if needed). Queues work without it \
                 (mq_open); only listing needs it"
            .into(),
    }
}

fn mq_ls(out: &mut Out, json: bool) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let dir = mqueue_mount().ok_or_else(not_mounted)?;
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
            "kind": "mq",
            "name": name,
            "op": "ls",
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
        return rows.iter().try_for_each(|r| out.json(r));
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
        FifoCommand::Stat { path, json } => {
            let st = Fifo::stat(&path)?;
            let shown = path.display().to_string();
            if json {
                let v = serde_json::json!({
                    "mode": format!("{:o}", st.mode),
                    "uid": st.uid,
                    "gid": st.gid,
                });
                out.json(&record("fifo", &shown, "stat", v))
            } else {
                writeln!(
                    out,
                    "path  {shown}\nmode  {:o}\nuid   {}\ngid   {}",
                    st.mode, st.uid, st.gid
                )
            }
        }
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
                print_message(out, "fifo", &path.to_string_lossy(), &buf, None, json)?;
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
    fn the_mqueue_mount_is_found_in_a_mounts_table() {
        let t = "proc /proc proc rw 0 0\nmqueue /dev/mq\\040x mqueue rw,relatime 0 0\n";
        assert_eq!(mqueue_mount_in(t), Some(PathBuf::from("/dev/mq x")));
        assert_eq!(mqueue_mount_in("proc /proc proc rw 0 0\n"), None);
        assert_eq!(mqueue_mount_in(""), None);
    }

    #[test]
    fn not_mounted_says_how_to_mount_it() {
        let e = not_mounted().to_string();
        assert!(e.contains("mqueue filesystem not mounted"), "{e}");
        assert!(e.contains("mount -t mqueue none /dev/mqueue"), "{e}");
    }
}
