//! The `fanout` workload: one publisher process, 1, 2, 4 or 8 subscriber processes, 64 B
//! and 64 KiB messages; every subscriber receives every message.
//!
//! Mechanisms:
//! - [`TOPIC`] (`shmkit-topic`): one `Topic<[u8; N]>` (`Policy::Block`, 64 slots), each
//!   subscriber reads in place (`recv_ref`) and checks the payload;
//! - [`QUEUES`] (`shmkit-queues`), the baseline: N SPSC `Queue<[u8; N]>`s (64 slots each),
//!   the publisher sends every message into each (N copies), each subscriber drains its
//!   own queue (`recv_ref`);
//! - [`ICEORYX2`] (`iceoryx2-pubsub`): one iceoryx2 publish/subscribe service of `[u8]`
//!   slices ([`crate::iceoryx2::FanService`]: no safe overflow, history 0, subscriber
//!   buffer 64, `RetryUntilDelivered` back-pressure, so no sample is dropped; every send
//!   must reach all subscribers); the publisher loans a slice (`loan_slice_uninit`),
//!   writes the message into it and sends it, each subscriber polls `receive()` and
//!   checks the payload in the sample.
//!
//! The shmkit mechanisms use the default wait strategy (spin 50 µs, then sleep): up to 9
//! processes share the cores, so pure spinning would measure the scheduler. The iceoryx2
//! subscribers poll and yield the core every 1024 empty polls (iceoryx2's publisher
//! retries on a full buffer with its own adaptive wait). Subscribers are not pinned.
//! The publisher waits for the acknowledgements by spinning and yields every 1024 spins:
//! a polling subscriber that shares its core (no wake-up to preempt it) runs only then,
//! which is most of the 1-subscriber iceoryx2 latency when the scheduler puts both on
//! one core (measured: ~27 µs with 1024, ~1 µs with 64 on the 2-core VM).
//!
//! Two phases per run, reported in one row:
//! - **latency** (`median`, `p99`): messages published one at a time; for each, the time
//!   from just before the publish to the receive of the **last** subscriber (each
//!   subscriber stamps CLOCK_MONOTONIC when it has the message and checked it), the next
//!   one published once every subscriber has acknowledged;
//! - **throughput** (`throughput`): a stream of messages as fast as the slowest
//!   subscriber allows; aggregate deliveries per second = messages x subscribers / time
//!   from the first publish until the last subscriber has the last message.
//!
//! Payload: the publisher writes the whole message into the slot (a pattern, with the
//! sequence number in the first 8 bytes and its complement in the last 8); every
//! subscriber copies the whole message out of the slot (one copy, as the rtt adapters'
//! receivers do), checks both words and that the messages arrive in order, none missing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;
use shmkit::queue::{Mode, Queue};
use shmkit::topic::{Policy, Topic};
use shmkit::{Array, Error, Result};

use crate::iceoryx2::{FanPublisher, FanService};
use crate::measure::{Measurement, Timing, percentile, spread};
use crate::proc::{Peer, Placement, cpu_ns, now_ns};
use crate::slot::WAIT_LIMIT;

/// Mechanism id: one topic.
pub const TOPIC: &str = "shmkit-topic";
/// Mechanism id: one SPSC queue per subscriber (the baseline).
pub const QUEUES: &str = "shmkit-queues";
/// Mechanism id: one iceoryx2 publish/subscribe service.
pub const ICEORYX2: &str = "iceoryx2-pubsub";
/// The mechanisms, baseline first.
pub const MECHANISMS: [&str; 3] = [QUEUES, TOPIC, ICEORYX2];
/// Subscriber counts, with their row labels.
pub const SUBSCRIBERS: [(usize, &str); 4] =
    [(1, "1 sub"), (2, "2 subs"), (4, "4 subs"), (8, "8 subs")];
