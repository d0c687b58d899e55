//! shmkit's own primitives as they land: `shmkit-event`, `shmkit-semaphore` and
//! `shmkit-condvar` as doorbells of a [`SlotChannel`](crate::slot::SlotChannel) (payload in
//! shared memory, exactly like the OS mechanisms they compete with), `shmkit-mutex` as a
//! lock. Each object lives in its own anonymous segment, inherited by the forked peer.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shmkit::sync::{Condvar, Event, Mutex, Semaphore};
use shmkit::{Error, Result};

use crate::channel::Side;
use crate::locks::Lock;
use crate::slot::Doorbell;

/// One `shmkit::sync::Event` per side: `set` rings, `wait_timeout` + `clear` sleeps. The
/// slot protocol re-checks its word after every sleep, so clearing after the wake cannot
/// lose a ring.
pub struct ShmkitEvent {
    events: [Event; 2],
}

impl Doorbell for ShmkitEvent {
    const SLEEPS: bool = true;
    fn create(_mem: *mut u8) -> Result<Self> {
        Ok(ShmkitEvent {
            events: [Event::anonymous()?, Event::anonymous()?],
        })
    }
    fn sleep(&self, side: Side, _: &AtomicU32, _: u32, timeout: Duration) -> Result<()> {
        let ev = &self.events[side.index()];
        if ev.wait_timeout(timeout)? {
            ev.clear();
        }
        Ok(())
    }
    fn ring(&self, to: Side, _: &AtomicU32) -> Result<()> {
        self.events[to.index()].set();
        Ok(())
    }
}

/// One `shmkit::sync::Semaphore` per side: `post` rings, `wait_timeout` sleeps.
pub struct ShmkitSemaphore {
    sems: [Semaphore; 2],
}

impl Doorbell for ShmkitSemaphore {
    const SLEEPS: bool = true;
    fn create(_mem: *mut u8) -> Result<Self> {
        Ok(ShmkitSemaphore {
            sems: [Semaphore::anonymous(0)?, Semaphore::anonymous(0)?],
        })
    }
    fn sleep(&self, side: Side, _: &AtomicU32, _: u32, timeout: Duration) -> Result<()> {
        match self.sems[side.index()].wait_timeout(timeout) {
            Ok(()) => Ok(()),
            Err(e) if e.is_timeout() => Ok(()),
            Err(e) => Err(e),
        }
    }
    fn ring(&self, to: Side, _: &AtomicU32) -> Result<()> {
        self.sems[to.index()].post()
    }
}

/// A `shmkit::sync::Mutex<()>` + `Condvar` per side. The waiter checks the slot word with
/// the mutex held before waiting; the ringer takes the mutex before notifying, so the
/// notify cannot fall between the check and the wait.
pub struct ShmkitCondvar {
    pairs: [(Mutex<()>, Condvar); 2],
}

impl Doorbell for ShmkitCondvar {
    const SLEEPS: bool = true;
    fn create(_mem: *mut u8) -> Result<Self> {
        let pair = || -> Result<(Mutex<()>, Condvar)> {
            Ok((Mutex::anonymous(())?, Condvar::anonymous()?))
        };
        Ok(ShmkitCondvar {
            pairs: [pair()?, pair()?],
        })
    }
    fn sleep(&self, side: Side, word: &AtomicU32, seen: u32, timeout: Duration) -> Result<()> {
        let (m, cv) = &self.pairs[side.index()];
        let guard = m.lock()?.into_guard();
        if word.load(Ordering::SeqCst) == seen {
            let (relocked, _) = cv.wait_timeout(guard, timeout)?;
            drop(relocked.into_guard());
        }
        Ok(())
    }
    fn ring(&self, to: Side, _: &AtomicU32) -> Result<()> {
        let (m, cv) = &self.pairs[to.index()];
        let guard = m.lock()?.into_guard();
        cv.notify_one();
        drop(guard);
        Ok(())
    }
}

/// `shmkit::sync::Mutex<()>`: shmkit's own robust futex mutex (token owner word) behind a guard.
pub struct ShmkitMutex {
    m: Mutex<()>,
}

impl ShmkitMutex {
    /// A mutex in a fresh anonymous segment.
    pub fn boxed() -> Result<Box<dyn Lock>> {
        Ok(Box::new(ShmkitMutex {
            m: Mutex::anonymous(())?,
        }))
    }
}

