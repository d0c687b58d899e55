//! `value` and `array`: create, read and update shared `Value`s and `Array`s; the element
//! types (`Ty`) and the parsing helpers other typed commands share.

use std::ffi::OsString;
use std::path::Path;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use shmkit::inspect::inspect_path;
use shmkit::segment::SegmentOptions;
use shmkit::segment::{Header, Kind, State};
use shmkit::{Array, Error, Name, Segment, Value};

use crate::out::{Out, mode_bits, record, utf8};
use crate::segments::{NameJson, Names, errno_of, open_for_read, rm_kind, stat_kind};

/// Element types the CLI can handle.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Ty {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
}

impl Ty {
    fn from_type_name(name: &str) -> Option<Ty> {
        Some(match name {
            "i8" => Ty::I8,
            "i16" => Ty::I16,
            "i32" => Ty::I32,
            "i64" => Ty::I64,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            _ => return None,
        })
    }
}

/// Runs `$body` with `$T` bound to the Rust type for `$ty`.
macro_rules! with_ty {
    ($ty:expr, $T:ident => $body:expr) => {
        match $ty {
            Ty::I8 => {
                type $T = i8;
                $body
            }
            Ty::I16 => {
                type $T = i16;
                $body
            }
            Ty::I32 => {
                type $T = i32;
                $body
            }
            Ty::I64 => {
                type $T = i64;
                $body
            }
            Ty::U8 => {
                type $T = u8;
                $body
            }
            Ty::U16 => {
                type $T = u16;
                $body
            }
            Ty::U32 => {
                type $T = u32;
                $body
            }
            Ty::U64 => {
                type $T = u64;
                $body
            }
            Ty::F32 => {
                type $T = f32;
                $body
            }
            Ty::F64 => {
                type $T = f64;
                $body
            }
        }
    };
}

pub(crate) use with_ty;

/// Runs `$body` with `$T` bound to the integer type for `$ty`, or fails for floats.
macro_rules! with_int_ty {
    ($ty:expr, $res:expr, $T:ident => $body:expr) => {
        match $ty {
            Ty::I8 => {
                type $T = i8;
                $body
            }
            Ty::I16 => {
                type $T = i16;
                $body
            }
            Ty::I32 => {
                type $T = i32;
                $body
            }
            Ty::I64 => {
                type $T = i64;
                $body
            }
            Ty::U8 => {
                type $T = u8;
                $body
            }
            Ty::U16 => {
                type $T = u16;
                $body
            }
            Ty::U32 => {
                type $T = u32;
                $body
            }
            Ty::U64 => {
                type $T = u64;
                $body
            }
            Ty::F32 | Ty::F64 => {
                return Err(Error::invalid(
                    $res,
                    "add",
                    "atomic add is for integer types; use `value set` for floats",
                ))
            }
        }
    };
}

