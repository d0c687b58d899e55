//! The workloads: rtt, stream, wake (over a [`Channel`]) and lock (over a
//! [`Lock`](crate::locks::Lock)), each with a forked peer pinned to another core. Every
//! message is stamped and checksummed on both ends; a mismatch fails the run.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shmkit::{Error, Result};

use crate::channel::{Channel, ChannelParams, ChannelSpec, Side, Style};
use crate::locks::LockSpec;
use crate::payload::Pattern;
use crate::proc::{CpuMark, EXIT_WAIT, Peer, Pinned, Placement, now_ns};
use crate::shm::SharedMem;
use crate::slot::WAIT_LIMIT;

/// Round trips per clock reading when timing fast round trips ([`rtt_timing`]).
pub const BATCH: u32 = 64;

/// A round trip under this many nanoseconds is fast: timed in batches ([`rtt_timing`]) and
/// compared with a floor measured next to it (no sleeping wake-up across cores is that
/// fast on these machines).
pub const FAST_RTT_NS: f64 = 10_000.0;

/// Untimed round trips of the pilot instance [`rtt_timing`] runs for a mechanism that is
/// not labelled spinning.
pub const PILOT_WARMUP: u64 = 16;
/// Round trips the pilot instance then times one by one.
pub const PILOT_ROUND_TRIPS: u64 = 64;

/// Messages in flight per direction in the stream workload (ring slots / queue depth).
pub const STREAM_DEPTH: usize = 8;

/// How a figure was timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Timing {
    /// One `clock_gettime` pair around each batch of [`BATCH`] operations; the sample is
    /// the batch mean (percentiles of batch means understate the tails).
    Batch,
    /// One `clock_gettime` pair around each operation.
    PerOp,
    /// Timestamps taken in the two processes on the shared CLOCK_MONOTONIC.
    CrossProcess,
    /// Total time over all operations (throughput).
    Total,
}

/// The result of one workload run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measurement {
    /// Median per operation, in nanoseconds.
    pub median_ns: f64,
    /// 99th percentile, when the timing gives a distribution.
    pub p99_ns: Option<f64>,
    /// 99.9th percentile, when there are enough samples.
    pub p999_ns: Option<f64>,
    /// Bytes per second (stream).
    pub throughput_bytes_per_s: Option<f64>,
    /// Messages (or lock operations) per second.
    pub ops_per_s: Option<f64>,
    /// CPU time (user + system) both processes used per operation over the measured
    /// interval, in nanoseconds ([`CpuMark`]): what a spinning mechanism's latency costs
    /// in cores, what a sleeping one saves.
    pub cpu_ns_per_op: Option<f64>,
    /// The run's own noise: `(max - min) / median` of the medians of up to
    /// [`SPREAD_PARTS`] consecutive parts of the samples, in time order (runs that report
    /// one sample per repetition, like stream: of the repetitions). `None` with fewer than
    /// 3 samples.
    pub spread: Option<f64>,
    /// Number of samples behind the percentiles.
    pub samples: usize,
    /// Sum of all samples (ns): for callers that need a total (criterion's `iter_custom`).
    pub sum_ns: f64,
    /// Operations measured in total.
    pub operations: u64,
    /// How it was timed.
    pub timing: Timing,
    /// Where the two processes ran.
    pub placement: Placement,
}

/// `total` CPU nanoseconds spread over `ops` operations.
fn per_op(total: Option<u64>, ops: u64) -> Option<f64> {
    total.filter(|_| ops > 0).map(|t| t as f64 / ops as f64)
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Parts the samples are split into for [`Measurement::spread`].
pub const SPREAD_PARTS: usize = 5;

/// `(max - min) / median` of the medians of up to [`SPREAD_PARTS`] consecutive parts of
/// `samples` (in the order they were taken), or `None` with fewer than 3 samples.
pub fn spread(samples: &[f64]) -> Option<f64> {
    let n = samples.len();
    if n < 3 {
        return None;
    }
    let parts = SPREAD_PARTS.min(n);
    let medians: Vec<f64> = (0..parts)
        .map(|i| {
            let mut part = samples[i * n / parts..(i + 1) * n / parts].to_vec();
            part.sort_by(|a, b| a.total_cmp(b));
            percentile(&part, 0.5)
        })
        .collect();
    let mut all = samples.to_vec();
    all.sort_by(|a, b| a.total_cmp(b));
    let median = percentile(&all, 0.5);
    let (lo, hi) = medians
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &m| (lo.min(m), hi.max(m)));
    (median > 0.0).then(|| (hi - lo) / median)
}

