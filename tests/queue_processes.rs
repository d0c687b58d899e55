//! Queue and ByteQueue between real processes: SPSC and MPMC correctness (every message
//! exactly once, per-producer order, nothing torn), timeouts, byte messages of every
//! length, joinable worker pools, mismatched opens.

mod common;

use std::time::Duration;

use shmkit::queue::{ByteQueue, Mode, Queue, WaitStrategy};
use shmkit::{Array, Error};

const LONG: Duration = Duration::from_secs(30);

/// A 64-byte message whose every word derives from (producer, seq): a torn write or read
/// cannot pass `check`.
type Msg = [u64; 8];

fn msg(id: u64, seq: u64) -> Msg {
    let mut m = [0u64; 8];
    m[0] = id;
    m[1] = seq;
    for (i, w) in m.iter_mut().enumerate().skip(2) {
        *w = (id << 40) ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64;
    }
    m
}

fn check(m: &Msg) -> (u64, u64) {
    assert_eq!(*m, msg(m[0], m[1]), "torn message {m:?}");
    (m[0], m[1])
}

const SENTINEL: u64 = u64::MAX;

fn arg(i: usize) -> String {
    common::args()[i].clone()
}

#[test]
fn spsc_between_processes_in_order() {
    if let Some(role) = common::role() {
        assert_eq!(role, "producer");
        let q = Queue::<Msg>::options()
            .mode(Mode::Spsc)
            .open(&arg(0))
            .unwrap();
        let n: u64 = arg(1).parse().unwrap();
        for i in 0..n {
            q.send_timeout(msg(7, i), LONG).unwrap();
        }
        drop(q); // detaches (a process that exits without dropping counts as dead)
        std::process::exit(0);
    }
    let name = common::unique("q-spsc");
    let _g = common::ShmGuard::new(&name);
    let q = Queue::<Msg>::options()
        .mode(Mode::Spsc)
        .capacity(64)
        .create(&name)
        .unwrap();
    const N: u64 = 50_000;
    let mut c = common::child(
        "spsc_between_processes_in_order",
        "producer",
        &[&name, &N.to_string()],
    )
    .spawn()
    .unwrap();
    for i in 0..N {
        let m = q.recv_timeout(LONG).unwrap();
        assert_eq!(check(&m), (7, i));
    }
    common::wait_ok(&mut c, LONG);
    assert!(q.try_recv().is_err());
    assert_eq!(q.peer_deaths(), 0);
}

/// SPSC queues both ways, one slot each, the default (adaptive) wait: the child echoes
/// every message, so each side's blocking call usually finds nothing ready and polls its
/// fast path before it sets up a wait (`queue::wait::pre_spin`). Every reply must come
/// back intact and in order; afterwards timeouts still hold on both the empty and the
/// full queue. (Adaptive rather than spin: with other tests running, spinners on 2 cores
/// would wait for each other's time slices.)
#[test]
fn ping_pong_between_processes_then_timeouts() {
    if let Some(role) = common::role() {
        assert_eq!(role, "echo");
        let opts = Queue::<Msg>::options().mode(Mode::Spsc);
        let ping = opts.clone().open(&arg(0)).unwrap();
        let pong = opts.open(&arg(1)).unwrap();
        let n: u64 = arg(2).parse().unwrap();
        for _ in 0..n {
            let m = ping.recv_timeout(LONG).unwrap();
            pong.send_timeout(m, LONG).unwrap();
        }
        drop((ping, pong));
        std::process::exit(0);
    }
    let (pn, qn) = (common::unique("q-ping"), common::unique("q-pong"));
    let _g = (common::ShmGuard::new(&pn), common::ShmGuard::new(&qn));
    let opts = Queue::<Msg>::options().mode(Mode::Spsc).capacity(1);
    let ping = opts.clone().create(&pn).unwrap();
    let pong = opts.clone().create(&qn).unwrap();
    const N: u64 = 20_000;
    let mut c = common::child(
        "ping_pong_between_processes_then_timeouts",
        "echo",
        &[&pn, &qn, &N.to_string()],
    )
    .spawn()
    .unwrap();
    for i in 0..N {
        ping.send_timeout(msg(3, i), LONG).unwrap();
        assert_eq!(check(&pong.recv_timeout(LONG).unwrap()), (3, i));
    }
    common::wait_ok(&mut c, LONG);

    // Both handles know their positions now, so the calls below take the polls first.
    let rx = opts.clone().open(&pn).unwrap();
    assert!(rx.try_recv().unwrap_err().is_empty());
    ping.send(msg(4, 0)).unwrap();
    let t = std::time::Instant::now();
    let full = ping.send_timeout(msg(4, 1), Duration::from_millis(2));
    assert!(full.unwrap_err().is_timeout(), "a full queue times out");
    assert!(t.elapsed() >= Duration::from_millis(2));
    assert_eq!(check(&rx.recv().unwrap()), (4, 0));
    let t = std::time::Instant::now();
    assert!(
        rx.recv_timeout(Duration::from_millis(2))
            .unwrap_err()
            .is_timeout()
    );
    assert!(t.elapsed() >= Duration::from_millis(2));
    // A timeout shorter than the polls is still an error, not a hang.
    assert!(
        rx.recv_timeout(Duration::from_nanos(1))
            .unwrap_err()
            .is_timeout()
    );
    assert!(ping.send_timeout(msg(4, 2), Duration::ZERO).is_ok());
    assert!(
        ping.send_timeout(msg(4, 3), Duration::from_nanos(1))
            .unwrap_err()
            .is_timeout()
    );
}

