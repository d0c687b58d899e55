//! The `mpmc` workload: P producer processes send to C consumer processes through one
//! mechanism; the figure is the aggregate messages per second, and how it grows with P and
//! C.
//!
//! Every process is forked from the measuring process, which only coordinates: it starts
//! them together, watches the consumers' counters (sleeping 100 µs between looks), stops
//! the clock when every message has been received, then sends each consumer one
//! end-of-stream marker and collects the processes. Producers and consumers are pinned
//! round-robin to the allowed CPUs (producer `i` on CPU `i mod n`, consumer `j` on
//! `(j + 1) mod n`, so 1x1 is the stream workload's placement). With more processes than
//! cores they share the cores: the mechanisms here sleep (or spin briefly, then sleep)
//! when they have to wait, and a spinning one would only measure the scheduler.
//!
//! Producer `p` sends `n` messages of [`SIZE`] bytes stamped with sequence number
//! `p << 40 | i` (the harness's [`Pattern`]); a consumer checks every byte's sum, that
//! each producer's sequence numbers arrive in increasing order, and counts; the counts
//! must add up to `P * n`. CPU time is each process's own (`CLOCK_PROCESS_CPUTIME_ID`)
//! from the start signal to its last message (a consumer: to its end marker), summed, per
//! message.
//!
//! ## Adding a mechanism (iceoryx2, ...)
//! Implement [`MpmcChannel`] (create everything in the constructor, before the forks;
//! [`MpmcChannel::attach`] in each process after it) and add one line to
//! [`registry::mpmc`](crate::registry::mpmc).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use shmkit::queue::{Mode, Queue, WaitStrategy};
use shmkit::{Error, Result};

use crate::channel::{ChannelParams, Style};
use crate::measure::{Measurement, Timing, summarise};
use crate::payload::Pattern;
use crate::proc::{EXIT_WAIT, Peer, Placement, available_cpus, cpu_ns};
use crate::shm::SharedMem;
use crate::slot::WAIT_LIMIT;

/// Message size of the workload.
pub const SIZE: usize = 64;

/// Slots of the shared queues (the MPMC queue; POSIX mq is capped at `msg_max`).
pub const DEPTH: usize = 64;

/// The sequence number of the end-of-stream marker.
const END_SEQ: u64 = u64::MAX;

/// Which process an endpoint call runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Producer `i` (0-based).
    Producer(usize),
    /// Consumer `j` (0-based).
    Consumer(usize),
    /// The measuring process: sends the end markers.
    Coordinator,
}

/// P producers and C consumers over one mechanism. Created in the measuring process before
/// the forks; each process calls [`MpmcChannel::attach`] once with its role and then uses
/// only that role's calls. Every wait is bounded.
pub trait MpmcChannel {
    /// Called once in each process after the fork.
    fn attach(&mut self, role: Role) -> Result<()>;
    /// Producer `producer` sends one message of exactly [`SIZE`] bytes.
    fn send(&mut self, producer: usize, msg: &[u8]) -> Result<()>;
    /// Consumer `consumer` receives one message (exactly `buf.len()` bytes). Once the
    /// coordinator has sent this consumer's end marker, every data message for it must
    /// come before the marker.
    fn recv(&mut self, consumer: usize, buf: &mut [u8]) -> Result<()>;
    /// The coordinator sends consumer `consumer` its end marker, after every producer
    /// has sent everything and every message was received.
    fn send_end(&mut self, consumer: usize, msg: &[u8]) -> Result<()>;
}

/// The shape of one run.
#[derive(Debug, Clone, Copy)]
pub struct MpmcParams {
    /// Producer processes.
    pub producers: usize,
    /// Consumer processes.
    pub consumers: usize,
}

/// One mechanism of the workload.
#[derive(Clone, Copy)]
pub struct MpmcSpec {
    /// Stable id (the same as the mechanism's rtt/stream id where there is one).
    pub id: &'static str,
    /// How it waits.
    pub style: Style,
    /// What the adapter does.
    pub note: &'static str,
    /// Creates the mechanism for a shape, before the forks.
    pub make: fn(MpmcParams) -> Result<Box<dyn MpmcChannel>>,
}