/// `shmkit value ...`
#[derive(Subcommand, Debug)]
pub enum ValueCmd {
    /// Create a value.
    Create(TypedCreate),
    /// Print the value (atomic load).
    Get {
        /// Name.
        name: OsString,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Store a value (atomic store).
    Set {
        /// Name.
        name: OsString,
        /// New value.
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Add to an integer value atomically (wrapping); prints the new value.
    Add {
        /// Name.
        name: OsString,
        /// Amount (may be negative for signed types).
        #[arg(allow_hyphen_values = true)]
        delta: String,
        /// Print JSON (one line; `data` is the new value).
        #[arg(long)]
        json: bool,
    },
    /// Show the object's header and state (what `shmkit info` shows).
    Stat(NameJson),
    /// Remove values (checks the kind first).
    Rm(Names),
}

/// `shmkit array ...`
#[derive(Subcommand, Debug)]
pub enum ArrayCmd {
    /// Create an array.
    Create {
        /// Name.
        name: OsString,
        /// Element type.
        #[arg(long = "type", value_enum)]
        ty: Ty,
        /// Number of elements.
        #[arg(long)]
        len: usize,
        /// Initial value of every element (default 0).
        #[arg(long, allow_hyphen_values = true)]
        fill: Option<String>,
        #[command(flatten)]
        mode: ModeArg,
    },
    /// Store one element (atomic store).
    Set {
        /// Name.
        name: OsString,
        /// Index.
        index: usize,
        /// Value.
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Print one element.
    Get {
        /// Name.
        name: OsString,
        /// Index.
        index: usize,
        /// Print JSON (one line: `index`, `data`).
        #[arg(long)]
        json: bool,
    },
    /// Print every element.
    Dump {
        /// Name.
        name: OsString,
        /// The object is foreign (no shmkit header): read it as raw elements of `--type`.
        #[arg(long, requires = "ty")]
        raw: bool,
        /// Element type (required with --raw).
        #[arg(long = "type", value_enum)]
        ty: Option<Ty>,
        /// Print JSON (one line; `data` is the array of elements).
        #[arg(long)]
        json: bool,
    },
    /// Show the object's header and state (what `shmkit info` shows).
    Stat(NameJson),
    /// Remove arrays (checks the kind first).
    Rm(Names),
}

/// `NAME --type T [--init V] [--mode M]`: creating one typed value (`value`, `mutex`).
#[derive(Args, Debug)]
pub struct TypedCreate {
    /// Name.
    pub(crate) name: OsString,
    /// Element type.
    #[arg(long = "type", value_enum)]
    pub(crate) ty: Ty,
    /// Initial value (default 0).
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) init: Option<String>,
    #[command(flatten)]
    pub(crate) mode: ModeArg,
}

impl TypedCreate {
    /// The name, and the options of a persistent segment with `--mode`.
    pub(crate) fn parts(&self) -> Result<(String, SegmentOptions), Error> {
        let name = utf8("NAME", &self.name)?;
        let opts = Segment::options()
            .mode(mode_bits(&self.mode.mode)?)
            .persistent(true);
        Ok((name, opts))
    }

    /// `--init` as a `T` (default 0).
    pub(crate) fn init<T: std::str::FromStr + Default>(&self, name: &str) -> Result<T, Error>
    where
        T::Err: std::fmt::Display,
    {
        self.init
            .as_deref()
            .map_or_else(|| Ok(T::default()), |s| parse_val(name, s))
    }
}

/// The element type of a typed queue or topic (`typed`: its kind; `None`: the byte
/// variant, or another kind, which the open that follows reports), checked against the
/// `--type` the user asserted.
pub(crate) fn element_type(
    name: &str,
    typed: Kind,
    asserted: Option<Ty>,
) -> Result<Option<Ty>, Error> {
    let seg = Segment::open(name)?;
    let h = seg.header();
    let found = if h.kind() == typed {
        Some(ty_of(&seg.resource(), h)?)
    } else {
        None
    };
    match (asserted, found) {
        (Some(want), got) if got != Some(want) => Err(Error::Mismatch {
            resource: seg.resource(),
            what: "element type",
            expected: ty_name(want),
            found: got.map_or_else(|| format!("bytes (a {})", h.kind().name()), ty_name),
        }),
        _ => Ok(found),
    }
}

/// The values to send to a typed queue or topic: the arguments, or each line of stdin
/// when there are none; all parsed before any is sent.
pub(crate) fn parse_messages<T: std::str::FromStr>(
    name: &str,
    messages: &[OsString],
) -> Result<Vec<T>, Error>
where
    T::Err: std::fmt::Display,
{
    let lines: Vec<String> = if messages.is_empty() {
        use std::io::BufRead;
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<_, _>>()
            .map_err(|e| Error::invalid(name, "read stdin", e.to_string()))?
    } else {
        crate::out::utf8_all("MESSAGES", messages)?
    };
    lines.iter().map(|l| parse_val(name, l)).collect()
}

/// `--mode` for creation commands.
#[derive(Args, Debug)]
pub struct ModeArg {
    /// Permission bits in octal, 0..=777 (default 600).
    #[arg(long, default_value = "600")]
    pub(crate) mode: OsString,
}

pub(crate) fn parse_val<T: std::str::FromStr>(res: &str, s: &str) -> Result<T, Error>
where
    T::Err: std::fmt::Display,
{
    s.trim().parse::<T>().map_err(|e| {
        Error::invalid(
            res,
            "parse",
            format!("{s:?} is not a {}: {e}", std::any::type_name::<T>()),
        )
    })
}

/// The element type recorded in a header.
pub(crate) fn ty_of(resource: &str, h: &Header) -> Result<Ty, Error> {
    let tn = h.type_name();
    Ty::from_type_name(tn).ok_or_else(|| {
        Error::invalid(
            resource,
            "open",
            format!("element type {tn:?} is not one the CLI handles (i8..u64, f32, f64)"),
        )
    })
}

pub fn value(cmd: ValueCmd, out: &mut Out) -> Result<(), Error> {
    match cmd {
        ValueCmd::Create(c) => {
            let (name, opts) = c.parts()?;
            let ty = c.ty;
            with_ty!(ty, T => {
                let v: T = c.init(&name)?;
                Value::<T>::create_with(&opts, &name, v)?;
                writeln!(out, "created {name}: {ty:?} = {v}")
            })
        }
        ValueCmd::Get { name, json } => {
            let name = utf8("NAME", &name)?;
            let seg = Segment::open(&name)?;
            let ty = ty_of(&seg.resource(), seg.header())?;
            with_ty!(ty, T => {
                let v = Value::<T>::from_segment(seg)?.load();
                if json {
                    out.json(&record("value", &name, "get", json!({ "type": ty_name(ty), "data": v })))
                } else {
                    writeln!(out, "{v}")
                }
            })
        }
        ValueCmd::Set { name, value } => {
            let name = utf8("NAME", &name)?;
            let seg = Segment::open(&name)?;
            let ty = ty_of(&seg.resource(), seg.header())?;
            with_ty!(ty, T => {
                let v: T = parse_val(&name, &value)?;
                Value::<T>::from_segment(seg)?.store(v);
                Ok(())
            })
        }
        ValueCmd::Stat(a) => stat_kind(&[Kind::Value], &a.name, a.json, out),
        ValueCmd::Rm(a) => rm_kind(&[Kind::Value], &a.names, out),
        ValueCmd::Add { name, delta, json } => {
            let name = utf8("NAME", &name)?;
            let seg = Segment::open(&name)?;
            let ty = ty_of(&seg.resource(), seg.header())?;
            with_int_ty!(ty, name.clone(), T => {
                let d: T = parse_val(&name, &delta)?;
                let new = Value::<T>::from_segment(seg)?.fetch_add(d).wrapping_add(d);
                if json {
                    out.json(&record("value", &name, "add", json!({ "type": ty_name(ty), "data": new })))
                } else {
                    writeln!(out, "{new}")
                }
            })
        }
    }
}

pub(crate) fn ty_name(ty: Ty) -> String {
    format!("{ty:?}").to_lowercase()
}

pub fn array(cmd: ArrayCmd, out: &mut Out) -> Result<(), Error> {
    match cmd {
        ArrayCmd::Create {
            name,
            ty,
            len,
            fill,
            mode,
        } => {
            let name = utf8("NAME", &name)?;
            let mode = mode_bits(&mode.mode)?;
            with_ty!(ty, T => {
                let v: T = match &fill { Some(s) => parse_val(&name, s)?, None => T::default() };
                let opts = Segment::options().mode(mode).persistent(true);
                Array::<T>::create_with(&opts, &name, len, v)?;
                writeln!(out, "created {name}: [{ty:?}; {len}]")
            })
        }
        ArrayCmd::Set { name, index, value } => {
            let name = utf8("NAME", &name)?;
            let seg = Segment::open(&name)?;
            let ty = ty_of(&seg.resource(), seg.header())?;
            with_ty!(ty, T => {
                let v: T = parse_val(&name, &value)?;
                Array::<T>::from_segment(seg)?.store(index, v)
            })
        }
        ArrayCmd::Get { name, index, json } => {
            let name = utf8("NAME", &name)?;
            let seg = Segment::open(&name)?;
            let ty = ty_of(&seg.resource(), seg.header())?;
            with_ty!(ty, T => {
                let v = Array::<T>::from_segment(seg)?.load(index)?;
                if json {
                    let f = json!({ "type": ty_name(ty), "index": index, "data": v });
                    out.json(&record("array", &name, "get", f))
                } else {
                    writeln!(out, "{v}")
                }
            })
        }
        ArrayCmd::Stat(a) => stat_kind(&[Kind::Array], &a.name, a.json, out),
        ArrayCmd::Rm(a) => rm_kind(&[Kind::Array], &a.names, out),
        ArrayCmd::Dump {
            name,
            raw,
            ty,
            json,
        } => dump(&utf8("NAME", &name)?, raw, ty, json, out),
    }
}

/// `array dump`: reads the object with `pread` (never a mapping, so a peer that shrinks
/// the file meanwhile causes a short read, reported, not a SIGBUS) and prints it.
fn dump(name: &str, raw: bool, ty: Option<Ty>, json: bool, out: &mut Out) -> Result<(), Error> {
    let n = Name::shm(name)?;
    let path = n.fs_path();
    let file = open_for_read(&path)?;
    let file_len = file
        .metadata()
        .map_err(|e| Error::os(name, "fstat", errno_of(&e)))?
        .len();
    let (ty, start, count) = if raw {
        let ty = ty.ok_or_else(|| Error::invalid(name, "dump --raw", "--type is required"))?;
        let size = ty_size(ty) as u64;
        if file_len == 0 || file_len % size != 0 {
            return Err(Error::Mismatch {
                resource: name.to_owned(),
                what: "length",
                expected: format!("a non-zero multiple of {size} bytes ({})", ty_name(ty)),
                found: format!("{file_len} bytes"),
            });
        }
        (ty, 0, file_len / size)
    } else {
        let h = read_header(name, &path)?;
        if h.kind() != Kind::Array {
            return Err(Error::Mismatch {
                resource: name.to_owned(),
                what: "kind",
                expected: Kind::Array.name(),
                found: h.kind().name(),
            });
        }
        let found = ty_of(name, &h)?;
        if let Some(t) = ty.filter(|t| *t != found) {
            return Err(Error::Mismatch {
                resource: name.to_owned(),
                what: "element type",
                expected: ty_name(t),
                found: ty_name(found),
            });
        }
        if h.raw.elem_size as usize != ty_size(found) {
            return Err(Error::corrupt(
                name,
                format!(
                    "element size {} does not match {}",
                    h.raw.elem_size,
                    ty_name(found)
                ),
            ));
        }
        (found, h.raw.payload_offset, h.raw.elem_count)
    };
    with_ty!(ty, T => {
        let mut sep = Separator::new(json);
        if json {
            // The record's head, then the elements as they are read (no copy of the array).
            let head = record(if raw { "foreign" } else { "array" }, name, "dump", json!({ "type": ty_name(ty) })).to_string();
            let head = head.strip_suffix('}').unwrap_or(&head);
            write!(out, "{head},\"data\":[")?;
        }
        read_elems::<{ size_of::<T>() }>(&file, name, start, count, |b| {
            let v = T::from_ne_bytes(b);
            sep.next(out)?;
            if json {
                write!(out, "{}", json!(v))
            } else {
                write!(out, "{v}")
            }
        })?;
        if json {
            writeln!(out, "]}}")
        } else {
            writeln!(out)
        }
    })
}

/// Writes `,` (JSON) or ` ` (text) before every element but the first.
struct Separator {
    first: bool,
    json: bool,
}

impl Separator {
    fn new(json: bool) -> Self {
        Separator { first: true, json }
    }

    fn next(&mut self, out: &mut Out) -> Result<(), Error> {
        if std::mem::take(&mut self.first) {
            return Ok(());
        }
        out.bytes(if self.json { b"," } else { b" " })
    }
}

fn ty_size(ty: Ty) -> usize {
    with_ty!(ty, T => size_of::<T>())
}

/// The object's validated header, read by [`inspect_path`]; it must be ready.
fn read_header(name: &str, path: &Path) -> Result<Header, Error> {
    let ins = inspect_path(path)?;
    let initializing = ins.initializing;
    let h = ins.header.map_err(|source| Error::Header {
        resource: name.to_owned(),
        source,
    })?;
    match h.state() {
        State::Ready => Ok(h),
        State::Abandoned if !initializing => Err(Error::Abandoned {
            resource: name.to_owned(),
            pid: h.raw.creator_pid,
        }),
        s => Err(Error::invalid(
            name,
            "dump",
            format!("the segment is {s}, not ready: its creator is still initialising it"),
        )),
    }
}

/// Reads `count` elements of `N` bytes from `start` with `pread`, in bounded chunks, and
/// hands each to `each`; a file that shrinks meanwhile is an error, not a signal.
fn read_elems<const N: usize>(
    file: &std::fs::File,
    name: &str,
    start: u64,
    count: u64,
    mut each: impl FnMut([u8; N]) -> Result<(), Error>,
) -> Result<(), Error> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 1 << 16;
    let per_chunk = (CHUNK / N as u64).max(1);
    let mut buf = vec![0u8; (per_chunk as usize) * N];
    let mut done = 0u64;
    while done < count {
        let k = per_chunk.min(count - done);
        let bytes = &mut buf[..(k as usize) * N];
        let off = done
            .checked_mul(N as u64)
            .and_then(|b| b.checked_add(start))
            .ok_or_else(|| Error::corrupt(name, "payload offset overflows"))?;
        file.read_exact_at(bytes, off).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt(
                    name,
                    "the object is shorter than its header says (shrunk while being read?)",
                )
            } else {
                Error::os(name, "pread", errno_of(&e))
            }
        })?;
        for c in bytes.chunks_exact(N) {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            each(a)?;
        }
        done += k;
    }
    Ok(())
}
