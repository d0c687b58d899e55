//! `ls`, `info`, `rm`, `gc`, `value`, `array`: segments in /dev/shm.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value as Json, json};
use shmkit::process::{FileId, Liveness};
use shmkit::segment::{Inspection, SHM_DIR, inspect_path};
use shmkit::{Array, Error, Name, Segment, Value};

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
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove segments by name (processes that map them keep their mapping).
    Rm {
        /// Names to remove.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove shmkit segments whose creator is dead and that no live process maps, and
    /// temporary files left by creators that died.
    Gc {
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Only consider names starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Print JSON.
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
        name: String,
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
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Store a value (atomic store).
    Set {
        /// Name.
        name: String,
        /// New value.
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Add to an integer value atomically (wrapping); prints the new value.
    Add {
        /// Name.
        name: String,
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
        name: String,
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
        name: String,
        /// Index.
        index: usize,
        /// Value.
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Print one element.
    Get {
        /// Name.
        name: String,
        /// Index.
        index: usize,
    },
    /// Print every element.
    Dump {
        /// Name.
        name: String,
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
    /// Permission bits in octal (default 600).
    #[arg(long, default_value = "600", value_parser = parse_mode)]
    mode: u32,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|e| format!("{s:?} is not an octal mode: {e}"))?;
    if m > 0o7777 {
        Err(format!("mode {s} out of range"))
    } else {
        Ok(m)
    }
}

fn parse_val<T: std::str::FromStr>(res: &str, s: &str) -> Result<T, Error>
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

/// The element type recorded in an opened segment's header.
fn ty_of(seg: &Segment) -> Result<Ty, Error> {
    let tn = seg.header().type_name();
    Ty::from_type_name(tn).ok_or_else(|| {
        Error::invalid(
            seg.resource(),
            "open",
            format!("element type {tn:?} is not one the CLI handles (i8..u64, f32, f64)"),
        )
    })
}

/// Runs a segment command.
pub fn run(cmd: Command) -> Result<(), Error> {
    match cmd {
        Command::Ls { json } => ls(json),
        Command::Info { name, json } => info(&name, json),
        Command::Rm { names } => rm(&names),
        Command::Gc {
            dry_run,
            prefix,
            json,
        } => gc(dry_run, prefix.as_deref(), json),
        Command::Value(c) => value(c),
        Command::Array(c) => array(c),
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
    let o = j.as_object_mut().expect("object");
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
            if let Some((id, live)) = ins.creator {
                o.insert("creator_pid".into(), json!(id.pid));
                o.insert("creator_start_time".into(), json!(id.start_time));
                o.insert("creator_alive".into(), json!(live.to_string()));
            }
            o.insert("initializing".into(), json!(ins.initializing));
        }
        Err(e) if ins.is_foreign() => {
            o.insert("foreign".into(), json!(true));
            o.insert("kind".into(), json!("foreign"));
            let _ = e;
        }
        Err(e) => {
            o.insert("foreign".into(), json!(false));
            o.insert("kind".into(), json!("corrupt"));
            o.insert("error".into(), json!(e.to_string()));
        }
    }
    j
}

fn print_json(j: &Json) {
    println!("{}", serde_json::to_string_pretty(j).unwrap_or_default());
}

fn ls(as_json: bool) -> Result<(), Error> {
    let maps = shmkit::process::mapped_files();
    let rows: Vec<Json> = shm_objects()?.iter().map(|p| describe(p, &maps)).collect();
    if as_json {
        print_json(&Json::Array(rows));
        return Ok(());
    }
    println!(
        "{:<32} {:<10} {:<8} {:>8} {:>10} {:<16} ATTACHED",
        "NAME", "KIND", "TYPE", "LEN", "SIZE", "CREATOR"
    );
    for r in &rows {
        let s = |k: &str| r.get(k).and_then(Json::as_str).unwrap_or("-").to_owned();
        let n = |k: &str| {
            r.get(k)
                .and_then(Json::as_u64)
                .map(|v| v.to_string())
                .unwrap_or("-".into())
        };
        let creator = match (
            r.get("creator_pid").and_then(Json::as_u64),
            r.get("creator_alive"),
        ) {
            (Some(pid), Some(a)) => format!("{pid} ({})", a.as_str().unwrap_or("?")),
            _ => "-".into(),
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
        println!(
            "{:<32} {:<10} {:<8} {:>8} {:>10} {:<16} {}",
            s("name"),
            kind,
            s("type"),
            n("len"),
            n("size"),
            creator,
            if attached.is_empty() {
                "-".into()
            } else {
                attached.join(",")
            }
        );
    }
    Ok(())
}

fn info(name: &str, as_json: bool) -> Result<(), Error> {
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
    // Kind-specific state (lock owner and liveness, semaphore count, event state...).
    if j.get("state").and_then(Json::as_str) == Some("ready") {
        let opts = Segment::options().timeout(std::time::Duration::from_millis(200));
        if let Some(details) = opts
            .open(n.as_str())
            .ok()
            .and_then(|seg| shmkit::sync::describe(&seg))
        {
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
                print_json(&j);
            }
            return Err(Error::corrupt(
                n.to_string(),
                format!("{err}; remove it with `shmkit rm {n}`"),
            ));
        }
    }
    if as_json {
        print_json(&j);
        return Ok(());
    }
    if let Some(o) = j.as_object() {
        for (k, v) in o {
            let shown = match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{k:<18} {shown}");
        }
    }
    Ok(())
}

fn rm(names: &[String]) -> Result<(), Error> {
    // Validate every name before removing anything.
    let valid: Vec<Name> = names
        .iter()
        .map(|n| Name::shm(n))
        .collect::<Result<_, _>>()?;
    let mut first_err = None;
    for n in &valid {
        match Segment::unlink(n.as_str()) {
            Ok(()) => println!("removed {n}"),
            // The first error is returned (and printed by main); later ones print here.
            Err(e) if first_err.is_some() => eprintln!("shmkit: {e}"),
            Err(e) => first_err = Some(e),
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Why `gc` may remove an object, or `None` to keep it.
fn gc_reason(ins: &Inspection, attached: &[u32], file_name: &str) -> Option<String> {
    if !attached.is_empty() {
        return None;
    }
    if file_name.starts_with(".shmkit-init.") {
        // A creator holds the lock while it lives; a free lock means it died.
        return (!ins.initializing).then(|| "temporary file of a creator that died".into());
    }
    let h = ins.header.as_ref().ok()?;
    let (_, live) = ins.creator?;
    match (live, h.state()) {
        (Liveness::Dead, _) => Some(format!(
            "creator pid {} is dead and no process maps it",
            h.raw.creator_pid
        )),
        (_, shmkit::segment::State::Abandoned) if !ins.initializing => {
            Some("abandoned during initialisation".into())
        }
        _ => None,
    }
}

fn gc(dry_run: bool, prefix: Option<&str>, as_json: bool) -> Result<(), Error> {
    let maps = shmkit::process::mapped_files();
    let mut removed = Vec::new();
    for path in shm_objects()? {
        let file_name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if prefix.is_some_and(|p| !file_name.starts_with(p.trim_start_matches('/'))) {
            continue;
        }
        let Ok(ins) = inspect_path(&path) else {
            continue;
        };
        let attached = shmkit::process::file_id(&path)
            .and_then(|id| maps.get(&id).cloned())
            .unwrap_or_default();
        let Some(reason) = gc_reason(&ins, &attached, &file_name) else {
            continue;
        };
        if !dry_run {
            if let Err(e) = std::fs::remove_file(&path) {
                eprintln!("shmkit: gc: cannot remove {}: {e}", path.display());
                continue;
            }
        }
        removed.push(json!({ "name": file_name, "reason": reason, "removed": !dry_run }));
    }
    if as_json {
        print_json(&Json::Array(removed));
    } else {
        for r in &removed {
            println!(
                "{} {}: {}",
                if dry_run { "would remove" } else { "removed" },
                r["name"].as_str().unwrap_or(""),
                r["reason"].as_str().unwrap_or("")
            );
        }
        if removed.is_empty() {
            println!("nothing to collect");
        }
    }
    Ok(())
}

fn value(cmd: ValueCmd) -> Result<(), Error> {
    match cmd {
        ValueCmd::Create {
            name,
            ty,
            init,
            mode,
        } => with_ty!(ty, T => {
            let v: T = match &init { Some(s) => parse_val(&name, s)?, None => T::default() };
            let opts = Segment::options().mode(mode.mode);
            Value::<T>::create_with(&opts, &name, v)?;
            println!("created {name}: {ty:?} = {v}");
            Ok(())
        }),
        ValueCmd::Get { name, json } => {
            let seg = Segment::open(&name)?;
            let ty = ty_of(&seg)?;
            with_ty!(ty, T => {
                let v = Value::<T>::from_segment(seg)?.load();
                if json { println!("{}", json!({ "name": name, "type": format!("{ty:?}").to_lowercase(), "value": v })); }
                else { println!("{v}"); }
                Ok(())
            })
        }
        ValueCmd::Set { name, value } => {
            let seg = Segment::open(&name)?;
            let ty = ty_of(&seg)?;
            with_ty!(ty, T => {
                let v: T = parse_val(&name, &value)?;
                Value::<T>::from_segment(seg)?.store(v);
                Ok(())
            })
        }
        ValueCmd::Add { name, delta } => {
            let seg = Segment::open(&name)?;
            let ty = ty_of(&seg)?;
            with_int_ty!(ty, name.clone(), T => {
                let d: T = parse_val(&name, &delta)?;
                let old = Value::<T>::from_segment(seg)?.fetch_add(d);
                println!("{}", old.wrapping_add(d));
                Ok(())
            })
        }
    }
}

fn array(cmd: ArrayCmd) -> Result<(), Error> {
    match cmd {
        ArrayCmd::Create {
            name,
            ty,
            len,
            fill,
            mode,
        } => with_ty!(ty, T => {
            let v: T = match &fill { Some(s) => parse_val(&name, s)?, None => T::default() };
            let opts = Segment::options().mode(mode.mode);
            Array::<T>::create_with(&opts, &name, len, v)?;
            println!("created {name}: [{ty:?}; {len}]");
            Ok(())
        }),
        ArrayCmd::Set { name, index, value } => {
            let seg = Segment::open(&name)?;
            let ty = ty_of(&seg)?;
            with_ty!(ty, T => {
                let v: T = parse_val(&name, &value)?;
                Array::<T>::from_segment(seg)?.store(index, v)
            })
        }
        ArrayCmd::Get { name, index } => {
            let seg = Segment::open(&name)?;
            let ty = ty_of(&seg)?;
            with_ty!(ty, T => {
                println!("{}", Array::<T>::from_segment(seg)?.load(index)?);
                Ok(())
            })
        }
        ArrayCmd::Dump {
            name,
            raw,
            ty,
            json,
        } => {
            if raw {
                let ty =
                    ty.ok_or_else(|| Error::invalid(&name, "dump --raw", "--type is required"))?;
                return with_ty!(ty, T => {
                    let a = Array::<T>::open_foreign(&name)?;
                    print_elems(&name, ty, &a.to_vec(), json);
                    Ok(())
                });
            }
            let seg = Segment::open(&name)?;
            let found = ty_of(&seg)?;
            if let Some(t) = ty {
                if t != found {
                    return Err(Error::Mismatch {
                        resource: name.clone(),
                        what: "element type",
                        expected: format!("{t:?}").to_lowercase(),
                        found: format!("{found:?}").to_lowercase(),
                    });
                }
            }
            with_ty!(found, T => {
                let a = Array::<T>::from_segment(seg)?;
                print_elems(&name, found, &a.to_vec(), json);
                Ok(())
            })
        }
    }
}

fn print_elems<T: std::fmt::Display + serde::Serialize>(
    name: &str,
    ty: Ty,
    v: &[T],
    as_json: bool,
) {
    if as_json {
        println!(
            "{}",
            json!({ "name": name, "type": format!("{ty:?}").to_lowercase(), "values": v })
        );
    } else {
        let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        println!("{}", parts.join(" "));
    }
}
