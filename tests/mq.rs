//! POSIX message queues across real processes: priority order, FIFO within a priority,
//! timeouts, limit errors, a producer killed mid-stream, interop with Python's posix_ipc.

mod common;

use std::time::{Duration, Instant};

use shmkit::Error;
use shmkit::mq::{MessageQueue, MqOptions};

const LIMIT: Duration = Duration::from_secs(30);

/// Unlinks a queue when dropped (also on panic).
struct MqGuard(String);

impl Drop for MqGuard {
    fn drop(&mut self) {
        let _ = MessageQueue::unlink(&self.0);
    }
}

fn new_queue(tag: &str, cap: usize, size: usize) -> (String, MqGuard, MessageQueue) {
    let name = common::unique(tag);
    let q = MessageQueue::create(&name, cap, size).expect("create queue");
    (name.clone(), MqGuard(name), q)
}

/// A message: producer id, sequence number, priority, then a checksum byte pattern.
fn encode(producer: u32, seq: u32, prio: u32, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&producer.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&prio.to_le_bytes());
    while m.len() < len {
        m.push((producer ^ seq ^ m.len() as u32) as u8);
    }
    m
}

fn decode(m: &[u8]) -> (u32, u32, u32) {
    assert!(m.len() >= 12, "short message {m:?}");
    let w = |i: usize| u32::from_le_bytes(m[i..i + 4].try_into().unwrap());
    let (p, s, prio) = (w(0), w(4), w(8));
    for (i, b) in m.iter().enumerate().skip(12) {
        assert_eq!(*b, (p ^ s ^ i as u32) as u8, "torn message");
    }
    (p, s, prio)
}

#[test]
fn priorities_in_order_fifo_within_priority() {
    if let Some(role) = common::role() {
        assert_eq!(role, "filler");
        let a = common::args();
        let q = MessageQueue::open(&a[0]).unwrap();
        let pattern: Vec<u32> = a[1].split(',').map(|x| x.parse().unwrap()).collect();
        for (seq, prio) in pattern.iter().enumerate() {
            q.send(&encode(0, seq as u32, *prio, 40), *prio).unwrap();
        }
        std::process::exit(0);
    }
    let (name, _g, q) = new_queue("mqprio", 4, 128);
    for pattern in ["1,5,1,5", "0,0,0,0", "9,3,9,1", "2,7,7,2"] {
        let mut c = common::child(
            "priorities_in_order_fifo_within_priority",
            "filler",
            &[&name, pattern],
        )
        .spawn()
        .unwrap();
        common::wait_ok(&mut c, LIMIT);
        let mut got = Vec::new();
        let mut buf = vec![0u8; q.msg_size()];
        while let Ok((n, prio)) = q.try_recv(&mut buf) {
            let (_, seq, sent_prio) = decode(&buf[..n]);
            assert_eq!(prio, sent_prio);
            got.push((prio, seq));
        }
        let mut want = got.clone();
        // Highest priority first; within a priority, in sending order.
        want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        assert_eq!(got.len(), 4, "pattern {pattern}");
        assert_eq!(got, want, "pattern {pattern}");
    }
}

#[test]
fn many_producers_fifo_per_priority() {
    const PER: u32 = 300;
    if let Some(role) = common::role() {
        assert_eq!(role, "producer");
        let a = common::args();
        let q = MessageQueue::open(&a[0]).unwrap();
        let id: u32 = a[1].parse().unwrap();
        for seq in 0..PER {
            let prio = seq % 3;
            q.send_timeout(&encode(id, seq, prio, 64), prio, LIMIT)
                .unwrap();
        }
        std::process::exit(0);
    }
    let (name, _g, q) = new_queue("mqmany", 4, 128);
    let mut kids: Vec<_> = (0..3)
        .map(|i| {
            common::child(
                "many_producers_fifo_per_priority",
                "producer",
                &[&name, &i.to_string()],
            )
            .spawn()
            .unwrap()
        })
        .collect();
    // last[producer][prio] = last sequence seen.
    let mut last = [[None::<u32>; 3]; 3];
    let mut buf = vec![0u8; q.msg_size()];
    for _ in 0..3 * PER {
        let (n, prio) = q.recv_timeout(&mut buf, LIMIT).unwrap();
        let (p, seq, sent) = decode(&buf[..n]);
        assert_eq!(prio, sent);
        let slot = &mut last[p as usize][prio as usize];
        assert!(
            slot.is_none_or(|l| seq > l),
            "producer {p} prio {prio}: {seq} after {slot:?}"
        );
        *slot = Some(seq);
    }
    for c in &mut kids {
        common::wait_ok(c, LIMIT);
    }
    assert!(matches!(
        q.try_recv(&mut buf),
        Err(Error::WouldBlock { .. })
    ));
}

