//! `shmkit::inspect::object` over every kind of object: header facts and typed state,
//! snapshot-only reads, a writer that died in another process, foreign and missing
//! objects.

mod common;

use std::time::Duration;

use common::{ShmGuard, unique};
use shmkit::inspect::{self, Object, ObjectState, Reads, SyncState};
use shmkit::latest::{Board, Latest};
use shmkit::queue::{ByteQueue, Queue};
use shmkit::segment::Kind;
use shmkit::sync::{Barrier, Condvar, Event, Mutex, RwLock, Semaphore};
use shmkit::topic::Topic;
use shmkit::{Array, Value};

const LONG: Duration = Duration::from_secs(20);

fn kind(o: &Object) -> Kind {
    o.file.header.as_ref().expect("a shmkit header").kind()
}

fn snapshot(name: &str) -> Object {
    inspect::object(name, Reads::Snapshot).expect("inspect")
}

#[test]
fn values_and_arrays_report_their_header_facts() {
    let (v, a) = (unique("insp-v"), unique("insp-a"));
    let _g = (ShmGuard::new(&v), ShmGuard::new(&a));
    let _value = Value::<u32>::create(&v, 7).unwrap();
    let _array = Array::<u16>::create(&a, 10, 0).unwrap();
    let o = snapshot(&v);
    assert_eq!(kind(&o), Kind::Value);
    assert_eq!(o.state, ObjectState::Value { size: 4 });
    assert_eq!(o.file.in_use, Some(true));
    assert_eq!(o.file.creator_holds, Some(true));
    assert!(!o.file.is_foreign() && !o.file.initializing);
    let o = snapshot(&a);
    assert_eq!(kind(&o), Kind::Array);
    assert_eq!(
        o.state,
        ObjectState::Array {
            len: 10,
            elem_size: 2
        }
    );
}

#[test]
fn sync_objects_report_their_typed_state() {
    let names: Vec<String> = ["m", "e", "c", "s", "b", "rw"]
        .iter()
        .map(|t| unique(&format!("insp-{t}")))
        .collect();
    let _g: Vec<ShmGuard> = names.iter().map(|n| ShmGuard::new(n)).collect();
    let m = Mutex::<u64>::create(&names[0], 5).unwrap();
    let e = Event::create(&names[1]).unwrap();
    let _c = Condvar::create(&names[2]).unwrap();
    let _s = Semaphore::create(&names[3], 3).unwrap();
    let _b = Barrier::create(&names[4], 2).unwrap();
    let rw = RwLock::<u64>::create(&names[5], 0).unwrap();

    let guard = m.lock().unwrap().into_guard();
    let ObjectState::Sync(SyncState::Mutex(o)) = snapshot(&names[0]).state else {
        panic!("not a mutex state");
    };
    assert_eq!(o.pid, std::process::id());
    assert!(!o.owner_died && o.token != 0);
    drop(guard);
    let ObjectState::Sync(SyncState::Mutex(o)) = snapshot(&names[0]).state else {
        panic!("not a mutex state");
    };
    assert_eq!(o.token, 0);

    e.set();
    assert_eq!(
        snapshot(&names[1]).state,
        ObjectState::Sync(SyncState::Event {
            set: true,
            sleepers: 0
        })
    );
    assert_eq!(
        snapshot(&names[2]).state,
        ObjectState::Sync(SyncState::Condvar { waiters: 0 })
    );
    assert!(matches!(
        snapshot(&names[3]).state,
        ObjectState::Sync(SyncState::Semaphore {
            count: 3,
            bound: None,
            corrupt: false,
            ..
        })
    ));
    assert!(matches!(
        snapshot(&names[4]).state,
        ObjectState::Sync(SyncState::Barrier {
            arrived: 0,
            parties: 2,
            ..
        })
    ));
    let w = rw.write().unwrap();
    let ObjectState::Sync(SyncState::RwLock {
        state,
        writer_alive,
    }) = snapshot(&names[5]).state
    else {
        panic!("not an rwlock state");
    };
    assert!(state.write_locked && writer_alive);
    assert_eq!(state.writer_pid, std::process::id());
    drop(w);
}

