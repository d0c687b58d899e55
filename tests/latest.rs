//! `Latest<T>` and `Board<T>` across real processes: a writer process and reader
//! processes (never a torn value, versions monotonic), `wait_for_update` woken by another
//! process, a writer SIGKILLed in the middle of a write (readers get the bounded error, a
//! new writer takes over and repairs the value), a writer killed at random points of a
//! write loop, and hostile processes that keep the sequence odd or flip it forever
//! (reads fail after bounded retries, never hang). `KeyedBoard`: keys looked up in
//! another process, a rewritten key table refused on open and harmless to open handles.

mod common;

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmkit::Error;
use shmkit::Segment;
use shmkit::latest::{Board, KeyedBoard, Latest};

const LONG: Duration = Duration::from_secs(60);
/// Children stop by themselves after this, so a failing test leaves no orphans behind.
const CHILD_LIFETIME: Duration = Duration::from_secs(90);
/// Offset of slot 0's sequence word in the payload (src/latest/cell.rs, "Memory layout").
const SEQ0: usize = 128;

type Val = [u64; 16];

fn arg(i: usize) -> String {
    common::args()[i].clone()
}

/// Runs `f` on a thread and fails the test if it does not return within `limit` (a hang
/// is exactly what these tests look for).
fn bounded<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("call did not return within {limit:?}"))
}

/// Child side: blocks until the parent closes our stdin or kills us.
fn park_until_released() {
    let _ = std::io::stdin().read(&mut [0u8; 1]);
}

/// The raw sequence word of slot 0, as a hostile process reaches it.
fn raw_seq(seg: &Segment) -> &AtomicU64 {
    assert!(seg.payload_len() >= SEQ0 + 8);
    // SAFETY: in bounds (checked), 8-aligned (the payload is 64-aligned), mapped for as
    // long as `seg` lives; the word is accessed atomically by everybody.
    unsafe { &*(seg.payload_ptr().add(SEQ0) as *const AtomicU64) }
}

fn read_ok(l: &Latest<Val>) -> Option<(Val, u64)> {
    match l.read() {
        Ok(r) => Some(r),
        Err(Error::WouldBlock { .. }) => None,
        Err(e) => panic!("unexpected read error: {e}"),
    }
}

#[test]
fn writer_and_reader_processes_never_see_a_torn_value() {
    const WRITES: u64 = 100_000;
    if let Some(role) = common::role() {
        let name = arg(0);
        let start = Instant::now();
        match role.as_str() {
            "writer" => {
                let mut l = Latest::<Val>::open(&name).unwrap();
                for i in 1..=WRITES {
                    assert_eq!(l.write(&[i; 16]).unwrap(), i);
                }
            }
            "reader" => {
                let l = Latest::<Val>::open(&name).unwrap();
                let (mut last, mut oks, mut busy) = (0u64, 0u64, 0u64);
                while last < WRITES && start.elapsed() < CHILD_LIFETIME {
                    let Some((v, version)) = read_ok(&l) else {
                        busy += 1;
                        continue;
                    };
                    assert!(v.iter().all(|&w| w == v[0]), "torn value {v:?}");
                    assert_eq!(v[0], version, "version and value agree");
                    assert!(version >= last, "version went back: {version} < {last}");
                    last = version;
                    oks += 1;
                }
                assert_eq!(last, WRITES, "saw the last write");
                common::tell(&format!("reader ok={oks} busy={busy}"));
            }
            _ => unreachable!(),
        }
        std::process::exit(0);
    }
    let name = common::unique("latest-rw");
    let _g = common::ShmGuard::new(&name);
    let _l = Latest::<Val>::create(&name, [0; 16]).unwrap();
    let test = "writer_and_reader_processes_never_see_a_torn_value";
    let mut readers: Vec<_> = (0..2)
        .map(|_| common::spawn_talking(test, "reader", &[&name]))
        .collect();
    let mut w = common::child(test, "writer", &[&name]).spawn().unwrap();
    common::wait_ok(&mut w, LONG);
    for (c, l) in &mut readers {
        eprintln!("{}", l.next(LONG));
        common::wait_ok(c, LONG);
    }
}