#[test]
fn timeouts_and_nonblocking() {
    let (_name, _g, q) = new_queue("mqtime", 2, 16);
    let mut buf = [0u8; 16];
    assert!(matches!(
        q.try_recv(&mut buf),
        Err(Error::WouldBlock { .. })
    ));
    let t = Instant::now();
    let e = q
        .recv_timeout(&mut buf, Duration::from_millis(80))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(80), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    q.send(b"1", 0).unwrap();
    q.send(b"2", 0).unwrap();
    assert!(matches!(q.try_send(b"3", 0), Err(Error::WouldBlock { .. })));
    let t = Instant::now();
    let e = q
        .send_timeout(b"3", 0, Duration::from_millis(50))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!(q.attributes().unwrap().current, 2);
    assert_eq!(q.recv_timeout(&mut buf, Duration::ZERO).unwrap(), (1, 0));
    // A timeout too large for a deadline means "no deadline", not a panic.
    assert_eq!(q.recv_timeout(&mut buf, Duration::MAX).unwrap(), (1, 0));
    q.send_timeout(b"4", 0, Duration::MAX).unwrap();
}

#[test]
fn blocked_receiver_wakes_from_other_process() {
    if let Some(role) = common::role() {
        assert_eq!(role, "late");
        let a = common::args();
        let q = MessageQueue::open(&a[0]).unwrap();
        let ack = MessageQueue::open(&a[1]).unwrap();
        // Wait until the parent says it is about to block, then send.
        let mut b = [0u8; 16];
        ack.recv_timeout(&mut b, LIMIT).unwrap();
        q.send(b"wake", 4).unwrap();
        std::process::exit(0);
    }
    let (name, _g, q) = new_queue("mqwake", 2, 16);
    let (ack_name, _g2, ack) = new_queue("mqwakeack", 2, 16);
    let mut c = common::child(
        "blocked_receiver_wakes_from_other_process",
        "late",
        &[&name, &ack_name],
    )
    .spawn()
    .unwrap();
    ack.send(b"go", 0).unwrap();
    let mut buf = [0u8; 16];
    let (n, p) = q.recv_timeout(&mut buf, LIMIT).unwrap();
    assert_eq!((&buf[..n], p), (&b"wake"[..], 4));
    common::wait_ok(&mut c, LIMIT);
}

#[test]
fn limit_errors_name_the_knob() {
    let read = |k: &str| -> usize {
        std::fs::read_to_string(format!("/proc/sys/fs/mqueue/{k}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let name = common::unique("mqlimit");
    let _g = MqGuard(name.clone());
    let e = MessageQueue::create(&name, read("msg_max") + 1, 16).unwrap_err();
    assert_eq!(e.errno(), Some(nix::errno::Errno::EINVAL), "{e}");
    let s = e.to_string();
    assert!(s.contains("/proc/sys/fs/mqueue/msg_max"), "{s}");
    assert!(!s.contains("msgsize_max ("), "{s}");
    let e = MessageQueue::create(&name, 2, read("msgsize_max") + 1).unwrap_err();
    let s = e.to_string();
    assert!(s.contains("/proc/sys/fs/mqueue/msgsize_max"), "{s}");
    // Errors for existence name the next step too.
    let e = MessageQueue::open(&name).unwrap_err();
    assert!(
        e.is_not_found() && e.to_string().contains("shmkit mq create"),
        "{e}"
    );
    let q = MessageQueue::create(&name, 1, 16).unwrap();
    let e = MqOptions::new(1, 16).create(&name).unwrap_err();
    assert!(e.is_already_exists(), "{e}");
    let e = q.send(&[0u8; 17], 0).unwrap_err();
    assert!(e.to_string().contains("msgsize_max"), "{e}");
}

#[test]
fn rlimit_msgqueue_error_names_ulimit() {
    if let Some(role) = common::role() {
        assert_eq!(role, "limited");
        let a = common::args();
        // Room for nothing: any queue exceeds the byte budget.
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_MSGQUEUE, 0, 0).unwrap();
        let e = MessageQueue::create(&a[0], 4, 128).unwrap_err();
        let s = e.to_string();
        assert_eq!(e.errno(), Some(nix::errno::Errno::EMFILE), "{s}");
        assert!(
            s.contains("RLIMIT_MSGQUEUE") && s.contains("ulimit -q"),
            "{s}"
        );
        std::process::exit(0);
    }
    let name = common::unique("mqrlim");
    let _g = MqGuard(name.clone());
    let mut c = common::child("rlimit_msgqueue_error_names_ulimit", "limited", &[&name])
        .spawn()
        .unwrap();
    common::wait_ok(&mut c, LIMIT);
}

#[test]
fn producer_killed_midway_leaves_whole_messages() {
    if let Some(role) = common::role() {
        assert_eq!(role, "flood");
        let q = MessageQueue::open(&common::args()[0]).unwrap();
        for seq in 0.. {
            q.send(&encode(7, seq, 1, 100), 1).unwrap();
        }
        unreachable!();
    }
    let (name, _g, q) = new_queue("mqkill", 4, 128);
    let mut c = common::child(
        "producer_killed_midway_leaves_whole_messages",
        "flood",
        &[&name],
    )
    .spawn()
    .unwrap();
    let mut buf = vec![0u8; q.msg_size()];
    let mut next = 0;
    for _ in 0..200 {
        let (n, _) = q.recv_timeout(&mut buf, LIMIT).unwrap();
        assert_eq!(decode(&buf[..n]).1, next);
        next += 1;
    }
    c.kill().unwrap();
    c.wait().unwrap();
    // Whatever it queued before dying is whole and in order; then the queue is empty and a
    // bounded receive reports a timeout instead of hanging.
    loop {
        match q.recv_timeout(&mut buf, Duration::from_millis(50)) {
            Ok((n, _)) => {
                assert_eq!(decode(&buf[..n]).1, next);
                next += 1;
            }
            Err(e) => {
                assert!(e.is_timeout(), "{e}");
                break;
            }
        }
    }
    assert!(next >= 200);
}

#[test]
fn pollable_descriptor() {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let (_name, _g, q) = new_queue("mqpoll", 2, 16);
    let mut fds = [PollFd::new(q.as_fd(), PollFlags::POLLIN)];
    assert_eq!(poll(&mut fds, PollTimeout::ZERO).unwrap(), 0);
    q.send(b"x", 0).unwrap();
    let mut fds = [PollFd::new(q.as_fd(), PollFlags::POLLIN)];
    assert_eq!(poll(&mut fds, PollTimeout::ZERO).unwrap(), 1);
}

fn require_posix_ipc() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import posix_ipc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 cannot import posix_ipc: run `pip install posix_ipc` (the interop test needs it)"
    );
}

