//! A hostile or buggy peer writes garbage into a queue's shared state: the queue must
//! answer `Error::Corrupt` (or carry on), never panic, never read out of bounds, never
//! hang.

mod common;

use std::time::Duration;

use shmkit::queue::{ByteQueue, Mode, Queue};
use shmkit::{Error, Segment};

/// Ring layout (see src/queue/ring.rs): control lines, then 128-byte participant
/// entries, then the slots (128-aligned).
fn slots_off(max_handles: usize) -> usize {
    (768 + 128 * max_handles).next_multiple_of(128)
}

fn poke(seg: &Segment, off: usize, v: u64) {
    assert!(off + 8 <= seg.payload_len());
    // SAFETY: in bounds and 8-aligned (offsets are multiples of 8 from a 64-aligned
    // payload); the test plays the hostile peer, writing with a volatile store.
    unsafe { std::ptr::write_volatile(seg.payload_ptr().add(off) as *mut u64, v) };
}

fn is_corrupt(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. })
}

#[test]
fn garbage_sequence_numbers_are_reported() {
    for mode in [Mode::Spsc, Mode::Mpmc] {
        let name = common::unique("qc-seq");
        let _g = common::ShmGuard::new(&name);
        let q = Queue::<u64>::options()
            .mode(mode)
            .capacity(4)
            .max_handles(2)
            .create(&name)
            .unwrap();
        let raw = Segment::open(&name).unwrap();
        // u64 slots: 8-byte seq + 8 bytes of data.
        poke(&raw, slots_off(2), 0xdead_beef_dead_beef);
        let e: shmkit::Error = q.try_recv().unwrap_err().into();
        assert!(is_corrupt(&e), "{mode:?}: {e}");
        assert!(e.to_string().contains("corrupt"), "{e}");
        let e: shmkit::Error = q.try_send(1).unwrap_err().into();
        assert!(is_corrupt(&e), "{mode:?}: {e}");
        let e: shmkit::Error = q
            .recv_timeout(Duration::from_millis(20))
            .unwrap_err()
            .into();
        assert!(is_corrupt(&e), "{mode:?}: {e}");
    }
}

/// A 4-slot SPSC queue of u64 (16-byte slots) named `name` after one lap of sends and
/// receives (positions 0..4): the producer's cached limit is used up, so its next send
/// reads `head` again. Returns it with the raw segment.
fn spsc_after_one_lap(name: &str) -> (Queue<u64>, Segment) {
    let q = Queue::<u64>::options()
        .mode(Mode::Spsc)
        .capacity(4)
        .max_handles(2)
        .create(name)
        .unwrap();
    let raw = Segment::open(name).unwrap();
    for v in 0..4 {
        q.try_send(v).unwrap();
        assert_eq!(q.try_recv().unwrap(), v);
    }
    (q, raw)
}

#[test]
fn spsc_sender_checks_a_slot_only_when_the_queue_looks_full() {
    // Once `head` frees a slot, the SPSC producer owns it: it writes and publishes
    // without reading the slot's state first (that load would cost a cache-line transfer
    // per message). Garbage a peer writes into a free slot's state is overwritten by the
    // publish; garbage in the slot that a full queue waits on is reported.
    let name = common::unique("qc-spsc-free");
    let _g = common::ShmGuard::new(&name);
    let (q, raw) = spsc_after_one_lap(&name);
    // Position 4 is slot 0, free by `head`: this send reads `head` again, and only `head`.
    poke(&raw, slots_off(2), 0xdead_beef_dead_beef);
    q.try_send(4).unwrap();
    assert_eq!(q.try_recv().unwrap(), 4);
    for v in 5..9 {
        q.try_send(v).unwrap(); // positions 5..=8: full
    }
    // Position 9 waits for slot 1, which holds position 5's message.
    poke(&raw, slots_off(2) + 16, 0xdead_beef_dead_beef);
    let e: shmkit::Error = q.try_send(9).unwrap_err().into();
    assert!(is_corrupt(&e), "{e}");
    let e: shmkit::Error = q.try_recv().unwrap_err().into();
    assert!(is_corrupt(&e), "{e}");
}

#[test]
fn spsc_head_past_the_producer_is_reported() {
    // The consumer cannot pass the producer: a `head` beyond the producer's position is
    // garbage, reported when the producer next reads it (not cached as a far-away limit
    // that would let it overwrite every slot from then on).
    let name = common::unique("qc-spsc-head");
    let _g = common::ShmGuard::new(&name);
    let (q, raw) = spsc_after_one_lap(&name);
    poke(&raw, 128, 1_000); // head (ring offset 128); the producer is at position 4
    let e: shmkit::Error = q.try_send(4).unwrap_err().into();
    assert!(is_corrupt(&e), "{e}");
    assert!(e.to_string().contains("past the producer"), "{e}");
}

