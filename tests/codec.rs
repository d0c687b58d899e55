//! Typed (serde) messages across real processes over every transport `shmkit::codec`
//! wraps: a struct with strings, vectors, an enum and an `Option` round-trips; an
//! oversized value is one clear error naming both sizes and leaves the transport usable;
//! raw garbage sent with the untyped API decodes to an error, never a panic.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shmkit::Error;
use shmkit::codec::{RecvTransport, Typed};
use shmkit::fifo::{Fifo, MAX_ATOMIC_PAYLOAD};
use shmkit::mq::MessageQueue;
use shmkit::pipe::{CHUNK, Pipe};
use shmkit::queue::{ByteQueue, Mode};

const LIMIT: Duration = Duration::from_secs(30);
const N: u64 = 50;

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Record {
    id: u64,
    name: String,
    tags: Vec<String>,
    samples: Vec<i32>,
    kind: Kind,
    note: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Kind {
    Start,
    Progress { done: u64, total: u64 },
    Failed(String),
}

/// `Record` decoded without allocating its strings: they borrow the received message.
#[derive(Deserialize, Debug, PartialEq)]
struct RecordRef<'a> {
    id: u64,
    name: &'a str,
    #[serde(borrow)]
    tags: Vec<&'a str>,
    samples: Vec<i32>,
    kind: Kind,
    note: Option<&'a str>,
}

/// What the pipe's echo child answers.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Reply {
    Echo(Record),
    Garbage(String),
}

fn record(i: u64) -> Record {
    Record {
        id: i,
        name: format!("record-{i}-é"),
        tags: (0..i % 4).map(|t| format!("tag{t}")).collect(),
        samples: (0..(i * 7 % 20) as i32).map(|x| x * -3).collect(),
        kind: match i % 3 {
            0 => Kind::Start,
            1 => Kind::Progress { done: i, total: N },
            _ => Kind::Failed(format!("error {i}")),
        },
        note: (i % 2 == 0).then(|| "even".to_owned()),
    }
}

/// A record whose encoding is about `len` bytes.
fn big(len: usize) -> Record {
    Record {
        name: "x".repeat(len),
        ..record(1)
    }
}

/// Raw messages no `Record` decodes from: an overlong varint, and a valid record with a
/// byte left over.
fn garbage() -> [Vec<u8>; 2] {
    let mut trailing = postcard::to_stdvec(&record(3)).unwrap();
    trailing.push(0);
    [vec![0xff; 16], trailing]
}

fn assert_corrupt<T: std::fmt::Debug>(r: Result<T, Error>) {
    match r {
        Err(e @ Error::Corrupt { .. }) => {
            let s = e.to_string();
            assert!(s.contains("Record"), "the error names the type: {s}");
        }
        other => panic!("expected a Corrupt error, got {other:?}"),
    }
}

/// Starts `test`'s child in `role` with `arg`, then receives the raw garbage it sends
/// first: each message a decode error, never a panic.
fn start_with_garbage<C: RecvTransport>(
    test: &str,
    role: &str,
    arg: &str,
    rx: &mut Typed<C, Record>,
) -> std::process::Child {
    let c = common::child(test, role, &[arg]).spawn().unwrap();
    for _ in garbage() {
        assert_corrupt(rx.recv_timeout(LIMIT));
    }
    c
}