impl std::fmt::Debug for MpmcSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpmcSpec").field("id", &self.id).finish()
    }
}

/// Producer x consumer shapes: the full set and the `--quick` subset, with their labels.
pub const SHAPES: [(usize, usize, &str); 16] = [
    (1, 1, "1x1"),
    (2, 1, "2x1"),
    (4, 1, "4x1"),
    (8, 1, "8x1"),
    (1, 2, "1x2"),
    (2, 2, "2x2"),
    (4, 2, "4x2"),
    (8, 2, "8x2"),
    (1, 4, "1x4"),
    (2, 4, "2x4"),
    (4, 4, "4x4"),
    (8, 4, "8x4"),
    (1, 8, "1x8"),
    (2, 8, "2x8"),
    (4, 8, "4x8"),
    (8, 8, "8x8"),
];

/// The `--quick` shapes: 1x1, 2x1 (does a second producer add throughput?), 2x2, 4x4.
pub const QUICK_SHAPES: [&str; 4] = ["1x1", "2x1", "2x2", "4x4"];

/// Parses `PxC`.
pub fn shape(label: &str) -> Option<(usize, usize)> {
    SHAPES
        .iter()
        .find(|s| s.2 == label)
        .map(|&(p, c, _)| (p, c))
}

// ------------------------------------------------------------------ the runner

/// Shared counters: line 0 the start flag, line 1 the release flag, then one line per
/// process (producers first): `[ready, done, count, cpu_ns]`.
struct Board {
    mem: SharedMem,
    lines: usize,
}

const GO: usize = 0;
const RELEASE: usize = 1;
const READY: usize = 0;
const DONE: usize = 1;
const COUNT: usize = 2;
const CPU: usize = 3;

impl Board {
    fn new(processes: usize) -> Result<Board> {
        let lines = 2 + processes;
        Ok(Board {
            mem: SharedMem::anonymous(lines * 64)?,
            lines,
        })
    }

    fn word(&self, line: usize, i: usize) -> &AtomicU64 {
        assert!(line < self.lines && i < 8, "board index out of range");
        // SAFETY: line < lines and i < 8 keep the word inside the zero-filled, 64-byte
        // aligned mapping of `lines * 64` bytes; AtomicU64 has the alignment of u64
        // (8 divides 64 * line + 8 * i); the mapping outlives `self`.
        unsafe { &*(self.mem.ptr().add(line * 64 + i * 8) as *const AtomicU64) }
    }

    fn proc(&self, k: usize, i: usize) -> &AtomicU64 {
        self.word(2 + k, i)
    }

    /// Sleeps in short steps until `cond` holds, bounded by [`WAIT_LIMIT`].
    fn wait(&self, what: &'static str, mut cond: impl FnMut() -> bool) -> Result<()> {
        sleep_until(what, || Ok(cond()))
    }
}