#[test]
fn board_slots_across_processes() {
    if let Some(role) = common::role() {
        assert_eq!(role, "writer");
        let mut b = Board::<u32>::open(&arg(0)).unwrap();
        for slot in 0..8 {
            b.write(slot, &(slot * 10)).unwrap();
        }
        std::process::exit(0);
    }
    let name = common::unique("latest-board");
    let _g = common::ShmGuard::new(&name);
    let b = Board::<u32>::create(&name, 8, 7).unwrap();
    let mut c = common::child("board_slots_across_processes", "writer", &[&name])
        .spawn()
        .unwrap();
    let (v, ver) = b.wait_for_update(7, 0, LONG).unwrap();
    assert_eq!((v, ver), (70, 1));
    common::wait_ok(&mut c, LONG);
    for slot in 0..8 {
        assert_eq!(b.read(slot).unwrap(), (slot * 10, 1));
    }
    assert!(b.read(8).is_err());
}

#[test]
fn wait_for_update_is_woken_by_another_process() {
    if let Some(role) = common::role() {
        assert_eq!(role, "waiter");
        let l = Latest::<u64>::open(&arg(0)).unwrap();
        common::tell("ready");
        let (v, ver) = l.wait_for_update(0, LONG).unwrap();
        common::tell(&format!("{v} {ver}"));
        std::process::exit(0);
    }
    let name = common::unique("latest-wait");
    let _g = common::ShmGuard::new(&name);
    let mut l = Latest::<u64>::create(&name, 1).unwrap();
    let (mut c, lis) = common::spawn_talking(
        "wait_for_update_is_woken_by_another_process",
        "waiter",
        &[&name],
    );
    assert_eq!(lis.next(LONG), "ready");
    l.write(&42).unwrap();
    assert_eq!(lis.next(LONG), "42 1");
    common::wait_ok(&mut c, LONG);
}

#[test]
fn writer_killed_mid_write_readers_get_the_bounded_error_and_a_new_writer_repairs() {
    if let Some(role) = common::role() {
        assert_eq!(role, "dying-writer");
        let mut l = Latest::<Val>::open(&arg(0)).unwrap();
        l.write(&[1; 16]).unwrap();
        // Stop in the middle of the second write: 5 of 16 words written, seq odd.
        l.write_torn_for_test(&[2; 16], 5).unwrap();
        common::tell("torn");
        park_until_released();
        std::process::exit(0);
    }
    let name = common::unique("latest-kill");
    let _g = common::ShmGuard::new(&name);
    let mut l = Latest::<Val>::create(&name, [0; 16]).unwrap();
    let (mut c, lis) = common::spawn_talking(
        "writer_killed_mid_write_readers_get_the_bounded_error_and_a_new_writer_repairs",
        "dying-writer",
        &[&name],
    );
    assert_eq!(lis.next(LONG), "torn");
    // The writer is alive: reads fail after their retries, writes are refused.
    let n = name.clone();
    let e = bounded(LONG, move || {
        Latest::<Val>::open(&n).unwrap().read().unwrap_err()
    });
    assert!(matches!(e, Error::WouldBlock { .. }), "{e}");
    assert!(matches!(l.write(&[3; 16]), Err(Error::WouldBlock { .. })));
    assert_eq!(l.writer_pid(), Some(c.id()));
    c.kill().unwrap();
    let _ = common::wait_bounded(&mut c, LONG);
    // Dead writer, odd sequence: the bounded error names it; never the torn value.
    let n = name.clone();
    let e = bounded(LONG, move || {
        Latest::<Val>::open(&n).unwrap().read().unwrap_err()
    });
    assert!(matches!(e, Error::Disconnected { .. }), "{e}");
    assert!(e.to_string().contains(&c.id().to_string()), "{e}");
    // A wait for an update does not take the torn value for one: it times out.
    assert!(
        l.wait_for_update(1, Duration::from_millis(20))
            .unwrap_err()
            .is_timeout()
    );
    // A new writer takes the role over; `update` refuses the torn value; a write repairs.
    assert!(l.claim_writer().unwrap(), "took a dead writer's role over");
    assert!(l.update(|v| v[0] = 9).is_err());
    assert_eq!(l.write(&[3; 16]).unwrap(), 2);
    assert_eq!(
        Latest::<Val>::open(&name).unwrap().read().unwrap(),
        ([3; 16], 2)
    );
}

