//! `ls`, `info`, `rm`, `gc`, `value`, `array`: segments in /dev/shm.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value as Json, json};
use shmkit::process::FileId;
use shmkit::segment::{
    Header, Inspection, Kind, Removal, SHM_DIR, State, inspect_path, remove_if_unused,
};
use shmkit::sync::SyncState;
use shmkit::{Array, Error, Name, Segment, Value};

use crate::out::{Out, mode_bits, utf8, utf8_all, warn};

/// Segment commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the objects in /dev/shm: shmkit segments with kind, type, length, creator and
    /// the processes that map them; other objects marked foreign.
    Ls {
        /// Print JSON (one array of objects).
        #[arg(long)]
        json: bool,
    },
    /// Show everything known about one segment.
    Info {
        /// Segment name (with or without the leading slash).
        name: OsString,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove segments by name (processes that map them keep their mapping).
    Rm {
        /// Names to remove.
        #[arg(required = true)]
        names: Vec<OsString>,
    },
    /// Remove shmkit objects that nobody uses. An object goes only if: no shmkit handle
    /// holds it open (a lock the kernel drops when its holder dies, visible from every PID
    /// namespace), no process visible here maps it (/proc/*/maps, for programs that do not
    /// use shmkit), no creator is initialising it (also `.shmkit-init.*` temporaries, whatever
    /// their size), and shmkit can read its header (foreign, corrupt and unreadable objects
    /// stay). Persistent objects (all those made by `shmkit ... create`) stay unless
    /// `--older-than` or `--include-persistent` says otherwise. The final check and the
    /// unlink are atomic with respect to shmkit openers. Not ruled out: a program without
    /// shmkit that maps the object from a PID namespace this one cannot see.
    Gc {
        /// Only print what would be removed and why each object would go or stay.
        #[arg(long)]
        dry_run: bool,
        /// Only consider names starting with this prefix.
        #[arg(long)]
        prefix: Option<OsString>,
        /// Also remove unused persistent objects created more than DURATION ago (by the
        /// header's creation time), e.g. 90s, 30m, 12h, 7d.
        #[arg(long, value_name = "DURATION")]
        older_than: Option<OsString>,
        /// Also remove unused persistent objects whatever their age.
        #[arg(long)]
        include_persistent: bool,
        /// Print JSON (one object per name considered: action, reason).
        #[arg(long)]
        json: bool,
    },
    /// Create, read and update a shared `Value`.
    #[command(subcommand)]
    Value(ValueCmd),
    /// Create, update and dump a shared `Array`.
    #[command(subcommand)]
    Array(ArrayCmd),
}

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
    Create {
        /// Name.
        name: OsString,
        /// Element type.
        #[arg(long = "type", value_enum)]
        ty: Ty,
        /// Initial value (default 0).
        #[arg(long, allow_hyphen_values = true)]
        init: Option<String>,
        #[command(flatten)]
        mode: ModeArg,
    },
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
    },
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
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

/// Runs a segment command.
pub fn run(cmd: Command, out: &mut Out) -> Result<(), Error> {
    match cmd {
        Command::Ls { json } => ls(json, out),
        Command::Info { name, json } => info(&utf8("NAME", &name)?, json, out),
        Command::Rm { names } => rm(&utf8_all("NAMES", &names)?, out),
        Command::Gc {
            dry_run,
            prefix,
            older_than,
            include_persistent,
            json,
        } => {
            let prefix = prefix.map(|p| utf8("--prefix", &p)).transpose()?;
            let persistent = if include_persistent {
                Persistent::All
            } else if let Some(d) = older_than {
                Persistent::OlderThan(parse_age(&utf8("--older-than", &d)?)?)
            } else {
                Persistent::Keep
            };
            gc(dry_run, prefix.as_deref(), persistent, json, out)
        }
        Command::Value(c) => value(c, out),
        Command::Array(c) => array(c, out),
    }
}

fn shm_objects() -> Result<Vec<PathBuf>, Error> {
    let dir = std::fs::read_dir(SHM_DIR).map_err(|e| {
        Error::os(
            SHM_DIR,
            "readdir",
            nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(5)),
        )
    })?;
    let mut v: Vec<PathBuf> = dir
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    v.sort();
    Ok(v)
}

