//! Runs every adapter for a few iterations with real processes (fork) and checks payload
//! integrity, mutual exclusion and cleanup. A custom `main` (harness = false) runs the
//! checks one after the other in a single thread, as `shmkit-bench` does.

use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use shmkit_compare::fanout;
use shmkit_compare::measure::{self, StreamShape, Timing};
use shmkit_compare::mpmc::{self, MpmcChannel, MpmcParams, MpmcSpec, Role, ShmkitMpmc};
use shmkit_compare::payload::Pattern;
use shmkit_compare::proc::Peer;
use shmkit_compare::suite::{self, Job, Options, Workload};
use shmkit_compare::{ChannelParams, Placement, Side, Style, registry};

type Check = (&'static str, fn() -> Result<(), String>);

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let checks: &[Check] = &[
        (
            "every_channel_round_trips_with_intact_payloads",
            every_channel_round_trips,
        ),
        (
            "every_channel_streams_every_size_it_accepts",
            every_channel_streams,
        ),
        ("every_channel_measures_wake_ups", every_channel_wakes),
        (
            "spin_floor_refuses_to_break_alternation",
            floor_refuses_double_send,
        ),
        ("every_lock_excludes_across_processes", every_lock_excludes),
        (
            "a_corrupting_channel_is_detected",
            corrupting_channel_is_detected,
        ),
        (
            "a_corrupting_peer_is_detected_through_receive_views",
            corrupting_peer_is_detected_through_views,
        ),
        (
            "dropping_a_peer_kills_and_reaps_it",
            dropping_a_peer_kills_it,
        ),
        (
            "quick_plan_lists_every_mechanism_and_the_limits",
            quick_plan_lists_everything,
        ),
        (
            "every_mpmc_mechanism_delivers_every_message",
            every_mpmc_mechanism_delivers,
        ),
        (
            "a_corrupting_mpmc_producer_is_detected",
            corrupting_mpmc_producer_is_detected,
        ),
        (
            "every_sizes_channel_streams_the_smallest_and_largest_size",
            every_sizes_channel_streams,
        ),
        ("python_mp_peers_round_trip_and_stream", python_mp_peers),
        (
            "every_fanout_mechanism_delivers_every_message_to_every_subscriber",
            every_fanout_mechanism_delivers,
        ),
        (
            "iceoryx2_runs_leave_nothing_behind",
            iceoryx2_leaves_nothing_behind,
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, f) in checks {
        if !filter.is_empty() && !filter.iter().any(|p| name.contains(p.as_str())) {
            continue;
        }
        let t = Instant::now();
        match f() {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1?})", t.elapsed());
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED: {e}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

fn placement() -> Placement {
    Placement::detect()
}

fn every_channel_round_trips() -> Result<(), String> {
    for c in registry::channels() {
        for size in [64, 4096] {
            if c.max_msg.is_some_and(|m| size > m) {
                continue;
            }
            let m = measure::rtt(&c, size, 10, 128, placement())
                .map_err(|e| format!("{} rtt {size}: {e}", c.id))?;
            // Spinning rows are timed in batches; the others by the speed of their pilot
            // round trips (measure::rtt_timing), which a test cannot predict.
            let timing_ok = match c.style {
                Style::Spinning => m.timing == Timing::Batch,
                Style::Sleeping => matches!(m.timing, Timing::Batch | Timing::PerOp),
            } && (m.timing != Timing::Batch
                || m.operations % u64::from(measure::BATCH) == 0);
            if !timing_ok || m.median_ns.is_nan() || m.median_ns <= 0.0 || m.operations < 128 {
                return Err(format!("{} rtt {size}: implausible {m:?}", c.id));
            }
        }
    }
    Ok(())
}

fn every_channel_streams() -> Result<(), String> {
    for c in registry::channels() {
        if c.id == suite::FLOOR {
            // A strict-alternation reference: it must refuse stream depths clearly.
            match (c.make)(ChannelParams { size: 64, depth: 8 }) {
                Err(e) if e.to_string().contains("ping-pong") => continue,
                Err(e) => return Err(format!("spin-floor: unclear refusal: {e}")),
                Ok(_) => return Err("spin-floor accepted a stream depth".into()),
            }
        }
        if registry::RTT_ONLY.contains(&c.id) {
            // One request in flight by design: a stream depth is refused clearly.
            match (c.make)(ChannelParams { size: 64, depth: 8 }) {
                Err(e) if e.to_string().contains("n/a") => continue,
                Err(e) => return Err(format!("{}: unclear refusal: {e}", c.id)),
                Ok(_) => return Err(format!("{} accepted a stream depth", c.id)),
            }
        }
        for size in suite::STREAM_SIZES {
            if c.max_msg.is_some_and(|m| size > m) {
                // The mq adapter must refuse such messages with a clear error.
                let Err(e) = (c.make)(ChannelParams { size, depth: 2 }) else {
                    return Err(format!("{} accepted {size} B above its limit", c.id));
                };
                if !e.to_string().contains("exceeds") {
                    return Err(format!("{}: unclear limit error: {e}", c.id));
                }
                continue;
            }
            let msgs = if size >= 1 << 20 { 4 } else { 40 };
            let d = measure::stream_total(&c, size, msgs, placement())
                .map_err(|e| format!("{} stream {size}: {e}", c.id))?;
            if d.is_zero() {
                return Err(format!("{} stream {size}: zero time", c.id));
            }
        }
    }
    Ok(())
}

fn every_channel_wakes() -> Result<(), String> {
    for c in registry::channels() {
        let held = suite::WAKE_HELD.contains(&c.id);
        for hold in [None, Some(suite::WAKE_HOLD)] {
            if hold.is_some() && !held {
                continue;
            }
            let m = measure::wake(&c, 2, 10, placement(), hold)
                .map_err(|e| format!("{} wake (hold {hold:?}): {e}", c.id))?;
            // Cross-process timestamps on one clock: a wake-up takes more than 0 and far
            // less than the 10 s wait limit (the hold comes after the stamp).
            if m.median_ns.is_nan() || m.median_ns <= 0.0 || m.median_ns >= 5e9 {
                return Err(format!(
                    "{} wake (hold {hold:?}): implausible median {}",
                    c.id, m.median_ns
                ));
            }
        }
    }
    Ok(())
}

fn every_lock_excludes() -> Result<(), String> {
    for l in registry::locks() {
        measure::lock_uncontended(&l, 10, 640, placement())
            .map_err(|e| format!("{} uncontended: {e}", l.id))?;
        // lock_contended fails if the shared counter misses an increment.
        measure::lock_contended(&l, 5_000, placement())
            .map_err(|e| format!("{} contended: {e}", l.id))?;
    }
    Ok(())
}

fn corrupting_channel_is_detected() -> Result<(), String> {
    // A channel whose peer flips a byte: the parent's check must reject the reply.
    let floor = registry::channels()
        .into_iter()
        .find(|c| c.id == "spin-floor")
        .ok_or("no floor")?;
    let mut ch = (floor.make)(ChannelParams { size: 64, depth: 1 }).map_err(|e| e.to_string())?;
    let peer = Peer::spawn(placement().child, || {
        ch.attach(Side::Child, nix::unistd::getppid())?;
        let mut buf = vec![0u8; 64];
        ch.recv(Side::Child, &mut buf)?;
        buf[40] ^= 1;
        ch.send(Side::Child, &buf)
    })
    .map_err(|e| e.to_string())?;
    ch.attach(Side::Parent, peer.pid())
        .map_err(|e| e.to_string())?;
    let mut pat = Pattern::new(64);
    ch.send(Side::Parent, pat.stamp(0, 0))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64];
    ch.recv(Side::Parent, &mut buf).map_err(|e| e.to_string())?;
    peer.join(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    match pat.check(&buf, 0) {
        None => Ok(()),
        Some(_) => Err("flipped byte not detected".into()),
    }
}

fn corrupting_peer_is_detected_through_views() -> Result<(), String> {
    // For every channel with a receive view (the message is checked where the mechanism
    // put it): the view must show the bytes that were sent, so a reply with one flipped
    // byte fails the check, and an intact one passes.
    let mut tested = 0;
    for c in registry::channels() {
        let mut ch = (c.make)(ChannelParams { size: 64, depth: 1 }).map_err(|e| e.to_string())?;
        if !ch.has_recv_view() {
            continue;
        }
        tested += 1;
        let peer = Peer::spawn(placement().child, || {
            ch.attach(Side::Child, nix::unistd::getppid())?;
            for flip in [false, true] {
                let mut got = Vec::new();
                ch.recv_view(Side::Child, 64, &mut |m| got = m.to_vec())?;
                if flip {
                    got[40] ^= 1;
                }
                ch.send(Side::Child, &got)?;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        ch.attach(Side::Parent, peer.pid())
            .map_err(|e| e.to_string())?;
        let mut pat = Pattern::new(64);
        for (seq, flipped) in [(0, false), (1, true)] {
            ch.send(Side::Parent, pat.stamp(seq, 0))
                .map_err(|e| e.to_string())?;
            let mut ok = None;
            ch.recv_view(Side::Parent, 64, &mut |m| {
                ok = Some(pat.check(m, seq).is_some())
            })
            .map_err(|e| format!("{}: {e}", c.id))?;
            if ok != Some(!flipped) {
                return Err(format!(
                    "{}: message {seq} (flipped: {flipped}) checked as {ok:?}",
                    c.id
                ));
            }
        }
        peer.join(Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
    }
    if tested == 0 {
        return Err("no channel with a receive view is registered".into());
    }
    Ok(())
}

fn floor_refuses_double_send() -> Result<(), String> {
    let floor = registry::channels()
        .into_iter()
        .find(|c| c.id == "spin-floor")
        .ok_or("no floor")?;
    let mut ch = (floor.make)(ChannelParams { size: 64, depth: 1 }).map_err(|e| e.to_string())?;
    ch.attach(Side::Parent, nix::unistd::getpid())
        .map_err(|e| e.to_string())?;
    let mut pat = Pattern::new(64);
    ch.send(Side::Parent, pat.stamp(0, 0))
        .map_err(|e| e.to_string())?;
    match ch.send(Side::Parent, pat.stamp(1, 0)) {
        Err(e) if e.to_string().contains("alternation") => Ok(()),
        other => Err(format!("second send without a reply: {other:?}")),
    }
}

fn dropping_a_peer_kills_it() -> Result<(), String> {
    let peer = Peer::spawn(placement().child, || {
        loop {
            std::hint::spin_loop();
        }
    })
    .map_err(|e| e.to_string())?;
    let pid = peer.pid();
    drop(peer);
    // Reaped: the pid no longer exists (not even as a zombie).
    match kill(pid, None) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => Err(format!("peer {pid} still exists after drop: {other:?}")),
    }
}

fn quick_plan_lists_everything() -> Result<(), String> {
    let tasks = suite::plan(&Options::new(true));
    for c in registry::channels() {
        for w in [Workload::Rtt, Workload::Stream, Workload::Wake] {
            if !tasks.iter().any(|t| t.workload == w && t.mechanism == c.id) {
                return Err(format!("{} missing from {w:?}", c.id));
            }
        }
    }
    for m in registry::mpmc() {
        for shape in mpmc::QUICK_SHAPES {
            if !tasks.iter().any(|t| {
                t.workload == Workload::Mpmc && t.mechanism == m.id && t.variant == Some(shape)
            }) {
                return Err(format!("{} {shape} missing from mpmc", m.id));
            }
        }
    }
    for id in registry::sizes() {
        for size in suite::QUICK_SIZES {
            if !tasks.iter().any(|t| {
                t.workload == Workload::Sizes && t.mechanism == *id && t.size == Some(size)
            }) {
                return Err(format!("{id} {size} B missing from sizes"));
            }
        }
    }
    for id in fanout::MECHANISMS {
        for (subs, label) in fanout::SUBSCRIBERS {
            if !tasks.iter().any(|t| {
                t.workload == Workload::Fanout
                    && t.mechanism == id
                    && t.variant == Some(label)
                    && matches!(t.job, Job::Fanout(m, s, _) if m == id && s == subs)
            }) {
                return Err(format!("{id} {label} missing from fanout"));
            }
        }
    }
    for u in registry::unavailable() {
        if !tasks.iter().any(|t| {
            t.mechanism == u.id && matches!(&t.job, Job::Skip(r) if r.starts_with("unavailable"))
        }) {
            return Err(format!("{} not listed as unavailable", u.id));
        }
    }
    let mq_1m = tasks
        .iter()
        .find(|t| {
            t.workload == Workload::Stream && t.mechanism == "posix-mq" && t.size == Some(1 << 20)
        })
        .ok_or("posix-mq 1 MiB row missing")?;
    match &mq_1m.job {
        Job::Skip(r) if r.starts_with("limit ") => Ok(()),
        other => Err(format!(
            "posix-mq 1 MiB should show its limit, got {other:?}"
        )),
    }
}

fn every_mpmc_mechanism_delivers() -> Result<(), String> {
    for m in registry::mpmc() {
        for (producers, consumers) in [(1, 1), (2, 3), (3, 2)] {
            let shape = MpmcParams {
                producers,
                consumers,
            };
            // The runner checks every payload, per-producer order and the total count.
            let r = mpmc::measure(&m, shape, 600, 1)
                .map_err(|e| format!("{} {producers}x{consumers}: {e}", m.id))?;
            if !(r.ops_per_s.is_some_and(|o| o > 0.0) && r.cpu_ns_per_op.is_some_and(|c| c > 0.0)) {
                return Err(format!(
                    "{} {producers}x{consumers}: implausible {r:?}",
                    m.id
                ));
            }
        }
    }
    Ok(())
}

/// The MPMC queue, with one byte of producer 0's fifth message flipped after stamping.
struct Corrupting {
    inner: Box<dyn MpmcChannel>,
    sent: u64,
}

impl MpmcChannel for Corrupting {
    fn attach(&mut self, role: Role) -> shmkit::Result<()> {
        self.inner.attach(role)
    }
    fn send(&mut self, producer: usize, msg: &[u8]) -> shmkit::Result<()> {
        self.sent += 1;
        if producer == 0 && self.sent == 5 {
            let mut bad = msg.to_vec();
            bad[40] ^= 1;
            return self.inner.send(producer, &bad);
        }
        self.inner.send(producer, msg)
    }
    fn recv(&mut self, consumer: usize, buf: &mut [u8]) -> shmkit::Result<()> {
        self.inner.recv(consumer, buf)
    }
    fn send_end(&mut self, consumer: usize, msg: &[u8]) -> shmkit::Result<()> {
        self.inner.send_end(consumer, msg)
    }
}

fn corrupting_mpmc_producer_is_detected() -> Result<(), String> {
    let spec = MpmcSpec {
        id: "corrupting",
        style: Style::Sleeping,
        note: "",
        make: |p| {
            Ok(Box::new(Corrupting {
                inner: ShmkitMpmc::boxed(p)?,
                sent: 0,
            }))
        },
    };
    let shape = MpmcParams {
        producers: 2,
        consumers: 2,
    };
    match mpmc::measure(&spec, shape, 200, 1) {
        Ok(m) => Err(format!("a corrupted message went unnoticed: {m:?}")),
        Err(_) => Ok(()),
    }
}

fn every_sizes_channel_streams() -> Result<(), String> {
    let channels = registry::channels();
    for id in registry::sizes() {
        let c = channels
            .iter()
            .find(|c| c.id == *id)
            .ok_or(format!("registry::sizes lists {id}, which is no channel"))?;
        for size in [suite::SIZES[0], *suite::SIZES.last().unwrap()] {
            let shape = StreamShape::for_size(size, true);
            let m = measure::stream_shaped(
                c,
                size,
                shape,
                Duration::from_millis(1),
                1 << 20,
                1,
                placement(),
            )
            .map_err(|e| format!("{id} sizes {size}: {e}"))?;
            if !m.throughput_bytes_per_s.is_some_and(|b| b > 0.0) {
                return Err(format!("{id} sizes {size}: implausible {m:?}"));
            }
        }
    }
    Ok(())
}

fn python_mp_peers() -> Result<(), String> {
    use shmkit_compare::python_mp;
    let tasks = suite::plan(&Options::new(true));
    let python = shmkit_compare::pool::python_available();
    for (id, _, _) in python_mp::MECHANISMS {
        for w in [Workload::Rtt, Workload::Stream] {
            let t = tasks
                .iter()
                .find(|t| t.workload == w && t.mechanism == id)
                .ok_or_else(|| format!("{id} missing from {w:?}"))?;
            match (&t.job, python) {
                (Job::PythonMp(..), true) => {}
                (Job::Skip(r), false) if r == "unavailable: python3 not found" => {}
                (other, _) => return Err(format!("{id} {w:?}: unexpected job {other:?}")),
            }
        }
        if !python {
            println!("  {id}: python3 not found, only the plan was checked");
            continue;
        }
        for size in [64, 4096] {
            let m = python_mp::rtt(id, size, 5, 50, placement())
                .map_err(|e| format!("{id} rtt {size}: {e}"))?;
            if m.samples != 50
                || m.timing != Timing::PerOp
                || m.median_ns.is_nan()
                || m.median_ns <= 0.0
            {
                return Err(format!("{id} rtt {size}: implausible {m:?}"));
            }
        }
        let m = python_mp::stream(id, 4096, Duration::from_millis(5), 1, placement())
            .map_err(|e| format!("{id} stream: {e}"))?;
        if m.median_ns.is_nan() || m.median_ns <= 0.0 {
            return Err(format!("{id} stream: implausible {m:?}"));
        }
    }
    Ok(())
}

fn every_fanout_mechanism_delivers() -> Result<(), String> {
    // 2 subscribers, 64 B and 64 KiB, few messages. Each subscriber checks every payload
    // (sequence number and its complement) and that every message arrives, in order; a
    // failure ends the subscriber with an error, which the run reports. A bad id fails.
    let (paced, stream) = (20, 300);
    for id in fanout::MECHANISMS {
        for size in fanout::SIZES {
            let m = fanout::run_counts(id, 2, size, paced, stream)
                .map_err(|e| format!("{id} fanout {size} B: {e}"))?;
            let plausible = m.operations == paced + stream
                && m.samples == (paced - paced / 10) as usize
                && m.median_ns > 0.0
                && m.ops_per_s.is_some_and(|v| v > 0.0);
            if !plausible {
                return Err(format!("{id} fanout {size} B: implausible {m:?}"));
            }
        }
    }
    match fanout::run_counts("no-such-mechanism", 2, 64, paced, stream) {
        Err(_) => Ok(()),
        Ok(m) => Err(format!("an unknown fanout mechanism ran: {m:?}")),
    }
}

fn iceoryx2_leaves_nothing_behind() -> Result<(), String> {
    // Runs every iceoryx2 adapter once more (the rtt, stream and wake checks above ran
    // them too), then looks for the run's files: shared memory with iceoryx2's prefix for
    // this harness, and per-run root directories.
    for c in registry::channels()
        .into_iter()
        .filter(|c| c.id.starts_with("iceoryx2"))
    {
        measure::rtt(&c, 64, 10, 128, placement()).map_err(|e| format!("{}: {e}", c.id))?;
    }
    fanout::run_counts(fanout::ICEORYX2, 2, 64, 10, 100)
        .map_err(|e| format!("{} fanout: {e}", fanout::ICEORYX2))?;
    let mut left: Vec<String> = std::fs::read_dir("/dev/shm")
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("iox2_shmkit_"))
        .collect();
    if let Ok(dir) = std::fs::read_dir("/tmp/iceoryx2") {
        left.extend(
            dir.flatten()
                .map(|e| format!("/tmp/iceoryx2/{}", e.file_name().to_string_lossy()))
                .filter(|n| n.contains("shmkit-")),
        );
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("left behind: {left:?}"))
    }
}
