//! Read-only inspection of any shmkit object: what `shmkit ls`, `info` and `stat` show,
//! in one place.
//!
//! [`object`] takes a name and returns an [`Object`]: the facts about the file and its
//! header ([`Inspection`]: kind, element type, sizes, state, creator, mode, whether it is
//! in use...) and the kind-specific state ([`ObjectState`]: a lock's owner, a queue's
//! length, a topic's subscribers, a latest value's version...). [`object_at`] does the
//! same for a path (a file-backed segment). Nothing is written, no lock is taken and no
//! participant entry is joined.
//!
//! How the state is read is the caller's choice ([`Reads`]):
//!
//! - [`Reads::Snapshot`] never maps the object: the header and the few payload words the
//!   state needs are copied with `pread(2)`, owner liveness is asked of the kernel with
//!   `F_OFD_GETLK` on the same open file. A process that resizes or rewrites the object
//!   meanwhile causes an error or odd values, never a `SIGBUS`. Queues and topics, whose
//!   state is a table of participants, report [`ObjectState::NotRead`] in this mode.
//!   `shmkit info` reads this way.
//! - [`Reads::Open`] also opens queues and topics (read-write mapping, as
//!   [`queue::stats`](crate::queue::stats) and [`topic::stat`](crate::topic::stat) do;
//!   `shmkit queue stat` and `topic stat`) to count messages and participants.
//!
//! The pieces this module gathers keep their homes and are re-exported here, so everything
//! is found under `shmkit::inspect`: [`inspect_path`] (the header and lock probes),
//! [`describe`] / [`describe_bytes`] ([`SyncState`]), [`stats`] ([`QueueStats`]) and
//! [`stat`] ([`TopicStat`]).
//!
//! ```
//! use shmkit::inspect::{self, ObjectState, Reads, SyncState};
//! use shmkit::segment::Kind;
//!
//! let name = format!("doc-inspect-{}", std::process::id());
//! let ev = shmkit::sync::Event::create(&name)?;
//! ev.set();
//! let result = inspect::object(&name, Reads::Snapshot);
//! shmkit::Segment::unlink(&name)?; // removed whatever the checks below say
//! let obj = result?;
//! assert_eq!(obj.file.header.as_ref().map(|h| h.kind()), Ok(Kind::Event));
//! assert_eq!(obj.file.in_use, Some(true)); // `ev` holds it open
//! assert_eq!(obj.state, ObjectState::Sync(SyncState::Event { set: true, sleepers: 0 }));
//! # Ok::<(), shmkit::Error>(())
//! ```

use std::fs::File;
use std::path::Path;

use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::liveness::{self, TOKEN_MAX};
use crate::name::Name;
use crate::segment::header::HEADER_LEN;
use crate::segment::{Header, Kind, SHM_DIR, State, open_for_inspection, pread_full};

pub use crate::queue::{QueueStats, stats};
pub use crate::segment::{Inspection, inspect_path};
pub use crate::sync::{SNAPSHOT_LEN, SyncState, describe, describe_bytes, snapshot_len};
pub use crate::topic::{ParticipantStat, TopicStat, stat};

/// How [`object`] may read an object's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// `pread` snapshots only, never a mapping (what `shmkit info` does): queues and topics
    /// report [`ObjectState::NotRead`].
    Snapshot,
    /// Snapshots, and open (map) queues and topics to read their state, as
    /// [`stats`] and [`stat`] do.
    Open,
}

/// Everything [`object`] knows about one object.
#[derive(Clone, Debug)]
pub struct Object {
    /// The file and its header: path, length, mode, owner, kind, element type, state,
    /// creator, whether it is in use or being initialised.
    pub file: Inspection,
    /// The kind-specific state.
    pub state: ObjectState,
}

/// The kind-specific state of an object, as [`object`] read it: a racy snapshot for
/// diagnostics, never a basis for recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectState {
    /// A synchronisation object (mutex, event, condvar, semaphore, barrier, rwlock).
    Sync(SyncState),
    /// A `Queue` or `ByteQueue` (read with [`Reads::Open`]).
    Queue(QueueStats),
    /// A `Topic` or `ByteTopic` (read with [`Reads::Open`]).
    Topic(TopicStat),
    /// A `Latest`, `Board`, `KeyedBoard` or `LatestBytes` table.
    Latest {
        /// Number of slots (1 for a `Latest`).
        slots: u64,
        /// Bytes of a value.
        value_bytes: u64,
        /// Writes so far to slot 0 (its version).
        version: u64,
        /// Slot 0 is being written now (or its writer died in the middle of a write).
        writing: bool,
        /// The process holding the writer role as the table records it (`None`: nobody:
        /// never claimed, or released when the writing handle dropped).
        writer: Option<Writer>,
    },
    /// A `Value<T>`: its header says all (the value itself is not read).
    Value {
        /// Bytes of the value.
        size: u64,
    },
    /// An `Array<T>`: its header says all (the elements are not read).
    Array {
        /// Number of elements.
        len: u64,
        /// Bytes per element.
        elem_size: u64,
    },
    /// The state was not read: a queue or topic under [`Reads::Snapshot`], or an object
    /// that is not ready (being initialised, abandoned).
    NotRead,
    /// No state to read: a foreign or corrupt object, raw bytes, a custom layout or a kind
    /// this version does not know.
    Unknown,
}

/// The writer of a `Latest` table, as recorded in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writer {
    /// Pid the writer recorded (a diagnostic: pids are reused).
    pub pid: u32,
    /// Whether the writer's liveness token is held: the kernel's word.
    pub alive: bool,
}

