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
//!
//! Two rows: `ipmpsc` receives with `recv_timeout` (sleeps on the crate's condvar when the
//! ring is empty); `ipmpsc-spin` polls the crate's `ZeroCopyContext::try_recv` (a lock-free
//! check of the ring's write position) with a `spin_loop` between polls, its lowest-latency
//! use. Sending is the same in both: the crate's send always takes the ring's pshared mutex
//! and broadcasts its condvar (no system call while nobody sleeps on it).

use ipmpsc::{Receiver, Sender, SharedRingBuffer};
use nix::unistd::Pid;
use shmkit::{Error, Result};

use crate::channel::{Channel, ChannelParams, Side};
use crate::slot::{WAIT_LIMIT, spin_until};

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

fn check(msg: &[u8], len: usize) -> Result<()> {
    if msg.len() == len {
        Ok(())
    } else {
        Err(Error::corrupt(
            "ipmpsc",
            format!("received {} bytes, expected {len}", msg.len()),
        ))
    }
}

/// Two ipmpsc channels: 0 carries parent -> child, 1 child -> parent.
pub struct IpmpscChannel {
    tx: [Sender; 2],
    rx: [Receiver; 2],
    /// Poll `try_recv` instead of sleeping in `recv_timeout`.
    spin: bool,
}

impl IpmpscChannel {
    /// `ipmpsc`: the receiver sleeps on the crate's condvar.
    pub fn boxed(p: ChannelParams) -> Result<Box<dyn Channel>> {
        Self::with_receive(p, false)
    }

    /// `ipmpsc-spin`: the receiver polls.
    pub fn spinning(p: ChannelParams) -> Result<Box<dyn Channel>> {
        Self::with_receive(p, true)
    }

    /// Creates both rings, each large enough for `depth` messages plus one (a message
    /// never wraps inside the ring, so a full lap needs one message of slack).
    fn with_receive(p: ChannelParams, spin: bool) -> Result<Box<dyn Channel>> {
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
            spin,
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
        let rx = &mut self.rx[side.peer().index()];
        if self.spin {
            let mut result = None;
            let ready = spin_until(|| {
                // A fresh context per poll: one that found nothing holds no position, so
                // its drop does not touch the ring.
                let mut ctx = rx.zero_copy_context();
                match ctx.try_recv::<&[u8]>() {
                    Ok(None) => false,
                    Ok(Some(msg)) => {
                        result = Some(check(msg, len).map(|()| read(msg)));
                        // Dropping the context advances the read position.
                        true
                    }
                    Err(e) => {
                        result = Some(Err(err("recv", e)));
                        true
                    }
                }
            });
            return match result {
                Some(r) if ready => r,
                _ => Err(timeout("recv")),
            };
        }
        let mut ctx = rx.zero_copy_context();
        let msg: &[u8] = ctx
            .recv_timeout(WAIT_LIMIT)
            .map_err(|e| err("recv", e))?
            .ok_or_else(|| timeout("recv"))?;
        check(msg, len)?;
        read(msg);
        // Dropping the context advances the read position.
        Ok(())
    }
}
