//! Hostile peers (issue 9): a process that can write a segment writes garbage into it
//! while victim processes use it, and forges headers with correct checksums.
//!
//! Each campaign: the parent creates the object; victim processes operate on it in a loop
//! with bounded waits for [`RUN`]; a hostile process writes random bytes at random
//! offsets of the payload and targeted values (0, all-ones, small numbers, values around
//! the capacity, huge lengths, sequence numbers of other laps, the old value nudged) into
//! every control word. In the first half of the run every write is undone after a moment
//! (transient glitches), in the second half a quarter of them stay (lasting corruption).
//! Then a fresh process opens the object again.
//!
//! Asserted: every victim exits on its own with status 0 (errors are allowed, counted and
//! printed), never by a signal, never hangs (a single call that overruns its timeout by
//! [`SLACK`] makes the victim fail, and a child that does not finish is killed and fails
//! the test); opening the corrupted object afresh gives a handle or an error, in a process
//! that exits 0. Run with `--nocapture` to see the counts.
//!
//! Not covered here: `Mutex`, `RwLock`, `Semaphore`, `Barrier` (being rewritten, issue 9;
//! the condvar campaign corrupts only the condvar, its mutex is left alone).

mod common;

use std::os::unix::fs::FileExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use shmkit::queue::{ByteQueue, Mode, Queue};
use shmkit::segment::header::{HEADER_LEN, RawHeader, checksum};
use shmkit::sync::{Condvar, Event, Mutex};
use shmkit::{Array, Error, Segment, Value};

/// How long victims operate and the hostile process writes.
const RUN: Duration = Duration::from_millis(1000);
/// How much longer than its timeout a single call may take before the victim calls it a
/// hang (generous: CI machines are small and busy).
const SLACK: Duration = Duration::from_secs(2);
/// Bound on a whole campaign's children.
const CHILD_LIMIT: Duration = Duration::from_secs(60);
/// Timeout of every blocking call a victim makes.
const OP_TIMEOUT: Duration = Duration::from_millis(10);

const ARRAY_LEN: usize = 64;
const QUEUE_CAP: u64 = 8;
const QUEUE_HANDLES: u64 = 8;
const MAX_MESSAGE: usize = 100;

// ------------------------------------------------------------------ small helpers

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Errors a victim saw, by kind.
#[derive(Default)]
struct Tally {
    ok: u64,
    corrupt: u64,
    timeout: u64,
    would_block: u64,
    other: u64,
    first_other: Option<String>,
}

impl Tally {
    fn note<T>(&mut self, r: &shmkit::Result<T>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(Error::Corrupt { .. }) => self.corrupt += 1,
            Err(Error::Timeout { .. }) => self.timeout += 1,
            Err(Error::WouldBlock { .. }) => self.would_block += 1,
            Err(e) => {
                self.other += 1;
                if self.first_other.is_none() {
                    self.first_other = Some(e.to_string());
                }
            }
        }
    }

    fn report(&self, who: &str) {
        common::tell(&format!(
            "{who}: ok {} corrupt {} timeout {} would-block {} other {}{}",
            self.ok,
            self.corrupt,
            self.timeout,
            self.would_block,
            self.other,
            self.first_other
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        ));
    }
}

/// Runs one call that may wait at most `limit`; a call that overruns it by [`SLACK`] is a
/// hang: report it and fail the victim.
fn timed<R>(what: &str, limit: Duration, f: impl FnOnce() -> R) -> R {
    let t = Instant::now();
    let r = f();
    let took = t.elapsed();
    if took > limit + SLACK {
        common::tell(&format!("HANG: {what} took {took:?}, limit {limit:?}"));
        std::process::exit(3);
    }
    r
}

// ------------------------------------------------------------------ the hostile process