/// Inspects the object called `name` in `/dev/shm` (see the [module docs](self)).
///
/// Errors: an invalid name, a missing object (`ENOENT`, said of `name`) or one that is not
/// a regular file, an object that changed while being read (run it again), and under
/// [`Reads::Open`] what [`stats`] and [`stat`] return. A foreign or corrupt
/// object is not an error: its [`Inspection::header`] says why, its state is
/// [`ObjectState::Unknown`].
pub fn object(name: &str, reads: Reads) -> Result<Object> {
    let n = Name::shm(name)?;
    read_object(&n.fs_path(), n.as_str(), Some(n.as_str()), reads).map_err(|e| {
        match e.errno() {
            // Said of the name the caller gave, not of the path under /dev/shm.
            Some(nix::errno::Errno::ENOENT) => {
                Error::os(n.to_string(), "open", nix::errno::Errno::ENOENT)
            }
            _ => e,
        }
    })
}

/// [`object`] for a file-backed segment (or any path). Queues and topics outside
/// `/dev/shm` report [`ObjectState::NotRead`]: [`stats`] and [`stat`] take names.
pub fn object_at(path: &Path, reads: Reads) -> Result<Object> {
    let name = shm_name(path);
    read_object(path, &path.display().to_string(), name.as_deref(), reads)
}

/// The shm name of `path` if it lies directly in `/dev/shm`.
fn shm_name(path: &Path) -> Option<String> {
    if path.parent() != Some(Path::new(SHM_DIR)) {
        return None;
    }
    path.file_name()?.to_str().map(str::to_owned)
}

fn read_object(path: &Path, resource: &str, name: Option<&str>, reads: Reads) -> Result<Object> {
    let file = inspect_path(path)?;
    let ready = file
        .header
        .as_ref()
        .is_ok_and(|h| h.state() == State::Ready);
    let state = match &file.header {
        Ok(_) if !ready => ObjectState::NotRead,
        Ok(h) => match h.kind() {
            Kind::Mutex
            | Kind::Event
            | Kind::Condvar
            | Kind::RwLock
            | Kind::Barrier
            | Kind::Semaphore => sync_state(path, resource)?,
            Kind::Latest => latest_state(path, resource)?,
            Kind::Value => ObjectState::Value {
                size: h.raw.elem_size,
            },
            Kind::Array => ObjectState::Array {
                len: h.raw.elem_count,
                elem_size: h.raw.elem_size,
            },
            Kind::Queue | Kind::ByteQueue => match (reads, name) {
                (Reads::Open, Some(n)) => ObjectState::Queue(stats(n)?),
                _ => ObjectState::NotRead,
            },
            Kind::Topic | Kind::ByteTopic => match (reads, name) {
                (Reads::Open, Some(n)) => ObjectState::Topic(stat(n)?),
                _ => ObjectState::NotRead,
            },
            _ => ObjectState::Unknown,
        },
        Err(_) => ObjectState::Unknown,
    };
    Ok(Object { file, state })
}

/// Opens `path` read-only and reads its header again with `pread`: the object may have
/// changed since [`inspect_path`] looked, and the state must be decoded against the
/// header read through the same open file.
fn snapshot_header(path: &Path, resource: &str) -> Result<(File, Header)> {
    let (file, _) = open_for_inspection(path, resource, OFlag::O_RDONLY)?;
    let mut head = [0u8; HEADER_LEN];
    let got = pread_full(&file, &mut head, 0, resource)?;
    let file_len = file
        .metadata()
        .map_err(|e| {
            Error::os(
                resource,
                "fstat",
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            )
        })?
        .len();
    let h = Header::parse(&head[..got], file_len).map_err(|e| changed(resource, e.to_string()))?;
    if h.state() != State::Ready {
        return Err(changed(resource, format!("now {}", h.state())));
    }
    Ok((file, h))
}

fn changed(resource: &str, what: String) -> Error {
    Error::corrupt(
        resource,
        format!("the object changed while being read ({what}); inspect it again"),
    )
}

/// A synchronisation object's state from a `pread` snapshot of its header and its
/// payload's first bytes; owner liveness from `F_OFD_GETLK` on the same open file.
fn sync_state(path: &Path, resource: &str) -> Result<ObjectState> {
    let (file, h) = snapshot_header(path, resource)?;
    let mut snap = [0u8; SNAPSHOT_LEN];
    let want = snapshot_len(&h);
    let got = pread_full(&file, &mut snap[..want], h.raw.payload_offset, resource)?;
    // A short read (the object shrank meanwhile) is describe_bytes' "changed" error.
    let state = describe_bytes(resource, &h, &snap[..got], |t| {
        liveness::token_held(&file, t).unwrap_or(true)
    })?;
    Ok(state.map_or(ObjectState::Unknown, ObjectState::Sync))
}

/// A latest table's writer word and slot 0's sequence word, read with `pread`.
fn latest_state(path: &Path, resource: &str) -> Result<ObjectState> {
    let (file, h) = snapshot_header(path, resource)?;
    let (writer_off, seq_off) = crate::latest::snapshot_offsets();
    let word = |off: usize| -> Result<u64> {
        let mut b = [0u8; 8];
        let at = h.raw.payload_offset + off as u64;
        if off as u64 + 8 > h.raw.payload_len || pread_full(&file, &mut b, at, resource)? < b.len()
        {
            return Err(changed(resource, "shorter than its table".into()));
        }
        Ok(u64::from_ne_bytes(b))
    };
    let (w, seq) = (word(writer_off)?, word(seq_off)?);
    let writer = (w != 0).then(|| Writer {
        pid: (w >> 32) as u32,
        alive: liveness::token_held(&file, w as u32 & TOKEN_MAX).unwrap_or(true),
    });
    Ok(ObjectState::Latest {
        slots: h.raw.params[0],
        value_bytes: h.raw.elem_size,
        version: seq / 2,
        writing: seq & 1 == 1,
        writer,
    })
}