#[test]
fn mpmc_every_message_exactly_once() {
    if let Some(role) = common::role() {
        let q = Queue::<Msg>::open(&arg(0)).unwrap();
        let n: u64 = arg(2).parse().unwrap();
        match role.as_str() {
            "producer" => {
                let id: u64 = arg(1).parse().unwrap();
                let mut q = q;
                for i in 0..n {
                    if i % 3 == 0 {
                        // Zero-copy path for a third of the messages.
                        let mut s = q.reserve(Some(LONG)).unwrap();
                        *s = msg(id, i);
                        s.commit();
                    } else {
                        q.send_timeout(msg(id, i), LONG).unwrap();
                    }
                }
            }
            "consumer" => {
                let seen = Array::<u32>::open(&arg(1)).unwrap();
                let producers = seen.len() as u64 / n;
                let mut last = vec![None::<u64>; producers as usize];
                loop {
                    let m = q.recv_timeout(LONG).unwrap();
                    if m[0] == SENTINEL {
                        break;
                    }
                    let (id, seq) = check(&m);
                    assert!(last[id as usize].is_none_or(|l| l < seq), "order");
                    last[id as usize] = Some(seq);
                    seen.fetch_add((id * n + seq) as usize, 1).unwrap();
                }
            }
            _ => unreachable!(),
        }
        std::process::exit(0);
    }
    let name = common::unique("q-mpmc");
    let seen_name = common::unique("q-mpmc-seen");
    let _g = (
        common::ShmGuard::new(&name),
        common::ShmGuard::new(&seen_name),
    );
    const P: u64 = 3;
    const C: usize = 2;
    const N: u64 = 20_000;
    let q = Queue::<Msg>::options()
        .capacity(16)
        .wait(WaitStrategy::default())
        .create(&name)
        .unwrap();
    // This process sends the sentinels last: attached as a producer from the start, it
    // keeps the consumers from seeing a disconnection between the producers' exit and then.
    q.attach_producer();
    let seen = Array::<u32>::create(&seen_name, (P * N) as usize, 0).unwrap();
    let t = "mpmc_every_message_exactly_once";
    let mut consumers: Vec<_> = (0..C)
        .map(|_| {
            common::child(t, "consumer", &[&name, &seen_name, &N.to_string()])
                .spawn()
                .unwrap()
        })
        .collect();
    let mut producers: Vec<_> = (0..P)
        .map(|id| {
            common::child(t, "producer", &[&name, &id.to_string(), &N.to_string()])
                .spawn()
                .unwrap()
        })
        .collect();
    for p in &mut producers {
        common::wait_ok(p, LONG);
    }
    for _ in 0..C {
        q.send_timeout([SENTINEL; 8], LONG).unwrap();
    }
    for c in &mut consumers {
        common::wait_ok(c, LONG);
    }
    let counts = seen.to_vec();
    let wrong: Vec<_> = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != 1)
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "messages not seen exactly once: {wrong:?}"
    );
    assert!(q.is_empty());
}