/// Control words of the object: (offset in the payload, width in bytes), and the numbers
/// that are meaningful for it (capacity, maximum length).
fn control_words(seg: &Segment) -> (Vec<(usize, usize)>, u64, u64) {
    let raw = &seg.header().raw;
    let len = seg.payload_len();
    match seg.header().kind() {
        shmkit::segment::Kind::Queue | shmkit::segment::Kind::ByteQueue => {
            // Ring layout (src/queue/ring.rs): control lines, 128-byte participant entries,
            // then the slots (seq, then the data; a byte queue's data starts with its
            // length word).
            let [cap, handles, data_len, _] = raw.params;
            let bytes = seg.header().kind() == shmkit::segment::Kind::ByteQueue;
            let align = if bytes { 8 } else { raw.elem_align.max(1) };
            let data_off = 8u64.next_multiple_of(align);
            let packed = (data_off + data_len).next_multiple_of(align.max(8));
            let stride = if packed <= 64 {
                packed.next_power_of_two()
            } else {
                packed.next_multiple_of(64)
            } as usize;
            let slots = (768 + 128 * handles as usize).next_multiple_of(128.max(align as usize));
            let mut w = vec![(0, 8), (128, 8)];
            for wp in [256, 384, 512] {
                w.push((wp, 4));
                w.push((wp + 4, 4));
            }
            // peer_deaths, last_dead_pid, SPSC roles, senders, receivers, lost_tasks.
            for k in 0..7 {
                w.push((640 + 8 * k, 8));
            }
            for i in 0..handles as usize {
                for k in 0..4 {
                    w.push((768 + 128 * i + 8 * k, 8));
                }
            }
            for s in 0..cap as usize {
                w.push((slots + s * stride, 8));
                if bytes {
                    w.push((slots + s * stride + 8, 4));
                }
            }
            w.retain(|&(o, n)| o + n <= len);
            (w, cap, data_len.saturating_sub(8))
        }
        _ => {
            // Small objects: every aligned 4- and 8-byte word.
            let end = len.min(4096);
            let mut w: Vec<(usize, usize)> = (0..end / 4).map(|i| (4 * i, 4)).collect();
            w.extend((0..end / 8).map(|i| (8 * i, 8)));
            (w, raw.elem_count, raw.elem_count)
        }
    }
}

fn read_word(base: *mut u8, off: usize, width: usize) -> u64 {
    // SAFETY: the caller passes an in-bounds, aligned word of the payload (from
    // `control_words`); the hostile process reads it volatile, racing by design.
    unsafe {
        if width == 8 {
            std::ptr::read_volatile(base.add(off) as *const u64)
        } else {
            std::ptr::read_volatile(base.add(off) as *const u32) as u64
        }
    }
}

fn write_word(base: *mut u8, off: usize, width: usize, v: u64) {
    // SAFETY: as for `read_word`.
    unsafe {
        if width == 8 {
            std::ptr::write_volatile(base.add(off) as *mut u64, v)
        } else {
            std::ptr::write_volatile(base.add(off) as *mut u32, v as u32)
        }
    }
}

/// A hostile value for a word that holds `old`.
fn hostile_value(rng: &mut Rng, old: u64, cap: u64, max: u64) -> u64 {
    let laps = 1 + rng.below(4);
    let candidates = [
        0,
        u64::MAX,
        1,
        2,
        3,
        u64::MAX - 1,
        i64::MAX as u64,
        1 << 63,
        u32::MAX as u64,
        1 << 32,
        cap.wrapping_sub(1),
        cap,
        cap + 1,
        2 * cap,
        2 * cap + 1,
        max,
        max + 1,
        max + 8,
        1 << 31,
        // Nudged: the value of a neighbouring state or position.
        old.wrapping_add(1),
        old.wrapping_sub(1),
        old.wrapping_add(2),
        old ^ 1,
        // Sequence numbers of the same slot on other laps (sequence words are 2p or 2p+1).
        old.wrapping_add(2 * cap * laps),
        old.wrapping_sub(2 * cap * laps),
        old.wrapping_add(2 * cap * laps + 1),
        // Positions of other laps (head, tail, intent).
        old.wrapping_add(cap * laps),
        old.wrapping_sub(cap * laps),
        old.wrapping_add(1 << 32),
        rng.next(),
    ];
    candidates[rng.below(candidates.len() as u64) as usize]
}

/// Leaves a hostile write in place for a moment (pacing, not synchronisation: nothing
/// waits for the hostile process).
fn pause(rng: &mut Rng) {
    if rng.below(2) == 0 {
        std::thread::sleep(Duration::from_micros(rng.below(300)));
    } else {
        std::thread::yield_now();
    }
}