/// A measurement from per-operation samples (in the order they were taken; sorted here).
pub fn summarise(
    mut samples: Vec<f64>,
    operations: u64,
    timing: Timing,
    placement: Placement,
) -> Measurement {
    let spread = spread(&samples);
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    let sum_ns = samples.iter().sum();
    Measurement {
        median_ns: percentile(&samples, 0.5),
        p99_ns: (n >= 100).then(|| percentile(&samples, 0.99)),
        p999_ns: (n >= 1000).then(|| percentile(&samples, 0.999)),
        throughput_bytes_per_s: None,
        ops_per_s: None,
        cpu_ns_per_op: None,
        spread,
        samples: n,
        sum_ns,
        operations,
        timing,
        placement,
    }
}

/// Median of unsorted values (`None` if there are none).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    (!v.is_empty()).then(|| {
        v.sort_by(|x, y| x.total_cmp(y));
        percentile(&v, 0.5)
    })
}

/// One measurement from a row's runs (in the order they were made): every figure is the
/// median of the runs' figures (a percentile or rate that a run lacks is left out; a
/// figure no run has stays `None`), CPU per operation the mean of the runs' (`None` if one
/// could not read it), `spread` that of the runs' medians ([`spread`]: `(max - min) /
/// median` for up to [`SPREAD_PARTS`] runs), samples and operations summed; timing and
/// placement those of the first run. `None` without runs.
pub fn median_of_runs(runs: Vec<Measurement>) -> Option<Measurement> {
    let first = runs.first()?;
    let med = |f: fn(&Measurement) -> Option<f64>| median(runs.iter().filter_map(f).collect());
    let medians: Vec<f64> = runs.iter().map(|m| m.median_ns).collect();
    let cpu: Option<f64> = runs.iter().map(|m| m.cpu_ns_per_op).sum();
    Some(Measurement {
        median_ns: med(|m| Some(m.median_ns))?,
        p99_ns: med(|m| m.p99_ns),
        p999_ns: med(|m| m.p999_ns),
        throughput_bytes_per_s: med(|m| m.throughput_bytes_per_s),
        ops_per_s: med(|m| m.ops_per_s),
        cpu_ns_per_op: cpu.map(|c| c / runs.len() as f64),
        spread: spread(&medians),
        samples: runs.iter().map(|m| m.samples).sum(),
        sum_ns: runs.iter().map(|m| m.sum_ns).sum(),
        operations: runs.iter().map(|m| m.operations).sum(),
        timing: first.timing,
        placement: first.placement,
    })
}

/// A small shared control block: readiness and completion flags for the two processes.
struct Control {
    mem: SharedMem,
}

impl Control {
    fn new() -> Result<Control> {
        Ok(Control {
            mem: SharedMem::anonymous(256)?,
        })
    }
    fn word(&self, i: usize) -> &AtomicU32 {
        assert!(i < 8, "control flag index out of range");
        // SAFETY: i < 8 keeps the word in the first 128 bytes of the 256-byte mapping (the
        // plain counter lives at 128); each word is 16-byte aligned; the mapping outlives
        // the reference.
        unsafe { &*(self.mem.ptr().add(i * 16) as *const AtomicU32) }
    }
    fn plain(&self) -> *mut u64 {
        self.mem.ptr().wrapping_add(128).cast()
    }
    fn set(&self, i: usize) {
        self.word(i).store(1, Ordering::Release);
    }
    /// Spins until flag `i` is set, bounded by WAIT_LIMIT.
    fn wait(&self, i: usize, what: &'static str) -> Result<()> {
        let w = self.word(i);
        let start = Instant::now();
        let mut spins = 0u32;
        while w.load(Ordering::Acquire) == 0 {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins & 0x3FF == 0 && start.elapsed() > WAIT_LIMIT {
                return Err(Error::Timeout {
                    resource: "bench control block".into(),
                    op: what,
                    timeout: WAIT_LIMIT,
                });
            }
        }
        Ok(())
    }
}

