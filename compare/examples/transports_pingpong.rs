//! Round-trip latency of a 64-byte message between two processes, each shmkit kernel
//! transport against the raw system calls it wraps (same process pair, same message,
//! interleaved runs, median of 5). A quick check of the wrapper cost, not the benchmark
//! suite: it also shows that a ping-pong adapter is a few lines per transport.
//!
//! Run: `cargo run --release -p shmkit-compare --example transports_pingpong [ROUND_TRIPS]`

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};
use shmkit::fifo::Fifo;
use shmkit::mq::MessageQueue;
use shmkit::pipe::Pipe;

const MSG: [u8; 64] = [0x5a; 64];

/// Forks a child running `echo` for `n` messages, runs `ping` `n` times in the parent,
/// and returns the mean round trip.
fn measure(n: u32, echo: impl FnOnce(u32), ping: impl FnMut()) -> Duration {
    let mut ping = ping;
    // SAFETY: the example is single-threaded when it forks.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            echo(n);
            // SAFETY: leave the child at once, without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        ForkResult::Parent { child } => {
            for _ in 0..n / 10 {
                ping(); // warm-up, not timed
            }
            let t = Instant::now();
            for _ in 0..n - n / 10 {
                ping();
            }
            let d = t.elapsed() / (n - n / 10);
            waitpid(child, None).expect("waitpid");
            d
        }
    }
}

fn mq_pair(tag: &str) -> (String, String, MessageQueue, MessageQueue) {
    let a = format!("shmkit-pp-{tag}-a-{}", std::process::id());
    let b = format!("shmkit-pp-{tag}-b-{}", std::process::id());
    let qa = MessageQueue::create(&a, 4, 128).expect("mq");
    let qb = MessageQueue::create(&b, 4, 128).expect("mq");
    (a, b, qa, qb)
}

fn mq_shmkit(n: u32) -> Duration {
    let (a, b, ping, pong) = mq_pair("s");
    let mut buf = [0u8; 128];
    let d = measure(
        n,
        |n| {
            let mut buf = [0u8; 128];
            for _ in 0..n {
                let (len, _) = ping.recv(&mut buf).expect("recv");
                pong.send(&buf[..len], 0).expect("send");
            }
        },
        || {
            ping.send(&MSG, 0).expect("send");
            pong.recv(&mut buf).expect("recv");
        },
    );
    let _ = (MessageQueue::unlink(&a), MessageQueue::unlink(&b));
    d
}

fn mq_raw(n: u32) -> Duration {
    let (a, b, ping, pong) = mq_pair("r");
    let (pf, gf) = (ping.as_fd_raw(), pong.as_fd_raw());
    let mut buf = [0u8; 128];
    let d = measure(
        n,
        |n| {
            let mut buf = [0u8; 128];
            for _ in 0..n {
                // SAFETY: valid queue descriptors and buffers of the stated sizes.
                unsafe {
                    let len =
                        libc::mq_receive(pf, buf.as_mut_ptr().cast(), 128, std::ptr::null_mut());
                    libc::mq_send(gf, buf.as_ptr().cast(), len as usize, 0);
                }
            }
        },
        || {
            // SAFETY: as above.
            unsafe {
                libc::mq_send(pf, MSG.as_ptr().cast(), MSG.len(), 0);
                libc::mq_receive(gf, buf.as_mut_ptr().cast(), 128, std::ptr::null_mut());
            }
        },
    );
    let _ = (MessageQueue::unlink(&a), MessageQueue::unlink(&b));
    d
}

trait RawFdOf {
    fn as_fd_raw(&self) -> i32;
}
impl RawFdOf for MessageQueue {
    fn as_fd_raw(&self) -> i32 {
        std::os::fd::AsFd::as_fd(self).as_raw_fd()
    }
}

fn pipe_shmkit(n: u32) -> Duration {
    let (mut a, mut b) = Pipe::pair().expect("pair");
    let mut buf = Vec::with_capacity(64 * 1024);
    measure(
        n,
        |n| {
            let mut buf = Vec::with_capacity(64 * 1024);
            for _ in 0..n {
                b.recv_into(&mut buf, None).expect("recv");
                b.send(&buf).expect("send");
            }
        },
        || {
            a.send(&MSG).expect("send");
            a.recv_into(&mut buf, None).expect("recv");
        },
    )
}