/// Every length up to `max` (300 B, and 40 KB: in `queue::cache_bypass()`, where sends
/// bypass the cache and must be fenced before they are published), sent by copy, by
/// zero-copy reservation written in place and by reservation written with
/// `write_from_slice`, received by copy and in place; every byte checked.
#[test]
fn bytequeue_every_length_between_processes() {
    fn body(i: usize, max: usize) -> Vec<u8> {
        let len = (i * 7919) % (max + 1);
        (0..len).map(|k| (k ^ i ^ (k >> 8)) as u8).collect()
    }
    if let Some(_role) = common::role() {
        let (max, n): (usize, usize) = (arg(1).parse().unwrap(), arg(2).parse().unwrap());
        let mut q = ByteQueue::open(&arg(0)).unwrap();
        for i in 0..n {
            let b = body(i, max);
            match i % 3 {
                0 => q.send_timeout(&b, LONG).unwrap(),
                1 => {
                    let mut m = q.reserve(max, Some(LONG)).unwrap();
                    m[..b.len()].copy_from_slice(&b);
                    m.truncate(b.len());
                    m.commit();
                }
                _ => {
                    if !b.is_empty() {
                        // Longer than the reservation: refused, nothing written.
                        let mut short = q.reserve(b.len() - 1, Some(LONG)).unwrap();
                        let e = short.write_from_slice(&b).unwrap_err();
                        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
                        drop(short);
                    }
                    let mut m = q.reserve(max, Some(LONG)).unwrap();
                    m.write_from_slice(&b).unwrap();
                    assert_eq!(m.len(), b.len());
                    m.commit();
                }
            }
        }
        let too_big: Error = q.send(&vec![0; max + 1]).unwrap_err().into();
        assert!(
            matches!(too_big, Error::MessageTooLarge { len, max: m, .. } if len == max + 1 && m == max)
        );
        std::process::exit(0);
    }
    for (max, n) in [(300usize, 5_000usize), (40_000, 600)] {
        for mode in [Mode::Spsc, Mode::Mpmc] {
            let name = common::unique("bq");
            let _g = common::ShmGuard::new(&name);
            let mut q = ByteQueue::options()
                .mode(mode)
                .capacity(8)
                .create(&name, max)
                .unwrap();
            assert_eq!(q.max_message(), max);
            let mut c = common::child(
                "bytequeue_every_length_between_processes",
                "p",
                &[&name, &max.to_string(), &n.to_string()],
            )
            .spawn()
            .unwrap();
            let mut buf = Vec::new();
            for i in 0..n {
                if i % 2 == 0 {
                    let m = q.recv_ref(Some(LONG)).unwrap();
                    assert_eq!(&*m, &body(i, max)[..], "message {i}");
                } else {
                    q.recv_timeout(&mut buf, LONG).unwrap();
                    assert_eq!(buf, body(i, max), "message {i}");
                }
            }
            common::wait_ok(&mut c, LONG);
            // The producer has exited: disconnected at once, long timeout or not.
            let t = std::time::Instant::now();
            assert!(
                q.recv_timeout(&mut buf, LONG)
                    .unwrap_err()
                    .is_disconnected()
            );
            assert!(t.elapsed() < LONG);
        }
    }
}