const READY: usize = 0;
const WARM: usize = 1;
const DONE: usize = 2;
const GO: usize = 3;

fn corrupt(mech: &str, seq: u64) -> Error {
    Error::corrupt(
        mech.to_string(),
        format!("message {seq}: payload checksum or sequence mismatch"),
    )
}

/// Receives message `seq` on `side` and checks it (length, sequence number, sum of every
/// byte) where the receiver has it: in `buf`, or, for a channel with a receive view
/// ([`Channel::has_recv_view`]), in the mechanism's own receive buffer or in place in the
/// shared slot. `view` is `ch.has_recv_view()`, asked once per run. When `clock` is set,
/// `CLOCK_MONOTONIC` is read as soon as the message is there, before the check. Returns
/// the extra word and that reading (0 without `clock`).
#[inline]
#[allow(clippy::too_many_arguments)]
fn recv_checked(
    ch: &mut dyn Channel,
    view: bool,
    side: Side,
    pat: &Pattern,
    buf: &mut [u8],
    seq: u64,
    id: &str,
    clock: bool,
) -> Result<(u64, u64)> {
    let mut t1 = 0;
    let got = if view {
        let mut got = None;
        ch.recv_view(side, buf.len(), &mut |msg| {
            if clock {
                t1 = now_ns();
            }
            got = pat.check(msg, seq);
        })?;
        got
    } else {
        ch.recv(side, buf)?;
        if clock {
            t1 = now_ns();
        }
        pat.check(buf, seq)
    };
    got.map(|extra| (extra, t1)).ok_or_else(|| corrupt(id, seq))
}

/// The child's side of rtt and wake: receive, check, reply. In wake mode the reply carries
/// the wake-up latency measured against the parent's timestamp, and is sent `hold` after
/// the receive when one is given (a peer that answers slowly).
fn echo_loop(
    ch: &mut dyn Channel,
    id: &str,
    size: usize,
    total: u64,
    wake: bool,
    hold: Option<Duration>,
) -> Result<()> {
    ch.attach(Side::Child, nix::unistd::getppid())?;
    let view = ch.has_recv_view();
    let mut pat = Pattern::new(size);
    let mut buf = vec![0u8; size];
    for seq in 0..total {
        // The clock is read only in wake mode: a clock_gettime per echo would add ~25 ns
        // to every round trip and pull every rtt ratio towards 1.
        let (extra, t1) = recv_checked(ch, view, Side::Child, &pat, &mut buf, seq, id, wake)?;
        let reply = if wake { t1.wrapping_sub(extra) } else { 0 };
        if let Some(h) = hold {
            std::thread::sleep(h);
        }
        ch.send(Side::Child, pat.stamp(seq, reply))?;
    }
    Ok(())
}

/// Channel instances an rtt row is measured on ([`rtt`]): as many as the parts
/// [`spread`] splits the samples into, so a row's spread is the spread between instances.
pub const RTT_INSTANCES: u64 = SPREAD_PARTS as u64;

/// How a mechanism's round trips of `size` bytes are timed: in batches of [`BATCH`] when
/// they are fast, one by one otherwise. The rule is the speed, not the label: a clock
/// pair costs about a quarter of a fast round trip, and every fast row must carry the
/// same statistic (a median of batch means includes the slow round trips a median of
/// single ones leaves out: 1.06-1.07x at 4 KiB for identical code). Spinning mechanisms
/// are fast by definition; any other (an adaptive wait that answers while it still spins,
/// a peer's event that polls first) gets a pilot instance, [`PILOT_ROUND_TRIPS`] round
/// trips timed one by one after [`PILOT_WARMUP`] untimed, and is fast when their median
/// is under [`FAST_RTT_NS`].
pub fn rtt_timing(spec: &ChannelSpec, size: usize, placement: Placement) -> Result<Timing> {
    if spec.style == Style::Spinning {
        return Ok(Timing::Batch);
    }
    let mut pilot = Vec::new();
    rtt_instance(
        spec,
        size,
        PILOT_WARMUP,
        PILOT_ROUND_TRIPS,
        Timing::PerOp,
        placement,
        &mut pilot,
    )?;
    pilot.sort_by(|a, b| a.total_cmp(b));
    Ok(if percentile(&pilot, 0.5) < FAST_RTT_NS {
        Timing::Batch
    } else {
        Timing::PerOp
    })
}