fn hostile(name: &str, run: Duration, seed: u64) {
    let seg = Segment::open(name).expect("hostile: open");
    let base = seg.payload_ptr();
    let len = seg.payload_len();
    let (words, cap, max) = control_words(&seg);
    let mut rng = Rng(seed | 1);
    let mut writes = 0u64;
    let start = Instant::now();
    // First half: every write is undone after a moment (transient glitches, the object
    // keeps working around them); second half: a quarter of them stay.
    let half = start + run / 2;
    let end = start + run;
    while Instant::now() < end {
        let restore = Instant::now() < half || rng.below(4) != 0;
        if rng.below(4) == 0 {
            // Random bytes at random offsets.
            let mut old = Vec::new();
            for _ in 0..1 + rng.below(8) {
                let off = rng.below(len as u64) as usize;
                // SAFETY: off < payload_len; a byte needs no alignment.
                unsafe {
                    old.push((off, std::ptr::read_volatile(base.add(off))));
                    std::ptr::write_volatile(base.add(off), rng.next() as u8);
                }
                writes += 1;
            }
            pause(&mut rng);
            if restore {
                for (off, b) in old.into_iter().rev() {
                    // SAFETY: as above.
                    unsafe { std::ptr::write_volatile(base.add(off), b) };
                }
            }
        } else {
            let (off, width) = words[rng.below(words.len() as u64) as usize];
            let old = read_word(base, off, width);
            write_word(base, off, width, hostile_value(&mut rng, old, cap, max));
            writes += 1;
            pause(&mut rng);
            if restore {
                write_word(base, off, width, old);
            }
        }
    }
    common::tell(&format!("hostile: {writes} writes"));
}

// ------------------------------------------------------------------ the victims

/// Repeats `session` (which opens a handle and uses it) until [`RUN`] is over.
fn for_run(mut session: impl FnMut(Instant)) {
    let end = Instant::now() + RUN;
    while Instant::now() < end {
        let until = (Instant::now() + Duration::from_millis(200)).min(end);
        session(until);
    }
}

