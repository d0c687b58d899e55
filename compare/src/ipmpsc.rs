//! `ipmpsc` (peer crate, 0.5): a one-way MPSC channel of serde values over a ring in a
//! shared file mapping, a pshared pthread mutex + condvar to sleep on. Two rings, one per
//! direction, created in the parent before the fork (`SharedRingBuffer::create_temp`: a
//! temporary file the parent's drop deletes; the forked peer uses the inherited mapping).
//!
//! The sender serialises the message as one bincode byte string (`serialize_bytes`: an
//! 8-byte length and a copy of the bytes into the ring, what `serde_bytes` does); the
//! receiver deserialises it as a borrowed `&[u8]` through a `ZeroCopyContext`, so the
//! workload checks the bytes in the ring ([`Channel::recv_view`]) and the ring slot is
//! released when the context drops. Every wait is bounded: `send_timeout` /
//! `recv_timeout` with [`WAIT_LIMIT`].

use ipmpsc::{Receiver, Sender, SharedRingBuffer};
use nix::unistd::Pid;
use shmkit::{Error, Result};

use crate::channel::{Channel, ChannelParams, Side};
use crate::slot::WAIT_LIMIT;

/// Serialises a byte slice as one byte string (not as a sequence of `u8` values).
struct Bytes<'a>(&'a [u8]);

impl serde::Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

fn err(op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::invalid("ipmpsc", op, e.to_string())
}

fn timeout(op: &'static str) -> Error {
    Error::Timeout {
        resource: "ipmpsc".into(),
        op,
        timeout: WAIT_LIMIT,
    }
}

/// Two ipmpsc channels: 0 carries parent -> child, 1 child -> parent.
pub struct IpmpscChannel {
    tx: [Sender; 2],
    rx: [Receiver; 2],
}

impl IpmpscChannel {
    /// Creates both rings, each large enough for `depth` messages plus one (a message
    /// never wraps inside the ring, so a full lap needs one message of slack).
    pub fn boxed(p: ChannelParams) -> Result<Box<dyn Channel>> {
        let frame = p.size as u64 + 16;
        let bytes = (p.depth.max(1) as u64 + 1) * frame + 64;
        let bytes = u32::try_from(bytes)
            .map_err(|_| Error::invalid("ipmpsc", "create", "ring larger than 4 GiB"))?;
        let ring = || -> Result<SharedRingBuffer> {
            let (_path, ring) =
                SharedRingBuffer::create_temp(bytes).map_err(|e| err("create_temp", e))?;
            Ok(ring)
        };
        let (a, b) = (ring()?, ring()?);
        Ok(Box::new(IpmpscChannel {
            tx: [Sender::new(a.clone()), Sender::new(b.clone())],
            rx: [Receiver::new(a), Receiver::new(b)],
        }))
    }
}

impl Channel for IpmpscChannel {
    fn attach(&mut self, _side: Side, _peer: Pid) -> Result<()> {
        Ok(())
    }

    #[inline]
    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        match self.tx[side.index()].send_timeout(&Bytes(msg), WAIT_LIMIT) {
            Ok(true) => Ok(()),
            Ok(false) => Err(timeout("send")),
            Err(e) => Err(err("send", e)),
        }
    }

    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        self.recv_view(side, len, &mut |m| buf.copy_from_slice(m))
    }

    fn has_recv_view(&self) -> bool {
        true
    }

    #[inline]
    fn recv_view(&mut self, side: Side, len: usize, read: &mut dyn FnMut(&[u8])) -> Result<()> {
        let mut ctx = self.rx[side.peer().index()].zero_copy_context();
        let msg: &[u8] = ctx
            .recv_timeout(WAIT_LIMIT)
            .map_err(|e| err("recv", e))?
            .ok_or_else(|| timeout("recv"))?;
        if msg.len() != len {
            return Err(Error::corrupt(
                "ipmpsc",
                format!("received {} bytes, expected {len}", msg.len()),
            ));
        }
        read(msg);
        // Dropping the context advances the read position.
        Ok(())
    }
}
