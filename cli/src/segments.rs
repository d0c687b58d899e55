//! `ls`, `info`, `rm`, `gc`: segments in /dev/shm (value and array commands: `values.rs`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::{Value as Json, json};
use shmkit::inspect::{Inspection, Object, ObjectState, Reads, SyncState, inspect_path};
use shmkit::process::FileId;
use shmkit::segment::{Header, Kind, Removal, SHM_DIR, remove_if_unused};
use shmkit::{Error, Name, Segment};

use crate::out::{Out, utf8, utf8_all, warn};

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
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
        older_than: Option<std::time::Duration>,
        /// Also remove unused persistent objects whatever their age.
        #[arg(long)]
        include_persistent: bool,
        /// Print JSON (one object per name considered: action, reason).
        #[arg(long)]
        json: bool,
    },
}

/// Runs a segment command.
pub fn run(cmd: Command, out: &mut Out) -> Result<(), Error> {
    match cmd {
        Command::Ls { json } => ls(json, out),
        Command::Info { name, json } => info(&utf8("NAME", &name)?, json, "info", out),
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
                Persistent::OlderThan(d)
            } else {
                Persistent::Keep
            };
            gc(dry_run, prefix.as_deref(), persistent, json, out)
        }
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

/// A JSON description of one object for `ls`: its header and file facts, no state.
fn describe(path: &Path, maps: &HashMap<FileId, Vec<u32>>) -> Json {
    describe_file(path, inspect_path(path), maps)
}

