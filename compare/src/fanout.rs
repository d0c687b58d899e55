//! The `fanout` workload: one publisher process, 1, 2, 4 or 8 subscriber processes, 64 B
//! and 64 KiB messages; every subscriber receives every message.
//!
//! Mechanisms:
//! - [`TOPIC`] (`shmkit-topic`): one `Topic<[u8; N]>` (`Policy::Block`, 64 slots), each
//!   subscriber reads in place (`recv_ref`) and checks the payload;
//! - [`QUEUES`] (`shmkit-queues`), the baseline: N SPSC `Queue<[u8; N]>`s (64 slots each),
//!   the publisher sends every message into each (N copies), each subscriber drains its
//!   own queue (`recv_ref`).
//!
//! Both use the default wait strategy (spin 50 µs, then sleep): up to 9 processes share
//! the cores, so pure spinning would measure the scheduler. Subscribers are not pinned.
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
//! receivers do) and checks both words.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;
use shmkit::queue::{Mode, Queue};
use shmkit::topic::{Policy, Topic};
use shmkit::{Array, Error, Result};

use crate::measure::{Measurement, Timing, percentile, spread};
use crate::proc::{Peer, Placement, cpu_ns, now_ns};
use crate::slot::WAIT_LIMIT;

/// Mechanism id: one topic.
pub const TOPIC: &str = "shmkit-topic";
/// Mechanism id: one SPSC queue per subscriber (the baseline).
pub const QUEUES: &str = "shmkit-queues";
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

/// The notes of the two mechanisms.
pub fn note(id: &str) -> &'static str {
    if id == TOPIC {
        "one shmkit::topic::Topic<[u8; size]>, Policy::Block, 64 slots, default wait; loan+publish, subscribers read in place (recv_ref) and check the payload"
    } else {
        "baseline: one SPSC shmkit::queue::Queue<[u8; size]> per subscriber, 64 slots, default wait; the publisher sends each message into every queue"
    }
}

/// Runs one fanout configuration.
pub fn run(id: &str, subs: usize, size: usize, quick: bool) -> Result<Measurement> {
    let (paced, stream) = match (quick, size) {
        (true, 64) => (300, 5_000),
        (true, _) => (100, 500),
        (false, 64) => (3_000, 100_000),
        (false, _) => (1_000, 5_000),
    };
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
    let b = bytemuck::bytes_of_mut(m);
    let n = b.len();
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b[n - 8..].copy_from_slice(&(!seq).to_le_bytes());
}

fn check<T: Pod>(m: &T, copy: &mut T) -> Result<u64> {
    *copy = *m;
    let b = bytemuck::bytes_of(&*copy);
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
}

impl<T: Pod> Fan<T> {
    fn subscriber_loop(&self, i: usize, report: &Array<u64>) -> Result<()> {
        let ack = report.atomic(1 + STRIDE * (1 + 2 * i))?;
        let ts = report.atomic(1 + STRIDE * (2 + 2 * i))?;
        let mut copy = Box::new(T::zeroed());
        let on = |seq: u64| {
            ts.store(now_ns(), Ordering::Relaxed);
            ack.store(seq, Ordering::Release);
        };
        match self {
            Fan::Topic(t) => {
                let s = t.subscribe()?;
                report.atomic(0)?.fetch_add(1, Ordering::AcqRel);
                loop {
                    let seq = check(&*s.recv_ref(Some(WAIT_LIMIT))?, &mut copy)?;
                    on(seq);
                    if seq == DONE {
                        return Ok(());
                    }
                }
            }
            Fan::Queues(qs) => {
                let mut q = qs[i].try_clone()?;
                report.atomic(0)?.fetch_add(1, Ordering::AcqRel);
                loop {
                    let seq = check(&*q.recv_ref(Some(WAIT_LIMIT))?, &mut copy)?;
                    on(seq);
                    if seq == DONE {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The publisher's side of one mechanism.
enum Pub<'a, T: Pod> {
    Topic(shmkit::topic::Publisher<T>, Box<T>),
    Queues(&'a mut [Queue<T>], Box<T>),
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
    let mut fan = if id == TOPIC {
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