#[test]
fn writer_killed_at_random_points_never_leaves_a_readable_torn_value() {
    if let Some(role) = common::role() {
        assert_eq!(role, "looping-writer");
        let mut l = Latest::<Val>::open(&arg(0)).unwrap();
        let start = Instant::now();
        let mut i = l.version();
        common::tell("writing");
        while start.elapsed() < CHILD_LIFETIME {
            i += 1;
            l.write(&[i; 16]).unwrap();
        }
        std::process::exit(0);
    }
    let name = common::unique("latest-kill-loop");
    let _g = common::ShmGuard::new(&name);
    let mut l = Latest::<Val>::create(&name, [0; 16]).unwrap();
    let mut rng = common::xorshift(0x1a7e57);
    let (mut torn, mut whole) = (0, 0);
    for _ in 0..6 {
        l.release_writer();
        let (mut c, lis) = common::spawn_talking(
            "writer_killed_at_random_points_never_leaves_a_readable_torn_value",
            "looping-writer",
            &[&name],
        );
        assert_eq!(lis.next(LONG), "writing");
        // Let it write for a random while (not synchronisation: where the kill lands).
        let t = Instant::now();
        let d = Duration::from_micros(200 + rng() % 3000);
        while t.elapsed() < d {
            std::hint::spin_loop();
        }
        c.kill().unwrap();
        let _ = common::wait_bounded(&mut c, LONG);
        match l.read() {
            Ok((v, version)) => {
                assert!(v.iter().all(|&w| w == v[0]), "torn value {v:?}");
                assert_eq!(v[0], version);
                whole += 1;
            }
            Err(Error::Disconnected { .. }) => torn += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
        // The parent takes over (the next child writes after it released again).
        let next = l.version() + 1;
        l.write(&[next; 16]).unwrap();
        assert_eq!(l.read().unwrap(), ([next; 16], next));
    }
    eprintln!("kills: {whole} between writes, {torn} mid-write");
}

#[test]
fn hostile_sequence_odd_or_flipping_gives_a_bounded_error() {
    if let Some(role) = common::role() {
        let seg = Segment::open(&arg(0)).unwrap();
        let seq = raw_seq(&seg);
        let start = Instant::now();
        // The first hostile store happens before the parent is told to read.
        if role == "odd" {
            seq.store(7, Ordering::Relaxed);
        }
        common::tell("hostile");
        while start.elapsed() < CHILD_LIFETIME {
            match role.as_str() {
                "odd" => seq.store(7, Ordering::Relaxed),
                "flip" => {
                    seq.fetch_add(1, Ordering::Relaxed);
                }
                _ => unreachable!(),
            }
        }
        std::process::exit(0);
    }
    for mode in ["odd", "flip"] {
        let name = common::unique("latest-hostile");
        let _g = common::ShmGuard::new(&name);
        let mut l = Latest::<Val>::create(&name, [5; 16]).unwrap();
        l.write(&[6; 16]).unwrap();
        let (mut c, lis) = common::spawn_talking(
            "hostile_sequence_odd_or_flipping_gives_a_bounded_error",
            mode,
            &[&name],
        );
        assert_eq!(lis.next(LONG), "hostile");
        let n = name.clone();
        let results = bounded(LONG, move || {
            let r = Latest::<Val>::open(&n).unwrap();
            let reads: Vec<_> = (0..50).map(|_| r.read()).collect();
            let waited = r.wait_for_update(u64::MAX, Duration::from_millis(50));
            (reads, waited)
        });
        let (reads, waited) = results;
        let mut errors = 0;
        for r in reads {
            match r {
                // A flipper that was descheduled during a whole copy: the value is the
                // writer's (the hostile process changes only the sequence).
                Ok((v, _)) => assert_eq!(v, [6; 16]),
                Err(Error::WouldBlock { .. } | Error::Disconnected { .. }) => errors += 1,
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        if mode == "odd" {
            assert_eq!(errors, 50, "an odd sequence is never read as consistent");
        }
        // The wait ends (an update, an error or the timeout), never hangs.
        if let Ok((v, _)) = waited {
            assert_eq!(v, [6; 16]);
        }
        c.kill().unwrap();
        let _ = common::wait_bounded(&mut c, LONG);
        eprintln!("{mode}: {errors} of 50 reads failed (bounded)");
    }
}

#[test]
fn wait_for_update_async_is_woken_by_another_process() {
    if let Some(role) = common::role() {
        assert_eq!(role, "late-writer");
        let mut l = Latest::<u64>::open(&arg(0)).unwrap();
        common::tell("ready");
        park_until_released();
        l.write(&7).unwrap();
        std::process::exit(0);
    }
    let name = common::unique("latest-async");
    let _g = common::ShmGuard::new(&name);
    let l = Latest::<u64>::create(&name, 0).unwrap();
    let (mut c, lis) = common::spawn_talking(
        "wait_for_update_async_is_woken_by_another_process",
        "late-writer",
        &[&name],
    );
    assert_eq!(lis.next(LONG), "ready");
    let stdin = c.stdin.take();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (r, ()) = rt.block_on(async {
        // The wait is polled (and registered) first; then the writer is let go.
        tokio::join!(l.wait_for_update_async(0, Some(LONG)), async {
            tokio::task::yield_now().await;
            drop(stdin);
        })
    });
    assert_eq!(r.unwrap(), (7, 1));
    common::wait_ok(&mut c, LONG);
    let e = rt
        .block_on(l.wait_for_update_async(1, Some(Duration::from_millis(20))))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(
        shmkit::aio::registrations().0,
        0,
        "no registration left behind"
    );
}

/// Instrument ids, as a market-data board would key its quotes.
type Key = [u8; 8];

fn key(i: u32) -> Key {
    let mut k = *b"INSTR000";
    k[5..].copy_from_slice(format!("{i:03}").as_bytes());
    k
}

#[test]
fn keyed_board_across_processes() {
    if let Some(role) = common::role() {
        assert_eq!(role, "writer");
        let mut b = KeyedBoard::<Key, u64>::open(&arg(0)).unwrap();
        assert_eq!(b.keys(), (0..16).rev().map(key).collect::<Vec<_>>());
        for i in 0..16 {
            b.write(&key(i), &u64::from(i * 100)).unwrap();
        }
        assert!(b.write(&key(16), &0).is_err());
        std::process::exit(0);
    }
    let name = common::unique("latest-keyed");
    let _g = common::ShmGuard::new(&name);
    // Slot order is the entries' order (here the reverse of the keys' numbers).
    let entries: Vec<(Key, u64)> = (0..16).rev().map(|i| (key(i), 7)).collect();
    let b = KeyedBoard::<Key, u64>::create(&name, &entries).unwrap();
    let mut c = common::child("keyed_board_across_processes", "writer", &[&name])
        .spawn()
        .unwrap();
    assert_eq!(b.wait_for_update(&key(15), 0, LONG).unwrap(), (1500, 1));
    common::wait_ok(&mut c, LONG);
    for i in 0..16 {
        assert_eq!(b.read(&key(i)).unwrap(), (u64::from(i * 100), 1));
        assert_eq!(b.slot(&key(i)), Some(15 - i));
    }
    // The slot view and the typed checks.
    assert_eq!(
        Board::<u64>::open(&name).unwrap().read(0).unwrap(),
        (1500, 1)
    );
    assert!(matches!(
        KeyedBoard::<u64, u64>::open(&name),
        Err(Error::Mismatch { .. })
    ));
    assert!(matches!(
        KeyedBoard::<Key, u32>::open(&name),
        Err(Error::Mismatch { .. })
    ));
    let plain = common::unique("latest-unkeyed");
    let _g2 = common::ShmGuard::new(&plain);
    Board::<u64>::create(&plain, 4, 0).unwrap();
    assert!(matches!(
        KeyedBoard::<Key, u64>::open(&plain),
        Err(Error::Mismatch { .. })
    ));
}

#[test]
fn keyed_board_rewritten_key_table_is_refused_and_harms_no_open_handle() {
    if let Some(role) = common::role() {
        assert_eq!(role, "hostile");
        // A process with write access rewrites the key table: key 1 := key 0.
        let seg = Segment::open(&arg(0)).unwrap();
        let n = 4;
        let off = seg.payload_len() - n * size_of::<Key>();
        // SAFETY: off..payload_len is inside the payload (the key table is its end);
        // this test process is the hostile writer the trust model describes.
        unsafe {
            let p = seg.payload_ptr().add(off);
            std::ptr::copy_nonoverlapping(p, p.add(size_of::<Key>()), size_of::<Key>());
        }
        std::process::exit(0);
    }
    let name = common::unique("latest-keyhostile");
    let _g = common::ShmGuard::new(&name);
    let mut b = KeyedBoard::<Key, u64>::create(
        &name,
        &(0..4).map(|i| (key(i), u64::from(i))).collect::<Vec<_>>(),
    )
    .unwrap();
    let mut c = common::child(
        "keyed_board_rewritten_key_table_is_refused_and_harms_no_open_handle",
        "hostile",
        &[&name],
    )
    .spawn()
    .unwrap();
    common::wait_ok(&mut c, LONG);
    // A new handle sees a key twice: an error naming the corruption, no panic.
    match KeyedBoard::<Key, u64>::open(&name) {
        Err(Error::Corrupt { detail, .. }) => assert!(detail.contains("repeats"), "{detail}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The handle opened before keeps its private index.
    assert_eq!(b.read(&key(1)).unwrap(), (1, 0));
    b.write(&key(1), &11).unwrap();
    assert_eq!(b.board().read(1).unwrap(), (11, 1));
}
