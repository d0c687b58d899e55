//! 64-byte round trips between two forked processes pinned to cores 0 and 1, through
//! shmkit queues, against floors measured the same way in the same run:
//!
//! - `spin-floor`: the two processes ping-pong one `AtomicU64` on one cache line;
//! - `futex-floor`: the same with both sides sleeping on a raw futex.
//!
//! Each variant times batches of 1000 round trips and reports the median batch.
//!
//! ```text
//! cargo run --release -p shmkit-compare --example queue_pingpong [-- BATCHES]
//! ```

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use shmkit::Value;
use shmkit::queue::{Mode, Queue, WaitStrategy};

const ROUND_TRIPS: usize = 1000;
type Msg = [u8; 64];

fn pin(core: usize) {
    let mut set = CpuSet::new();
    if set.set(core).is_ok() {
        // Best effort: on a machine with one core both sides share it.
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

/// Forks: the child pins itself to core 1 and runs `child`, the parent pins itself to
/// core 0, runs `parent` (which returns the median ns per round trip) and reaps the child.
fn pair(child: impl FnOnce(), parent: impl FnOnce() -> f64) -> f64 {
    // SAFETY: the example is single-threaded when it forks, so the child may run any code.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            pin(1);
            child();
            // SAFETY: _exit skips destructors and atexit handlers that belong to the
            // parent's state; it is always safe to call.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            pin(0);
            let r = parent();
            waitpid(child, None).expect("waitpid");
            r
        }
    }
}