#[test]
fn interop_with_python_posix_ipc() {
    require_posix_ipc();
    let (name, _g, q) = new_queue("mqpy", 4, 128);
    q.send(b"from rust", 3).unwrap();
    let script = r#"
import sys, posix_ipc
q = posix_ipc.MessageQueue("/" + sys.argv[1])
assert q.max_messages == 4 and q.max_message_size == 128, (q.max_messages, q.max_message_size)
msg, prio = q.receive(10)
assert (msg, prio) == (b"from rust", 3), (msg, prio)
q.send(b"low", priority=1)
q.send(b"high", priority=9)
q.send(b"low2", priority=1)
q.close()
"#;
    let mut c = std::process::Command::new("python3")
        .args(["-c", script, &name])
        .spawn()
        .unwrap();
    common::wait_ok(&mut c, LIMIT);
    let got: Vec<_> = (0..3).map(|_| q.recv_vec(Some(LIMIT)).unwrap()).collect();
    assert_eq!(
        got,
        vec![
            (b"high".to_vec(), 9),
            (b"low".to_vec(), 1),
            (b"low2".to_vec(), 1)
        ]
    );
}

#[test]
fn interop_queue_created_by_python() {
    require_posix_ipc();
    let name = common::unique("mqpycreate");
    let _g = MqGuard(name.clone());
    let script = r#"
import sys, posix_ipc
q = posix_ipc.MessageQueue("/" + sys.argv[1], posix_ipc.O_CREX, mode=0o600, max_messages=3, max_message_size=32)
q.send(b"made in python", priority=5)
q.close()
"#;
    let mut c = std::process::Command::new("python3")
        .args(["-c", script, &name])
        .spawn()
        .unwrap();
    common::wait_ok(&mut c, LIMIT);
    let q = MessageQueue::open(&name).unwrap();
    let a = q.attributes().unwrap();
    assert_eq!((a.capacity, a.msg_size, a.current), (3, 32, 1));
    assert_eq!(
        q.recv_vec(Some(LIMIT)).unwrap(),
        (b"made in python".to_vec(), 5)
    );
}

#[test]
fn queues_max_error_names_the_knob() {
    if let Some(role) = common::role() {
        assert_eq!(role, "private-ns");
        // A private IPC namespace has its own queues (and its own queues_max, 256 by
        // default), so filling it disturbs nobody. unshare(CLONE_NEWIPC) applies to this
        // thread, which makes all the mq_open calls below.
        let before = std::fs::read_link("/proc/thread-self/ns/ipc").unwrap();
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC) {
            eprintln!("cannot create an IPC namespace ({e}); skipping the ENOSPC check");
            std::process::exit(0);
        }
        assert_ne!(
            before,
            std::fs::read_link("/proc/thread-self/ns/ipc").unwrap()
        );
        for i in 0..2000 {
            match MessageQueue::create(&format!("q{i}"), 1, 1) {
                Ok(_) => {} // closed at once; the queue stays in the namespace
                Err(e) => {
                    let s = e.to_string();
                    assert_eq!(e.errno(), Some(nix::errno::Errno::ENOSPC), "{s}");
                    assert!(s.contains("/proc/sys/fs/mqueue/queues_max"), "{s}");
                    eprintln!("after {i} queues: {s}");
                    std::process::exit(0);
                }
            }
        }
        eprintln!("no ENOSPC after 2000 queues (CAP_SYS_RESOURCE lifts queues_max); skipping");
        std::process::exit(0);
    }
    let mut c = common::child("queues_max_error_names_the_knob", "private-ns", &[])
        .spawn()
        .unwrap();
    common::wait_ok(&mut c, LIMIT);
}
