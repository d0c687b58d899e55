//! Checked output and argument conversions shared by every command.
//!
//! Every byte the CLI prints on stdout goes through [`Out`]: a locked, buffered writer whose
//! errors are [`Error`]s. A closed pipe (`shmkit ls | head -0`: Rust ignores SIGPIPE, so the
//! write fails with `EPIPE`) or a full device (`> /dev/full`: `ENOSPC`) therefore ends the
//! command with one line on stderr and exit status 1, never a panic. Commands flush
//! explicitly where output must be out before they go on (`queue recv` before it consumes
//! a message); `main` flushes the rest.
//!
//! Names arrive as `OsString` so that a name that is not UTF-8 is a one-line error naming
//! the argument ([`utf8`]) rather than a clap usage error; `--mode` is checked here
//! ([`mode_bits`]) for the same reason.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, BufWriter, StdoutLock, Write};
use std::os::fd::AsFd;

use nix::errno::Errno;
use shmkit::Error;

/// The process's stdout, locked and buffered; every write is checked.
pub struct Out(BufWriter<StdoutLock<'static>>);

impl Out {
    /// Locks stdout for the life of the command.
    pub fn new() -> Out {
        Out(BufWriter::new(io::stdout().lock()))
    }

    /// Target of `write!`/`writeln!`: formats into the buffer, mapping errors.
    pub fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> Result<(), Error> {
        self.0.write_fmt(args).map_err(|e| stdout_err(&e))
    }

    /// Writes raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), Error> {
        self.0.write_all(b).map_err(|e| stdout_err(&e))
    }

    /// Writes one `--json` record: one compact JSON object on one line (JSON Lines; see
    /// the conventions in `main.rs`).
    pub fn json(&mut self, v: &serde_json::Value) -> Result<(), Error> {
        writeln!(self, "{v}")
    }

    /// Pushes everything buffered to the file descriptor.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.0.flush().map_err(|e| stdout_err(&e))
    }

    /// Fails at once if stdout is a pipe whose reader has gone (`poll` reports `POLLERR`),
    /// so that a command can refuse to take something it could not hand out.
    pub fn check_reader(&mut self) -> Result<(), Error> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let stdout = io::stdout();
        let fd = stdout.as_fd();
        let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
        if poll(&mut fds, PollTimeout::ZERO).is_ok()
            && fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLERR))
        {
            return Err(stdout_errno(Errno::EPIPE));
        }
        Ok(())
    }
}

/// The `--json` record for one object: `{"kind":..,"name":..,"op":..}` plus `fields`.
pub fn record(kind: &str, name: &str, op: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::json!({ "kind": kind, "name": name, "op": op });
    if let (Some(o), serde_json::Value::Object(f)) = (v.as_object_mut(), fields) {
        o.extend(f);
    }
    v
}

/// The `--json` record for one message (bytes): `len`, and `data` as text when it is
/// UTF-8 (`"encoding":"utf8"`), else as lowercase hex (`"encoding":"hex"`): lossless.
pub fn message(kind: &str, name: &str, op: &str, data: &[u8]) -> serde_json::Value {
    let len = data.len();
    let (encoding, data) = match std::str::from_utf8(data) {
        Ok(text) => ("utf8", text.to_owned()),
        Err(_) => ("hex", data.iter().map(|b| format!("{b:02x}")).collect()),
    };
    record(
        kind,
        name,
        op,
        serde_json::json!({ "len": len, "encoding": encoding, "data": data }),
    )
}

/// The error for a failed write to stdout.
fn stdout_err(e: &io::Error) -> Error {
    stdout_errno(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

fn stdout_errno(errno: Errno) -> Error {
    match errno {
        Errno::EPIPE => Error::os_with_advice(
            "stdout",
            "write",
            errno,
            "the reader of stdout has gone (e.g. `| head`); output stopped there",
        ),
        // ENOSPC and the rest: the library's advice, which names stdout.
        _ => Error::os("stdout", "write", errno),
    }
}

/// Prints `shmkit: MESSAGE` on stderr, ignoring a failure (stderr is the last resort).
pub fn warn(args: fmt::Arguments<'_>) {
    note(format_args!("shmkit: {args}"));
}

/// Prints a line on stderr, ignoring a failure (unlike `eprintln!`, which panics).
pub fn note(args: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{args}");
}

/// A name argument as UTF-8, or a one-line error naming the argument.
pub fn utf8(arg: &'static str, s: &OsStr) -> Result<String, Error> {
    s.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::InvalidName {
            name: s.to_string_lossy().into_owned(),
            reason: format!("the {arg} argument is not valid UTF-8"),
        })
}

/// Every element of a list argument as UTF-8.
pub fn utf8_all(arg: &'static str, v: &[OsString]) -> Result<Vec<String>, Error> {
    v.iter().map(|s| utf8(arg, s)).collect()
}

/// Parses `--mode`: octal permission bits only (0..=0o777; no setuid, setgid or sticky).
pub fn mode_bits(s: &OsStr) -> Result<u32, Error> {
    let text = utf8("--mode", s)?;
    let bad = |why: &str| Error::invalid("--mode", "parse", format!("{text:?} {why}"));
    let m = u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .map_err(|_| bad("is not an octal mode like 600"))?;
    if m > 0o777 {
        return Err(bad(
            "has bits beyond the permission bits (0..=777): setuid, setgid and sticky are refused",
        ));
    }
    Ok(m)
}

/// Appends `note` to an error's advice.
pub fn with_note(e: Error, note: String) -> Error {
    match e {
        Error::Os {
            resource,
            op,
            errno,
            advice,
        } => Error::Os {
            resource,
            op,
            errno,
            advice: Some(match advice {
                Some(a) => format!("{a}; {note}"),
                None => note,
            }),
        },
        other => Error::invalid("stdout", "write", format!("{other}; {note}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn modes_are_permission_bits_only() {
        assert_eq!(mode_bits(OsStr::new("644")).unwrap(), 0o644);
        assert_eq!(mode_bits(OsStr::new("0o600")).unwrap(), 0o600);
        assert_eq!(mode_bits(OsStr::new("0")).unwrap(), 0);
        for bad in ["4755", "1777", "2700", "999", "rw", ""] {
            assert!(mode_bits(OsStr::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn non_utf8_names_name_the_argument() {
        let e = utf8("NAME", OsStr::from_bytes(b"a\xffb")).unwrap_err();
        assert!(e.to_string().contains("NAME argument"), "{e}");
    }
}