fn victim(prim: &str, role: &str, name: &str, seed: u64) {
    let mut t = Tally::default();
    let mut rng = Rng(seed | 1);
    match (prim, role) {
        ("value", _) => {
            let v = timed("open", SLACK, || Value::<u64>::open(name)).expect("value open");
            for_run(|until| {
                while Instant::now() < until {
                    let x = rng.next();
                    let _ = v.load();
                    v.store(x);
                    let _ = v.fetch_add(1);
                    let _ = v.compare_exchange(x, x ^ 1);
                    let _ = v.swap(x);
                    t.ok += 5;
                }
            });
        }
        ("array", _) => {
            let a = timed("open", SLACK, || Array::<u32>::open(name)).expect("array open");
            assert_eq!(a.len(), ARRAY_LEN, "the length comes from the header");
            for_run(|until| {
                while Instant::now() < until {
                    let i = rng.below(ARRAY_LEN as u64 + 8) as usize;
                    let r = a.load(i);
                    assert_eq!(r.is_ok(), i < ARRAY_LEN, "bounds check at {i}");
                    t.note(&r);
                    let r = a.store(i, rng.next() as u32);
                    assert_eq!(r.is_ok(), i < ARRAY_LEN, "bounds check at {i}");
                    t.note(&r);
                    t.note(&a.fetch_add(i, 1));
                }
            });
        }
        ("event", "setter") => for_run(|until| match Event::open(name) {
            Ok(ev) => {
                while Instant::now() < until {
                    ev.set();
                    let _ = ev.is_set();
                    ev.clear();
                    t.ok += 1;
                }
            }
            Err(e) => t.note::<()>(&Err(e)),
        }),
        ("event", _) => for_run(|until| match Event::open(name) {
            Ok(ev) => {
                while Instant::now() < until {
                    let r = timed("wait_timeout", OP_TIMEOUT, || ev.wait_timeout(OP_TIMEOUT));
                    t.note(&r);
                }
            }
            Err(e) => t.note::<()>(&Err(e)),
        }),
        ("condvar", _) => {
            let m = Mutex::<u64>::open(&format!("{name}-m")).expect("mutex open");
            let cv = Condvar::open(name).expect("condvar open");
            let waiter = role == "waiter";
            for_run(|until| {
                while Instant::now() < until {
                    let g = match timed("lock_timeout", OP_TIMEOUT * 10, || {
                        m.lock_timeout(OP_TIMEOUT * 10)
                    }) {
                        Ok(r) => r.into_guard(),
                        Err(e) => {
                            t.note::<()>(&Err(e));
                            continue;
                        }
                    };
                    if waiter {
                        // Bounded by the wait's timeout plus relocking a mutex that the
                        // other victim holds only briefly.
                        let r = timed("wait_timeout", OP_TIMEOUT * 2, || {
                            cv.wait_timeout(g, OP_TIMEOUT)
                        });
                        t.note(&r.map(|(g, res)| drop((g.into_guard(), res))));
                    } else {
                        let mut g = g;
                        *g += 1;
                        drop(g);
                        if rng.below(2) == 0 {
                            cv.notify_one();
                        } else {
                            cv.notify_all();
                        }
                        t.ok += 1;
                    }
                }
            });
        }
        ("queue" | "queue-mpmc", _) => {
            let mode = if prim == "queue" {
                Mode::Spsc
            } else {
                Mode::Mpmc
            };
            for_run(|until| {
                let q = match timed("open", SLACK, || {
                    Queue::<u64>::options().mode(mode).open(name)
                }) {
                    Ok(q) => q,
                    Err(e) => return t.note::<()>(&Err(e)),
                };
                let mut q = q;
                while Instant::now() < until {
                    if role == "producer" {
                        let v = rng.next();
                        let r: shmkit::Result<()> = match rng.below(3) {
                            0 => q.try_send(v).map_err(shmkit::Error::from),
                            1 => timed("send_timeout", OP_TIMEOUT, || {
                                q.send_timeout(v, OP_TIMEOUT).map_err(shmkit::Error::from)
                            }),
                            _ => timed("reserve", OP_TIMEOUT, || {
                                q.reserve(Some(OP_TIMEOUT))
                                    .map(|s| s.send(v))
                                    .map_err(shmkit::Error::from)
                            }),
                        };
                        t.note(&r);
                    } else {
                        let r: shmkit::Result<()> = match rng.below(3) {
                            0 => q.try_recv().map(drop).map_err(shmkit::Error::from),
                            1 => timed("recv_timeout", OP_TIMEOUT, || {
                                q.recv_timeout(OP_TIMEOUT)
                                    .map(drop)
                                    .map_err(shmkit::Error::from)
                            }),
                            _ => timed("recv_ref", OP_TIMEOUT, || {
                                q.recv_ref(Some(OP_TIMEOUT))
                                    .map(|s| {
                                        let _ = s.get();
                                    })
                                    .map_err(shmkit::Error::from)
                            }),
                        };
                        t.note(&r);
                    }
                    let _ = q.len();
                    let _ = q.peer_deaths();
                }
            });
        }
        ("bytequeue", _) => {
            let msg: Vec<u8> = (0..MAX_MESSAGE as u8).collect();
            let mut buf = Vec::new();
            for_run(|until| {
                let mut q = match timed("open", SLACK, || ByteQueue::open(name)) {
                    Ok(q) => q,
                    Err(e) => return t.note::<()>(&Err(e)),
                };
                assert_eq!(q.max_message(), MAX_MESSAGE, "from the header");
                while Instant::now() < until {
                    if role == "producer" {
                        let m = &msg[..rng.below(MAX_MESSAGE as u64 + 1) as usize];
                        let r: shmkit::Result<()> = match rng.below(3) {
                            0 => q.try_send(m).map_err(shmkit::Error::from),
                            1 => timed("send_timeout", OP_TIMEOUT, || {
                                q.send_timeout(m, OP_TIMEOUT).map_err(shmkit::Error::from)
                            }),
                            _ => timed("reserve", OP_TIMEOUT, || {
                                q.reserve(m.len(), Some(OP_TIMEOUT))
                                    .map(|mut s| {
                                        s.copy_from_slice(m);
                                        s.commit()
                                    })
                                    .map_err(shmkit::Error::from)
                            }),
                        };
                        t.note(&r);
                    } else {
                        let r: shmkit::Result<usize> = match rng.below(3) {
                            0 => q
                                .try_recv(&mut buf)
                                .map(|()| buf.len())
                                .map_err(shmkit::Error::from),
                            1 => timed("recv_timeout", OP_TIMEOUT, || {
                                q.recv_timeout(&mut buf, OP_TIMEOUT)
                                    .map(|()| buf.len())
                                    .map_err(shmkit::Error::from)
                            }),
                            _ => timed("recv_ref", OP_TIMEOUT, || {
                                q.recv_ref(Some(OP_TIMEOUT))
                                    .map(|r| {
                                        r.copy_to(&mut buf);
                                        assert_eq!(buf.len(), r.len());
                                        r.len()
                                    })
                                    .map_err(shmkit::Error::from)
                            }),
                        };
                        if let Ok(n) = r {
                            assert!(n <= MAX_MESSAGE, "a {n}-byte message");
                        }
                        t.note(&r);
                    }
                }
            });
        }
        other => panic!("unknown victim {other:?}"),
    }
    t.report(&format!("{prim} {role}"));
}