#[test]
fn joinable_worker_pool() {
    if let Some(_role) = common::role() {
        let tasks = Queue::<u64>::open(&arg(0)).unwrap();
        let results = Queue::<[u64; 2]>::open(&arg(1)).unwrap();
        loop {
            let t = tasks.recv_timeout(LONG).unwrap();
            if t == SENTINEL {
                tasks.task_done().unwrap();
                break;
            }
            results.send_timeout([t, t * t], LONG).unwrap();
            tasks.task_done().unwrap();
        }
        std::process::exit(0);
    }
    let tn = common::unique("jq-tasks");
    let rn = common::unique("jq-results");
    let _g = (common::ShmGuard::new(&tn), common::ShmGuard::new(&rn));
    let tasks = Queue::<u64>::options()
        .joinable(true)
        .capacity(8)
        .create(&tn)
        .unwrap();
    let results = Queue::<[u64; 2]>::options()
        .capacity(256)
        .create(&rn)
        .unwrap();
    let mut workers: Vec<_> = (0..3)
        .map(|_| {
            common::child("joinable_worker_pool", "w", &[&tn, &rn])
                .spawn()
                .unwrap()
        })
        .collect();
    const N: u64 = 200;
    for t in 0..N {
        tasks.send_timeout(t, LONG).unwrap();
    }
    assert!(tasks.join(Some(LONG)).unwrap().is_complete());
    assert_eq!(tasks.unfinished(), 0);
    // Every task done means every result was sent before join returned.
    let mut got: Vec<u64> = (0..N)
        .map(|_| {
            let [t, sq] = results.try_recv().unwrap();
            assert_eq!(sq, t * t);
            t
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    for _ in &workers {
        tasks.send_timeout(SENTINEL, LONG).unwrap();
    }
    assert!(tasks.join(Some(LONG)).unwrap().is_complete());
    for w in &mut workers {
        common::wait_ok(w, LONG);
    }
}

#[test]
fn opening_with_the_wrong_type_or_mode_is_refused() {
    let name = common::unique("q-mismatch");
    let _g = common::ShmGuard::new(&name);
    let _q = Queue::<u64>::options()
        .mode(Mode::Spsc)
        .create(&name)
        .unwrap();
    assert!(matches!(
        Queue::<u32>::open(&name).unwrap_err(),
        Error::Mismatch { .. }
    ));
    let e = Queue::<u64>::options()
        .mode(Mode::Mpmc)
        .open(&name)
        .unwrap_err();
    assert!(e.to_string().contains("queue mode"), "{e}");
    assert!(matches!(
        ByteQueue::open(&name).unwrap_err(),
        Error::Mismatch { .. }
    ));
    let ok = Queue::<u64>::options()
        .mode(Mode::Spsc)
        .open(&name)
        .unwrap();
    assert_eq!(ok.mode(), Mode::Spsc);
    // Too many handles.
    let small = common::unique("q-handles");
    let _g2 = common::ShmGuard::new(&small);
    let a = Queue::<u8>::options()
        .max_handles(2)
        .create(&small)
        .unwrap();
    let _b = a.try_clone().unwrap();
    let e = a.try_clone().unwrap_err();
    assert!(e.to_string().contains("max_handles"), "{e}");
}

#[test]
fn blocked_receiver_in_park_mode_is_woken_across_processes() {
    if let Some(_role) = common::role() {
        let q = Queue::<u64>::options()
            .wait(WaitStrategy::Park)
            .open(&arg(0))
            .unwrap();
        let ready = Queue::<u64>::open(&arg(1)).unwrap();
        // Tell the parent we are about to block, then block (parked) until it sends.
        ready.send(1).unwrap();
        let v = q.recv_timeout(LONG).unwrap();
        assert_eq!(v, 42);
        std::process::exit(0);
    }
    let a = common::unique("q-park");
    let b = common::unique("q-park-ready");
    let _g = (common::ShmGuard::new(&a), common::ShmGuard::new(&b));
    let q = Queue::<u64>::options()
        .wait(WaitStrategy::Park)
        .create(&a)
        .unwrap();
    let ready = Queue::<u64>::create(&b, 2).unwrap();
    let mut c = common::child(
        "blocked_receiver_in_park_mode_is_woken_across_processes",
        "r",
        &[&a, &b],
    )
    .spawn()
    .unwrap();
    ready.recv_timeout(LONG).unwrap();
    q.send(42).unwrap();
    common::wait_ok(&mut c, LONG);
}

/// A producer asleep on a full queue is woken once half the slots are free (the space
/// low-water mark). A consumer that frees fewer and then stops receiving leaves it asleep
/// only until its sleep slice ends: the send still succeeds, well within its timeout.
/// Both modes, a child process asleep in `send_timeout` before the parent receives.
#[test]
fn a_sender_asleep_on_a_full_queue_gets_a_slot_freed_below_the_low_water_mark() {
    if let Some(_role) = common::role() {
        let mode = if arg(1) == "spsc" {
            Mode::Spsc
        } else {
            Mode::Mpmc
        };
        let q = Queue::<u64>::options()
            .mode(mode)
            .wait(WaitStrategy::Park)
            .open(&arg(0))
            .unwrap();
        q.send_timeout(100, LONG).unwrap();
        std::process::exit(0);
    }
    for mode in ["spsc", "mpmc"] {
        let name = common::unique("q-lowwater");
        let _g = common::ShmGuard::new(&name);
        let mode_of = || {
            if mode == "spsc" {
                Mode::Spsc
            } else {
                Mode::Mpmc
            }
        };
        let filler = Queue::<u64>::options()
            .mode(mode_of())
            .capacity(8)
            .create(&name)
            .unwrap();
        for v in 0..8 {
            filler.try_send(v).unwrap();
        }
        drop(filler); // gives the (SPSC) producer role up for the child
        let q = Queue::<u64>::options().mode(mode_of()).open(&name).unwrap();
        let mut c = common::child(
            "a_sender_asleep_on_a_full_queue_gets_a_slot_freed_below_the_low_water_mark",
            "producer",
            &[&name, mode],
        )
        .spawn()
        .unwrap();
        let t = std::time::Instant::now();
        while !common::test_thread_asleep(c.id()) {
            assert!(t.elapsed() < LONG, "{mode}: the producer never slept");
            std::thread::yield_now();
        }
        // One slot of eight freed: below the mark (four), so no wake-up is due.
        assert_eq!(q.try_recv().unwrap(), 0);
        common::wait_ok(&mut c, LONG);
        let rest: Vec<u64> = std::iter::from_fn(|| q.try_recv().ok()).collect();
        assert_eq!(rest, [1, 2, 3, 4, 5, 6, 7, 100], "{mode}");
    }
}

/// `SendSlot::send_ref` between processes with a `T` of 32 KiB (in `queue::cache_bypass()`
/// by default: streaming stores, fenced before the publication) and of 64 B; every word
/// checked, in order.
#[test]
fn typed_send_ref_between_processes() {
    const N: u64 = 400;
    fn big(i: u64) -> [u64; 4096] {
        std::array::from_fn(|k| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k as u64)
    }
    fn small(i: u64) -> [u64; 8] {
        std::array::from_fn(|k| i * 8 + k as u64)
    }
    if let Some(_role) = common::role() {
        let mut qb = Queue::<[u64; 4096]>::open(&arg(0)).unwrap();
        let mut qs = Queue::<[u64; 8]>::open(&arg(1)).unwrap();
        let mut v = Box::new([0u64; 4096]);
        for i in 0..N {
            *v = big(i);
            qb.reserve(Some(LONG)).unwrap().send_ref(&v);
            qs.reserve(Some(LONG)).unwrap().send_ref(&small(i));
        }
        std::process::exit(0);
    }
    let (nb, ns) = (common::unique("sref-big"), common::unique("sref-small"));
    let _g = (common::ShmGuard::new(&nb), common::ShmGuard::new(&ns));
    let mut qb = Queue::<[u64; 4096]>::options()
        .capacity(4)
        .create(&nb)
        .unwrap();
    let qs = Queue::<[u64; 8]>::options()
        .capacity(4)
        .create(&ns)
        .unwrap();
    let mut c = common::child("typed_send_ref_between_processes", "p", &[&nb, &ns])
        .spawn()
        .unwrap();
    for i in 0..N {
        let m = qb.recv_ref(Some(LONG)).unwrap();
        assert!(m.iter().eq(big(i).iter()), "big message {i}");
        drop(m);
        assert_eq!(
            qs.recv_timeout(LONG).unwrap(),
            small(i),
            "small message {i}"
        );
    }
    common::wait_ok(&mut c, LONG);
}

/// Parked round trips between two processes on version-4 rings: the first parked sleep
/// on each side switches its wait point to symmetric fences (ARCHITECTURE.md, "Symmetric
/// mode for parked waiters"), and no wake-up may be lost after that. A lost wake-up is
/// only late (the sleeper re-checks after its 20 ms slice), so the check is the total
/// time: 2,000 round trips take ~0.1-0.5 s here; losing one wake-up in ten would add
/// at least 4 s.
#[test]
fn parked_round_trips_between_processes_lose_no_wake_up() {
    const N: u64 = 2_000;
    const SLICE: Duration = Duration::from_millis(20);
    if let Some(_role) = common::role() {
        let req = Queue::<u64>::options()
            .wait(WaitStrategy::Park)
            .open(&arg(0))
            .unwrap();
        let rep = Queue::<u64>::options()
            .wait(WaitStrategy::Park)
            .open(&arg(1))
            .unwrap();
        for _ in 0..N {
            let v = req.recv_timeout(LONG).unwrap();
            rep.send_timeout(v + 1, LONG).unwrap();
        }
        std::process::exit(0);
    }
    let (a, b) = (common::unique("q-pp-req"), common::unique("q-pp-rep"));
    let _g = (common::ShmGuard::new(&a), common::ShmGuard::new(&b));
    let req = Queue::<u64>::options()
        .wait(WaitStrategy::Park)
        .capacity(1)
        .create(&a)
        .unwrap();
    let rep = Queue::<u64>::options()
        .mode(Mode::Mpmc)
        .wait(WaitStrategy::Park)
        .capacity(1)
        .create(&b)
        .unwrap();
    let mut c = common::child(
        "parked_round_trips_between_processes_lose_no_wake_up",
        "c",
        &[&a, &b],
    )
    .spawn()
    .unwrap();
    let t = std::time::Instant::now();
    for i in 0..N {
        req.send_timeout(i, LONG).unwrap();
        assert_eq!(rep.recv_timeout(LONG).unwrap(), i + 1);
    }
    let took = t.elapsed();
    common::wait_ok(&mut c, LONG);
    assert!(
        took < SLICE * (N as u32) / 10,
        "{N} parked round trips took {took:?}: wake-ups are being lost (each costs a {SLICE:?} slice)"
    );
}