/// A JSON description of one object, shared by `ls`, `info` and `gc`.
fn describe(path: &Path, maps: &HashMap<FileId, Vec<u32>>) -> Json {
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut attached = shmkit::process::file_id(path)
        .and_then(|id| maps.get(&id).cloned())
        .unwrap_or_default();
    attached.sort_unstable();
    let ins = match inspect_path(path) {
        Ok(i) => i,
        Err(e) => {
            return json!({ "name": file_name, "path": path, "error": e.to_string(),
                           "attached_pids": attached });
        }
    };
    let mut j = json!({
        "name": file_name,
        "path": path,
        "size": ins.len,
        "mode": format!("{:04o}", ins.mode),
        "uid": ins.uid,
        "attached_pids": attached,
    });
    let Some(o) = j.as_object_mut() else {
        return j;
    };
    o.insert("in_use".into(), json!(ins.in_use));
    o.insert(
        "usage".into(),
        json!(match ins.in_use {
            Some(true) => "in use",
            Some(false) => "unused",
            None => "unknown",
        }),
    );
    if file_name.starts_with(".shmkit-init.") {
        o.insert("kind".into(), json!("temporary"));
        o.insert("initializing".into(), json!(ins.initializing));
        return j;
    }
    if file_name.starts_with("sem.") && ins.is_foreign() {
        o.insert("kind".into(), json!("posix-semaphore"));
        o.insert("foreign".into(), json!(true));
        return j;
    }
    match &ins.header {
        Ok(h) => {
            let raw = &h.raw;
            o.insert("foreign".into(), json!(false));
            o.insert("kind".into(), json!(h.kind().name()));
            o.insert("state".into(), json!(h.state().to_string()));
            o.insert("type".into(), json!(h.type_name()));
            o.insert("len".into(), json!(raw.elem_count));
            o.insert("elem_size".into(), json!(raw.elem_size));
            o.insert("elem_align".into(), json!(raw.elem_align));
            o.insert("payload_offset".into(), json!(raw.payload_offset));
            o.insert("payload_len".into(), json!(raw.payload_len));
            o.insert("format_version".into(), json!(raw.version));
            o.insert("flags".into(), json!(raw.flags));
            o.insert("params".into(), json!(raw.params));
            o.insert("created_unix_ns".into(), json!(raw.created_unix_ns));
            o.insert(
                "abi".into(),
                json!(shmkit::segment::header::describe_abi(raw.abi_tag)),
            );
            o.insert("persistent".into(), json!(h.is_persistent()));
            // Decided by the kernel (the creator lock), not by the pid.
            o.insert(
                "creator".into(),
                json!(match ins.creator_holds {
                    Some(true) => "holding",
                    Some(false) => "gone",
                    None => "unknown",
                }),
            );
            // Diagnostics only: pids are reused and PID namespaces hide processes.
            if let Some((id, live)) = ins.creator {
                o.insert("creator_pid".into(), json!(id.pid));
                o.insert("creator_start_time".into(), json!(id.start_time));
                o.insert("creator_pid_status".into(), json!(live.to_string()));
            }
            o.insert("initializing".into(), json!(ins.initializing));
        }
        Err(_) if ins.is_foreign() => {
            o.insert("foreign".into(), json!(true));
            o.insert("kind".into(), json!("foreign"));
        }
        Err(e) => {
            o.insert("foreign".into(), json!(false));
            o.insert("kind".into(), json!("corrupt"));
            o.insert("error".into(), json!(e.to_string()));
        }
    }
    j
}

fn print_json(out: &mut Out, j: &Json) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(j)
        .map_err(|e| Error::invalid("stdout", "serialize JSON", e.to_string()))?;
    writeln!(out, "{text}")
}