fn median_ns(batches: usize, mut batch: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            batch();
            t.elapsed().as_nanos() as f64 / ROUND_TRIPS as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spin_floor(batches: usize) -> f64 {
    let word = Value::<u64>::anonymous(0).expect("segment");
    let total = (batches + 1) * ROUND_TRIPS;
    pair(
        || {
            let a: &AtomicU64 = word.atomic();
            for i in 0..total as u64 {
                while a.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                a.store(2 * i + 2, Ordering::Release);
            }
        },
        || {
            let a: &AtomicU64 = word.atomic();
            let mut i = 0u64;
            let mut one = || {
                a.store(2 * i + 1, Ordering::Release);
                while a.load(Ordering::Acquire) != 2 * i + 2 {
                    std::hint::spin_loop();
                }
                i += 1;
            };
            for _ in 0..ROUND_TRIPS {
                one(); // warm-up batch
            }
            median_ns(batches, || {
                for _ in 0..ROUND_TRIPS {
                    one();
                }
            })
        },
    )
}

fn futex(word: &AtomicU32, op: i32, val: u32) {
    let ts = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    // SAFETY: `word` is a valid aligned u32 in a shared mapping; the timeout is a valid
    // timespec; FUTEX_WAIT/FUTEX_WAKE ignore the remaining arguments.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

fn futex_floor(batches: usize) -> f64 {
    let word = Value::<u32>::anonymous(0).expect("segment");
    let total = (batches + 1) * ROUND_TRIPS;
    pair(
        || {
            let a: &AtomicU32 = word.atomic();
            for i in 0..total as u32 {
                loop {
                    let v = a.load(Ordering::Acquire);
                    if v == 2 * i + 1 {
                        break;
                    }
                    futex(a, libc::FUTEX_WAIT, v);
                }
                a.store(2 * i + 2, Ordering::Release);
                futex(a, libc::FUTEX_WAKE, 1);
            }
        },
        || {
            let a: &AtomicU32 = word.atomic();
            let mut i = 0u32;
            let mut one = || {
                a.store(2 * i + 1, Ordering::Release);
                futex(a, libc::FUTEX_WAKE, 1);
                loop {
                    let v = a.load(Ordering::Acquire);
                    if v == 2 * i + 2 {
                        break;
                    }
                    futex(a, libc::FUTEX_WAIT, v);
                }
                i += 1;
            };
            for _ in 0..ROUND_TRIPS {
                one();
            }
            median_ns(batches, || {
                for _ in 0..ROUND_TRIPS {
                    one();
                }
            })
        },
    )
}

fn queue_rt(batches: usize, mode: Mode, wait: WaitStrategy, capacity: u64) -> f64 {
    queue_rt_of::<Msg>(batches, mode, wait, capacity)
}

fn queue_rt_of<T: bytemuck::Pod>(
    batches: usize,
    mode: Mode,
    wait: WaitStrategy,
    capacity: u64,
) -> f64 {
    let opts = Queue::<T>::options()
        .mode(mode)
        .wait(wait)
        .capacity(capacity);
    let ping = opts.anonymous().expect("queue");
    let pong = opts.anonymous().expect("queue");
    let total = (batches + 1) * ROUND_TRIPS;
    pair(
        || {
            // Own handles in the child (a handle is one participant).
            let ping = ping.try_clone().expect("clone");
            let pong = pong.try_clone().expect("clone");
            for _ in 0..total {
                let m = ping.recv().expect("recv");
                pong.send(m).expect("send");
            }
        },
        || {
            let mut m: T = bytemuck::Zeroable::zeroed();
            let mut one = || {
                ping.send(m).expect("send");
                m = pong.recv().expect("recv");
            };
            for _ in 0..ROUND_TRIPS {
                one();
            }
            median_ns(batches, || {
                for _ in 0..ROUND_TRIPS {
                    one();
                }
            })
        },
    )
}

/// A minimal hand-written ring with the same slot layout idea (a sequence word inside
/// each slot, `stride` bytes per slot), no validation, no waiting strategy, no crash
/// recovery: what the layout costs by itself on this machine.
fn raw_ring_rt(batches: usize, slots: usize, stride: usize) -> f64 {
    use shmkit::segment::{ElemInfo, Kind, Layout};
    let len = (2 * slots * stride) as u64;
    let seg =
        shmkit::Segment::anonymous(&Layout::new(Kind::Bytes, ElemInfo::bytes(len)), |_| Ok(()))
            .expect("segment");
    let base = seg.payload_ptr() as usize;
    let seq = move |ring: usize, i: u64| -> &'static AtomicU64 {
        let off = ring * slots * stride + (i as usize % slots) * stride;
        // SAFETY: in bounds of the 2*slots*stride payload, 8-aligned (stride is a multiple
        // of 8, the payload 64-aligned), alive until `seg` drops after `pair` returns.
        unsafe { &*((base + off) as *const AtomicU64) }
    };
    let data = move |ring: usize, i: u64| -> *mut Msg {
        (base + ring * slots * stride + (i as usize % slots) * stride + 8) as *mut Msg
    };
    for r in 0..2 {
        for i in 0..slots as u64 {
            seq(r, i).store(2 * i, Ordering::Relaxed);
        }
    }
    let send = move |r: usize, i: u64, m: Msg| {
        while seq(r, i).load(Ordering::Acquire) != 2 * i {
            std::hint::spin_loop();
        }
        // SAFETY: the slot is ours (seq says empty for position i), in bounds.
        unsafe { data(r, i).write_unaligned(m) };
        seq(r, i).store(2 * i + 1, Ordering::Release);
    };
    let recv = move |r: usize, i: u64| -> Msg {
        while seq(r, i).load(Ordering::Acquire) != 2 * i + 1 {
            std::hint::spin_loop();
        }
        // SAFETY: published for position i, in bounds.
        let m = unsafe { data(r, i).read_unaligned() };
        seq(r, i).store(2 * (i + slots as u64), Ordering::Release);
        m
    };
    let total = (batches + 1) * ROUND_TRIPS;
    let r = pair(
        || {
            for i in 0..total as u64 {
                let m = recv(0, i);
                send(1, i, m);
            }
        },
        || {
            let mut i = 0u64;
            let mut m: Msg = [7; 64];
            let mut one = || {
                send(0, i, m);
                m = recv(1, i);
                i += 1;
            };
            for _ in 0..ROUND_TRIPS {
                one();
            }
            median_ns(batches, || {
                for _ in 0..ROUND_TRIPS {
                    one();
                }
            })
        },
    );
    drop(seg);
    r
}

fn main() {
    let batches: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let park_batches = (batches / 20).max(5);
    if std::env::var_os("PINGPONG_SPSC_ONLY").is_some() {
        let ns = queue_rt(batches, Mode::Spsc, WaitStrategy::Spin, 256);
        println!("queue spsc spin (256 slots): {ns:.1} ns/rt");
        return;
    }
    let spin = WaitStrategy::Spin;
    let floor1 = spin_floor(batches);
    let rows: Vec<(&str, f64, f64)> = vec![
        (
            "queue spsc spin (256 slots)",
            queue_rt(batches, Mode::Spsc, spin, 256),
            0.0,
        ),
        (
            "queue mpmc spin (256 slots)",
            queue_rt(batches, Mode::Mpmc, spin, 256),
            0.0,
        ),
        (
            "queue spsc spin (4 slots)",
            queue_rt(batches, Mode::Spsc, spin, 4),
            0.0,
        ),
        (
            "queue spsc spin (1 slot)",
            queue_rt(batches, Mode::Spsc, spin, 1),
            0.0,
        ),
        (
            "raw ring 256 slots, stride 72",
            raw_ring_rt(batches, 256, 72),
            0.0,
        ),
        (
            "raw ring 256 slots, stride 128",
            raw_ring_rt(batches, 256, 128),
            0.0,
        ),
        (
            "raw ring 4 slots, stride 72",
            raw_ring_rt(batches, 4, 72),
            0.0,
        ),
        (
            "queue spsc spin, 48-byte msg",
            queue_rt_of::<[u8; 48]>(batches, Mode::Spsc, spin, 256),
            0.0,
        ),
        (
            "queue spsc default adaptive",
            queue_rt(batches, Mode::Spsc, WaitStrategy::default(), 256),
            0.0,
        ),
    ];
    let floor2 = spin_floor(batches);
    let floor = (floor1 + floor2) / 2.0;
    let ffloor = futex_floor(park_batches);
    let park = queue_rt(park_batches, Mode::Spsc, WaitStrategy::Park, 256);
    println!("64-byte round trip, cores 0 and 1, median of batches of {ROUND_TRIPS}");
    println!("{:<32} {:>10} {:>8}", "variant", "ns/rt", "ratio");
    println!(
        "{:<32} {:>10.1} {:>8}",
        "spin-floor (before, after)",
        floor,
        format!("{floor1:.0}/{floor2:.0}")
    );
    for (name, ns, _) in &rows {
        println!("{name:<32} {ns:>10.1} {:>7.2}x", ns / floor);
    }
    println!("{:<32} {:>10.1} {:>8}", "futex-floor", ffloor, "1.00x");
    println!(
        "{:<32} {:>10.1} {:>7.2}x",
        "queue spsc park",
        park,
        park / ffloor
    );
}