/// Message sizes.
pub const SIZES: [usize; 2] = [64, 64 << 10];
/// Slots per topic / queue.
const CAPACITY: u64 = 64;
/// Words between two subscribers' report words (their own cache lines).
const STRIDE: usize = 16;
const DONE: u64 = u64::MAX;

/// The notes of the mechanisms.
pub fn note(id: &str) -> &'static str {
    if id == TOPIC {
        "one shmkit::topic::Topic<[u8; size]>, Policy::Block, 64 slots, default wait; loan+publish, subscribers read in place (recv_ref) and check the payload"
    } else if id == ICEORYX2 {
        "one iceoryx2 0.10 pub/sub service of [u8] slices, no safe overflow, history 0, subscriber buffer 64, RetryUntilDelivered; loan_slice_uninit+send, subscribers poll receive() (yield every 1024 polls) and check the payload in the sample"
    } else {
        "baseline: one SPSC shmkit::queue::Queue<[u8; size]> per subscriber, 64 slots, default wait; the publisher sends each message into every queue"
    }
}

/// Runs one fanout configuration: one of a row's runs (the harness makes 3 with
/// `--quick`, 5 without, in rounds). The committed runs before 2026-12-07 22:18 UTC made
/// one run per row, in a full run of 3,000 paced and 100,000 streamed messages at 64 B,
/// 1,000 and 5,000 at 64 KiB.
pub fn run(id: &str, subs: usize, size: usize, quick: bool) -> Result<Measurement> {
    let (paced, stream) = match (quick, size) {
        (true, 64) => (300, 5_000),
        (true, _) => (100, 500),
        (false, 64) => (1_000, 20_000),
        (false, _) => (300, 1_000),
    };
    run_counts(id, subs, size, paced, stream)
}

/// Runs one fanout configuration with `paced` latency messages and a `stream` of them
/// (the adapters' test uses few).
pub fn run_counts(
    id: &str,
    subs: usize,
    size: usize,
    paced: u64,
    stream: u64,
) -> Result<Measurement> {
    if !MECHANISMS.contains(&id) {
        return Err(Error::invalid(
            id,
            "fanout",
            format!("mechanisms are {MECHANISMS:?}"),
        ));
    }
    match size {
        64 => run_typed::<[u8; 64]>(id, subs, paced, stream),
        65536 => run_typed::<[u8; 65536]>(id, subs, paced, stream),
        other => Err(Error::invalid(
            id,
            "fanout",
            format!("sizes are {SIZES:?}, not {other}"),
        )),
    }
}

fn stamp<T: Pod>(m: &mut T, pattern: &T, seq: u64) {
    *m = *pattern;
    stamp_seq(bytemuck::bytes_of_mut(m), seq);
}

/// The sequence number in the first 8 bytes, its complement in the last 8.
fn stamp_seq(b: &mut [u8], seq: u64) {
    let n = b.len();
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b[n - 8..].copy_from_slice(&(!seq).to_le_bytes());
}

fn check<T: Pod>(m: &T, copy: &mut T) -> Result<u64> {
    check_bytes(bytemuck::bytes_of(m), copy)
}

/// Copies the message `m` into `copy` and returns its sequence number.
fn check_bytes<T: Pod>(m: &[u8], copy: &mut T) -> Result<u64> {
    let b = bytemuck::bytes_of_mut(copy);
    if m.len() != b.len() {
        return Err(Error::corrupt(
            "fanout",
            format!("received {} bytes, expected {}", m.len(), b.len()),
        ));
    }
    b.copy_from_slice(m);
    let n = b.len();
    let seq = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
    let tail = u64::from_le_bytes(b[n - 8..].try_into().unwrap_or_default());
    if tail != !seq {
        return Err(Error::corrupt(
            "fanout",
            format!("message {seq} arrived torn"),
        ));
    }
    Ok(seq)
}

/// Publisher and subscribers of one mechanism.
enum Fan<T: Pod> {
    Topic(Topic<T>),
    Queues(Vec<Queue<T>>),
    Iceoryx2(Box<FanService>),
}

