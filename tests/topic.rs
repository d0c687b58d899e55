//! Topics across real processes: fan-out, late joiners, Overwrite lag, Block bounded
//! waits, publishers and subscribers SIGKILLed, hostile writers.

mod common;

use std::io::BufRead;
use std::time::{Duration, Instant};

use shmkit::Segment;
use shmkit::topic::{ByteTopic, Policy, RecvTimeoutError, SendTimeoutError, Topic, TryRecvError};

const LONG: Duration = Duration::from_secs(20);

type Msg = [u64; 8];

fn msg(seq: u64) -> Msg {
    let mut m = [0u64; 8];
    m[0] = seq;
    for (i, w) in m.iter_mut().enumerate().skip(1) {
        *w = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64;
    }
    m
}

fn intact(m: &Msg) -> bool {
    *m == msg(m[0])
}

fn arg(i: usize) -> String {
    common::args()[i].clone()
}

/// Child side: block until the parent closes our stdin.
fn wait_for_parent() {
    let mut s = String::new();
    let _ = std::io::stdin().lock().read_line(&mut s);
}

/// A subscriber child: subscribes, says "ready", receives until Disconnected, checks
/// every message is intact and in order (gaps only where `Lagged` said so), reports
/// `received lagged`.
fn subscriber_child() {
    let t = Topic::<Msg>::open(&arg(0)).unwrap();
    let s = t.subscribe().unwrap();
    common::tell("ready");
    if arg(1) == "hold" {
        wait_for_parent();
    }
    let (mut got, mut lagged, mut next) = (0u64, 0u64, 0u64);
    loop {
        match s.recv_timeout(LONG) {
            Ok(m) => {
                assert!(intact(&m), "torn message {m:?}");
                assert!(m[0] >= next, "out of order: {} after {next}", m[0]);
                if t.policy() == Policy::Block {
                    assert_eq!(m[0], next, "Block lost a message");
                }
                next = m[0] + 1;
                got += 1;
            }
            Err(RecvTimeoutError::Lagged(n)) => lagged += n,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    common::tell(&format!("{got} {lagged} {next}"));
    std::process::exit(0);
}

#[test]
fn fan_out_to_several_processes() {
    if common::role().is_some() {
        subscriber_child();
    }
    let name = common::unique("topic-fan");
    let _g = common::ShmGuard::new(&name);
    let t = Topic::<Msg>::options()
        .capacity(64)
        .max_subscribers(8)
        .policy(Policy::Block)
        .create(&name)
        .unwrap();
    let p = t.publisher().unwrap();
    let mut kids: Vec<_> = (0..3)
        .map(|_| common::spawn_talking("fan_out_to_several_processes", "sub", &[&name, "go"]))
        .collect();
    for (_, l) in &kids {
        assert_eq!(l.next(LONG), "ready");
    }
    const N: u64 = 20_000;
    for i in 0..N {
        p.send_timeout(msg(i), LONG).unwrap();
    }
    drop(p);
    for (c, l) in &mut kids {
        assert_eq!(l.next(LONG), format!("{N} 0 {N}"));
        common::wait_ok(c, LONG);
    }
}

#[test]
fn late_joiner_gets_history() {
    if let Some(role) = common::role() {
        assert_eq!(role, "late");
        let t = Topic::<Msg>::open(&arg(0)).unwrap();
        let s = t.subscribe_with_history(3).unwrap();
        for i in 2..5 {
            assert_eq!(s.recv_timeout(LONG).unwrap(), msg(i));
        }
        assert!(matches!(
            s.recv_timeout(LONG),
            Err(RecvTimeoutError::Disconnected)
        ));
        std::process::exit(0);
    }
    let name = common::unique("topic-late");
    let _g = common::ShmGuard::new(&name);
    let t = Topic::<Msg>::create(&name, 8).unwrap();
    let p = t.publisher().unwrap();
    for i in 0..5 {
        p.send(msg(i)).unwrap();
    }
    drop(p);
    let mut c = common::child("late_joiner_gets_history", "late", &[&name])
        .spawn()
        .unwrap();
    common::wait_ok(&mut c, LONG);
}

#[test]
fn overwrite_reports_lag_and_never_blocks() {
    if common::role().is_some() {
        subscriber_child();
    }
    let name = common::unique("topic-lag");
    let _g = common::ShmGuard::new(&name);
    let t = Topic::<Msg>::options()
        .capacity(8)
        .policy(Policy::Overwrite)
        .create(&name)
        .unwrap();
    let p = t.publisher().unwrap();
    let (mut c, l) = common::spawn_talking(
        "overwrite_reports_lag_and_never_blocks",
        "sub",
        &[&name, "hold"],
    );
    assert_eq!(l.next(LONG), "ready");
    const N: u64 = 100;
    for i in 0..N {
        // The subscriber reads nothing meanwhile: Overwrite never waits for it.
        p.try_send(msg(i)).unwrap();
    }
    drop(p);
    drop(c.stdin.take());
    let report = l.next(LONG);
    let v: Vec<u64> = report.split(' ').map(|x| x.parse().unwrap()).collect();
    assert!(v[1] > 0, "no lag reported: {report}");
    assert_eq!(v[0] + v[1], N, "received + lagged != published: {report}");
    assert_eq!(v[2], N);
    common::wait_ok(&mut c, LONG);
}

#[test]
fn block_waits_bounded_and_a_dead_subscriber_is_retired() {
    if let Some(role) = common::role() {
        assert_eq!(role, "idle");
        let t = Topic::<Msg>::open(&arg(0)).unwrap();
        let _s = t.subscribe().unwrap();
        common::tell("ready");
        wait_for_parent(); // never reads; the parent kills us
        std::process::exit(0);
    }
    let name = common::unique("topic-block");
    let _g = common::ShmGuard::new(&name);
    let t = Topic::<Msg>::options()
        .capacity(4)
        .policy(Policy::Block)
        .create(&name)
        .unwrap();
    let p = t.publisher().unwrap();
    let (mut c, l) = common::spawn_talking(
        "block_waits_bounded_and_a_dead_subscriber_is_retired",
        "idle",
        &[&name],
    );
    assert_eq!(l.next(LONG), "ready");
    for i in 0..4 {
        p.try_send(msg(i)).unwrap();
    }
    assert!(matches!(
        p.try_send(msg(4)),
        Err(shmkit::topic::TrySendError::Full)
    ));
    let t0 = Instant::now();
    assert!(matches!(
        p.send_timeout(msg(4), Duration::from_millis(50)),
        Err(SendTimeoutError::Timeout)
    ));
    assert!(t0.elapsed() >= Duration::from_millis(50));
    let st = t.stat();
    let sub = st.participants.iter().find(|x| x.subscriber).unwrap();
    assert_eq!((sub.lag, sub.alive), (4, true));
    c.kill().unwrap();
    c.wait().unwrap();
    // The dead subscriber no longer blocks the publisher.
    for i in 4..100 {
        p.send_timeout(msg(i), LONG).unwrap();
    }
    assert!(t.stat().peer_deaths >= 1);
}

#[test]
fn publisher_killed_mid_write_shows_nothing_torn() {
    if let Some(role) = common::role() {
        let t = Topic::<Msg>::open(&arg(0)).unwrap();
        let p = t.publisher().unwrap();
        if role == "mid" {
            p.send(msg(0)).unwrap();
            let mut loan = p.loan().unwrap();
            loan[..4].copy_from_slice(&[1, 1, 1, 1]); // half a message
            common::tell("mid");
            wait_for_parent();
            std::process::exit(0);
        }
        // "stream": publish until killed.
        common::tell("ready");
        for i in 0.. {
            p.send(msg(i)).unwrap();
        }
    }
    let name = common::unique("topic-pubkill");
    let _g = common::ShmGuard::new(&name);
    for policy in [Policy::Overwrite, Policy::Block] {
        let t = Topic::<Msg>::options()
            .capacity(16)
            .policy(policy)
            .segment(Segment::options())
            .open_or_create(&name)
            .unwrap()
            .0;
        let s = t.subscribe().unwrap();
        let (mut c, l) = common::spawn_talking(
            "publisher_killed_mid_write_shows_nothing_torn",
            "mid",
            &[&name],
        );
        assert_eq!(l.next(LONG), "mid");
        assert_eq!(s.recv_timeout(LONG).unwrap(), msg(0));
        c.kill().unwrap();
        c.wait().unwrap();
        // The half-written slot is never delivered; the subscriber learns the publisher died.
        assert!(matches!(
            s.recv_timeout(LONG),
            Err(RecvTimeoutError::Disconnected)
        ));
        drop((s, t));
        Segment::unlink(&name).unwrap();
    }
    // Killed at random points while streaming: every message intact and in order.
    for round in 0..5 {
        let t = Topic::<Msg>::options()
            .capacity(16)
            .policy(if round % 2 == 0 {
                Policy::Block
            } else {
                Policy::Overwrite
            })
            .create(&name)
            .unwrap();
        let s = t.subscribe().unwrap();
        let (mut c, l) = common::spawn_talking(
            "publisher_killed_mid_write_shows_nothing_torn",
            "stream",
            &[&name],
        );
        assert_eq!(l.next(LONG), "ready");
        let mut next = 0;
        let mut killed = false;
        let kill_at = 1000 + round * 777;
        loop {
            match s.recv_timeout(LONG) {
                Ok(m) => {
                    assert!(intact(&m), "torn message {m:?}");
                    assert!(m[0] >= next);
                    next = m[0] + 1;
                    if next >= kill_at && !killed {
                        c.kill().unwrap();
                        killed = true;
                    }
                }
                Err(RecvTimeoutError::Lagged(_)) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(next >= kill_at);
        c.wait().unwrap();
        drop((s, t));
        Segment::unlink(&name).unwrap();
    }
}

#[test]
fn byte_topic_between_processes() {
    if let Some(role) = common::role() {
        assert_eq!(role, "sub");
        let t = ByteTopic::open(&arg(0)).unwrap();
        let s = t.subscribe().unwrap();
        common::tell("ready");
        let mut buf = Vec::new();
        let mut i = 0usize;
        loop {
            match s.recv_timeout(&mut buf, LONG) {
                Ok(n) => {
                    assert_eq!(n, i % 300);
                    assert!(buf.iter().all(|&b| b == i as u8));
                    i += 1;
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("{e}"),
            }
        }
        common::tell(&i.to_string());
        std::process::exit(0);
    }
    let name = common::unique("topic-bytes");
    let _g = common::ShmGuard::new(&name);
    let t = ByteTopic::options()
        .capacity(32)
        .policy(Policy::Block)
        .create(&name, 300)
        .unwrap();
    let p = t.publisher().unwrap();
    let (mut c, l) = common::spawn_talking("byte_topic_between_processes", "sub", &[&name]);
    assert_eq!(l.next(LONG), "ready");
    for i in 0..5000usize {
        if i % 2 == 0 {
            p.send_timeout(&vec![i as u8; i % 300], LONG).unwrap();
        } else {
            let mut loan = p.loan_timeout(i % 300, LONG).unwrap();
            loan.fill(i as u8);
            loan.publish();
        }
    }
    assert!(p.try_send(&[0; 301]).is_err());
    drop(p);
    assert_eq!(l.next(LONG), "5000");
    common::wait_ok(&mut c, LONG);
}

/// Message `i` of [`long_messages_to_a_lapped_subscriber_are_never_torn`]: 20-40 KB (in
/// `queue::cache_bypass()`, written around the cache), its sequence number first.
fn long_msg(i: u64) -> Vec<u8> {
    let len = 20_000 + (i as usize * 7919) % 20_000;
    let mut m: Vec<u8> = (0..len).map(|k| (i as usize ^ (k >> 6)) as u8).collect();
    m[..8].copy_from_slice(&i.to_le_bytes());
    m
}

/// A publisher streams 20-40 KB messages (written with non-temporal stores) into a ring
/// of 4 under `Overwrite`, faster than the subscriber in another process checks them, so
/// the subscriber is lapped while it copies: every message it accepts is whole and in
/// order, and it reports the laps.
#[test]
fn long_messages_to_a_lapped_subscriber_are_never_torn() {
    const N: u64 = 3_000;
    if let Some(_role) = common::role() {
        let t = ByteTopic::open(&arg(0)).unwrap();
        let s = t.subscribe().unwrap();
        common::tell("ready");
        let mut buf = Vec::new();
        let (mut got, mut lagged, mut last) = (0u64, 0u64, None::<u64>);
        loop {
            match s.recv_timeout(&mut buf, LONG) {
                Ok(_) => {
                    let i = u64::from_le_bytes(buf[..8].try_into().unwrap());
                    assert!(buf == long_msg(i), "torn message {i} ({} bytes)", buf.len());
                    assert!(last.is_none_or(|l| i > l), "{i} after {last:?}");
                    last = Some(i);
                    got += 1;
                }
                Err(RecvTimeoutError::Lagged(n)) => lagged += n,
                Err(RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("{e}"),
            }
        }
        common::tell(&format!("{got} {lagged}"));
        std::process::exit(0);
    }
    let name = common::unique("topic-long");
    let _g = common::ShmGuard::new(&name);
    let t = ByteTopic::options()
        .capacity(4)
        .policy(Policy::Overwrite)
        .create(&name, 40_000)
        .unwrap();
    let p = t.publisher().unwrap();
    let (mut c, l) = common::spawn_talking(
        "long_messages_to_a_lapped_subscriber_are_never_torn",
        "sub",
        &[&name],
    );
    assert_eq!(l.next(LONG), "ready");
    for i in 0..N {
        p.send_timeout(&long_msg(i), LONG).unwrap();
    }
    drop(p);
    let report = l.next(LONG);
    let (got, lagged) = report.split_once(' ').unwrap();
    let (got, lagged): (u64, u64) = (got.parse().unwrap(), lagged.parse().unwrap());
    assert!(got >= 1 && got + lagged == N, "{report}");
    common::wait_ok(&mut c, LONG);
}

#[test]
fn second_publisher_refused_unless_several_allowed() {
    let name = common::unique("topic-pubs");
    let _g = common::ShmGuard::new(&name);
    let t = Topic::<u64>::create(&name, 8).unwrap();
    let p = t.publisher().unwrap();
    assert!(t.publisher().is_err());
    drop(p);
    let _p = t.publisher().unwrap();
    Segment::unlink(&name).unwrap();

    let t = Topic::<u64>::options()
        .capacity(8)
        .publishers(2)
        .policy(Policy::Block)
        .create(&name)
        .unwrap();
    let s = t.subscribe().unwrap();
    let (a, b) = (t.publisher().unwrap(), t.publisher().unwrap());
    a.send(1).unwrap();
    b.send(2).unwrap();
    let mut l = a.loan().unwrap();
    *l = 3;
    assert!(matches!(
        b.try_send(4),
        Err(shmkit::topic::TrySendError::Full)
    ));
    l.publish();
    b.send(4).unwrap();
    for i in 1..=4 {
        assert_eq!(s.try_recv().unwrap(), i);
    }
    drop((a, b));
    assert!(matches!(s.try_recv(), Err(TryRecvError::Disconnected)));
}

#[test]
fn zero_copy_view_holds_the_slot() {
    let name = common::unique("topic-view");
    let _g = common::ShmGuard::new(&name);
    let t = Topic::<u64>::options()
        .capacity(2)
        .policy(Policy::Block)
        .create(&name)
        .unwrap();
    let p = t.publisher().unwrap();
    let s = t.subscribe().unwrap();
    p.send(1).unwrap();
    p.send(2).unwrap();
    {
        let v = s.try_recv_ref().unwrap();
        assert_eq!(*v, 1);
        // The view holds slot 0: position 2 would overwrite it.
        assert!(p.try_send(3).is_err());
    }
    p.try_send(3).unwrap();
    assert_eq!(s.try_recv().unwrap(), 2);
    assert_eq!(*s.recv_ref(Some(LONG)).unwrap(), 3);
    let o = Topic::<u64>::options().capacity(2).anonymous().unwrap();
    let so = o.subscribe().unwrap();
    assert!(matches!(so.try_recv_ref(), Err(TryRecvError::Other(_))));
    assert!(Topic::<u32>::open(&name).is_err(), "type mismatch accepted");
    assert!(ByteTopic::open(&name).is_err(), "kind mismatch accepted");
}

/// Writes random garbage over the whole ring (not the header) while the caller's
/// handles run: errors allowed, never a crash or a wait past the timeout.
fn scribble(seg: &Segment, seed: u64) {
    let mut rng = common::xorshift(seed);
    let base = seg.payload_ptr();
    for _ in 0..seg.payload_len() / 8 {
        let off = (rng() as usize % (seg.payload_len() / 8)) * 8;
        let v = match rng() % 4 {
            0 => 0,
            1 => rng() % 64,
            2 => u64::MAX,
            _ => rng(),
        };
        // SAFETY: in bounds and 8-aligned; this test plays the hostile peer (the ring's
        // words are atomics, so write them as one).
        unsafe {
            (*(base.add(off) as *const std::sync::atomic::AtomicU64))
                .store(v, std::sync::atomic::Ordering::Relaxed)
        };
    }
}

#[test]
fn hostile_writer_causes_errors_not_crashes_or_hangs() {
    if let Some(role) = common::role() {
        assert_eq!(role, "hostile");
        let seg = Segment::open(&arg(0)).unwrap();
        for round in 0.. {
            scribble(&seg, round);
        }
    }
    let name = common::unique("topic-hostile");
    let _g = common::ShmGuard::new(&name);
    for (policy, bytes) in [
        (Policy::Block, false),
        (Policy::Overwrite, false),
        (Policy::Block, true),
        (Policy::Overwrite, true),
    ] {
        let t = Topic::<Msg>::options().capacity(8).policy(policy);
        let bt = ByteTopic::options().capacity(8).policy(policy);
        let (typed, byte) = if bytes {
            (None, Some(bt.create(&name, 100).unwrap()))
        } else {
            (Some(t.create(&name).unwrap()), None)
        };
        let mut c = common::child(
            "hostile_writer_causes_errors_not_crashes_or_hangs",
            "hostile",
            &[&name],
        )
        .spawn()
        .unwrap();
        let short = Duration::from_millis(2);
        let t0 = Instant::now();
        let mut buf = Vec::new();
        while t0.elapsed() < Duration::from_millis(300) {
            let t1 = Instant::now();
            if let Some(t) = &typed {
                if let Ok(p) = t.publisher() {
                    let _ = p.send_timeout(msg(1), short);
                    let _ = p.try_send(msg(2));
                }
                if let Ok(s) = t.subscribe_with_history(3) {
                    let _ = s.try_recv();
                    let _ = s.recv_timeout(short);
                    if let Ok(v) = s.try_recv_ref() {
                        let _ = *v;
                    }
                }
                let _ = t.stat();
            }
            if let Some(t) = &byte {
                if let Ok(p) = t.publisher() {
                    let _ = p.send_timeout(&[1; 50], short);
                }
                if let Ok(s) = t.subscribe_with_history(3) {
                    let _ = s.try_recv(&mut buf);
                    let _ = s.recv_timeout(&mut buf, short);
                    assert!(buf.len() <= 100);
                }
            }
            assert!(t1.elapsed() < Duration::from_secs(2), "a bounded call hung");
        }
        c.kill().unwrap();
        c.wait().unwrap();
        drop((typed, byte));
        Segment::unlink(&name).unwrap();
    }
}

#[test]
fn async_forms() {
    if let Some(role) = common::role() {
        assert_eq!(role, "pub");
        let t = Topic::<u64>::open(&arg(0)).unwrap();
        let p = t.publisher().unwrap();
        for i in 0..200 {
            p.send_timeout(i, LONG).unwrap();
        }
        std::process::exit(0);
    }
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let name = common::unique("topic-async");
    let _g = common::ShmGuard::new(&name);
    let t = Topic::<u64>::options()
        .capacity(4)
        .policy(Policy::Block)
        .create(&name)
        .unwrap();
    let mut s = t.subscribe().unwrap();
    let mut c = common::child("async_forms", "pub", &[&name])
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Every wait bounded: a hung future fails the test instead of hanging it.
    let bounded = |f| {
        rt.block_on(async {
            tokio::time::timeout(LONG, f)
                .await
                .expect("async wait hung")
        })
    };
    bounded(async {
        for i in 0..200 {
            assert_eq!(s.recv_async().await.unwrap(), i);
        }
        // The publisher process exits: the pending receive ends with Disconnected.
        assert!(matches!(
            s.recv_async().await,
            Err(shmkit::topic::RecvError::Disconnected)
        ));
    });
    common::wait_ok(&mut c, LONG);
    drop((s, t));
    Segment::unlink(&name).unwrap();

    // send_async waits (Pending) while the topic is full for a live subscriber, and
    // completes once it reads.
    let t = Topic::<u64>::options()
        .capacity(2)
        .policy(Policy::Block)
        .create(&name)
        .unwrap();
    let mut p = t.publisher().unwrap();
    let s = t.subscribe().unwrap();
    p.try_send(1).unwrap();
    p.try_send(2).unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    {
        let mut f = std::pin::pin!(p.send_async(3));
        assert!(f.as_mut().poll(&mut cx).is_pending());
        assert_eq!(s.try_recv().unwrap(), 1);
        let t0 = Instant::now();
        loop {
            if let Poll::Ready(r) = f.as_mut().poll(&mut cx) {
                r.unwrap();
                break;
            }
            assert!(t0.elapsed() < LONG, "send_async never completed");
            std::thread::yield_now();
        }
    }
    assert_eq!(s.try_recv().unwrap(), 2);
    let mut l = rt
        .block_on(async { tokio::time::timeout(LONG, p.loan_async()).await })
        .expect("loan_async hung")
        .unwrap();
    *l = 9;
    drop(l); // unpublished: the position is reused
    assert_eq!(s.try_recv().unwrap(), 3);
    rt.block_on(async { tokio::time::timeout(LONG, p.send_async(4)).await })
        .expect("send_async hung")
        .unwrap();
    assert_eq!(s.try_recv().unwrap(), 4);
}

/// A message of publisher `id`, its `i`-th: `id` in the top 16 bits of the sequence word.
fn tagged(id: u64, i: u64) -> Msg {
    msg(id << 48 | i)
}

/// Several publishers (`.publishers(n)`), one SIGKILLed while it holds the per-message
/// publisher role (a loan taken, half written): the role passes to a live publisher,
/// every message is intact, each publisher's messages arrive in order, the half-written
/// slot is never delivered, and subscribers see `Disconnected` once the rest are gone.
/// Then two publishers stream at once and one is killed at a random point: the other's
/// messages all arrive (Block) and nothing is torn.
#[test]
fn several_publishers_one_killed_holding_the_role() {
    if let Some(role) = common::role() {
        let t = Topic::<Msg>::open(&arg(0)).unwrap();
        let p = t.publisher().unwrap();
        let id: u64 = arg(1).parse().unwrap();
        if role == "hold" {
            p.send(tagged(id, 0)).unwrap();
            let mut loan = p.loan().unwrap();
            loan[..4].copy_from_slice(&[7, 7, 7, 7]); // half a message
            common::tell("holding");
            wait_for_parent();
            std::process::exit(0);
        }
        // "stream": `count` messages (0: until killed), then exit.
        let count: u64 = arg(2).parse().unwrap();
        common::tell("ready");
        let mut i = 0;
        while count == 0 || i < count {
            p.send_timeout(tagged(id, i), LONG).unwrap();
            i += 1;
        }
        common::tell("done");
        std::process::exit(0);
    }
    const TEST: &str = "several_publishers_one_killed_holding_the_role";
    let name = common::unique("topic-mpkill");
    let _g = common::ShmGuard::new(&name);

    // Per-publisher order check; returns how many messages each publisher delivered.
    let drain = |s: shmkit::topic::Subscriber<Msg>, block: bool| -> [u64; 3] {
        let mut next = [0u64; 3];
        let mut got = [0u64; 3];
        loop {
            match s.recv_timeout(LONG) {
                Ok(m) => {
                    assert!(intact(&m), "torn message {m:?}");
                    let (id, i) = ((m[0] >> 48) as usize, m[0] & 0xffff_ffff_ffff);
                    assert!(id < 3, "unknown publisher in {m:?}");
                    assert!(i >= next[id], "publisher {id}: {i} after {}", next[id]);
                    if block {
                        assert_eq!(i, next[id], "Block lost a message of publisher {id}");
                    }
                    next[id] = i + 1;
                    got[id] += 1;
                }
                Err(RecvTimeoutError::Lagged(_)) if !block => {}
                Err(RecvTimeoutError::Disconnected) => return got,
                Err(e) => panic!("{e:?}"),
            }
        }
    };

    for policy in [Policy::Block, Policy::Overwrite] {
        let block = policy == Policy::Block;
        // 1. The role holder dies with a loan out; the other publisher takes over.
        let t = Topic::<Msg>::options()
            .capacity(64)
            .publishers(3)
            .policy(policy)
            .create(&name)
            .unwrap();
        let s = t.subscribe().unwrap();
        // The subscriber drains on its own thread, so a Block publisher never waits on it.
        let drained = std::thread::spawn(move || drain(s, block));
        let (mut holder, hl) = common::spawn_talking(TEST, "hold", &[&name, "0"]);
        assert_eq!(hl.next(LONG), "holding");
        // While the holder lives, a second publisher cannot publish: a bounded wait ends
        // with a timeout, as the caller asked.
        let local = t.publisher().unwrap();
        assert!(matches!(
            local.send_timeout(tagged(2, 0), Duration::from_millis(50)),
            Err(SendTimeoutError::Timeout)
        ));
        holder.kill().unwrap();
        holder.wait().unwrap();
        // The dead holder's role is taken over (within the liveness recovery delay).
        local.send_timeout(tagged(2, 0), LONG).unwrap();
        let (mut streamer, sl) = common::spawn_talking(TEST, "stream", &[&name, "1", "500"]);
        assert_eq!(sl.next(LONG), "ready");
        for i in 1..500 {
            local.send_timeout(tagged(2, i), LONG).unwrap();
        }
        drop(local);
        assert_eq!(sl.next(LONG), "done");
        common::wait_ok(&mut streamer, LONG);
        let got = drained.join().unwrap();
        if block {
            assert_eq!(
                got,
                [1, 500, 500],
                "{policy:?}: the dead holder's half message too?"
            );
        } else {
            assert!(got[0] <= 1 && got[1] <= 500 && got[2] <= 500, "{got:?}");
        }
        drop(t);
        Segment::unlink(&name).unwrap();

        // 2. Two publishers stream at once; one is killed at a random point.
        for round in 0..3u64 {
            let t = Topic::<Msg>::options()
                .capacity(16)
                .publishers(2)
                .policy(policy)
                .create(&name)
                .unwrap();
            let s = t.subscribe().unwrap();
            let (mut victim, vl) = common::spawn_talking(TEST, "stream", &[&name, "0", "0"]);
            let (mut survivor, su) = common::spawn_talking(TEST, "stream", &[&name, "1", "3000"]);
            assert_eq!(vl.next(LONG), "ready");
            assert_eq!(su.next(LONG), "ready");
            let kill_at = 200 + round * 531;
            let mut next = [0u64; 2];
            let mut got = [0u64; 2];
            let mut killed = false;
            loop {
                match s.recv_timeout(LONG) {
                    Ok(m) => {
                        assert!(intact(&m), "torn message {m:?}");
                        let (id, i) = ((m[0] >> 48) as usize, m[0] & 0xffff_ffff_ffff);
                        assert!(id < 2 && i >= next[id], "{m:?} after {next:?}");
                        if block {
                            assert_eq!(i, next[id], "Block lost a message of publisher {id}");
                        }
                        next[id] = i + 1;
                        got[id] += 1;
                        if !killed && got[0] + got[1] >= kill_at {
                            victim.kill().unwrap();
                            killed = true;
                        }
                    }
                    Err(RecvTimeoutError::Lagged(_)) if !block => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert!(killed, "round {round}: the stream ended before the kill");
            victim.wait().unwrap();
            assert_eq!(su.next(LONG), "done");
            common::wait_ok(&mut survivor, LONG);
            if block {
                assert_eq!(
                    got[1], 3000,
                    "{policy:?} round {round}: the survivor's messages"
                );
            }
            drop((s, t));
            Segment::unlink(&name).unwrap();
        }
    }
}