fn ls(as_json: bool, out: &mut Out) -> Result<(), Error> {
    let maps = shmkit::process::mapped_files();
    let rows: Vec<Json> = shm_objects()?.iter().map(|p| describe(p, &maps)).collect();
    if as_json {
        return print_json(out, &Json::Array(rows));
    }
    writeln!(
        out,
        "{:<32} {:<10} {:<8} {:>8} {:>10} {:<8} {:<20} ATTACHED",
        "NAME", "KIND", "TYPE", "LEN", "SIZE", "USE", "CREATOR"
    )?;
    for r in &rows {
        let s = |k: &str| r.get(k).and_then(Json::as_str).unwrap_or("-").to_owned();
        let n = |k: &str| {
            r.get(k)
                .and_then(Json::as_u64)
                .map(|v| v.to_string())
                .unwrap_or("-".into())
        };
        let creator = match (r.get("creator").and_then(Json::as_str), n("creator_pid")) {
            (Some(c), pid) => format!("{c} (pid {pid})"),
            (None, _) => "-".into(),
        };
        let attached: Vec<String> = r
            .get("attached_pids")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Json::as_u64)
                    .map(|p| p.to_string())
                    .collect()
            })
            .unwrap_or_default();
        let mut kind = s("kind");
        if r.get("state")
            .and_then(Json::as_str)
            .is_some_and(|st| st != "ready")
        {
            kind = format!("{kind}!{}", s("state"));
        }
        writeln!(
            out,
            "{:<32} {:<10} {:<8} {:>8} {:>10} {:<8} {:<20} {}",
            s("name"),
            kind,
            s("type"),
            n("len"),
            n("size"),
            s("usage"),
            creator,
            if attached.is_empty() {
                "-".into()
            } else {
                attached.join(",")
            }
        )?;
    }
    Ok(())
}

/// The state of a synchronisation object for `info`, from a `pread` snapshot of its header
/// and its payload's first bytes (never a mapping: a peer that resizes the object
/// meanwhile causes a clean error, not a SIGBUS); owner liveness from `F_OFD_GETLK` on
/// the same open file. `None`: not (or no longer) a synchronisation object.
pub(crate) fn sync_details(
    name: &str,
    path: &Path,
) -> Result<Option<Vec<(String, String)>>, Error> {
    use shmkit::segment::header::HEADER_LEN;
    use std::os::unix::fs::FileExt;
    let file = open_for_read(path)?;
    // Reads up to `buf.len()` bytes at `off`; fewer only at the end of the file.
    let read = |buf: &mut [u8], off: u64| -> Result<usize, Error> {
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], off + got as u64) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::os(name, "pread", errno_of(&e))),
            }
        }
        Ok(got)
    };
    let changed = |what: String| {
        Error::corrupt(
            name,
            format!("the object changed while being read ({what}); run `shmkit info` again"),
        )
    };
    let mut head = [0u8; HEADER_LEN];
    let got = read(&mut head, 0)?;
    let file_len = file
        .metadata()
        .map_err(|e| Error::os(name, "fstat", errno_of(&e)))?
        .len();
    let h = Header::parse(&head[..got], file_len).map_err(|e| changed(e.to_string()))?;
    if h.state() != State::Ready {
        return Err(changed(format!("now {}", h.state())));
    }
    let mut snap = [0u8; shmkit::sync::SNAPSHOT_LEN];
    let want = shmkit::sync::snapshot_len(&h);
    let got = read(&mut snap[..want], h.raw.payload_offset)?;
    // A short read (the object shrank meanwhile) is describe_bytes' "changed" error.
    let state = shmkit::sync::describe_bytes(name, &h, &snap[..got], |t| {
        shmkit::liveness::token_held(&file, t).unwrap_or(true)
    })?;
    Ok(state.map(|st| sync_rows(&h, st)))
}

