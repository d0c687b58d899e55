//! `shmem-ipc` (peer crate, 0.3): a single-producer single-consumer ring of `u8` in a
//! memfd, with two eventfds (`empty_signal`: the sender wrote into an empty ring;
//! `full_signal`: the receiver read from a full one). Two rings, one per direction,
//! created in the parent before the fork (`Sender::new`, and `Receiver::open` on
//! duplicates of its memfd and eventfds); each side uses the inherited halves it needs.
//!
//! The ring is a byte stream, so a message may wrap: the sender writes the message with
//! `send_raw` in as many pieces as the free space allows; the receiver copies it out with
//! `receive_raw` into the workload's buffer (the crate hands out raw pointers only,
//! because the other side is untrusted, so there is no in-place view). A side that finds
//! the ring full (empty) sleeps in `poll` on `full_signal` (`empty_signal`), then reads the
//! eventfd and retries; the crate's own `block_until_*` calls would block without a
//! bound, so the adapter does the same with a timeout ([`WAIT_LIMIT`]). Capacity: the
//! workload's depth in messages (one for rtt and wake).
//!
//! Two rows: `shmem-ipc` as above; `shmem-ipc-spin` polls instead, through the crate's
//! unsignalled ring ends (`Sender::sender_mut().send`, `Receiver::receiver_mut().recv`,
//! the same copy in and out, no eventfd write on either side), with a `spin_loop` between
//! polls: its lowest-latency use, for two processes that both spin.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::unistd::Pid;
use shmem_ipc::sharedring::{Receiver, Sender};
use shmkit::{Error, Result};

use crate::channel::{Channel, ChannelParams, Side};
use crate::slot::{WAIT_LIMIT, spin_until};

fn err(op: &'static str, e: impl std::fmt::Debug) -> Error {
    Error::invalid("shmem-ipc", op, format!("{e:?}"))
}

/// Waits until the eventfd `f` is readable (or the deadline passes), then consumes its
/// count. Spurious returns are fine: the caller rechecks the ring.
fn wait_signal(f: &File, start: Instant, op: &'static str) -> Result<()> {
    let left = WAIT_LIMIT.saturating_sub(start.elapsed());
    if left.is_zero() {
        return Err(Error::Timeout {
            resource: "shmem-ipc".into(),
            op,
            timeout: WAIT_LIMIT,
        });
    }
    let mut pfd = [nix::poll::PollFd::new(
        f.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = nix::poll::PollTimeout::try_from(left.as_millis().clamp(1, 60_000) as i32)
        .unwrap_or(nix::poll::PollTimeout::MAX);
    match nix::poll::poll(&mut pfd, ms) {
        Ok(0) | Err(Errno::EINTR) => return Ok(()),
        Ok(_) => {}
        Err(e) => return Err(Error::os("shmem-ipc eventfd", "poll", e)),
    }
    let mut b = [0u8; 8];
    // Readable: the read returns at once (a blocking eventfd blocks only at zero).
    (&mut &*f)
        .read(&mut b)
        .map_err(|e| err("read eventfd", e))?;
    Ok(())
}

fn timeout(op: &'static str) -> Error {
    Error::Timeout {
        resource: "shmem-ipc".into(),
        op,
        timeout: WAIT_LIMIT,
    }
}

/// Two shmem-ipc rings: 0 carries parent -> child, 1 child -> parent.
pub struct ShmemIpcChannel {
    tx: [Sender<u8>; 2],
    rx: [Receiver<u8>; 2],
    /// Poll the unsignalled ring ends instead of sleeping on the eventfds.
    spin: bool,
}

impl ShmemIpcChannel {
    /// `shmem-ipc`: eventfd signals, sleeping in `poll`.
    pub fn boxed(p: ChannelParams) -> Result<Box<dyn Channel>> {
        Self::with_wait(p, false)
    }

    /// `shmem-ipc-spin`: both sides poll.
    pub fn spinning(p: ChannelParams) -> Result<Box<dyn Channel>> {
        Self::with_wait(p, true)
    }

    /// Creates both rings with room for `depth` messages.
    fn with_wait(p: ChannelParams, spin: bool) -> Result<Box<dyn Channel>> {
        let cap = p.size * p.depth.max(1);
        let pair = || -> Result<(Sender<u8>, Receiver<u8>)> {
            let tx = Sender::<u8>::new(cap).map_err(|e| err("Sender::new", e))?;
            let dup = |f: &File| f.try_clone().map_err(|e| err("dup", e));
            let rx = Receiver::<u8>::open(
                cap,
                dup(tx.memfd().as_file())?,
                dup(tx.empty_signal())?,
                dup(tx.full_signal())?,
            )
            .map_err(|e| err("Receiver::open", e))?;
            Ok((tx, rx))
        };
        let (t0, r0) = pair()?;
        let (t1, r1) = pair()?;
        Ok(Box::new(ShmemIpcChannel {
            tx: [t0, t1],
            rx: [r0, r1],
            spin,
        }))
    }
}

impl Channel for ShmemIpcChannel {
    fn attach(&mut self, _side: Side, _peer: Pid) -> Result<()> {
        Ok(())
    }

    #[inline]
    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        let tx = &mut self.tx[side.index()];
        let mut done = 0;
        let start = Instant::now();
        while done < msg.len() {
            let rest = &msg[done..];
            let mut wrote = 0;
            let write = |p: *mut u8, count: usize| {
                let n = count.min(rest.len());
                // SAFETY: the crate passes a pointer to `count` writable bytes of the ring
                // that the receiver does not read until this call publishes them; `rest`
                // is our own buffer of at least `n` bytes; the two do not overlap.
                unsafe { std::ptr::copy_nonoverlapping(rest.as_ptr(), p, n) };
                wrote = n;
                n
            };
            if self.spin {
                tx.sender_mut().send(write).map_err(|e| err("send", e))?;
            } else {
                tx.send_raw(write).map_err(|e| err("send_raw", e))?;
            }
            done += wrote;
            if wrote == 0 {
                if self.spin {
                    let ring = tx.sender_mut();
                    if !spin_until(|| ring.write_count().map_or(true, |n| n > 0)) {
                        return Err(timeout("send: wait for space"));
                    }
                } else {
                    wait_signal(tx.full_signal(), start, "send: wait for space")?;
                }
            }
        }
        Ok(())
    }

    #[inline]
    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        let rx = &mut self.rx[side.peer().index()];
        let mut done = 0;
        let start = Instant::now();
        while done < buf.len() {
            let rest = &mut buf[done..];
            let mut got = 0;
            let read = |p: *const u8, count: usize| {
                let n = count.min(rest.len());
                // SAFETY: the crate passes a pointer to `count` readable bytes of the ring
                // that the sender does not overwrite until this call releases them;
                // `rest` is our own buffer of at least `n` bytes; no overlap.
                unsafe { std::ptr::copy_nonoverlapping(p, rest.as_mut_ptr(), n) };
                got = n;
                n
            };
            if self.spin {
                rx.receiver_mut().recv(read).map_err(|e| err("recv", e))?;
            } else {
                rx.receive_raw(read).map_err(|e| err("receive_raw", e))?;
            }
            done += got;
            if got == 0 {
                if self.spin {
                    let ring = rx.receiver_mut();
                    if !spin_until(|| ring.read_count().map_or(true, |n| n > 0)) {
                        return Err(timeout("recv: wait for data"));
                    }
                } else {
                    wait_signal(rx.empty_signal(), start, "recv: wait for data")?;
                }
            }
        }
        Ok(())
    }
}