/// Round-trip latency over [`RTT_INSTANCES`] channel instances, one after the other: each
/// a fresh channel and a fresh peer process, `warmup` untimed round trips, then its share of
/// `iters` timed ones, in batches of [`BATCH`] when they are fast and one by one otherwise
/// ([`rtt_timing`]). The samples of all instances are summarised together (in the order they
/// were taken, so [`Measurement::spread`] compares the instances).
///
/// Why instances: on these VMs a spinning round trip is bimodal from one channel to the
/// next (e.g. 88-92 ns or 110-140 ns at 64 B for the same code, placement and run), while
/// the batches of one channel agree within ~2%; a row measured on one channel reports one
/// draw of that and a spread that hides it. The median over the instances' samples is the
/// typical channel's; the spread sizes the `--baseline` noise band honestly.
pub fn rtt(
    spec: &ChannelSpec,
    size: usize,
    warmup: u64,
    iters: u64,
    placement: Placement,
) -> Result<Measurement> {
    rtt_on(spec, size, warmup, iters, placement, RTT_INSTANCES)
}

/// [`rtt`] on `instances` channel instances (at least one).
pub fn rtt_on(
    spec: &ChannelSpec,
    size: usize,
    warmup: u64,
    iters: u64,
    placement: Placement,
    instances: u64,
) -> Result<Measurement> {
    let instances = instances.max(1);
    let timing = rtt_timing(spec, size, placement)?;
    let per = rtt_share_of(timing, iters, instances);
    let mut samples = Vec::new();
    let mut cpu = Some(0u64);
    for _ in 0..instances {
        let used = rtt_instance(spec, size, warmup, per, timing, placement, &mut samples)?;
        cpu = cpu.zip(used).map(|(a, b)| a + b);
    }
    Ok(rtt_summary(
        samples,
        per * instances,
        cpu,
        timing,
        placement,
    ))
}

/// Timed round trips of one of [`RTT_INSTANCES`] instances when a row's budget is `iters`:
/// whole batches, at least one.
pub fn rtt_share(timing: Timing, iters: u64) -> u64 {
    rtt_share_of(timing, iters, RTT_INSTANCES)
}

fn rtt_share_of(timing: Timing, iters: u64, instances: u64) -> u64 {
    let batch = rtt_batch(timing);
    iters.div_ceil(batch * instances.max(1)).max(1) * batch
}

/// Round trips per sample: [`BATCH`] for [`Timing::Batch`], otherwise one.
fn rtt_batch(timing: Timing) -> u64 {
    if timing == Timing::Batch {
        BATCH as u64
    } else {
        1
    }
}

/// The measurement of an rtt row from its instances' samples (in the order taken), timed
/// round trips and CPU time.
pub fn rtt_summary(
    samples: Vec<f64>,
    iters: u64,
    cpu: Option<u64>,
    timing: Timing,
    placement: Placement,
) -> Measurement {
    let mut m = summarise(samples, iters, timing, placement);
    m.cpu_ns_per_op = per_op(cpu, iters);
    // Round trips per second over the whole timed run (the mean, not the median).
    m.ops_per_s = (m.sum_ns > 0.0).then(|| m.samples as f64 * 1e9 / m.sum_ns);
    m
}