/// The rows `info` prints for a synchronisation object's state: the sentences are built
/// here, from the library's typed [`SyncState`].
fn sync_rows(h: &Header, st: SyncState) -> Vec<(String, String)> {
    let row = |k: &str, v: String| (k.to_string(), v);
    match st {
        SyncState::Mutex(o) => {
            let state = if o.corrupt {
                "CORRUPT consistency word (lockers get a corrupt-state error; recreate the object)"
                    .to_string()
            } else if o.unrecoverable {
                "NOT RECOVERABLE (a holder gave up on the data with mark_unrecoverable; \
                 `shmkit mutex repair` or Mutex::reset_unrecoverable resets it in place)"
                    .into()
            } else if o.token == 0 {
                "unlocked".to_string()
            } else if o.owner_died {
                format!(
                    "locked by pid {} (thread {}), but its process DIED (token {} no longer \
                     held): the next locker gets OwnerDied and must repair",
                    o.pid, o.tid, o.token
                )
            } else {
                format!("locked by pid {} (thread {}), alive", o.pid, o.tid)
            };
            let mut rows = vec![row("lock", state)];
            if o.inconsistent {
                rows.push(row(
                    "consistency",
                    "inconsistent: an owner died and nobody has called make_consistent since; \
                     the next locker gets OwnerDied"
                        .into(),
                ));
            }
            rows.push(row(
                "data",
                format!(
                    "{} x {} ({} bytes each)",
                    h.raw.elem_count,
                    h.type_name(),
                    h.raw.elem_size
                ),
            ));
            rows
        }
        SyncState::Event { set, sleepers } => vec![row(
            "event",
            format!(
                "{}, {sleepers} registered waiter(s)",
                if set { "set" } else { "clear" }
            ),
        )],
        SyncState::Condvar { waiters } => vec![row(
            "condvar",
            format!("{waiters} registered waiter(s) (waiters killed while waiting stay counted)"),
        )],
        SyncState::Semaphore {
            count,
            bound,
            sleepers,
            corrupt,
        } => {
            let count = if corrupt {
                format!("{count} (CORRUPT: above its limit; waits fail with a corrupt-state error)")
            } else {
                count.to_string()
            };
            let mut rows = vec![row("count", count)];
            if let Some(b) = bound {
                rows.push(row("bound", b.to_string()));
            }
            rows.push(row("sleepers", sleepers.to_string()));
            rows.push(row(
                "robustness",
                "none: permits held by dead processes are lost".into(),
            ));
            rows
        }
        SyncState::Barrier {
            arrived,
            parties,
            generation,
        } => vec![row(
            "barrier",
            format!("{arrived}/{parties} arrived, generation {generation}"),
        )],
        SyncState::RwLock {
            state: st,
            writer_alive,
        } => {
            let mut state = if st.write_locked {
                format!(
                    "write-locked by pid {} (thread {}), {}",
                    st.writer_pid,
                    st.writer_tid,
                    if writer_alive {
                        "alive"
                    } else {
                        "DEAD: the next locker takes it over"
                    }
                )
            } else if st.readers > 0 {
                format!(
                    "read-locked by {} reader(s) (readers that died holding it stay counted: \
                     writers then time out)",
                    st.readers
                )
            } else {
                "unlocked".into()
            };
            if st.write_waiting {
                state.push_str(", a writer waits");
            }
            let mut rows = vec![row("lock", state)];
            if st.writer_died {
                rows.push(row(
                    "consistency",
                    "a writer DIED holding it: data may be half-written until a writer calls \
                     make_consistent"
                        .into(),
                ));
            }
            rows.push(row(
                "robustness",
                "a dead writer is taken over; a dead reader stays counted (writers time out)"
                    .into(),
            ));
            rows
        }
        // SyncState is non_exhaustive: a kind this CLI does not know yet shows its fields.
        other => vec![row("state", format!("{other:?}"))],
    }
}

/// Kinds whose `info` shows state read from the payload.
fn has_payload_details(kind: &str) -> bool {
    [
        Kind::Mutex,
        Kind::Event,
        Kind::Condvar,
        Kind::RwLock,
        Kind::Barrier,
        Kind::Semaphore,
    ]
    .iter()
    .any(|k| k.name() == kind)
}

fn info(name: &str, as_json: bool, out: &mut Out) -> Result<(), Error> {
    let n = Name::shm(name)?;
    let path = n.fs_path();
    // Surface a clear error (missing, not a file, symlink) before describing.
    inspect_path(&path).map_err(|e| match e.errno() {
        Some(nix::errno::Errno::ENOENT) => {
            Error::os(n.to_string(), "open", nix::errno::Errno::ENOENT)
        }
        _ => e,
    })?;
    let maps = shmkit::process::mapped_files();
    let mut j = describe(&path, &maps);
    // Kind-specific state (lock owner and liveness, semaphore count, event state...): only
    // for the synchronisation kinds, read with `pread`, never mapped.
    let detailed = j.get("state").and_then(Json::as_str) == Some("ready")
        && j.get("kind")
            .and_then(Json::as_str)
            .is_some_and(has_payload_details);
    if detailed {
        if let Some(details) = sync_details(n.as_str(), &path)? {
            if let Some(o) = j.as_object_mut() {
                for (k, v) in details {
                    o.insert(k, json!(v));
                }
            }
        }
    }
    if let Some(err) = j.get("error").and_then(Json::as_str) {
        if j.get("kind").and_then(Json::as_str) == Some("corrupt") {
            if as_json {
                print_json(out, &j)?;
            }
            return Err(Error::corrupt(
                n.to_string(),
                format!("{err}; remove it with `shmkit rm {n}`"),
            ));
        }
    }
    if as_json {
        return print_json(out, &j);
    }
    if let Some(o) = j.as_object() {
        for (k, v) in o {
            let shown = match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            writeln!(out, "{k:<18} {shown}")?;
        }
    }
    Ok(())
}