/// A fresh process opens the corrupted object and uses it once, with bounded waits.
fn reopen(prim: &str, name: &str) {
    let short = Duration::from_millis(5);
    let r: shmkit::Result<()> = timed("reopen", short + SLACK, || match prim {
        "value" => Value::<u64>::open(name).map(|v| {
            let _ = v.load();
        }),
        "array" => Array::<u32>::open(name).and_then(|a| a.load(ARRAY_LEN - 1).map(drop)),
        "event" => Event::open(name).and_then(|e| e.wait_timeout(short).map(drop)),
        "condvar" => Condvar::open(name).map(|c| c.notify_all()),
        "queue" | "queue-mpmc" => Queue::<u64>::open(name).and_then(|q| {
            let _ = q.try_send(1);
            Ok(q.recv_timeout(short).map(drop)?)
        }),
        "bytequeue" => ByteQueue::open(name).and_then(|q| {
            let _ = q.try_send(b"x");
            let mut buf = Vec::new();
            Ok(q.recv_timeout(&mut buf, short)?)
        }),
        other => panic!("unknown primitive {other:?}"),
    });
    common::tell(&match r {
        Ok(()) => format!("reopen {prim}: ok"),
        Err(e) => format!("reopen {prim}: error: {e}"),
    });
}

// ------------------------------------------------------------------ the parent side

fn child_roles() -> bool {
    let Some(role) = common::role() else {
        return false;
    };
    let args = common::args();
    let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    match role.as_str() {
        "hostile" => hostile(&args[1], RUN + Duration::from_millis(100), seed),
        "reopen" => reopen(&args[0], &args[1]),
        victim_role => victim(&args[0], victim_role, &args[1], seed),
    }
    std::process::exit(0);
}

fn spawn(test: &str, role: &str, prim: &str, name: &str, seed: u64) -> (Child, common::Listener) {
    let mut c = common::child(test, role, &[prim, name, &seed.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let l = common::Listener::new(c.stdout.take().expect("stdout"));
    (c, l)
}

/// Waits for a child (bounded), requires exit status 0, and returns its report line.
fn finish(role: &str, (mut c, l): (Child, common::Listener)) -> String {
    use std::os::unix::process::ExitStatusExt;
    let st = common::wait_bounded(&mut c, CHILD_LIMIT);
    if st.code() != Some(0) {
        // Whatever it said last (a HANG report, say), if anything.
        let line = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            l.next(Duration::from_secs(1))
        }));
        panic!(
            "{role} ended with {st:?} (signal {:?}); it said: {:?}",
            st.signal(),
            line.ok()
        );
    }
    l.next(Duration::from_secs(5))
}

/// One campaign: `victims` roles against `prim` at `name` (already created), one hostile
/// writer, then a fresh reopen.
fn campaign(test: &str, prim: &str, name: &str, victims: &[&str]) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ std::process::id() as u64;
    println!("{prim}: seed {seed}");
    let running: Vec<_> = victims
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                *r,
                spawn(test, r, prim, name, seed.wrapping_add(i as u64 + 1)),
            )
        })
        .collect();
    let h = spawn(test, "hostile", prim, name, seed);
    for (role, c) in running {
        println!("  {}", finish(role, c));
    }
    println!("  {}", finish("hostile", h));
    println!(
        "  {}",
        finish("reopen", spawn(test, "reopen", prim, name, 0))
    );
}

/// A campaign as a test: `create` makes the object (returning whatever must live as
/// long as the campaign), then [`campaign`] runs. In a child process: plays its role.
fn campaign_test<H: 'static>(
    test: &str,
    prim: &str,
    victims: &[&str],
    create: impl FnOnce(&str) -> shmkit::Result<H>,
) {
    if child_roles() {
        return;
    }
    let name = common::unique(prim);
    let _g = common::ShmGuard::new(&name);
    let _held = create(&name).unwrap();
    campaign(test, prim, &name, victims);
}

