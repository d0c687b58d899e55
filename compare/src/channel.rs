//! The message-passing adapter trait, shared by the rtt, stream and wake workloads.

use nix::unistd::Pid;
use shmkit::Result;

/// Which process an endpoint call runs in. The parent measures; the child is the forked
/// peer that echoes (rtt), drains (stream) or wakes up (wake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The measuring process.
    Parent,
    /// The forked peer.
    Child,
}

impl Side {
    /// The other side.
    pub fn peer(self) -> Side {
        match self {
            Side::Parent => Side::Child,
            Side::Child => Side::Parent,
        }
    }

    /// 0 for the parent, 1 for the child.
    pub fn index(self) -> usize {
        match self {
            Side::Parent => 0,
            Side::Child => 1,
        }
    }
}

/// How a mechanism waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// Busy-waits: burns its core, never sleeps.
    Spinning,
    /// Blocks in the kernel until woken.
    Sleeping,
}

impl Style {
    /// `"spinning"` or `"sleeping"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Style::Spinning => "spinning",
            Style::Sleeping => "sleeping",
        }
    }
}

/// A two-way message channel between the parent and one forked child.
///
/// It is created in the parent **before** the fork, so the child inherits every fd and
/// mapping; each process then calls [`Channel::attach`] once with its side and only ever
/// uses its own side. Messages have a fixed length (the `size` the channel was made with):
/// `send` transfers all of `msg`, `recv` fills all of `buf` or fails. Every blocking wait
/// is bounded (by a timeout or by the peer's death) and returns an error instead of
/// hanging.
pub trait Channel {
    /// Called once in each process right after the fork; `peer` is the other process.
    fn attach(&mut self, side: Side, peer: Pid) -> Result<()>;
    /// Sends one message from `side` to the other side.
    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()>;
    /// Receives one message on `side` into `buf` (exactly `buf.len()` bytes).
    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()>;
    /// True if the workloads should receive through [`Channel::recv_view`] instead of
    /// [`Channel::recv`]: the mechanism hands the message out in memory of its own (a
    /// receive buffer it fills, or, zero-copy, the shared slot itself) and copying it into
    /// the workload's buffer would add a copy its users do not make. Asked once per run.
    fn has_recv_view(&self) -> bool {
        false
    }
    /// Receives one message of exactly `len` bytes on `side` and calls `read` once with it
    /// where the mechanism put it; a zero-copy mechanism releases the slot after `read`
    /// returns. Only called when [`Channel::has_recv_view`] is true.
    fn recv_view(&mut self, side: Side, len: usize, read: &mut dyn FnMut(&[u8])) -> Result<()> {
        let _ = (side, len, read);
        Err(shmkit::Error::invalid(
            "channel",
            "recv_view",
            "this channel has no receive view; use recv",
        ))
    }
}

/// How the workloads use a channel, fixed when it is made.
#[derive(Debug, Clone, Copy)]
pub struct ChannelParams {
    /// Message length in bytes.
    pub size: usize,
    /// Messages that may be in flight per direction (ring slots, queue depth). 1 for rtt.
    pub depth: usize,
}

/// One message-passing mechanism: its stable id, how it waits, its limits, and how to make
/// a channel.
#[derive(Clone, Copy)]
pub struct ChannelSpec {
    /// Stable id used in tables and JSON (`spin-floor`, `futex`, `pipe`, ...).
    pub id: &'static str,
    /// Spinning or sleeping.
    pub style: Style,
    /// Largest message the mechanism accepts, when it has a limit.
    pub max_msg: Option<usize>,
    /// A short note for the table (what the adapter does).
    pub note: &'static str,
    /// Creates a channel in the parent, before the fork.
    pub make: fn(ChannelParams) -> Result<Box<dyn Channel>>,
}

impl std::fmt::Debug for ChannelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelSpec")
            .field("id", &self.id)
            .field("style", &self.style)
            .finish()
    }
}