/// `r` is `MessageTooLarge` naming `max` and a larger encoded length.
fn assert_too_large<T: std::fmt::Debug>(r: Result<T, Error>, max: usize) {
    match r {
        Err(ref e @ Error::MessageTooLarge { len, max: m, .. }) => {
            assert_eq!(m, max);
            assert!(len > max, "{e}");
            let s = e.to_string();
            assert!(
                s.contains(&len.to_string()) && s.contains(&max.to_string()),
                "{s}"
            );
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// ByteQueue

#[test]
fn byte_queue_round_trip_across_processes() {
    if let Some(role) = common::role() {
        assert_eq!(role, "producer");
        let q = ByteQueue::open(&common::args()[0]).unwrap();
        for g in garbage() {
            q.send_timeout(&g, LIMIT).unwrap(); // untyped
        }
        let mut tx: Typed<ByteQueue, Record> = Typed::new(q.try_clone().unwrap());
        for i in 0..N {
            tx.send_timeout(&record(i), LIMIT).unwrap();
        }
        // Oversized on the sending side: one error, then the queue still works.
        assert_too_large(tx.send(&big(1000)), 512);
        tx.send_timeout(&record(N), LIMIT).unwrap();
        tx.get_ref().send_timeout(&garbage()[0], LIMIT).unwrap();
        drop(q);
        std::process::exit(0);
    }
    let name = common::unique("codec-bq");
    let _g = common::ShmGuard::new(&name);
    // Small capacity: the producer waits for the consumer.
    let q = ByteQueue::create(&name, 4, 512).unwrap();
    let mut rx: Typed<ByteQueue, Record> = Typed::new(q);
    let mut c = start_with_garbage(
        "byte_queue_round_trip_across_processes",
        "producer",
        &name,
        &mut rx,
    );
    for i in 0..=N {
        let want = record(i);
        match i % 3 {
            0 => assert_eq!(rx.recv_timeout(LIMIT).unwrap(), want),
            1 => {
                // SAFETY: the only other process is our own child, which follows the
                // queue protocol.
                let m = unsafe { rx.recv_in_place(Some(LIMIT)).unwrap() };
                assert_eq!(m.decode().unwrap(), want);
            }
            _ => {
                let r: RecordRef = rx.recv_borrowed(Some(LIMIT)).unwrap();
                assert_eq!((r.id, r.name, &r.kind), (want.id, &*want.name, &want.kind));
                assert!(r.tags.iter().eq(want.tags.iter()));
                assert_eq!((r.samples, r.note), (want.samples, want.note.as_deref()));
            }
        }
    }
    // Garbage decoded in place is an error too, and releases the slot.
    // SAFETY: as above.
    let m = unsafe { rx.recv_in_place(Some(LIMIT)).unwrap() };
    assert_corrupt(m.decode());
    drop(m);
    common::wait_ok(&mut c, LIMIT);
    // Drained. (Its producer has gone too: `Disconnected` once a sweep has seen that,
    // which tests/queue_disconnect.rs checks.)
    assert!(matches!(
        rx.try_recv(),
        Err(Error::WouldBlock { .. } | Error::Disconnected { .. })
    ));
}

#[test]
fn byte_queue_oversized_leaves_both_modes_usable() {
    for mode in [Mode::Spsc, Mode::Mpmc] {
        let q = ByteQueue::options()
            .mode(mode)
            .capacity(2)
            .anonymous(64)
            .unwrap();
        let mut q: Typed<ByteQueue, Record> = Typed::new(q);
        for _ in 0..3 {
            // Each failed send claims and gives back a slot: the ring must move on.
            assert_too_large(q.try_send(&big(100)), 64);
            q.try_send(&record(2)).unwrap();
            assert_eq!(q.try_recv().unwrap(), record(2));
        }
        q.try_send(&record(0)).unwrap();
        q.try_send(&record(1)).unwrap();
        // Full: WouldBlock before the size is known (see the module docs).
        assert!(matches!(
            q.try_send(&big(100)),
            Err(Error::WouldBlock { .. })
        ));
        assert_eq!(q.try_recv().unwrap(), record(0));
        assert_eq!(q.try_recv().unwrap(), record(1));
        // An empty message (a peer's) is garbage for a Record.
        q.get_mut().try_send(&[]).unwrap();
        assert_corrupt(q.try_recv());
    }
}

// ---------------------------------------------------------------------------------------
// Pipe

#[test]
fn pipe_round_trip_across_processes() {
    if let Some(role) = common::role() {
        assert_eq!(role, "echo");
        // SAFETY: the parent passed the pipe end as fd 3 (Pipe::pass_to); nothing else in
        // this process owns fd 3.
        let p = Pipe::try_from(unsafe { OwnedFd::from_raw_fd(3) }).unwrap();
        let mut p: Typed<Pipe, Reply, Record> = Typed::new(p);
        loop {
            let reply = match p.recv_timeout(LIMIT) {
                Ok(r) if r.id == u64::MAX => {
                    // Garbage back, untyped, then carry on.
                    for g in garbage() {
                        p.get_ref().send(&g).unwrap();
                    }
                    continue;
                }
                Ok(r) => Reply::Echo(r),
                Err(e @ Error::Corrupt { .. }) => Reply::Garbage(e.to_string()),
                Err(Error::Disconnected { .. }) => std::process::exit(0),
                Err(e) => panic!("{e}"),
            };
            p.send_timeout(&reply, LIMIT).unwrap();
        }
    }
    let (mine, theirs) = Pipe::pair().unwrap();
    let mut cmd = common::child("pipe_round_trip_across_processes", "echo", &[]);
    theirs.pass_to(&mut cmd, 3);
    let mut c = cmd.spawn().unwrap();
    drop(cmd);
    let mut p: Typed<Pipe, Record, Reply> = Typed::new(mine);
    // A value larger than one packet goes through send (chunked), not try_send.
    let large = big(3 * CHUNK);
    assert_too_large(p.try_send(&large), CHUNK);
    for i in 0..N {
        p.send_timeout(&record(i), LIMIT).unwrap();
        assert_eq!(p.recv_timeout(LIMIT).unwrap(), Reply::Echo(record(i)));
    }
    p.send_timeout(&large, LIMIT).unwrap();
    assert_eq!(p.recv_timeout(LIMIT).unwrap(), Reply::Echo(large));
    // Garbage to the child: it reports a decode error and keeps serving.
    for g in garbage() {
        p.get_ref().send(&g).unwrap();
        match p.recv_timeout(LIMIT).unwrap() {
            Reply::Garbage(e) => assert!(e.contains("does not decode"), "{e}"),
            r => panic!("{r:?}"),
        }
    }
    // Garbage from the child: decode errors here, then the channel still works.
    p.send_timeout(
        &Record {
            id: u64::MAX,
            ..record(0)
        },
        LIMIT,
    )
    .unwrap();
    for _ in garbage() {
        match p.recv_timeout(LIMIT) {
            Err(Error::Corrupt { detail, .. }) => assert!(detail.contains("Reply"), "{detail}"),
            r => panic!("{r:?}"),
        }
    }
    p.send_timeout(&record(7), LIMIT).unwrap();
    assert!(p.get_ref().poll(Some(LIMIT)).unwrap());
    assert_eq!(p.try_recv().unwrap(), Reply::Echo(record(7)));
    assert!(matches!(p.try_recv(), Err(Error::WouldBlock { .. })));
    drop(p); // end of stream: the child exits 0
    common::wait_ok(&mut c, LIMIT);
}

// ---------------------------------------------------------------------------------------
// FIFO

#[test]
fn fifo_round_trip_across_processes() {
    if let Some(role) = common::role() {
        assert_eq!(role, "writer");
        let w = Fifo::open_writer(&common::args()[0], Some(LIMIT)).unwrap();
        for g in garbage() {
            w.send_timeout(&g, LIMIT).unwrap();
        }
        let mut w: Typed<_, Record> = Typed::new(w);
        assert_too_large(w.send(&big(MAX_ATOMIC_PAYLOAD)), MAX_ATOMIC_PAYLOAD);
        for i in 0..N {
            w.send_timeout(&record(i), LIMIT).unwrap();
        }
        std::process::exit(0);
    }
    let path: PathBuf = std::env::temp_dir().join(common::unique("codec-fifo"));
    Fifo::create(&path, 0o600).unwrap();
    let _g = common::PathGuard(path.clone());
    let mut rx: Typed<_, Record> = Typed::new(Fifo::open_reader(&path).unwrap());
    let mut c = start_with_garbage(
        "fifo_round_trip_across_processes",
        "writer",
        path.to_str().unwrap(),
        &mut rx,
    );
    for i in 0..N {
        assert_eq!(rx.recv_timeout(LIMIT).unwrap(), record(i));
    }
    common::wait_ok(&mut c, LIMIT);
    assert!(matches!(
        rx.recv_timeout(LIMIT),
        Err(Error::Disconnected { .. })
    ));
    // A value exactly at the frame limit passes.
    let mut w: Typed<_, Record> = Typed::new(Fifo::open_writer(&path, Some(LIMIT)).unwrap());
    let mut at = big(MAX_ATOMIC_PAYLOAD - 100);
    let len = postcard::to_stdvec(&at).unwrap().len();
    at.name.push_str(&"y".repeat(MAX_ATOMIC_PAYLOAD - len));
    assert_eq!(postcard::to_stdvec(&at).unwrap().len(), MAX_ATOMIC_PAYLOAD);
    w.send(&at).unwrap();
    assert_eq!(rx.try_recv().unwrap(), at);
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { .. })));
}

