//! One-way stream of 64 KiB messages between two forked processes pinned to cores 0 and
//! 1: a `ByteQueue` (copying in and out, and zero-copy: written and read in place) against
//! a pipe, in the same run.
//!
//! ```text
//! cargo run --release -p shmkit-compare --example queue_stream [-- MESSAGES]
//! ```

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::Instant;

use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, pipe};
use shmkit::queue::{ByteQueue, Mode, WaitStrategy};

const MSG: usize = 64 * 1024;

fn pin(core: usize) {
    let mut set = CpuSet::new();
    if set.set(core).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

/// Runs `producer` in a forked child on core 1 and `consumer` here on core 0; returns the
/// consumer's GB/s.
fn run(n: usize, producer: impl FnOnce(), consumer: impl FnOnce()) -> f64 {
    // SAFETY: single-threaded at fork time.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            pin(1);
            producer();
            // SAFETY: _exit is always safe; it skips the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            pin(0);
            let t = Instant::now();
            consumer();
            let secs = t.elapsed().as_secs_f64();
            waitpid(child, None).expect("waitpid");
            (n * MSG) as f64 / secs / 1e9
        }
    }
}

fn checksum(b: &[u8]) -> u64 {
    // Read every byte, as a consumer that uses the data would (vectorised word sums).
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .fold(0u64, u64::wrapping_add)
}

fn queue(n: usize, zero_copy: bool) -> f64 {
    let opts = ByteQueue::options()
        .mode(Mode::Spsc)
        .capacity(16)
        .wait(WaitStrategy::default());
    let q = opts.anonymous(MSG).expect("queue");
    let src = vec![0x5au8; MSG];
    run(
        n,
        || {
            let mut q = q.try_clone().expect("clone");
            for i in 0..n {
                if zero_copy {
                    let mut m = q.reserve(MSG, None).expect("reserve");
                    // Produce the message in place (here: a fill and a sequence number).
                    m.fill(0x5a);
                    m[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    m.commit();
                } else {
                    q.send(&src).expect("send");
                }
            }
        },
        || {
            let mut q = q.try_clone().expect("clone");
            let mut buf = Vec::with_capacity(MSG);
            let mut sum = 0u64;
            for _ in 0..n {
                if zero_copy {
                    let m = q.recv_ref(None).expect("recv_ref");
                    sum += checksum(&m);
                } else {
                    q.recv(&mut buf).expect("recv");
                    sum += checksum(&buf);
                }
            }
            std::hint::black_box(sum);
        },
    )
}

fn pipe_stream(n: usize) -> f64 {
    let (r, w) = pipe().expect("pipe");
    // A larger pipe buffer (the default is 64 KiB) helps the pipe; 1 MiB is the default
    // unprivileged maximum.
    let _ = nix::fcntl::fcntl(w.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    let src = vec![0x5au8; MSG];
    let mut wf = std::fs::File::from(w);
    let mut rf = std::fs::File::from(r);
    run(
        n,
        || {
            for _ in 0..n {
                wf.write_all(&src).expect("write");
            }
        },
        || {
            let mut buf = vec![0u8; MSG];
            let mut sum = 0u64;
            for _ in 0..n {
                rf.read_exact(&mut buf).expect("read");
                sum += checksum(&buf);
            }
            std::hint::black_box(sum);
        },
    )
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let p = pipe_stream(n);
    let c = queue(n, false);
    let z = queue(n, true);
    println!("64 KiB messages, {n} of them, cores 0 -> 1 (consumer-side GB/s)");
    println!(
        "{:<28} {:>8.2} GB/s {:>6.2}x",
        "pipe (1 MiB buffer)", p, 1.0
    );
    println!("{:<28} {:>8.2} GB/s {:>6.2}x", "bytequeue copy", c, c / p);
    println!(
        "{:<28} {:>8.2} GB/s {:>6.2}x",
        "bytequeue zero-copy",
        z,
        z / p
    );
}