fn rm(names: &[String], out: &mut Out) -> Result<(), Error> {
    // Validate every name before removing anything.
    let valid: Vec<Name> = names
        .iter()
        .map(|n| Name::shm(n))
        .collect::<Result<_, _>>()?;
    let mut first_err = None;
    for n in &valid {
        match Segment::unlink(n.as_str()) {
            Ok(()) => writeln!(out, "removed {n}")?,
            // The first error is returned (and printed by main); later ones print here.
            Err(e) if first_err.is_some() => warn(format_args!("{e}")),
            Err(e) => first_err = Some(e),
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// What `gc` does with persistent objects.
#[derive(Clone, Copy, Debug)]
enum Persistent {
    /// Leave them (the default).
    Keep,
    /// Remove unused ones created longer ago than this.
    OlderThan(std::time::Duration),
    /// Remove unused ones whatever their age.
    All,
}

/// `90`, `90s`, `30m`, `12h`, `7d`.
fn parse_age(s: &str) -> Result<std::time::Duration, Error> {
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => 0,
    };
    num.parse::<u64>()
        .ok()
        .filter(|_| scale > 0)
        .and_then(|n| n.checked_mul(scale))
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| {
            Error::invalid(
                "--older-than",
                "parse",
                format!("{s:?} is not a duration like 90s, 30m, 12h or 7d"),
            )
        })
}

/// Whether `gc` removes an object (`Ok(reason)`) or keeps it (`Err(reason)`).
fn gc_decision(
    ins: &Inspection,
    attached: &[u32],
    file_name: &str,
    persistent: Persistent,
) -> Result<String, String> {
    match ins.in_use {
        Some(false) => {}
        Some(true) => return Err("in use: a shmkit handle holds it open".into()),
        None => return Err("the kernel could not tell whether it is in use".into()),
    }
    if !attached.is_empty() {
        return Err(format!("mapped by pid(s) {attached:?} (/proc/*/maps)"));
    }
    if ins.initializing {
        return Err("a live creator is initialising it".into());
    }
    if file_name.starts_with(".shmkit-init.") {
        return Ok("temporary file of a creator that died".into());
    }
    let h = match &ins.header {
        Ok(h) => h,
        Err(_) if ins.is_foreign() => return Err("not a shmkit segment (foreign)".into()),
        Err(e) => return Err(format!("unreadable header ({e}); `shmkit rm` removes it")),
    };
    if !h.is_persistent() {
        return Ok("unused: no shmkit handle holds it and no process here maps it".into());
    }
    let created = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(h.raw.created_unix_ns);
    let age = std::time::SystemTime::now()
        .duration_since(created)
        .unwrap_or_default();
    match persistent {
        Persistent::All => Ok("unused, persistent (--include-persistent)".into()),
        Persistent::OlderThan(d) if age >= d => Ok(format!(
            "unused, persistent, created {}s ago (--older-than {}s)",
            age.as_secs(),
            d.as_secs()
        )),
        Persistent::OlderThan(d) => Err(format!(
            "persistent, created {}s ago: younger than --older-than {}s",
            age.as_secs(),
            d.as_secs()
        )),
        Persistent::Keep => Err(
            "persistent (made from the CLI): `shmkit rm`, or gc --older-than / --include-persistent"
                .into(),
        ),
    }
}

fn gc(
    dry_run: bool,
    prefix: Option<&str>,
    persistent: Persistent,
    as_json: bool,
    out: &mut Out,
) -> Result<(), Error> {
    let maps = shmkit::process::mapped_files();
    let mut rows = Vec::new();
    for path in shm_objects()? {
        let file_name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if prefix.is_some_and(|p| !file_name.starts_with(p.trim_start_matches('/'))) {
            continue;
        }
        let attached = shmkit::process::file_id(&path)
            .and_then(|id| maps.get(&id).cloned())
            .unwrap_or_default();
        let decision = match inspect_path(&path) {
            Ok(ins) => gc_decision(&ins, &attached, &file_name, persistent),
            Err(e) => Err(format!("cannot inspect it: {e}")),
        };
        let (action, reason) = match decision {
            Err(why) => ("keep", why),
            Ok(why) if dry_run => ("would remove", why),
            // The last word is the kernel's: unlinked only while no handle holds it.
            Ok(why) => match remove_if_unused(&path) {
                Ok(Removal::Removed) => ("removed", why),
                Ok(other) => ("keep", format!("not removed: {}", removal_reason(other))),
                Err(e) => {
                    warn(format_args!("gc: cannot remove {}: {e}", path.display()));
                    ("keep", format!("not removed: {e}"))
                }
            },
        };
        rows.push(json!({
            "name": file_name,
            "action": action,
            "reason": reason,
            "removed": action == "removed",
        }));
    }
    if as_json {
        return print_json(out, &Json::Array(rows));
    }
    let mut any = false;
    for r in &rows {
        let action = r["action"].as_str().unwrap_or("");
        if action == "keep" && !dry_run {
            continue;
        }
        any |= action != "keep";
        writeln!(
            out,
            "{action} {}: {}",
            r["name"].as_str().unwrap_or(""),
            r["reason"].as_str().unwrap_or("")
        )?;
    }
    if !any {
        writeln!(out, "nothing to collect")?;
    }
    Ok(())
}

fn removal_reason(r: Removal) -> &'static str {
    match r {
        Removal::Removed => "removed",
        Removal::InUse => "a shmkit handle opened it meanwhile",
        Removal::Initializing => "a creator is initialising it",
        Removal::Replaced => "the name now refers to another object",
        Removal::Gone => "it was removed meanwhile",
    }
}