/// One channel instance: a fresh channel and peer, `warmup` untimed round trips, then
/// `iters` timed ones (whole batches: [`rtt_share`]), each batch's mean appended to
/// `samples`; returns the CPU time both processes used over the timed part.
pub fn rtt_instance(
    spec: &ChannelSpec,
    size: usize,
    warmup: u64,
    iters: u64,
    timing: Timing,
    placement: Placement,
    samples: &mut Vec<f64>,
) -> Result<Option<u64>> {
    let batch = rtt_batch(timing);
    let iters = iters.div_ceil(batch) * batch;
    let mut ch = (spec.make)(ChannelParams { size, depth: 1 })?;
    let total = warmup + iters;
    let _pin = Pinned::to(placement.parent)?;
    let id = spec.id;
    let peer = Peer::spawn(placement.child, || {
        echo_loop(&mut *ch, id, size, total, false, None)
    })?;
    ch.attach(Side::Parent, peer.pid())?;
    let view = ch.has_recv_view();
    let mut pat = Pattern::new(size);
    let mut buf = vec![0u8; size];
    let mut seq = 0u64;
    let mut round_trip = |ch: &mut Box<dyn Channel>, seq: u64| -> Result<()> {
        ch.send(Side::Parent, pat.stamp(seq, 0))?;
        recv_checked(
            &mut **ch,
            view,
            Side::Parent,
            &pat,
            &mut buf,
            seq,
            id,
            false,
        )
        .map(|_| ())
    };
    while seq < warmup {
        round_trip(&mut ch, seq)?;
        seq += 1;
    }
    let cpu = CpuMark::now(Some(&peer));
    while seq < total {
        let t0 = Instant::now();
        for _ in 0..batch {
            round_trip(&mut ch, seq)?;
            seq += 1;
        }
        samples.push(t0.elapsed().as_nanos() as f64 / batch as f64);
    }
    let cpu = cpu.since(Some(&peer));
    peer.join(EXIT_WAIT)?;
    Ok(cpu)
}

/// Total time of `iters` round trips (after `warmup`), for criterion's `iter_custom`.
pub fn rtt_total(
    spec: &ChannelSpec,
    size: usize,
    warmup: u64,
    iters: u64,
    placement: Placement,
) -> Result<Duration> {
    let mut ch = (spec.make)(ChannelParams { size, depth: 1 })?;
    let total = warmup + iters;
    let _pin = Pinned::to(placement.parent)?;
    let id = spec.id;
    let peer = Peer::spawn(placement.child, || {
        echo_loop(&mut *ch, id, size, total, false, None)
    })?;
    ch.attach(Side::Parent, peer.pid())?;
    let view = ch.has_recv_view();
    let mut pat = Pattern::new(size);
    let mut buf = vec![0u8; size];
    let mut t0 = Instant::now();
    for seq in 0..total {
        if seq == warmup {
            t0 = Instant::now();
        }
        ch.send(Side::Parent, pat.stamp(seq, 0))?;
        recv_checked(&mut *ch, view, Side::Parent, &pat, &mut buf, seq, id, false)?;
    }
    let elapsed = t0.elapsed();
    peer.join(EXIT_WAIT)?;
    Ok(elapsed)
}

/// Wake-up latency: the parent waits until the peer sleeps in the kernel (state `S` in
/// `/proc/PID/stat`, for sleeping mechanisms), writes CLOCK_MONOTONIC into the message and
/// sends it; the peer reads the clock as soon as its receive returns and sends back the
/// difference. `samples` wake-ups are measured after `warmup`.
///
/// With `hold`, the peer sleeps that long before each reply (its CPU does not run
/// meanwhile): the parent's wait for the reply then outlasts an adaptive spin budget
/// shorter than `hold`, and the row's CPU column shows what waiting on a slow peer costs.
pub fn wake(
    spec: &ChannelSpec,
    warmup: u64,
    samples: u64,
    placement: Placement,
    hold: Option<Duration>,
) -> Result<Measurement> {
    let mut out = Vec::with_capacity(samples as usize);
    let cpu = wake_instance(spec, warmup, samples, placement, hold, &mut out)?;
    Ok(wake_summary(out, cpu, placement))
}

/// The measurement of a wake row from its wake-up latencies (in the order taken, over one
/// or more instances) and the CPU time they cost.
pub fn wake_summary(samples: Vec<f64>, cpu: Option<u64>, placement: Placement) -> Measurement {
    let n = samples.len() as u64;
    let mut m = summarise(samples, n, Timing::CrossProcess, placement);
    m.cpu_ns_per_op = per_op(cpu, n);
    m
}