#[test]
fn tail_behind_head_is_reported() {
    let name = common::unique("qc-tail");
    let _g = common::ShmGuard::new(&name);
    let q = Queue::<u64>::options()
        .capacity(4)
        .max_handles(2)
        .create(&name)
        .unwrap();
    let raw = Segment::open(&name).unwrap();
    // head = 5 with slot 1 empty for position 5, tail = 0.
    poke(&raw, 128, 5);
    poke(&raw, slots_off(2) + 16, 10);
    // Telling "empty" from "claimed, unpublished" needs tail, which a waiting receiver
    // reads after a couple of milliseconds.
    let e: shmkit::Error = q
        .recv_timeout(Duration::from_millis(200))
        .unwrap_err()
        .into();
    assert!(is_corrupt(&e), "{e}");
}

#[test]
fn bytequeue_length_larger_than_the_slot_is_reported_and_skipped() {
    let name = common::unique("qc-len");
    let _g = common::ShmGuard::new(&name);
    let q = ByteQueue::options()
        .capacity(4)
        .max_handles(2)
        .create(&name, 32)
        .unwrap();
    q.send(b"first").unwrap();
    q.send(b"second").unwrap();
    let raw = Segment::open(&name).unwrap();
    // Slot 0: seq (8) then the length word.
    poke(&raw, slots_off(2) + 8, 0xffff_ffff);
    let mut buf = Vec::new();
    let e: shmkit::Error = q.try_recv(&mut buf).unwrap_err().into();
    assert!(is_corrupt(&e), "{e}");
    assert!(e.to_string().contains("length"), "{e}");
    q.try_recv(&mut buf).unwrap();
    assert_eq!(buf, b"second");
}

#[test]
fn random_garbage_never_panics_or_hangs() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut corrupt = 0;
    for round in 0..200 {
        let name = common::unique("qc-rand");
        let _g = common::ShmGuard::new(&name);
        let mode = if round % 2 == 0 {
            Mode::Spsc
        } else {
            Mode::Mpmc
        };
        let q = Queue::<[u8; 24]>::options()
            .mode(mode)
            .capacity(8)
            .max_handles(4)
            .create(&name)
            .unwrap();
        for i in 0..5 {
            q.send([i; 24]).unwrap();
        }
        let raw = Segment::open(&name).unwrap();
        let words = raw.payload_len() / 8;
        for _ in 0..1 + next() % 6 {
            let off = (next() as usize % words) * 8;
            // Small values hit the legal ranges often enough to be interesting.
            let v = if next() % 2 == 0 { next() % 64 } else { next() };
            poke(&raw, off, v);
        }
        let t = std::time::Instant::now();
        for _ in 0..20 {
            for r in [
                q.try_recv().map(|_| ()).map_err(shmkit::Error::from),
                q.try_send([9; 24]).map_err(shmkit::Error::from),
                q.recv_timeout(Duration::from_millis(1))
                    .map(|_| ())
                    .map_err(shmkit::Error::from),
            ] {
                if let Err(e) = r {
                    corrupt += is_corrupt(&e) as u32;
                }
            }
            let _ = q.len();
        }
        // A new handle registers among garbage participant entries.
        let _ = q.try_clone();
        assert!(t.elapsed() < Duration::from_secs(10), "round {round} hung");
    }
    assert!(corrupt > 0, "garbage was never noticed");
}

#[test]
fn garbage_in_the_stash_gives_garbage_tasks_or_errors_never_a_hang() {
    // Queue<u64>, capacity 4, 2 handles, stash depth 2: slots of 16 bytes, then the stash
    // (2 entries × 2 slots of 16 bytes: state, value).
    let name = common::unique("qc-stash");
    let _g = common::ShmGuard::new(&name);
    let q = Queue::<u64>::options()
        .requeue_lost(2)
        .capacity(4)
        .max_handles(2)
        .create(&name)
        .unwrap();
    let raw = Segment::open(&name).unwrap();
    let stash = slots_off(2) + 4 * 16;
    assert_eq!(
        raw.payload_len(),
        stash + 2 * 2 * 16,
        "layout as documented"
    );
    let limit = Duration::from_millis(20);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..32 {
        for k in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = match round % 4 {
                0 => x,
                1 => x & 0xffff_ffff | 1 << 30,
                2 => (x & 0x3fff_ffff) | 3 << 30,
                _ => 0,
            };
            poke(&raw, stash + 16 * k, v);
            poke(&raw, stash + 16 * k + 8, x);
        }
        let _ = q.try_send(round);
        if let Ok(t) = q.try_recv_task() {
            let _ = t.done();
        }
        let _ = q.join(Some(limit));
        let _ = q.unfinished();
        let c = q.try_clone().unwrap();
        let _ = c.try_recv_task().map(|t| t.done());
        drop(c);
    }
    // Cleared, the queue works again.
    for k in 0..4 {
        poke(&raw, stash + 16 * k, 0);
    }
    while q.try_recv().is_ok() {}
    q.send(7).unwrap();
    let t = q.recv_task().unwrap();
    assert_eq!(*t, 7);
    t.done().unwrap();
}