/// Sleeps in 100 µs steps until `cond` returns true (or an error), bounded by
/// [`WAIT_LIMIT`].
fn sleep_until(what: &'static str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while !cond()? {
        if start.elapsed() > WAIT_LIMIT {
            return Err(Error::Timeout {
                resource: "mpmc workload".into(),
                op: what,
                timeout: WAIT_LIMIT,
            });
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(())
}

fn corrupt(id: &str, what: String) -> Error {
    Error::corrupt(id.to_string(), what)
}

fn producer(
    ch: &mut dyn MpmcChannel,
    board: &Board,
    p: usize,
    n: u64,
    mut pat: Pattern,
) -> Result<()> {
    ch.attach(Role::Producer(p))?;
    board.proc(p, READY).store(1, Ordering::Release);
    board.wait("start", || board.word(GO, 0).load(Ordering::Acquire) != 0)?;
    let c0 = cpu_ns(None).unwrap_or(0);
    for i in 0..n {
        ch.send(p, pat.stamp((p as u64) << 40 | i, p as u64))?;
    }
    let cpu = cpu_ns(None).unwrap_or(0).saturating_sub(c0);
    board.proc(p, CPU).store(cpu, Ordering::Relaxed);
    board.proc(p, DONE).store(1, Ordering::Release);
    // Stay until the end markers are out: a queue whose producers are all gone may
    // report the disconnection before the markers.
    board.wait("release", || {
        board.word(RELEASE, 0).load(Ordering::Acquire) != 0
    })
}

#[allow(clippy::too_many_arguments)]
fn consumer(
    ch: &mut dyn MpmcChannel,
    board: &Board,
    id: &str,
    c: usize,
    k: usize,
    producers: usize,
    pat: &Pattern,
) -> Result<()> {
    ch.attach(Role::Consumer(c))?;
    let mut buf = vec![0u8; pat.len()];
    let mut next = vec![0u64; producers];
    board.proc(k, READY).store(1, Ordering::Release);
    board.wait("start", || board.word(GO, 0).load(Ordering::Acquire) != 0)?;
    let c0 = cpu_ns(None).unwrap_or(0);
    let mut count = 0u64;
    loop {
        ch.recv(c, &mut buf)?;
        let seq = u64::from_le_bytes(buf[0..8].try_into().unwrap_or_default());
        if pat.check(&buf, seq).is_none() {
            return Err(corrupt(id, format!("message {seq:#x}: checksum mismatch")));
        }
        if seq == END_SEQ {
            break;
        }
        let (p, i) = ((seq >> 40) as usize, seq & ((1 << 40) - 1));
        match next.get_mut(p) {
            Some(want) if i >= *want => *want = i + 1,
            _ => {
                return Err(corrupt(
                    id,
                    format!("producer {p} message {i}: unknown producer or out of order"),
                ));
            }
        }
        count += 1;
        board.proc(k, COUNT).store(count, Ordering::Relaxed);
    }
    let cpu = cpu_ns(None).unwrap_or(0).saturating_sub(c0);
    board.proc(k, CPU).store(cpu, Ordering::Relaxed);
    board.proc(k, DONE).store(1, Ordering::Release);
    Ok(())
}

/// One run: `per_producer` messages from each producer. Returns the wall time from the
/// start signal until every message was received, and the CPU time of all producers and
/// consumers.
fn run_once(
    spec: &MpmcSpec,
    shape: MpmcParams,
    per_producer: u64,
) -> Result<(Duration, Option<u64>)> {
    let MpmcParams {
        producers,
        consumers,
    } = shape;
    let mut ch = (spec.make)(shape)?;
    let board = Board::new(producers + consumers)?;
    let cpus = available_cpus();
    let cpu_of = |i: usize| (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
    let pat = Pattern::new(SIZE);
    let id = spec.id;
    let mut peers = Vec::with_capacity(producers + consumers);
    for p in 0..producers {
        let pat = pat.clone();
        peers.push(Peer::spawn(cpu_of(p), || {
            producer(&mut *ch, &board, p, per_producer, pat)
        })?);
    }
    for c in 0..consumers {
        let k = producers + c;
        peers.push(Peer::spawn(cpu_of(c + 1), || {
            consumer(&mut *ch, &board, id, c, k, producers, &pat)
        })?);
    }
    ch.attach(Role::Coordinator)?;
    let all = producers + consumers;
    // A process that exited (state Z) before it was done fails the run at once instead
    // of at the time limit.
    let check_alive = |peers: &[Peer]| -> Result<()> {
        let early = |(k, p): &(usize, &Peer)| {
            board.proc(*k, DONE).load(Ordering::Acquire) == 0 && p.sched_state() == Some(b'Z')
        };
        match peers.iter().enumerate().find(early).map(|(k, _)| k) {
            Some(i) => Err(Error::Disconnected {
                resource: format!("{id} mpmc process {i}"),
                op: "run",
                detail: Some("exited early (its error is on stderr)".into()),
            }),
            None => Ok(()),
        }
    };
    let mut looks = 0u32;
    let mut watch = |cond: &dyn Fn() -> bool| -> Result<bool> {
        looks += 1;
        if looks % 64 == 0 {
            check_alive(&peers)?;
        }
        Ok(cond())
    };
    let ready = || (0..all).all(|k| board.proc(k, READY).load(Ordering::Acquire) != 0);
    wait_watching("ready", &mut watch, &ready)?;
    let total = per_producer * producers as u64;
    let received = || {
        (producers..all)
            .map(|k| board.proc(k, COUNT).load(Ordering::Relaxed))
            .sum::<u64>()
            >= total
    };
    let t0 = Instant::now();
    board.word(GO, 0).store(1, Ordering::Release);
    wait_watching("all messages received", &mut watch, &received)?;
    let elapsed = t0.elapsed();
    let produced = || (0..producers).all(|k| board.proc(k, DONE).load(Ordering::Acquire) != 0);
    wait_watching("producers done", &mut watch, &produced)?;
    let mut end = pat.clone();
    for c in 0..consumers {
        ch.send_end(c, end.stamp(END_SEQ, 0))?;
    }
    let consumed = || (producers..all).all(|k| board.proc(k, DONE).load(Ordering::Acquire) != 0);
    wait_watching("consumers done", &mut watch, &consumed)?;
    board.word(RELEASE, 0).store(1, Ordering::Release);
    for p in peers {
        p.join(EXIT_WAIT)?;
    }
    let got: u64 = (producers..all)
        .map(|k| board.proc(k, COUNT).load(Ordering::Relaxed))
        .sum();
    if got != total {
        return Err(corrupt(
            id,
            format!("{got} messages received, {total} sent"),
        ));
    }
    let cpu = (0..all)
        .map(|k| board.proc(k, CPU).load(Ordering::Relaxed))
        .sum();
    Ok((elapsed, Some(cpu)))
}

/// [`sleep_until`] `cond`, checking the processes now and then (`watch`).
fn wait_watching(
    what: &'static str,
    watch: &mut dyn FnMut(&dyn Fn() -> bool) -> Result<bool>,
    cond: &dyn Fn() -> bool,
) -> Result<()> {
    sleep_until(what, || watch(cond))
}

/// The workload: `reps` runs of `total` messages split over the producers; the median
/// run gives the aggregate rate, the CPU time is the mean over all runs.
pub fn measure(spec: &MpmcSpec, shape: MpmcParams, total: u64, reps: usize) -> Result<Measurement> {
    let mut per_msg = Vec::with_capacity(reps);
    let mut cpu = Some(0u64);
    for _ in 0..reps.max(1) {
        let (ns, c) = measure_once(spec, shape, total)?;
        per_msg.push(ns);
        cpu = cpu.zip(c).map(|(a, b)| a + b);
    }
    Ok(summary(per_msg, messages(shape, total), cpu))
}

/// Messages one run of `shape` carries when asked for about `total`: a whole number per
/// producer.
pub fn messages(shape: MpmcParams, total: u64) -> u64 {
    (total / shape.producers.max(1) as u64).max(1) * shape.producers as u64
}

/// One run of [`measure`] (fresh queue and processes): nanoseconds per message over all
/// producers, and the CPU time of all the processes.
pub fn measure_once(spec: &MpmcSpec, shape: MpmcParams, total: u64) -> Result<(f64, Option<u64>)> {
    let per_producer = (total / shape.producers.max(1) as u64).max(1);
    let (t, c) = run_once(spec, shape, per_producer)?;
    Ok((t.as_nanos() as f64 / messages(shape, total) as f64, c))
}

/// The measurement of an mpmc row from its runs' nanoseconds per message (in the order
/// taken), `msgs` messages each, and the CPU time over all of them.
pub fn summary(per_msg: Vec<f64>, msgs: u64, cpu: Option<u64>) -> Measurement {
    let runs = per_msg.len() as u64;
    let mut m = summarise(
        per_msg,
        msgs * runs,
        Timing::Total,
        Placement {
            parent: None,
            child: None,
        },
    );
    m.p99_ns = None;
    m.ops_per_s = Some(1e9 / m.median_ns);
    m.throughput_bytes_per_s = Some(SIZE as f64 * 1e9 / m.median_ns);
    m.cpu_ns_per_op = cpu.map(|c| c as f64 / (msgs * runs) as f64);
    m
}

// ------------------------------------------------------------------ adapters

/// `shmkit-queue` / `shmkit-queue-park`: one `Queue<[u8; 64]>` in [`Mode::Mpmc`], the
/// default (adaptive) wait or [`WaitStrategy::Park`]; every process takes its own handle
/// (`try_clone`) after the fork.
pub struct ShmkitMpmc {
    queue: Queue<[u8; SIZE]>,
}

impl ShmkitMpmc {
    /// The queue, [`DEPTH`] slots, default wait.
    pub fn boxed(_: MpmcParams) -> Result<Box<dyn MpmcChannel>> {
        Self::with(WaitStrategy::default())
    }

    /// `shmkit-queue-park`: the same with [`WaitStrategy::Park`].
    pub fn parked(_: MpmcParams) -> Result<Box<dyn MpmcChannel>> {
        Self::with(WaitStrategy::Park)
    }

    fn with(wait: WaitStrategy) -> Result<Box<dyn MpmcChannel>> {
        let queue = Queue::<[u8; SIZE]>::options()
            .mode(Mode::Mpmc)
            .capacity(DEPTH as u64)
            .wait(wait)
            .anonymous()?;
        Ok(Box::new(ShmkitMpmc { queue }))
    }

    fn put(&mut self, msg: &[u8]) -> Result<()> {
        let mut slot = self.queue.reserve(Some(WAIT_LIMIT))?;
        bytemuck::bytes_of_mut(&mut *slot).copy_from_slice(msg);
        slot.commit();
        Ok(())
    }
}

impl MpmcChannel for ShmkitMpmc {
    fn attach(&mut self, role: Role) -> Result<()> {
        if role != Role::Coordinator {
            self.queue = self.queue.try_clone()?;
        }
        Ok(())
    }

    fn send(&mut self, _: usize, msg: &[u8]) -> Result<()> {
        self.put(msg)
    }

    fn recv(&mut self, _: usize, buf: &mut [u8]) -> Result<()> {
        let slot = self.queue.recv_ref(Some(WAIT_LIMIT))?;
        buf.copy_from_slice(bytemuck::bytes_of(&*slot));
        Ok(())
    }

    fn send_end(&mut self, _: usize, msg: &[u8]) -> Result<()> {
        self.put(msg)
    }
}

/// `posix-mq`: one queue, every producer sends to it and every consumer receives from it.
pub struct MqMpmc {
    queue: crate::mq::OwnedMq,
}

impl MqMpmc {
    /// One queue of depth `min(DEPTH, msg_max)`, unlinked at once.
    pub fn boxed(_: MpmcParams) -> Result<Box<dyn MpmcChannel>> {
        let queue = crate::mq::open_unlinked(ChannelParams {
            size: SIZE,
            depth: DEPTH,
        })?;
        Ok(Box::new(MqMpmc { queue }))
    }
}

impl MpmcChannel for MqMpmc {
    fn attach(&mut self, _: Role) -> Result<()> {
        Ok(())
    }

    fn send(&mut self, _: usize, msg: &[u8]) -> Result<()> {
        crate::mq::send(self.queue.mqd(), msg)
    }

    fn recv(&mut self, _: usize, buf: &mut [u8]) -> Result<()> {
        crate::mq::recv(self.queue.mqd(), buf)
    }

    fn send_end(&mut self, _: usize, msg: &[u8]) -> Result<()> {
        crate::mq::send(self.queue.mqd(), msg)
    }
}

/// `unix-socket`: one `socketpair(AF_UNIX, SOCK_DGRAM)` per producer-consumer pair (a
/// datagram is one message); producer `p` sends its `i`-th message to consumer `i mod C`;
/// a consumer `poll`s its P sockets and one more on which the coordinator sends its end
/// marker, which it takes only when no data socket is readable.
pub struct UnixMpmc {
    consumers: usize,
    /// `pairs[p][c]`: (producer end, consumer end).
    pairs: Vec<Vec<(OwnedFd, OwnedFd)>>,
    /// Per consumer: (coordinator end, consumer end).
    ends: Vec<(OwnedFd, OwnedFd)>,
    next: usize,
    /// Data sockets found readable by the last poll, not yet read (indices into `pairs`).
    ready: Vec<usize>,
}

impl UnixMpmc {
    /// P x C + C socket pairs.
    pub fn boxed(p: MpmcParams) -> Result<Box<dyn MpmcChannel>> {
        let pair = || {
            socketpair(
                AddressFamily::Unix,
                SockType::Datagram,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| Error::os("unix datagram socket pair", "socketpair", e))
        };
        let pairs = (0..p.producers)
            .map(|_| (0..p.consumers).map(|_| pair()).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        let ends = (0..p.consumers)
            .map(|_| pair())
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(UnixMpmc {
            consumers: p.consumers,
            pairs,
            ends,
            next: 0,
            ready: Vec::new(),
        }))
    }
}

fn send_all(fd: &OwnedFd, msg: &[u8]) -> Result<()> {
    loop {
        match send(fd.as_raw_fd(), msg, MsgFlags::empty()) {
            Ok(n) if n == msg.len() => return Ok(()),
            Ok(n) => {
                return Err(Error::invalid(
                    "unix-socket",
                    "send",
                    format!("short datagram: {n} of {} bytes", msg.len()),
                ));
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::os("unix-socket", "send", e)),
        }
    }
}

fn recv_one(fd: &OwnedFd, buf: &mut [u8]) -> Result<()> {
    loop {
        match recv(fd.as_raw_fd(), buf, MsgFlags::empty()) {
            Ok(n) if n == buf.len() => return Ok(()),
            Ok(n) => {
                return Err(Error::corrupt(
                    "unix-socket",
                    format!("received {n} bytes, expected {}", buf.len()),
                ));
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::os("unix-socket", "recv", e)),
        }
    }
}

impl MpmcChannel for UnixMpmc {
    fn attach(&mut self, _: Role) -> Result<()> {
        Ok(())
    }

    fn send(&mut self, producer: usize, msg: &[u8]) -> Result<()> {
        let c = self.next;
        self.next = (self.next + 1) % self.consumers;
        send_all(&self.pairs[producer][c].0, msg)
    }

    fn recv(&mut self, consumer: usize, buf: &mut [u8]) -> Result<()> {
        loop {
            if let Some(p) = self.ready.pop() {
                return recv_one(&self.pairs[p][consumer].1, buf);
            }
            let mut fds: Vec<PollFd<'_>> = self
                .pairs
                .iter()
                .map(|row| PollFd::new(row[consumer].1.as_fd(), PollFlags::POLLIN))
                .collect();
            fds.push(PollFd::new(
                self.ends[consumer].1.as_fd(),
                PollFlags::POLLIN,
            ));
            let timeout = PollTimeout::try_from(WAIT_LIMIT).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(0) => {
                    return Err(Error::Timeout {
                        resource: "unix-socket".into(),
                        op: "poll",
                        timeout: WAIT_LIMIT,
                    });
                }
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::os("unix-socket", "poll", e)),
            }
            let readable = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            let n = self.pairs.len();
            let ready: Vec<usize> = (0..n).rev().filter(|&p| readable(&fds[p])).collect();
            let end = readable(&fds[n]);
            drop(fds);
            self.ready = ready;
            if self.ready.is_empty() && end {
                return recv_one(&self.ends[consumer].1, buf);
            }
        }
    }

    fn send_end(&mut self, consumer: usize, msg: &[u8]) -> Result<()> {
        send_all(&self.ends[consumer].0, msg)
    }
}