/// One channel instance of [`wake`]: a fresh channel and peer, `warmup` untimed wake-ups,
/// then `samples` timed ones appended to `out`; returns the CPU time both processes used
/// for the timed ones.
pub fn wake_instance(
    spec: &ChannelSpec,
    warmup: u64,
    samples: u64,
    placement: Placement,
    hold: Option<Duration>,
    out: &mut Vec<f64>,
) -> Result<Option<u64>> {
    let size = 64;
    let mut ch = (spec.make)(ChannelParams { size, depth: 1 })?;
    let total = warmup + samples;
    let _pin = Pinned::to(placement.parent)?;
    let id = spec.id;
    let peer = Peer::spawn(placement.child, || {
        echo_loop(&mut *ch, id, size, total, true, hold)
    })?;
    ch.attach(Side::Parent, peer.pid())?;
    let view = ch.has_recv_view();
    let mut pat = Pattern::new(size);
    let mut buf = vec![0u8; size];
    // CPU: the peer's over the timed part, and this process's only around each send and
    // receive (not while it polls /proc for the peer to fall asleep: that is harness).
    let (mut peer_start, mut own_cpu) = (None, Some(0u64));
    for seq in 0..total {
        if seq == warmup {
            peer_start = peer.cpu_ns();
        }
        if spec.style == Style::Sleeping {
            // Bounded: a waiter that spins before parking gets 50 ms to fall asleep.
            let start = Instant::now();
            while peer.sched_state() != Some(b'S') && start.elapsed() < Duration::from_millis(50) {
                std::thread::yield_now();
            }
        }
        let c0 = crate::proc::cpu_ns(None);
        let t0 = now_ns();
        ch.send(Side::Parent, pat.stamp(seq, t0))?;
        let (latency, _) =
            recv_checked(&mut *ch, view, Side::Parent, &pat, &mut buf, seq, id, false)?;
        if seq >= warmup {
            out.push(latency as f64);
            own_cpu =
                own_cpu.and_then(|sum| Some(sum + crate::proc::cpu_ns(None)?.checked_sub(c0?)?));
        }
    }
    let peer_cpu = peer_start.and_then(|s| peer.cpu_ns()?.checked_sub(s));
    peer.join(EXIT_WAIT)?;
    Ok(own_cpu.zip(peer_cpu).map(|(a, b)| a + b))
}

/// One-way throughput: the parent sends `msgs` messages of `size` bytes (after a warm-up
/// that touches every ring slot), the peer receives and checks each one; the time runs
/// from the first timed send until the peer has checked the last message.
pub fn stream_total(
    spec: &ChannelSpec,
    size: usize,
    msgs: u64,
    placement: Placement,
) -> Result<Duration> {
    stream_run(spec, size, STREAM_DEPTH, msgs, placement).map(|(t, _)| t)
}

/// [`stream_total`], plus the CPU nanoseconds both processes used over the timed part.
fn stream_run(
    spec: &ChannelSpec,
    size: usize,
    depth: usize,
    msgs: u64,
    placement: Placement,
) -> Result<(Duration, Option<u64>)> {
    let warm = 2 * depth as u64;
    let mut ch = (spec.make)(ChannelParams { size, depth })?;
    let ctl = Control::new()?;
    let _pin = Pinned::to(placement.parent)?;
    let id = spec.id;
    let total = warm + msgs;
    let peer = Peer::spawn(placement.child, || {
        ch.attach(Side::Child, nix::unistd::getppid())?;
        let view = ch.has_recv_view();
        let pat = Pattern::new(size);
        let mut buf = vec![0u8; size];
        for seq in 0..total {
            recv_checked(&mut *ch, view, Side::Child, &pat, &mut buf, seq, id, false)?;
            if seq + 1 == warm {
                ctl.set(WARM);
            }
        }
        ctl.set(DONE);
        Ok(())
    })?;
    ch.attach(Side::Parent, peer.pid())?;
    let mut pat = Pattern::new(size);
    for seq in 0..warm {
        ch.send(Side::Parent, pat.stamp(seq, 0))?;
    }
    ctl.wait(WARM, "stream warm-up")?;
    let cpu = CpuMark::now(Some(&peer));
    let t0 = Instant::now();
    for seq in warm..total {
        ch.send(Side::Parent, pat.stamp(seq, 0))?;
    }
    ctl.wait(DONE, "stream completion")?;
    let elapsed = t0.elapsed();
    let cpu = cpu.since(Some(&peer));
    peer.join(EXIT_WAIT)?;
    Ok((elapsed, cpu))
}