#[test]
fn queues_and_topics_are_read_only_when_asked_to_open_them() {
    let (q, bq, t) = (unique("insp-q"), unique("insp-bq"), unique("insp-t"));
    let _g = (ShmGuard::new(&q), ShmGuard::new(&bq), ShmGuard::new(&t));
    let queue = Queue::<u64>::create(&q, 8).unwrap();
    queue.send(1).unwrap();
    queue.send(2).unwrap();
    let bytes = ByteQueue::create(&bq, 4, 64).unwrap();
    bytes.send(b"x").unwrap();
    let topic = Topic::<u32>::create(&t, 16).unwrap();
    let publisher = topic.publisher().unwrap();
    let _sub = topic.subscribe().unwrap();
    publisher.send(9).unwrap();

    // Snapshots never map: the state is not read, the header is.
    for (n, k) in [(&q, Kind::Queue), (&bq, Kind::ByteQueue), (&t, Kind::Topic)] {
        let o = snapshot(n);
        assert_eq!(kind(&o), k);
        assert_eq!(o.state, ObjectState::NotRead, "{k:?}");
    }
    let ObjectState::Queue(s) = inspect::object(&q, Reads::Open).unwrap().state else {
        panic!("not a queue state");
    };
    assert_eq!((s.kind, s.capacity, s.len, s.sent), (Kind::Queue, 8, 2, 2));
    assert_eq!(s, inspect::stats(&q).unwrap());
    let ObjectState::Queue(s) = inspect::object(&bq, Reads::Open).unwrap().state else {
        panic!("not a queue state");
    };
    assert_eq!((s.kind, s.capacity, s.len), (Kind::ByteQueue, 4, 1));
    let ObjectState::Topic(s) = inspect::object(&t, Reads::Open).unwrap().state else {
        panic!("not a topic state");
    };
    assert_eq!((s.capacity, s.published), (16, 1));
    assert!(s.participants.iter().any(|p| p.subscriber && p.lag == 1));
    assert!(s.participants.iter().any(|p| p.publisher && p.alive));
}

#[test]
fn latest_reports_version_and_writer() {
    let (l, b) = (unique("insp-l"), unique("insp-board"));
    let _g = (ShmGuard::new(&l), ShmGuard::new(&b));
    let mut latest = Latest::<u64>::create(&l, 0).unwrap();
    assert_eq!(
        snapshot(&l).state,
        ObjectState::Latest {
            slots: 1,
            value_bytes: 8,
            version: 0,
            writing: false,
            writer: None
        }
    );
    latest.write(&1).unwrap();
    latest.write(&2).unwrap();
    let ObjectState::Latest {
        version, writer, ..
    } = snapshot(&l).state
    else {
        panic!("not a latest state");
    };
    assert_eq!(version, 2);
    assert_eq!(
        writer,
        Some(inspect::Writer {
            pid: std::process::id(),
            alive: true
        })
    );
    let _board = Board::<[u8; 24]>::create(&b, 5, [0; 24]).unwrap();
    assert!(matches!(
        snapshot(&b).state,
        ObjectState::Latest {
            slots: 5,
            value_bytes: 24,
            ..
        }
    ));
}

/// A writer in another process claims the role and exits: the kernel dropped its token,
/// so the inspection says the recorded writer is dead.
#[test]
fn latest_writer_that_exited_is_reported_dead() {
    if let Some(role) = common::role() {
        assert_eq!(role, "writer");
        let mut w = Latest::<u64>::open(&common::args()[0]).unwrap();
        w.write(&42).unwrap();
        std::process::exit(0);
    }
    let l = unique("insp-ldead");
    let _g = ShmGuard::new(&l);
    let _cell = Latest::<u64>::create(&l, 0).unwrap();
    let mut c = common::child(
        "latest_writer_that_exited_is_reported_dead",
        "writer",
        &[&l],
    )
    .spawn()
    .unwrap();
    let child_pid = c.id();
    common::wait_ok(&mut c, LONG);
    let ObjectState::Latest {
        version, writer, ..
    } = snapshot(&l).state
    else {
        panic!("not a latest state");
    };
    assert_eq!(version, 1);
    assert_eq!(
        writer,
        Some(inspect::Writer {
            pid: child_pid,
            alive: false
        })
    );
}

#[test]
fn foreign_missing_and_file_backed_objects() {
    let f = unique("insp-foreign");
    let _g = ShmGuard::new(&f);
    std::fs::write(format!("/dev/shm/{f}"), vec![0u8; 4096]).unwrap();
    let o = snapshot(&f);
    assert!(o.file.is_foreign());
    assert_eq!(o.state, ObjectState::Unknown);

    let missing = unique("insp-missing");
    let e = inspect::object(&missing, Reads::Snapshot).unwrap_err();
    assert_eq!(e.errno(), Some(nix::errno::Errno::ENOENT));
    assert!(e.to_string().contains(&missing) && !e.to_string().contains("/dev/shm"));
    assert!(inspect::object("no/such", Reads::Snapshot).is_err());

    let dir = std::env::temp_dir().join(unique("insp-dir"));
    std::fs::create_dir(&dir).unwrap();
    let _d = common::DirGuard(dir.clone());
    let path = dir.join("value");
    let _v = Value::<u64>::create_file(&path, 3).unwrap();
    let o = inspect::object_at(&path, Reads::Open).unwrap();
    assert_eq!(o.file.path, path);
    assert_eq!(kind(&o), Kind::Value);
    assert_eq!(o.state, ObjectState::Value { size: 8 });
}