impl<T: Pod> Fan<T> {
    fn subscriber_loop(&self, i: usize, report: &Array<u64>) -> Result<()> {
        let ack = report.atomic(1 + STRIDE * (1 + 2 * i))?;
        let ts = report.atomic(1 + STRIDE * (2 + 2 * i))?;
        let ready = report.atomic(0)?;
        let mut copy = Box::new(T::zeroed());
        // Every message, in order, none missing: 1, 2, ..., then DONE. Returns true at DONE.
        let mut expect = 1u64;
        let mut on = |seq: u64| -> Result<bool> {
            if seq != expect && seq != DONE {
                return Err(Error::corrupt(
                    "fanout",
                    format!("subscriber {i}: message {seq} arrived, expected {expect}"),
                ));
            }
            expect = seq.wrapping_add(1);
            ts.store(now_ns(), Ordering::Relaxed);
            ack.store(seq, Ordering::Release);
            Ok(seq == DONE)
        };
        match self {
            Fan::Topic(t) => {
                let s = t.subscribe()?;
                ready.fetch_add(1, Ordering::AcqRel);
                while !on(check(&*s.recv_ref(Some(WAIT_LIMIT))?, &mut copy)?)? {}
            }
            Fan::Queues(qs) => {
                let mut q = qs[i].try_clone()?;
                ready.fetch_add(1, Ordering::AcqRel);
                while !on(check(&*q.recv_ref(Some(WAIT_LIMIT))?, &mut copy)?)? {}
            }
            Fan::Iceoryx2(f) => {
                let s = f.subscriber()?;
                ready.fetch_add(1, Ordering::AcqRel);
                while !on(s.receive(|m| check_bytes(m, &mut *copy))??)? {}
            }
        }
        Ok(())
    }
}

/// The publisher's side of one mechanism.
enum Pub<'a, T: Pod> {
    Topic(shmkit::topic::Publisher<T>, Box<T>),
    Queues(&'a mut [Queue<T>], Box<T>),
    Iceoryx2(FanPublisher, Box<T>, usize),
}

impl<T: Pod> Pub<'_, T> {
    fn send(&mut self, seq: u64) -> Result<()> {
        match self {
            Pub::Topic(p, pattern) => {
                let mut l = p.loan_timeout(WAIT_LIMIT)?;
                stamp(&mut *l, pattern, seq);
                l.publish();
            }
            Pub::Queues(qs, pattern) => {
                for q in qs.iter_mut() {
                    let mut s = q.reserve(Some(WAIT_LIMIT))?;
                    stamp(&mut *s, pattern, seq);
                    s.commit();
                }
            }
            Pub::Iceoryx2(p, pattern, subs) => {
                let got = p.send(bytemuck::bytes_of(&**pattern), |b| stamp_seq(b, seq))?;
                if got != *subs {
                    return Err(Error::Disconnected {
                        resource: "iceoryx2-pubsub".into(),
                        op: "send",
                        detail: Some(format!("message {seq} reached {got} of {subs} subscribers")),
                    });
                }
            }
        }
        Ok(())
    }
}

