//! Kill tests: producers and consumers SIGKILLed at random points, and in the middle of a
//! claimed slot, many times. The survivors must never see a torn or duplicated message,
//! never lose a committed one (producers) or more than the one a dying consumer held,
//! and never wedge.

mod common;

use std::process::Child;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use shmkit::Array;
use shmkit::queue::{Mode, Queue, TryRecvError};

const LONG: Duration = Duration::from_secs(20);
/// Children exit by themselves after this, so a failing test leaves no orphans behind.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
const SENTINEL: u64 = u64::MAX;

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

fn intact(m: &Msg) -> bool {
    *m == msg(m[0], m[1])
}

fn arg(i: usize) -> String {
    common::args()[i].clone()
}

struct Rng(u64);
impl Rng {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("kill test seed {seed:#x}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Raises `flags[i]` for 50 µs; if the parent claims the moment (CAS 1 -> 2) the child
/// stays here, holding whatever it holds, until it is killed (bounded by its lifetime).
fn hold(flags: &Array<u32>, i: usize) {
    let f = flags.atomic(i).unwrap();
    f.store(1, SeqCst);
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(50) {
        std::hint::spin_loop();
    }
    if f.compare_exchange(1, 0, SeqCst, SeqCst).is_err() {
        // The parent claimed this moment: stay here (holding the slot) until killed.
        while t.elapsed() < CHILD_LIFETIME {
            std::hint::spin_loop();
        }
        std::process::exit(3);
    }
}

/// Parent side of [`hold`]: true if the child is now pinned inside its claim.
fn pin(flags: &Array<u32>, i: usize) -> bool {
    flags
        .atomic(i)
        .unwrap()
        .compare_exchange(1, 2, SeqCst, SeqCst)
        .is_ok()
}

fn kill(c: &mut Child) {
    let _ = c.kill(); // SIGKILL
    let _ = c.wait();
}

/// Producer child: sends msg(id, 0..) forever; every 4th message is written slowly in a
/// reserved slot with `flag[id] = 1` while the slot is held; `committed[id]` counts the
/// messages whose send returned.
fn producer_child() {
    let mode = if arg(1) == "spsc" {
        Mode::Spsc
    } else {
        Mode::Mpmc
    };
    let mut q = Queue::<Msg>::options().mode(mode).open(&arg(0)).unwrap();
    let id: u64 = arg(2).parse().unwrap();
    let flags = Array::<u32>::open(&arg(3)).unwrap();
    let committed = Array::<u64>::open(&arg(4)).unwrap();
    let count: u64 = arg(5).parse().unwrap_or(u64::MAX);
    let start = Instant::now();
    let mut seq = 0;
    while seq < count && start.elapsed() < CHILD_LIFETIME {
        let m = msg(id, seq);
        if seq % 4 == 3 {
            let mut s = q.reserve(Some(LONG)).unwrap();
            for (i, w) in m.iter().enumerate().take(4) {
                s[i] = *w;
            }
            hold(&flags, id as usize);
            for (i, w) in m.iter().enumerate().skip(4) {
                s[i] = *w;
            }
            s.commit();
        } else {
            q.send_timeout(m, LONG).unwrap();
        }
        seq += 1;
        committed.store(id as usize, seq).unwrap();
    }
    if count != u64::MAX {
        q.send_timeout([SENTINEL; 8], LONG).unwrap();
    }
}

fn kill_producers(mode: Mode, test: &str) {
    let mode_arg = if mode == Mode::Spsc { "spsc" } else { "mpmc" };
    let name = common::unique("qk-p");
    let fname = common::unique("qk-p-flags");
    let cname = common::unique("qk-p-committed");
    let _g = (
        common::ShmGuard::new(&name),
        common::ShmGuard::new(&fname),
        common::ShmGuard::new(&cname),
    );
    const ROUNDS: u64 = 24;
    const IDS: usize = ROUNDS as usize + 8;
    let q = Queue::<Msg>::options()
        .mode(mode)
        .capacity(4)
        .create(&name)
        .unwrap();
    let flags = Array::<u32>::create(&fname, IDS, 0).unwrap();
    let committed = Array::<u64>::create(&cname, IDS, 0).unwrap();
    let concurrent = if mode == Mode::Spsc { 1 } else { 2 };
    let mut rng = Rng::new();
    let mut next = vec![0u64; IDS];
    let got = |m: Msg, next: &mut Vec<u64>| {
        assert!(intact(&m), "torn message {m:?}");
        let (id, seq) = (m[0] as usize, m[1]);
        assert_eq!(seq, next[id], "producer {id}: duplicate or gap");
        next[id] += 1;
    };
    let spawn = |id: u64, count: &str| {
        common::child(
            test,
            "producer",
            &[&name, mode_arg, &id.to_string(), &fname, &cname, count],
        )
        .spawn()
        .unwrap()
    };
    let mut live: Vec<(u64, Child)> = Vec::new();
    let mut flagged_kills = 0;
    let mut id = 0u64;
    for round in 0..ROUNDS {
        while live.len() < concurrent {
            live.push((id, spawn(id, "")));
            id += 1;
        }
        let (vid, mut victim) = live.remove(0);
        let t = Instant::now();
        let mut want = 1 + rng.below(300);
        loop {
            assert!(t.elapsed() < LONG, "no progress");
            match q.try_recv() {
                Ok(m) => {
                    got(m, &mut next);
                    want = want.saturating_sub(1);
                }
                // Between a kill and the next producer's first send, none is attached.
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
                Err(e) => panic!("{e}"),
            }
            let ready = if round % 2 == 0 {
                pin(&flags, vid as usize)
            } else {
                want == 0
            };
            if ready {
                break;
            }
        }
        if round % 2 == 0 {
            flagged_kills += 1;
        }
        kill(&mut victim);
    }
    for (_, mut c) in live.drain(..) {
        kill(&mut c);
    }
    // A last producer sends a known number of messages and a sentinel: everything the dead
    // committed must come through before it, and nobody may be wedged.
    let mut fin = spawn(id, "500");
    let t = Instant::now();
    loop {
        // Disconnected until the last producer attaches (at its first send).
        let m = match q.recv_timeout(LONG) {
            Ok(m) => m,
            Err(e) if e.is_disconnected() && t.elapsed() < LONG => {
                std::thread::yield_now();
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        if m == [SENTINEL; 8] {
            break;
        }
        got(m, &mut next);
    }
    common::wait_ok(&mut fin, LONG);
    assert_eq!(next[id as usize], 500);
    for (i, &n) in next.iter().enumerate().take(id as usize) {
        let c = committed.load(i).unwrap();
        assert!(
            n >= c && n <= c + 1,
            "producer {i}: committed {c}, received {n}"
        );
    }
    if mode == Mode::Mpmc {
        assert!(
            q.peer_deaths() >= flagged_kills,
            "{} recoveries for {flagged_kills} kills inside a claim",
            q.peer_deaths()
        );
        assert!(q.last_dead_peer().is_some());
    }
    assert!(q.try_recv().is_err());
}

#[test]
fn mpmc_producers_killed_at_random_points() {
    if common::role().is_some() {
        producer_child();
        std::process::exit(0);
    }
    kill_producers(Mode::Mpmc, "mpmc_producers_killed_at_random_points");
}

#[test]
fn spsc_producer_killed_and_replaced() {
    if common::role().is_some() {
        producer_child();
        std::process::exit(0);
    }
    kill_producers(Mode::Spsc, "spsc_producer_killed_and_replaced");
}

/// Consumer child: receives in place; every 3rd message is held for a while with
/// `flags[slot] = 1`; records each message in `seen` after the slot is released, and
/// torn messages in `stats[0]`.
fn consumer_child() {
    let mut q = Queue::<Msg>::open(&arg(0)).unwrap();
    let slot: usize = arg(1).parse().unwrap();
    let flags = Array::<u32>::open(&arg(2)).unwrap();
    let seen = Array::<u32>::open(&arg(3)).unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < CHILD_LIFETIME {
        let m = match q.recv_ref(Some(Duration::from_millis(100))) {
            Ok(r) => {
                n += 1;
                if n % 3 == 0 {
                    hold(&flags, slot);
                }
                let m: Msg = *r;
                drop(r);
                m
            }
            // The producer (the parent) attaches at its first send.
            Err(e) if e.is_timeout() || e.is_disconnected() => continue,
            Err(e) => panic!("{e}"),
        };
        if !intact(&m) {
            seen.fetch_add(0, 1 << 20).unwrap(); // torn marker in entry 0's high bits
        }
        seen.fetch_add(1 + m[1] as usize, 1).unwrap();
    }
}

#[test]
fn mpmc_consumers_killed_at_random_points() {
    if common::role().is_some() {
        consumer_child();
        std::process::exit(0);
    }
    let test = "mpmc_consumers_killed_at_random_points";
    let name = common::unique("qk-c");
    let fname = common::unique("qk-c-flags");
    let sname = common::unique("qk-c-seen");
    let _g = (
        common::ShmGuard::new(&name),
        common::ShmGuard::new(&fname),
        common::ShmGuard::new(&sname),
    );
    const ROUNDS: usize = 24;
    const MAX: usize = 1 << 20;
    let q = Queue::<Msg>::options()
        .mode(Mode::Mpmc)
        .capacity(4)
        .create(&name)
        .unwrap();
    let flags = Array::<u32>::create(&fname, ROUNDS + 4, 0).unwrap();
    let seen = Array::<u32>::create(&sname, MAX + 1, 0).unwrap();
    let mut rng = Rng::new();
    let spawn = |slot: usize| {
        common::child(
            test,
            "consumer",
            &[&name, &slot.to_string(), &fname, &sname],
        )
        .spawn()
        .unwrap()
    };
    let mut sent = 0u64;
    let send = |sent: &mut u64| {
        // Between a kill and the next consumer's first receive, none is attached: the
        // send is refused (Disconnected) and retried.
        let t = Instant::now();
        loop {
            match q.send_timeout(msg(0, *sent), LONG) {
                Ok(()) => break,
                Err(e) if e.is_disconnected() && t.elapsed() < LONG => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        *sent += 1;
        assert!((*sent as usize) < MAX);
    };
    let mut live: Vec<(usize, Child)> = Vec::new();
    let mut slot = 0;
    let mut flagged_kills = 0u64;
    for round in 0..ROUNDS {
        while live.len() < 2 {
            live.push((slot, spawn(slot)));
            slot += 1;
        }
        let (vslot, mut victim) = live.remove(0);
        let t = Instant::now();
        let mut want = 1 + rng.below(300);
        loop {
            assert!(t.elapsed() < LONG, "no progress");
            send(&mut sent);
            want = want.saturating_sub(1);
            let ready = if round % 2 == 0 {
                pin(&flags, vslot)
            } else {
                want == 0
            };
            if ready {
                break;
            }
        }
        if round % 2 == 0 {
            flagged_kills += 1;
        }
        kill(&mut victim);
    }
    for (_, mut c) in live.drain(..) {
        kill(&mut c);
    }
    // Every consumer is dead. Lap the ring a few times ourselves: slots held by dead
    // consumers must be reclaimed, or this send wedges (bounded: it times out). We are
    // the consumer now: attach as one (else a full ring with no consumer is
    // Disconnected for the sender) and first drain what the dead left queued (else our
    // own send would wait on a ring only we can empty).
    q.attach_consumer();
    let mut own = Vec::new();
    while let Ok(m) = q.recv_timeout(Duration::from_millis(200)) {
        own.push(m);
    }
    for _ in 0..64 {
        send(&mut sent);
        own.push(q.recv_timeout(LONG).unwrap());
    }
    while let Ok(m) = q.try_recv() {
        own.push(m);
    }
    for m in &own {
        assert!(intact(m), "torn {m:?}");
        seen.fetch_add(1 + m[1] as usize, 1).unwrap();
    }
    let counts = seen.to_vec();
    assert_eq!(counts[0], 0, "a consumer saw a torn message");
    let dup: Vec<_> = (0..sent)
        .filter(|&i| counts[1 + i as usize] > 1)
        .take(5)
        .collect();
    assert!(dup.is_empty(), "duplicated: {dup:?}");
    let missing = (0..sent).filter(|&i| counts[1 + i as usize] == 0).count();
    assert!(
        missing <= ROUNDS + 2,
        "{missing} messages lost for {} consumer kills",
        ROUNDS + 2
    );
    assert!(
        q.peer_deaths() >= flagged_kills,
        "{} recoveries for {flagged_kills} kills inside a claim",
        q.peer_deaths()
    );
}

#[test]
fn join_is_not_wedged_by_a_dead_worker() {
    if common::role().is_some() {
        let tasks = Queue::<u64>::open(&arg(0)).unwrap();
        let ready = Queue::<u64>::open(&arg(1)).unwrap();
        let t = tasks.recv_timeout(LONG).unwrap();
        ready.send_timeout(t, LONG).unwrap();
        // Never calls task_done: hangs until killed (bounded).
        let start = Instant::now();
        while start.elapsed() < CHILD_LIFETIME {
            std::hint::spin_loop();
        }
        std::process::exit(3);
    }
    let tn = common::unique("qk-join");
    let rn = common::unique("qk-join-ready");
    let _g = (common::ShmGuard::new(&tn), common::ShmGuard::new(&rn));
    let tasks = Queue::<u64>::options()
        .joinable(true)
        .capacity(4)
        .create(&tn)
        .unwrap();
    let ready = Queue::<u64>::create(&rn, 2).unwrap();
    let mut c = common::child("join_is_not_wedged_by_a_dead_worker", "w", &[&tn, &rn])
        .spawn()
        .unwrap();
    tasks.send(7).unwrap();
    assert_eq!(ready.recv_timeout(LONG).unwrap(), 7);
    assert_eq!(tasks.unfinished(), 1, "received, not done");
    assert!(
        tasks
            .join(Some(Duration::from_millis(30)))
            .unwrap_err()
            .is_timeout()
    );
    let pid = c.id();
    kill(&mut c);
    // join returns, and says what was lost: one task, held by the killed pid.
    let outcome = tasks.join(Some(LONG)).unwrap();
    assert!(!outcome.is_complete());
    assert_eq!(outcome.lost, vec![(pid, 1)]);
    assert_eq!(outcome.dead_pids().collect::<Vec<_>>(), [pid]);
    let e = outcome.clone().complete().unwrap_err();
    assert!(e.to_string().contains(&pid.to_string()), "{e}");
    assert_eq!(tasks.unfinished(), 0);
    // The death is counted once, though it held no claim in the ring.
    assert_eq!(tasks.peer_deaths(), 1);
    assert_eq!(tasks.last_dead_peer(), Some(pid));
    // Reported once: the next join is complete.
    assert!(tasks.join(Some(LONG)).unwrap().is_complete());
    assert_eq!(tasks.peer_deaths(), 1);
}

#[test]
fn join_requeues_a_dead_workers_stashed_tasks() {
    if let Some(role) = common::role() {
        let tasks = Queue::<u64>::open(&arg(0)).unwrap();
        let out = Queue::<u64>::open(&arg(1)).unwrap();
        if role == "holder" {
            // Takes three tasks and reports each, never marks them done: killed holding
            // them (bounded).
            let held: Vec<_> = (0..3)
                .map(|_| tasks.recv_task_timeout(LONG).unwrap())
                .collect();
            for t in &held {
                out.send_timeout(**t, LONG).unwrap();
            }
            let start = Instant::now();
            while start.elapsed() < CHILD_LIFETIME {
                std::hint::spin_loop();
            }
            std::process::exit(3);
        }
        // "worker": does tasks until the producers are gone, reporting each one done.
        loop {
            match tasks.recv_task_timeout(LONG) {
                Ok(t) => {
                    out.send_timeout(*t, LONG).unwrap();
                    t.done().unwrap();
                }
                Err(e) if e.is_disconnected() => std::process::exit(0),
                Err(e) => panic!("{e}"),
            }
        }
    }
    let tn = common::unique("qk-requeue");
    let hn = common::unique("qk-requeue-held");
    let dn = common::unique("qk-requeue-done");
    let _g = (
        common::ShmGuard::new(&tn),
        common::ShmGuard::new(&hn),
        common::ShmGuard::new(&dn),
    );
    let tasks = Queue::<u64>::options()
        .requeue_lost(4)
        .capacity(8)
        .create(&tn)
        .unwrap();
    let held = Queue::<u64>::create(&hn, 4).unwrap();
    let done = Queue::<u64>::create(&dn, 16).unwrap();
    let test = "join_requeues_a_dead_workers_stashed_tasks";
    let mut holder = common::child(test, "holder", &[&tn, &hn]).spawn().unwrap();
    for v in 1..=3 {
        tasks.send(v).unwrap();
    }
    let mut got: Vec<u64> = (0..3).map(|_| held.recv_timeout(LONG).unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3]);
    for v in 4..=5 {
        tasks.send(v).unwrap();
    }
    let pid = holder.id();
    kill(&mut holder);
    let mut worker = common::child(test, "worker", &[&tn, &dn]).spawn().unwrap();
    // join sends the dead holder's three tasks back, then waits for the worker to do them.
    let outcome = tasks.join(Some(LONG)).unwrap();
    assert!(outcome.is_complete(), "{outcome:?}");
    assert_eq!(outcome.requeued, vec![(pid, 3)]);
    assert_eq!(outcome.requeued_tasks(), 3);
    tasks.close();
    common::wait_ok(&mut worker, LONG);
    let mut did: Vec<u64> = done.try_iter().collect();
    did.sort_unstable();
    assert_eq!(did, [1, 2, 3, 4, 5], "every task done exactly once");
    assert_eq!(tasks.unfinished(), 0);
    assert_eq!(tasks.peer_deaths(), 1);
    assert!(tasks.join(Some(LONG)).unwrap().is_complete());
}