impl Lock for ShmkitMutex {
    fn lock(&self) -> Result<()> {
        Err(Error::invalid(
            "shmkit-mutex",
            "lock",
            "guard-based: use critical()",
        ))
    }
    fn unlock(&self) -> Result<()> {
        Err(Error::invalid(
            "shmkit-mutex",
            "unlock",
            "guard-based: use critical()",
        ))
    }
    #[inline]
    fn critical(&self, f: &mut dyn FnMut()) -> Result<()> {
        let r = self.m.lock()?;
        if r.owner_died() {
            return Err(Error::Disconnected {
                resource: "shmkit-mutex".into(),
                op: "lock",
                detail: Some("the other process died holding the lock".into()),
            });
        }
        let guard = r.into_guard();
        f();
        drop(guard);
        Ok(())
    }
}

/// `shmkit::fifo`: two FIFOs in a private temporary directory, framed messages
/// (`FifoWriter::send`, `FifoReader::recv_into` without a timeout, bounded by the peer's
/// death like a raw FIFO). Frames are limited to `PIPE_BUF - 4` bytes so that they stay
/// atomic with many writers.
pub struct ShmkitFifo {
    sides: [(
        Option<shmkit::fifo::FifoWriter>,
        Option<shmkit::fifo::FifoReader>,
    ); 2],
    scratch: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl ShmkitFifo {
    /// Creates and opens both FIFOs.
    pub fn boxed(p: crate::channel::ChannelParams) -> Result<Box<dyn crate::Channel>> {
        use shmkit::fifo::{Fifo, MAX_ATOMIC_PAYLOAD};
        if p.size > MAX_ATOMIC_PAYLOAD {
            return Err(Error::MessageTooLarge {
                resource: "shmkit-fifo".into(),
                op: "create",
                len: p.size,
                max: MAX_ATOMIC_PAYLOAD,
                advice: Some("frames must fit PIPE_BUF to stay atomic; use shmkit-pipe".into()),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("shmkit-bench-")
            .tempdir()
            .map_err(|e| Error::Unsupported {
                what: "temporary directory",
                reason: e.to_string(),
            })?;
        let open = |i: usize| -> Result<(shmkit::fifo::FifoWriter, shmkit::fifo::FifoReader)> {
            let path = dir.path().join(format!("fifo{i}"));
            Fifo::create(&path, 0o600)?;
            let rd = Fifo::open_reader(&path)?;
            let wr = Fifo::open_writer(&path, Some(crate::slot::WAIT_LIMIT))?;
            Ok((wr, rd))
        };
        let (p_wr, c_rd) = open(0)?;
        let (c_wr, p_rd) = open(1)?;
        Ok(Box::new(ShmkitFifo {
            sides: [(Some(p_wr), Some(p_rd)), (Some(c_wr), Some(c_rd))],
            scratch: Vec::with_capacity(p.size),
            _dir: dir,
        }))
    }
}

fn closed(what: &str) -> Error {
    Error::invalid(what.to_string(), "use", "end closed")
}

impl crate::Channel for ShmkitFifo {
    fn attach(&mut self, side: Side, _: nix::unistd::Pid) -> Result<()> {
        self.sides[side.peer().index()] = (None, None);
        Ok(())
    }
    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        self.sides[side.index()]
            .0
            .as_ref()
            .ok_or_else(|| closed("shmkit-fifo"))?
            .send(msg)
    }
    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        let rd = self.sides[side.index()]
            .1
            .as_mut()
            .ok_or_else(|| closed("shmkit-fifo"))?;
        rd.recv_into(&mut self.scratch, None)?;
        copy_exact("shmkit-fifo", &self.scratch, buf)
    }
}

fn copy_exact(what: &str, got: &[u8], buf: &mut [u8]) -> Result<()> {
    if got.len() != buf.len() {
        return Err(Error::corrupt(
            what.to_string(),
            format!("received {} bytes, expected {}", got.len(), buf.len()),
        ));
    }
    buf.copy_from_slice(got);
    Ok(())
}

/// `shmkit::pipe::Pipe`: a duplex `SOCK_SEQPACKET` pair, `send` / `recv_into` without a
/// timeout (bounded by the peer's death).
pub struct ShmkitPipe {
    ends: [Option<shmkit::pipe::Pipe>; 2],
    scratch: Vec<u8>,
}

impl ShmkitPipe {
    /// Creates the pair.
    pub fn boxed(p: crate::channel::ChannelParams) -> Result<Box<dyn crate::Channel>> {
        let (a, b) = shmkit::pipe::Pipe::pair()?;
        Ok(Box::new(ShmkitPipe {
            ends: [Some(a), Some(b)],
            scratch: Vec::with_capacity(p.size),
        }))
    }
}

impl crate::Channel for ShmkitPipe {
    fn attach(&mut self, side: Side, _: nix::unistd::Pid) -> Result<()> {
        self.ends[side.peer().index()] = None;
        Ok(())
    }
    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        self.ends[side.index()]
            .as_ref()
            .ok_or_else(|| closed("shmkit-pipe"))?
            .send(msg)
    }
    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        let end = self.ends[side.index()]
            .as_mut()
            .ok_or_else(|| closed("shmkit-pipe"))?;
        end.recv_into(&mut self.scratch, None)?;
        copy_exact("shmkit-pipe", &self.scratch, buf)
    }
}