// ---------------------------------------------------------------------------------------
// MessageQueue

/// Unlinks a queue when dropped (also on panic).
struct MqGuard(String);

impl Drop for MqGuard {
    fn drop(&mut self) {
        let _ = MessageQueue::unlink(&self.0);
    }
}

#[test]
fn message_queue_round_trip_across_processes() {
    const SIZE: usize = 1024;
    if let Some(role) = common::role() {
        assert_eq!(role, "producer");
        let q = MessageQueue::open(&common::args()[0]).unwrap();
        for g in garbage() {
            q.send_timeout(&g, 0, LIMIT).unwrap();
        }
        let mut tx: Typed<_, Record> = Typed::new(q);
        assert_too_large(tx.send(&big(SIZE)), SIZE);
        for i in 0..N {
            tx.send_timeout(&record(i), LIMIT).unwrap();
        }
        // Priorities: the urgent one overtakes whatever is still queued.
        tx.send_priority(&record(N), 5, Some(LIMIT)).unwrap();
        std::process::exit(0);
    }
    let name = common::unique("codec-mq");
    let q = MessageQueue::create(&name, 8, SIZE).unwrap();
    let _g = MqGuard(name.clone());
    let mut rx: Typed<_, Record> = Typed::new(q);
    let mut c = start_with_garbage(
        "message_queue_round_trip_across_processes",
        "producer",
        &name,
        &mut rx,
    );
    let mut got = Vec::new();
    for _ in 0..=N {
        got.push(rx.recv_priority(Some(LIMIT)).unwrap());
    }
    common::wait_ok(&mut c, LIMIT);
    // Everything arrived; priority-0 messages in order.
    let urgent = got.iter().position(|(_, p)| *p == 5).unwrap();
    assert_eq!(got.remove(urgent).0, record(N));
    assert!(got.iter().map(|(r, _)| r.clone()).eq((0..N).map(record)));
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { .. })));
}
