//! [`stats`]: a queue's state for monitoring and `shmkit queue stat`, read without joining.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::segment::{Kind, Segment};

use super::ring::Ring;
use super::{Mode, check_segment, owner_alive};

/// What [`stats`] reports about a queue, read without joining it (no participant entry is
/// taken, nothing is written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStats {
    /// `Queue` or `ByteQueue`.
    pub kind: Kind,
    /// The mode recorded in the header.
    pub mode: Mode,
    /// Whether the queue is joinable.
    pub joinable: bool,
    /// Number of slots.
    pub capacity: u64,
    /// Bytes of data per slot (`size_of::<T>()`, or `8 + max_message` for a byte queue).
    pub slot_bytes: u64,
    /// Participant entries.
    pub max_handles: u64,
    /// Messages in the queue, approximately.
    pub len: u64,
    /// Total positions claimed by producers so far (`tail`).
    pub sent: u64,
    /// Total positions claimed by consumers so far (`head`).
    pub received: u64,
    /// Handles whose process is alive.
    pub live_handles: u64,
    /// Pids of the processes holding live handles.
    pub pids: Vec<u32>,
    /// Claims of dead processes recovered so far.
    pub peer_deaths: u64,
    /// Pid of the last dead peer whose claim was recovered.
    pub last_dead_peer: Option<u32>,
}

/// Reads a named queue's state (any element type) for monitoring and the CLI.
///
/// ```
/// use shmkit::queue::{ByteQueue, stats};
/// let name = format!("doc-qstats-{}", std::process::id());
/// let q = ByteQueue::create(&name, 8, 100)?;
/// q.send(b"x")?;
/// let s = stats(&name)?;
/// assert_eq!((s.capacity, s.len, s.live_handles), (8, 1, 1));
/// shmkit::Segment::unlink(&name)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
pub fn stats(name: &str) -> Result<QueueStats> {
    let seg = Segment::open(name)?;
    let kind = seg.header().kind();
    let align = match kind {
        Kind::Queue => seg.header().raw.elem_align,
        Kind::ByteQueue => 8,
        other => {
            return Err(Error::Mismatch {
                resource: seg.resource(),
                what: "kind",
                expected: "queue or bytequeue".into(),
                found: other.name(),
            });
        }
    };
    let (mode, joinable, geo) = check_segment(&seg, None, align, None)?;
    // SAFETY: as in Core::new: the payload holds the ring, validated above; we only read
    // control words atomically.
    let ring = unsafe { Ring::new(seg.payload_ptr(), geo) };
    let mut pids = Vec::new();
    for i in 0..geo.max_handles {
        let o = ring.owner(i).load(Ordering::Acquire);
        if o != 0 && owner_alive(&seg, o) {
            pids.push((o >> 32) as u32);
        }
    }
    Ok(QueueStats {
        kind,
        mode,
        joinable,
        capacity: geo.cap,
        slot_bytes: geo.data_len as u64,
        max_handles: geo.max_handles as u64,
        len: ring.len(),
        sent: ring.tail().load(Ordering::Acquire),
        received: ring.head().load(Ordering::Acquire),
        live_handles: pids.len() as u64,
        pids,
        peer_deaths: ring.peer_deaths().load(Ordering::Acquire),
        last_dead_peer: match ring.last_dead_pid().load(Ordering::Acquire) {
            0 => None,
            p => Some(p as u32),
        },
    })
}