/// `shmkit::mq::MessageQueue`: two queues (capacity `min(depth, msg_max)`, message size =
/// the message), unlinked right after creation; `send_timeout` / `recv_timeout`.
pub struct ShmkitMq {
    queues: [shmkit::mq::MessageQueue; 2],
}

impl ShmkitMq {
    /// Creates and unlinks both queues.
    pub fn boxed(p: crate::channel::ChannelParams) -> Result<Box<dyn crate::Channel>> {
        use std::sync::atomic::AtomicU64;
        static N: AtomicU64 = AtomicU64::new(0);
        let capacity = p.depth.clamp(1, crate::mq::msg_max().max(1));
        let open = || -> Result<shmkit::mq::MessageQueue> {
            let name = format!(
                "shmkit-bench-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let q = shmkit::mq::MessageQueue::create(&name, capacity, p.size)?;
            shmkit::mq::MessageQueue::unlink(&name)?;
            Ok(q)
        };
        Ok(Box::new(ShmkitMq {
            queues: [open()?, open()?],
        }))
    }
}

impl crate::Channel for ShmkitMq {
    fn attach(&mut self, _: Side, _: nix::unistd::Pid) -> Result<()> {
        Ok(())
    }
    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        self.queues[side.index()].send_timeout(msg, 0, crate::slot::WAIT_LIMIT)
    }
    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        let (n, _) = self.queues[side.peer().index()].recv_timeout(buf, crate::slot::WAIT_LIMIT)?;
        if n != buf.len() {
            return Err(Error::corrupt(
                "shmkit-mq",
                format!("received {n} bytes, expected {}", buf.len()),
            ));
        }
        Ok(())
    }
}

/// `shmkit::signal`: `SignalNotifier::notify` (sigqueue with the slot word as payload) rings,
/// `SignalListener::recv_timeout` (signalfd) sleeps; the payload travels in shared memory.
/// The listener, created before the fork, blocks `SIGRTMIN+3`; the forked peer inherits
/// the mask and the signalfd, which then reads the peer's own signals.
pub struct ShmkitSignal {
    notifier: shmkit::signal::SignalNotifier,
    listener: shmkit::signal::SignalListener,
    peer: Option<u32>,
    creator: nix::unistd::Pid,
}

/// The `SIGRTMIN+n` the `shmkit-signal` adapter uses (the raw `rt-signal` one uses +2).
pub const SIGNAL_N: u32 = 3;

impl Doorbell for ShmkitSignal {
    const SLEEPS: bool = true;
    fn create(_mem: *mut u8) -> Result<Self> {
        Ok(ShmkitSignal {
            notifier: shmkit::signal::SignalNotifier::new(SIGNAL_N)?,
            listener: shmkit::signal::SignalListener::new(SIGNAL_N)?,
            peer: None,
            creator: nix::unistd::getpid(),
        })
    }
    fn attach(&mut self, _: Side, peer: nix::unistd::Pid) -> Result<()> {
        self.peer = Some(peer.as_raw() as u32);
        Ok(())
    }
    fn sleep(&self, _: Side, _: &AtomicU32, _: u32, timeout: Duration) -> Result<()> {
        match self.listener.recv_timeout(timeout) {
            Ok(_) => Ok(()),
            Err(e) if e.is_timeout() => Ok(()),
            Err(e) => Err(e),
        }
    }
    fn ring(&self, _: Side, word: &AtomicU32) -> Result<()> {
        let peer = self
            .peer
            .ok_or_else(|| Error::invalid("shmkit-signal", "ring", "not attached"))?;
        self.notifier
            .notify(peer, u64::from(word.load(Ordering::Relaxed)))
    }
}

impl Drop for ShmkitSignal {
    fn drop(&mut self) {
        // Leave no stale notification for the next run in this process (the signal stays
        // blocked, as SignalListener leaves it).
        if nix::unistd::getpid() == self.creator {
            while self.listener.try_recv().is_ok() {}
        }
    }
}