/// Stream throughput: a calibration run sizes the message count for `target` per run,
/// then `reps` runs; the median run gives the figures.
pub fn stream(
    spec: &ChannelSpec,
    size: usize,
    target: Duration,
    max_bytes: u64,
    reps: usize,
    placement: Placement,
) -> Result<Measurement> {
    let shape = StreamShape {
        depth: STREAM_DEPTH,
        probe: 64,
        min_msgs: 16,
    };
    stream_shaped(spec, size, shape, target, max_bytes, reps, placement)
}

/// How a stream run is sized: messages in flight, calibration messages, fewest messages.
#[derive(Debug, Clone, Copy)]
pub struct StreamShape {
    /// Messages in flight per direction (ring slots, queue depth).
    pub depth: usize,
    /// Messages of the calibration run.
    pub probe: u64,
    /// Fewest messages per timed run.
    pub min_msgs: u64,
}

impl StreamShape {
    /// The `sizes` workload's shape for messages of `size` bytes: at most 32 MiB in
    /// flight (2 to 8 messages), a calibration of about 8 MiB (2 to 64 messages), at
    /// least 64 MiB (`quick`: 16 MiB) or 16 messages per run, and at least 2.
    pub fn for_size(size: usize, quick: bool) -> StreamShape {
        let size = size.max(1) as u64;
        let least: u64 = if quick { 16 << 20 } else { 64 << 20 };
        StreamShape {
            depth: ((32 << 20) / size).clamp(2, STREAM_DEPTH as u64) as usize,
            probe: ((8 << 20) / size).clamp(2, 64),
            min_msgs: (least / size).clamp(2, 16),
        }
    }
}

/// [`stream`] with a given [`StreamShape`].
pub fn stream_shaped(
    spec: &ChannelSpec,
    size: usize,
    shape: StreamShape,
    target: Duration,
    max_bytes: u64,
    reps: usize,
    placement: Placement,
) -> Result<Measurement> {
    let msgs = stream_calibrate(spec, size, shape, target, max_bytes, placement)?;
    let mut per_msg_ns = Vec::with_capacity(reps);
    let mut cpu = Some(0u64);
    for _ in 0..reps.max(1) {
        let (t, c) = stream_rep(spec, size, shape, msgs, placement)?;
        per_msg_ns.push(t);
        cpu = cpu.zip(c).map(|(a, b)| a + b);
    }
    Ok(stream_summary(per_msg_ns, msgs, cpu, size, placement))
}

/// The calibration of a stream row: a run of `shape.probe` messages, from which the
/// messages per timed run follow (`target` long, at most `max_bytes`, at least
/// `shape.min_msgs`).
pub fn stream_calibrate(
    spec: &ChannelSpec,
    size: usize,
    shape: StreamShape,
    target: Duration,
    max_bytes: u64,
    placement: Placement,
) -> Result<u64> {
    let (t, _) = stream_run(spec, size, shape.depth, shape.probe, placement)?;
    let per_msg = (t.as_secs_f64() / shape.probe as f64).max(1e-9);
    let max_msgs = (max_bytes / size as u64).max(shape.min_msgs);
    Ok(((target.as_secs_f64() / per_msg) as u64).clamp(shape.min_msgs, max_msgs))
}

/// One timed run of a stream row (a fresh channel and peer): nanoseconds per message and
/// the CPU time both processes used.
pub fn stream_rep(
    spec: &ChannelSpec,
    size: usize,
    shape: StreamShape,
    msgs: u64,
    placement: Placement,
) -> Result<(f64, Option<u64>)> {
    let (t, c) = stream_run(spec, size, shape.depth, msgs, placement)?;
    Ok((t.as_nanos() as f64 / msgs as f64, c))
}

/// The measurement of a stream row from its runs' nanoseconds per message (in the order
/// taken), `msgs` messages each, and the CPU time over all of them.
pub fn stream_summary(
    per_msg_ns: Vec<f64>,
    msgs: u64,
    cpu: Option<u64>,
    size: usize,
    placement: Placement,
) -> Measurement {
    let ops = msgs * per_msg_ns.len().max(1) as u64;
    let mut m = summarise(per_msg_ns, ops, Timing::Total, placement);
    m.p99_ns = None;
    m.p999_ns = None;
    m.cpu_ns_per_op = per_op(cpu, ops);
    m.ops_per_s = Some(1e9 / m.median_ns);
    m.throughput_bytes_per_s = Some(size as f64 * 1e9 / m.median_ns);
    m
}