fn wait_until(what: &'static str, mut ok: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    let mut spins = 0u32;
    while !ok() {
        spins += 1;
        if spins % 1024 == 0 {
            if start.elapsed() > WAIT_LIMIT {
                return Err(Error::Timeout {
                    resource: "fanout".into(),
                    op: what,
                    timeout: WAIT_LIMIT,
                });
            }
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
    Ok(())
}

fn run_typed<T: Pod>(id: &str, subs: usize, paced: u64, stream: u64) -> Result<Measurement> {
    let report = Array::<u64>::anonymous(1 + STRIDE * (1 + 2 * subs), 0)?;
    let mut fan = if id == ICEORYX2 {
        Fan::Iceoryx2(Box::new(FanService::new(
            subs,
            size_of::<T>(),
            CAPACITY as usize,
        )?))
    } else if id == TOPIC {
        Fan::Topic(
            Topic::<T>::options()
                .capacity(CAPACITY)
                .max_subscribers(subs as u64)
                .policy(Policy::Block)
                .anonymous()?,
        )
    } else {
        Fan::Queues(
            (0..subs)
                .map(|_| {
                    Queue::<T>::options()
                        .mode(Mode::Spsc)
                        .capacity(CAPACITY)
                        .anonymous()
                })
                .collect::<Result<_>>()?,
        )
    };
    let mut peers = Vec::new();
    for i in 0..subs {
        let (fan, report) = (&fan, &report);
        peers.push(Peer::spawn(None, move || fan.subscriber_loop(i, report))?);
    }
    let ready = report.atomic(0)?;
    wait_until("subscribers ready", || {
        ready.load(Ordering::Acquire) == subs as u64
    })?;
    let acks: Vec<&AtomicU64> = (0..subs)
        .map(|i| report.atomic(1 + STRIDE * (1 + 2 * i)))
        .collect::<Result<_>>()?;
    let stamps: Vec<&AtomicU64> = (0..subs)
        .map(|i| report.atomic(1 + STRIDE * (2 + 2 * i)))
        .collect::<Result<_>>()?;
    let mut pattern = Box::new(T::zeroed());
    bytemuck::bytes_of_mut(&mut *pattern).fill(0xa5);
    let mut p = match &mut fan {
        Fan::Topic(t) => Pub::Topic(t.publisher()?, pattern),
        Fan::Queues(qs) => Pub::Queues(qs, pattern),
        Fan::Iceoryx2(f) => Pub::Iceoryx2(f.publisher()?, pattern, subs),
    };
    let all_have = |seq: u64| acks.iter().all(|a| a.load(Ordering::Acquire) == seq);
    // Latency: one message at a time (the first tenth is warm-up).
    let mut lat = Vec::with_capacity(paced as usize);
    for seq in 1..=paced {
        let t0 = now_ns();
        p.send(seq)?;
        wait_until("every subscriber acknowledges", || all_have(seq))?;
        let last = stamps
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .max()
            .unwrap_or(t0);
        if seq > paced / 10 {
            lat.push(last.saturating_sub(t0) as f64);
        }
    }
    // Throughput: a stream. CPU: the publisher's and every subscriber's, over the stream.
    let cpu_all = || {
        peers
            .iter()
            .map(Peer::cpu_ns)
            .chain(std::iter::once(cpu_ns(None)))
            .sum::<Option<u64>>()
    };
    let c0 = cpu_all();
    let t0 = now_ns();
    let first = paced + 1;
    let end = first + stream;
    for seq in first..end {
        p.send(seq)?;
    }
    wait_until("every subscriber has the stream", || all_have(end - 1))?;
    let elapsed = now_ns().saturating_sub(t0).max(1) as f64;
    let cpu = c0
        .zip(cpu_all())
        .map(|(a, b)| b.saturating_sub(a) as f64 / stream.max(1) as f64);
    p.send(DONE)?;
    for peer in peers {
        peer.join(Duration::from_secs(10))?;
    }
    let spread = spread(&lat);
    lat.sort_by(|a, b| a.total_cmp(b));
    let deliveries = (stream * subs as u64) as f64;
    Ok(Measurement {
        median_ns: percentile(&lat, 0.5),
        p99_ns: Some(percentile(&lat, 0.99)),
        p999_ns: (lat.len() >= 1000).then(|| percentile(&lat, 0.999)),
        throughput_bytes_per_s: Some(deliveries * size_of::<T>() as f64 / elapsed * 1e9),
        ops_per_s: Some(deliveries / elapsed * 1e9),
        samples: lat.len(),
        sum_ns: lat.iter().sum(),
        operations: paced + stream,
        timing: Timing::CrossProcess,
        cpu_ns_per_op: cpu,
        spread,
        placement: Placement {
            parent: None,
            child: None,
        },
    })
}