/// A JSON description of one object's file and header facts, shared by `ls` and `info`.
fn describe_file(
    path: &Path,
    ins: Result<Inspection, Error>,
    maps: &HashMap<FileId, Vec<u32>>,
) -> Json {
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut attached = shmkit::process::file_id(path)
        .and_then(|id| maps.get(&id).cloned())
        .unwrap_or_default();
    attached.sort_unstable();
    let ins = match ins {
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

/// Prints `rows` as `--json` records, one line each, with `"op": op` added.
fn print_json(out: &mut Out, op: &str, rows: impl IntoIterator<Item = Json>) -> Result<(), Error> {
    for mut j in rows {
        if let Some(o) = j.as_object_mut() {
            o.insert("op".into(), json!(op));
        }
        out.json(&j)?;
    }
    Ok(())
}

fn ls(as_json: bool, out: &mut Out) -> Result<(), Error> {
    let maps = shmkit::process::mapped_files();
    let rows: Vec<Json> = shm_objects()?.iter().map(|p| describe(p, &maps)).collect();
    if as_json {
        return print_json(out, "ls", rows);
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

/// The rows `info` prints for an object's kind-specific state (lock owner and liveness,
/// semaphore count, event state, latest version...), read by [`shmkit::inspect::object`]
/// with `pread` snapshots, never mapped. Empty when there is nothing to add to the header
/// facts (values, arrays, queues and topics: `queue stat` / `topic stat` read those).
pub(crate) fn state_rows(obj: &Object) -> Vec<(String, String)> {
    let Ok(h) = &obj.file.header else {
        return Vec::new();
    };
    match &obj.state {
        ObjectState::Sync(st) => sync_rows(h, *st),
        ObjectState::Latest {
            slots,
            version,
            writing,
            writer,
            ..
        } => {
            let writer = match writer {
                None => "none (no handle holds the writer role)".to_string(),
                Some(w) if w.alive => format!("pid {}, alive", w.pid),
                Some(w) => format!("pid {}, DEAD: the next writer takes the role over", w.pid),
            };
            let mut version = format!("{version} (slot 0 of {slots})");
            if *writing {
                version.push_str(", a write is in progress (or its writer died mid-write)");
            }
            vec![
                ("version".to_string(), version),
                ("writer".to_string(), writer),
            ]
        }
        _ => Vec::new(),
    }
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

fn info(name: &str, as_json: bool, op: &str, out: &mut Out) -> Result<(), Error> {
    let n = Name::shm(name)?;
    let path = n.fs_path();
    // Header facts and kind-specific state, read with `pread`, never mapped.
    let obj = shmkit::inspect::object(n.as_str(), Reads::Snapshot)?;
    let maps = shmkit::process::mapped_files();
    let rows = state_rows(&obj);
    let mut j = describe_file(&path, Ok(obj.file), &maps);
    if let Some(o) = j.as_object_mut() {
        for (k, v) in rows {
            o.insert(k, json!(v));
        }
    }
    if let Some(err) = j.get("error").and_then(Json::as_str) {
        if j.get("kind").and_then(Json::as_str) == Some("corrupt") {
            if as_json {
                print_json(out, op, [j.clone()])?;
            }
            return Err(Error::corrupt(
                n.to_string(),
                format!("{err}; remove it with `shmkit rm {n}`"),
            ));
        }
    }
    if as_json {
        return print_json(out, op, [j]);
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

/// `KIND stat NAME`: what `info` shows, after checking that the object is one of `kinds`.
pub(crate) fn stat_kind(
    kinds: &[Kind],
    name: &OsString,
    json: bool,
    out: &mut Out,
) -> Result<(), Error> {
    let name = utf8("NAME", name)?;
    check_kind(kinds, &name)?;
    info(&name, json, "stat", out)
}

/// `KIND rm NAMES`: `rm`, after checking that every object is one of `kinds`.
pub(crate) fn rm_kind(kinds: &[Kind], names: &[OsString], out: &mut Out) -> Result<(), Error> {
    let names = utf8_all("NAMES", names)?;
    for n in &names {
        check_kind(kinds, n)?;
    }
    rm(&names, out)
}

/// The object's header (read with `pread`) says it is one of `kinds`.
fn check_kind(kinds: &[Kind], name: &str) -> Result<(), Error> {
    let n = Name::shm(name)?;
    let h = inspect_path(&n.fs_path())?
        .header
        .map_err(|source| Error::Header {
            resource: n.to_string(),
            source,
        })?;
    if kinds.contains(&h.kind()) {
        return Ok(());
    }
    let expected: Vec<String> = kinds.iter().map(|k| k.name()).collect();
    Err(Error::Mismatch {
        resource: n.to_string(),
        what: "kind",
        expected: expected.join(" or "),
        found: h.kind().name(),
    })
}

/// `stat` and `rm` for kinds that have no other commands (rwlock, barrier, condvar).
#[derive(Subcommand, Debug)]
pub enum InspectCmd {
    /// Show the object: what `shmkit info` shows (owner, state, counts...).
    Stat(NameJson),
    /// Remove objects of this kind (like `shmkit rm`, after checking the kind).
    Rm(Names),
}

/// `NAME [--json]`.
#[derive(clap::Args, Debug)]
pub struct NameJson {
    /// Name.
    pub name: OsString,
    /// Print JSON (one line).
    #[arg(long)]
    pub json: bool,
}

/// `NAMES...`.
#[derive(clap::Args, Debug)]
pub struct Names {
    /// Names to remove.
    #[arg(required = true)]
    pub names: Vec<OsString>,
}

/// Runs `stat` or `rm` on an object of one of `kinds`.
pub(crate) fn run_inspect(kinds: &[Kind], cmd: InspectCmd, out: &mut Out) -> Result<(), Error> {
    match cmd {
        InspectCmd::Stat(a) => stat_kind(kinds, &a.name, a.json, out),
        InspectCmd::Rm(a) => rm_kind(kinds, &a.names, out),
    }
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
        let mut kind = None;
        let decision = match inspect_path(&path) {
            Ok(ins) => {
                kind = ins.header.as_ref().ok().map(|h| h.kind().name());
                gc_decision(&ins, &attached, &file_name, persistent)
            }
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
            "kind": kind,
            "name": file_name,
            "action": action,
            "reason": reason,
            "removed": action == "removed",
        }));
    }
    if as_json {
        return print_json(out, "gc", rows);
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
pub(crate) fn errno_of(e: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Opens an object to read it: no symlinks, no blocking on a FIFO, regular files only.
pub(crate) fn open_for_read(path: &Path) -> Result<std::fs::File, Error> {
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