#[test]
fn hostile_value_u64() {
    campaign_test("hostile_value_u64", "value", &["a", "b"], |n| {
        Value::<u64>::create(n, 0)
    });
}

#[test]
fn hostile_array_u32() {
    campaign_test("hostile_array_u32", "array", &["a", "b"], |n| {
        Array::<u32>::create(n, ARRAY_LEN, 0)
    });
}

#[test]
fn hostile_event() {
    campaign_test(
        "hostile_event",
        "event",
        &["setter", "waiter", "waiter"],
        Event::create,
    );
}

#[test]
fn hostile_condvar() {
    // Only the condvar is attacked; its mutex (`NAME-m`) is left alone.
    campaign_test(
        "hostile_condvar",
        "condvar",
        &["waiter", "waiter", "notifier"],
        |n| {
            let m = format!("{n}-m");
            let g = common::ShmGuard::new(&m);
            Ok((Condvar::create(n)?, Mutex::<u64>::create(&m, 0)?, g))
        },
    );
}

fn queue_opts(mode: Mode) -> shmkit::queue::QueueOptions<u64> {
    Queue::<u64>::options()
        .mode(mode)
        .capacity(QUEUE_CAP)
        .max_handles(QUEUE_HANDLES)
}

#[test]
fn hostile_queue_spsc() {
    campaign_test(
        "hostile_queue_spsc",
        "queue",
        &["producer", "consumer"],
        |n| queue_opts(Mode::Spsc).create(n),
    );
}

#[test]
fn hostile_queue_mpmc() {
    let roles = ["producer", "producer", "consumer", "consumer"];
    campaign_test("hostile_queue_mpmc", "queue-mpmc", &roles, |n| {
        queue_opts(Mode::Mpmc).create(n)
    });
}

#[test]
fn hostile_bytequeue() {
    let roles = ["producer", "consumer", "consumer"];
    campaign_test("hostile_bytequeue", "bytequeue", &roles, |n| {
        ByteQueue::options()
            .capacity(QUEUE_CAP)
            .max_handles(QUEUE_HANDLES)
            .create(n, MAX_MESSAGE)
    });
}

// ------------------------------------------------------------------ forged headers

/// Rewrites the header of `/dev/shm/NAME` through `f` (which may also change the file
/// length) and stores a correct checksum, as a hostile peer with write access can.
fn forge(name: &str, f: impl FnOnce(&mut RawHeader, &mut u64)) {
    let path = format!("/dev/shm/{name}");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut bytes = [0u8; HEADER_LEN];
    file.read_exact_at(&mut bytes, 0).unwrap();
    let mut raw: RawHeader = bytemuck::pod_read_unaligned(&bytes);
    let mut len = file.metadata().unwrap().len();
    f(&mut raw, &mut len);
    raw.checksum = checksum(&raw);
    file.set_len(len).unwrap();
    file.write_all_at(bytemuck::bytes_of(&raw), 0).unwrap();
}

/// Creates an object with `make`, forges its header with `f`, and requires `open` to
/// give a clean error (and `Segment::open`, if `segment_too`).
fn forged<T: std::fmt::Debug, U>(
    tag: &str,
    make: impl FnOnce(&str) -> shmkit::Result<U>,
    f: impl FnOnce(&mut RawHeader, &mut u64),
    open: impl FnOnce(&str) -> shmkit::Result<T>,
    segment_too: bool,
) {
    let name = common::unique(&format!("hf-{tag}"));
    let _g = common::ShmGuard::new(&name);
    drop(make(&name).unwrap());
    forge(&name, f);
    match open(&name) {
        Ok(h) => panic!("{tag}: a forged header was accepted: {h:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            println!("{tag}: {msg}");
        }
    }
    if segment_too {
        assert!(
            Segment::open(&name).is_err(),
            "{tag}: Segment::open accepted it"
        );
    }
}

