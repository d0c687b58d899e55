//! `shmkit latest`: create, read and write a last-value cell (`shmkit::latest`) of an
//! integer or float type, or a byte string.

use std::ffi::OsString;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;
use shmkit::latest::{BYTES_TYPE, Latest, LatestBytes};
use shmkit::segment::Kind;
use shmkit::{Error, Segment};

use crate::out::{Out, message, mode_bits, record, utf8};
use crate::segments::{NameJson, Names, rm_kind, stat_kind};
use crate::values::{ModeArg, Ty, parse_val, ty_name, ty_of, with_ty};

/// `shmkit latest ...`
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a last-value cell (one writer at a time, readers never block it).
    Create {
        /// Name.
        name: OsString,
        /// Value type of a scalar cell.
        #[arg(
            long = "type",
            value_enum,
            required_unless_present = "bytes",
            conflicts_with = "bytes"
        )]
        ty: Option<Ty>,
        /// Initial value of a scalar (default 0).
        #[arg(long, allow_hyphen_values = true, conflicts_with = "bytes")]
        init: Option<String>,
        /// A byte-string cell instead, of at most MAX_LEN bytes (initially empty).
        #[arg(long, value_name = "MAX_LEN")]
        bytes: Option<usize>,
        #[command(flatten)]
        mode: ModeArg,
    },
    /// Print the value (a byte string as it is, raw) and, with --json, its version.
    Get {
        /// Name.
        name: OsString,
        /// Wait for a version other than this one first (e.g. the last one seen).
        #[arg(long)]
        after: Option<u64>,
        /// How long --after waits (e.g. 1.5s, 250ms).
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "10s", alias = "timeout-ms")]
        timeout: Duration,
        /// Print JSON (one line): type, data, version.
        #[arg(long)]
        json: bool,
    },
    /// Write a value, as the writer (fails while another live process holds the writer
    /// role); prints the new version.
    Set {
        /// Name.
        name: OsString,
        /// New value (a byte string: taken as it is).
        #[arg(allow_hyphen_values = true)]
        value: OsString,
        /// Print JSON (one line; `version` is the new version).
        #[arg(long)]
        json: bool,
    },
    /// Show the cell's header and state (what `shmkit info` shows).
    Stat(NameJson),
    /// Remove last-value cells (checks the kind first).
    Rm(Names),
}

/// Runs a `latest` command.
pub fn run(cmd: Command, out: &mut Out) -> Result<(), Error> {
    match cmd {
        Command::Create {
            name,
            ty,
            init,
            bytes,
            mode,
        } => {
            let name = utf8("NAME", &name)?;
            let opts = Segment::options()
                .mode(mode_bits(&mode.mode)?)
                .persistent(true);
            match (ty, bytes) {
                (Some(ty), _) => with_ty!(ty, T => {
                    let v: T = match &init { Some(s) => parse_val(&name, s)?, None => T::default() };
                    Latest::<T>::create_with(&opts, &name, v)?;
                    writeln!(out, "created {name}: latest {} = {v}", ty_name(ty))
                }),
                (None, max_len) => {
                    let max_len = max_len.unwrap_or_default();
                    LatestBytes::create_with(&opts, &name, max_len)?;
                    writeln!(out, "created {name}: latest bytes (at most {max_len})")
                }
            }
        }
        Command::Get {
            name,
            after,
            timeout,
            json,
        } => {
            let name = utf8("NAME", &name)?;
            let seg = Segment::open(&name)?;
            if seg.header().type_name() == BYTES_TYPE {
                let l = LatestBytes::from_segment(seg)?;
                let mut buf = Vec::new();
                let version = match after {
                    Some(a) => l.wait_for_update(&mut buf, a, timeout)?,
                    None => l.read(&mut buf)?,
                };
                if json {
                    let mut j = message("latest", &name, "get", &buf);
                    j["type"] = json!("bytes");
                    j["version"] = json!(version);
                    out.json(&j)
                } else {
                    out.bytes(&buf)?;
                    writeln!(out)
                }
            } else {
                let ty = ty_of(&seg.resource(), seg.header())?;
                with_ty!(ty, T => {
                    let l = Latest::<T>::from_segment(seg)?;
                    let (v, version) = match after {
                        Some(a) => l.wait_for_update(a, timeout)?,
                        None => l.read()?,
                    };
                    if json {
                        out.json(&record("latest", &name, "get", json!({ "type": ty_name(ty), "data": v, "version": version })))
                    } else {
                        writeln!(out, "{v}")
                    }
                })
            }
        }
        Command::Stat(a) => stat_kind(&[Kind::Latest], &a.name, a.json, out),
        Command::Rm(a) => rm_kind(&[Kind::Latest], &a.names, out),
        Command::Set { name, value, json } => {
            let name = utf8("NAME", &name)?;
            let seg = Segment::open(&name)?;
            let version = if seg.header().type_name() == BYTES_TYPE {
                use std::os::unix::ffi::OsStrExt;
                LatestBytes::from_segment(seg)?.write(value.as_bytes())?
            } else {
                let value = utf8("VALUE", &value)?;
                let ty = ty_of(&seg.resource(), seg.header())?;
                with_ty!(ty, T => {
                    let v: T = parse_val(&name, &value)?;
                    Latest::<T>::from_segment(seg)?.write(&v)?
                })
            };
            if json {
                out.json(&record(
                    "latest",
                    &name,
                    "set",
                    json!({ "version": version }),
                ))
            } else {
                writeln!(out, "{version}")
            }
        }
    }
}