fn socketpair_raw(n: u32) -> Duration {
    let (a, b): (OwnedFd, OwnedFd) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair");
    let mut buf = [0u8; 128];
    measure(
        n,
        |n| {
            let mut buf = [0u8; 128];
            for _ in 0..n {
                let len = recv(b.as_raw_fd(), &mut buf, MsgFlags::empty()).expect("recv");
                send(b.as_raw_fd(), &buf[..len], MsgFlags::MSG_NOSIGNAL).expect("send");
            }
        },
        || {
            send(a.as_raw_fd(), &MSG, MsgFlags::MSG_NOSIGNAL).expect("send");
            recv(a.as_raw_fd(), &mut buf, MsgFlags::empty()).expect("recv");
        },
    )
}

fn fifo_paths() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir();
    let a = dir.join(format!("shmkit-pp-fifo-a-{}", std::process::id()));
    let b = dir.join(format!("shmkit-pp-fifo-b-{}", std::process::id()));
    for p in [&a, &b] {
        let _ = std::fs::remove_file(p);
        Fifo::create(p, 0o600).expect("mkfifo");
    }
    (a, b)
}

fn fifo_shmkit(n: u32) -> Duration {
    let (pa, pb) = fifo_paths();
    // Both processes open everything before forking: read ends first, then writers.
    let mut ping_rx = Fifo::open_reader(&pa).expect("open");
    let mut pong_rx = Fifo::open_reader(&pb).expect("open");
    let ping_tx = Fifo::open_writer(&pa, Some(Duration::from_secs(1))).expect("open");
    let pong_tx = Fifo::open_writer(&pb, Some(Duration::from_secs(1))).expect("open");
    let mut buf = Vec::with_capacity(4096);
    let d = measure(
        n,
        |n| {
            let mut buf = Vec::with_capacity(4096);
            for _ in 0..n {
                ping_rx.recv_into(&mut buf, None).expect("recv");
                pong_tx.send(&buf).expect("send");
            }
        },
        || {
            ping_tx.send(&MSG).expect("send");
            pong_rx.recv_into(&mut buf, None).expect("recv");
        },
    );
    let _ = (std::fs::remove_file(&pa), std::fs::remove_file(&pb));
    d
}

fn fifo_raw(n: u32) -> Duration {
    use std::io::{Read, Write};
    let (pa, pb) = fifo_paths();
    let open = |p: &std::path::Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .expect("open")
    };
    let (mut ping, mut pong) = (open(&pa), open(&pb));
    let mut frame = [0u8; 68];
    frame[..4].copy_from_slice(&64u32.to_le_bytes());
    frame[4..].copy_from_slice(&MSG);
    let mut ping2 = ping.try_clone().expect("dup");
    let mut pong2 = pong.try_clone().expect("dup");
    let d = measure(
        n,
        |n| {
            let mut buf = [0u8; 68];
            for _ in 0..n {
                ping2.read_exact(&mut buf).expect("read");
                pong2.write_all(&buf).expect("write");
            }
        },
        || {
            ping.write_all(&frame).expect("write");
            let mut buf = [0u8; 68];
            pong.read_exact(&mut buf).expect("read");
        },
    );
    let _ = (std::fs::remove_file(&pa), std::fs::remove_file(&pb));
    d
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    type Bench = fn(u32) -> Duration;
    let pairs: [(&str, Bench, &str, Bench); 3] = [
        ("shmkit mq", mq_shmkit, "raw mq_send/mq_receive", mq_raw),
        (
            "shmkit Pipe",
            pipe_shmkit,
            "raw socketpair SEQPACKET",
            socketpair_raw,
        ),
        ("shmkit Fifo", fifo_shmkit, "raw FIFO read/write", fifo_raw),
    ];
    println!("64-byte round trip between two processes, {n} round trips x 5 runs, median");
    for (wname, wrap, rname, raw) in pairs {
        let (mut w, mut r) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            w.push(wrap(n));
            r.push(raw(n));
        }
        let (w, r) = (median(w), median(r));
        println!(
            "{wname:>12}: {:>8.2} us   {rname:>26}: {:>8.2} us   ratio {:.3}",
            w.as_secs_f64() * 1e6,
            r.as_secs_f64() * 1e6,
            w.as_secs_f64() / r.as_secs_f64()
        );
    }
}