#[test]
fn forged_headers_with_correct_checksums_are_refused() {
    let array = |n: &str| Array::<u32>::create(n, ARRAY_LEN, 0);
    let open_array = |n: &str| Array::<u32>::open(n).map(|a| a.len());
    // Lengths past the end of the object.
    forged("total", array, |h, _| h.total_len += 4096, open_array, true);
    forged(
        "payload-len",
        array,
        |h, _| h.payload_len = h.total_len,
        open_array,
        true,
    );
    forged(
        "payload-len-max",
        array,
        |h, _| h.payload_len = u64::MAX,
        open_array,
        true,
    );
    forged(
        "payload-off",
        array,
        |h, _| h.payload_offset = !63,
        open_array,
        true,
    );
    forged(
        "payload-off-eof",
        array,
        |h, _| h.payload_offset = h.total_len.next_multiple_of(64),
        open_array,
        true,
    );
    // One element more than the payload holds.
    forged(
        "count-past-payload",
        array,
        |h, _| h.elem_count = h.payload_len / h.elem_size + 1,
        open_array,
        true,
    );
    // Element counts whose byte size overflows.
    forged(
        "count-overflow",
        array,
        |h, _| h.elem_count = u64::MAX / h.elem_size + 1,
        open_array,
        true,
    );
    forged(
        "count-wraps-to-zero",
        array,
        |h, _| h.elem_count = 1 << 62,
        open_array,
        true,
    );
    // Zero-sized elements make any count fit: the typed open must still refuse.
    forged(
        "zero-size",
        array,
        |h, _| {
            h.elem_size = 0;
            h.elem_count = u64::MAX;
        },
        open_array,
        false,
    );
    for align in [0, 3, 8192] {
        forged(
            &format!("align-{align}"),
            array,
            |h, _| h.elem_align = align,
            open_array,
            true,
        );
    }
    // Another kind: a value's header claiming to be a queue.
    forged(
        "kind",
        |n| Value::<u64>::create(n, 0),
        |h, _| h.kind = shmkit::segment::Kind::Queue.to_raw(),
        Queue::<u64>::open,
        false,
    );
    // Queue parameters out of range or disagreeing with the payload.
    let queue = |n: &str| queue_opts(Mode::Mpmc).create(n);
    type Params = fn(&mut [u64; 4]);
    let bad_params: [(&str, Params); 7] = [
        ("cap-huge", |p| p[0] = 1 << 40),
        ("cap-odd", |p| p[0] = 3),
        ("cap-zero", |p| p[0] = 0),
        ("cap-bigger-than-payload", |p| p[0] *= 2),
        ("handles-zero", |p| p[1] = 0),
        ("handles-huge", |p| p[1] = u64::MAX),
        ("slot-bytes", |p| p[2] = 1 << 31),
    ];
    for (tag, f) in bad_params {
        forged(
            tag,
            queue,
            |h, _| f(&mut h.params),
            Queue::<u64>::open,
            false,
        );
        // The monitoring path too.
        let name = common::unique(&format!("hf-stats-{tag}"));
        let _g = common::ShmGuard::new(&name);
        drop(queue(&name).unwrap());
        forge(&name, |h, _| f(&mut h.params));
        assert!(
            shmkit::queue::stats(&name).is_err(),
            "{tag}: stats accepted it"
        );
    }
    forged(
        "bytequeue-slot-bytes",
        |n| ByteQueue::options().capacity(4).create(n, 64),
        |h, _| h.params[2] = 4,
        ByteQueue::open,
        false,
    );
}

/// A 128-byte-aligned element (e.g. a cache-padded struct).
#[repr(C, align(128))]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Wide([u64; 16]);

// `Header::parse` checks that the payload offset is a multiple of max(64, elem_align):
// a forged offset that is a multiple of 64 but not of 128 would make the typed view
// misaligned (undefined behaviour).
#[test]
fn forged_payload_offset_misaligned_for_the_element_is_refused() {
    // Moved by 64 bytes (the file grown to match): still a multiple of 64, not of 128.
    let shift = |h: &mut RawHeader, len: &mut u64| {
        assert_eq!(h.payload_offset % 128, 0, "created aligned");
        h.payload_offset += 64;
        h.total_len += 64;
        *len += 64;
    };
    forged(
        "misaligned-array",
        |n| Array::<Wide>::create(n, 2, Wide([0; 16])),
        shift,
        |n| Array::<Wide>::open(n).map(|a| a.len()),
        true,
    );
    forged(
        "misaligned-value",
        |n| Value::<Wide>::create(n, Wide([0; 16])),
        shift,
        |n| Value::<Wide>::open(n).map(|_| ()),
        true,
    );
}