/// Single-process `memcpy` bandwidth at `size` (source and destination private, hot in
/// cache when they fit): the stream workload's ceiling.
pub fn memcpy_bandwidth(size: usize, target: Duration) -> Measurement {
    let src = vec![0x5au8; size];
    let mut dst = vec![0u8; size];
    let mut n = 0u64;
    let cpu = CpuMark::now(None);
    let start = Instant::now();
    let mut elapsed;
    loop {
        for _ in 0..16 {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        }
        n += 16;
        elapsed = start.elapsed();
        if elapsed >= target {
            break;
        }
    }
    let per = elapsed.as_nanos() as f64 / n as f64;
    let cpu = cpu.since(None);
    let mut m = summarise(
        vec![per],
        n,
        Timing::Total,
        Placement {
            parent: None,
            child: None,
        },
    );
    m.ops_per_s = Some(1e9 / per);
    m.throughput_bytes_per_s = Some(size as f64 * 1e9 / per);
    m.cpu_ns_per_op = per_op(cpu, n);
    m
}

/// Uncontended lock + unlock in one process, timed in batches of [`BATCH`].
pub fn lock_uncontended(
    spec: &LockSpec,
    warmup: u64,
    iters: u64,
    placement: Placement,
) -> Result<Measurement> {
    let lock = (spec.make)()?;
    let _pin = Pinned::to(placement.parent)?;
    for _ in 0..warmup {
        lock.critical(&mut || {})?;
    }
    let batches = iters.div_ceil(BATCH as u64).max(1);
    let mut samples = Vec::with_capacity(batches as usize);
    let cpu = CpuMark::now(None);
    for _ in 0..batches {
        let t0 = Instant::now();
        for _ in 0..BATCH {
            lock.critical(&mut || {})?;
        }
        samples.push(t0.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    let cpu = cpu.since(None);
    let mut m = summarise(samples, batches * BATCH as u64, Timing::Batch, placement);
    m.cpu_ns_per_op = per_op(cpu, batches * BATCH as u64);
    Ok(m)
}

/// Contended: both processes run `iters` lock / increment a plain shared counter / unlock
/// cycles at once; the figure is wall time per cycle over both (so lower is better), and
/// the counter must end at `2 * iters` (mutual exclusion held).
pub fn lock_contended(spec: &LockSpec, iters: u64, placement: Placement) -> Result<Measurement> {
    let lock = (spec.make)()?;
    let ctl = Control::new()?;
    let _pin = Pinned::to(placement.parent)?;
    let cycle = |lock: &dyn crate::locks::Lock, ctl: &Control| -> Result<()> {
        let p = ctl.plain();
        for _ in 0..iters {
            lock.critical(&mut || {
                // SAFETY: `p` is an aligned u64 inside the control mapping; the lock
                // serialises the two processes' accesses (the final count checks it).
                unsafe { p.write_volatile(p.read_volatile() + 1) };
            })?;
        }
        Ok(())
    };
    let peer = Peer::spawn(placement.child, || {
        ctl.set(READY);
        ctl.wait(GO, "lock start")?;
        cycle(&*lock, &ctl)?;
        ctl.set(DONE);
        Ok(())
    })?;
    ctl.wait(READY, "lock peer ready")?;
    let cpu = CpuMark::now(Some(&peer));
    let t0 = Instant::now();
    ctl.set(GO);
    cycle(&*lock, &ctl)?;
    ctl.wait(DONE, "lock peer done")?;
    let elapsed = t0.elapsed();
    let cpu = cpu.since(Some(&peer));
    peer.join(EXIT_WAIT)?;
    // SAFETY: both processes are done; the aligned u64 is read once.
    let count = unsafe { ctl.plain().read_volatile() };
    if count != 2 * iters {
        return Err(Error::corrupt(
            spec.id,
            format!(
                "counter is {count}, expected {}: mutual exclusion broken",
                2 * iters
            ),
        ));
    }
    let per = elapsed.as_nanos() as f64 / (2 * iters) as f64;
    let mut m = summarise(vec![per], 2 * iters, Timing::Total, placement);
    m.ops_per_s = Some(1e9 / per);
    m.cpu_ns_per_op = per_op(cpu, 2 * iters);
    Ok(m)
}