fn value(cmd: ValueCmd, out: &mut Out) -> Result<(), Error> {
    match cmd {
        ValueCmd::Create {
            name,
            ty,
            init,
            mode,
        } => {
            let name = utf8("NAME", &name)?;
            let mode = mode_bits(&mode.mode)?;
            with_ty!(ty, T => {
                let v: T = match &init { Some(s) => parse_val(&name, s)?, None => T::default() };
                let opts = Segment::options().mode(mode).persistent(true);
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
                    writeln!(out, "{}", json!({ "name": name, "type": ty_name(ty), "value": v }))
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
        ValueCmd::Add { name, delta } => {
            let name = utf8("NAME", &name)?;
            let seg = Segment::open(&name)?;
            let ty = ty_of(&seg.resource(), seg.header())?;
            with_int_ty!(ty, name.clone(), T => {
                let d: T = parse_val(&name, &delta)?;
                let old = Value::<T>::from_segment(seg)?.fetch_add(d);
                writeln!(out, "{}", old.wrapping_add(d))
            })
        }
    }
}

pub(crate) fn ty_name(ty: Ty) -> String {
    format!("{ty:?}").to_lowercase()
}

fn array(cmd: ArrayCmd, out: &mut Out) -> Result<(), Error> {
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
        ArrayCmd::Get { name, index } => {
            let name = utf8("NAME", &name)?;
            let seg = Segment::open(&name)?;
            let ty = ty_of(&seg.resource(), seg.header())?;
            with_ty!(ty, T => {
                let v = Array::<T>::from_segment(seg)?.load(index)?;
                writeln!(out, "{v}")
            })
        }
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
            let name_json = Json::String(name.to_owned());
            write!(out, "{{\"name\":{name_json},\"type\":\"{}\",\"values\":[", ty_name(ty))?;
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

fn errno_of(e: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Opens an object to read it: no symlinks, no blocking on a FIFO, regular files only.
fn open_for_read(path: &Path) -> Result<std::fs::File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let resource = path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::os(&resource, "open(O_RDONLY|O_NOFOLLOW)", errno_of(&e)))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::os(&resource, "fstat", errno_of(&e)))?;
    if !meta.file_type().is_file() {
        return Err(Error::invalid(resource, "open", "not a regular file"));
    }
    Ok(file)
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
