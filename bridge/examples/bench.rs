//! Round-trip time and one-way throughput, on one machine, of
//!
//! - `bridge`: shmkit topic -> shmkit-bridge -> zenoh (TCP loopback) -> shmkit-bridge ->
//!   shmkit topic (two bridge processes; back the same way for the round trip);
//! - `zenoh`: zenoh pub/sub used directly (two sessions in this process, TCP loopback);
//! - `tcp`: a plain TCP socket pair on loopback (length-prefixed frames);
//!
//! for 64 B and 64 KiB messages, with CPU time per message (getrusage of this process,
//! plus /proc/PID/stat of the bridge processes). The echo side runs in a thread of this
//! process for all three. Nothing is pinned; the numbers are for comparing the three
//! paths on the same machine in the same run, not absolute.
//!
//! ```text
//! cargo build --release -p shmkit-bridge --bins --examples
//! target/release/examples/bench [--quick]
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use shmkit::topic::{ByteTopic, Policy};
use zenoh::Wait;
use zenoh::qos::CongestionControl;

const SIZES: [usize; 2] = [64, 64 * 1024];

struct Result {
    path: &'static str,
    size: usize,
    rtt_us: f64,
    msgs_per_s: f64,
    cpu_us_per_msg: f64,
    lost: u64,
}

fn cpu_self() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

/// CPU time of another process so far (utime + stime from /proc).
fn cpu_of(pid: u32) -> Duration {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    // Fields 14 and 15 of stat; `after` starts at field 3.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_micros(ticks * 1_000_000 / tck)
}

fn payload(size: usize, i: u64) -> Vec<u8> {
    let mut m = vec![(i as u8).wrapping_mul(31); size];
    m[..8].copy_from_slice(&i.to_le_bytes());
    m
}

fn check(m: &[u8], size: usize, i: u64) {
    assert_eq!(m.len(), size, "length");
    assert_eq!(
        u64::from_le_bytes(m[..8].try_into().unwrap()),
        i,
        "sequence"
    );
    assert_eq!(m[size - 1], (i as u8).wrapping_mul(31), "content");
}

/// Measures `rtt` (ping -> echo -> pong, `n` times) and one-way throughput (`n` sends,
/// counted by `count_until`).
struct Counts {
    rtt: u64,
    stream: u64,
}

fn counts(size: usize, quick: bool) -> Counts {
    let k = if quick { 10 } else { 1 };
    if size <= 64 {
        Counts {
            rtt: 2000 / k,
            stream: 20_000 / k,
        }
    } else {
        Counts {
            rtt: 500 / k,
            stream: 3000 / k,
        }
    }
}

// ---- TCP ----

fn tcp(size: usize, c: &Counts) -> Result {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // Echo side: mode byte 1 = echo every frame, 2 = count frames and report at the end.
    let echo = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut len = [0u8; 4];
        loop {
            if s.read_exact(&mut len).is_err() {
                return;
            }
            let n = u32::from_le_bytes(len) as usize;
            s.read_exact(&mut buf[..n]).unwrap();
            if n > 0 && buf[0] == 0xEE {
                continue; // stream frame: counted by the sender's final ping
            }
            s.write_all(&len).unwrap();
            s.write_all(&buf[..n]).unwrap();
        }
    });
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut rb = vec![0u8; size];
    let t_cpu = cpu_self();
    let t = Instant::now();
    for i in 0..c.rtt {
        let m = payload(size, i);
        s.write_all(&(size as u32).to_le_bytes()).unwrap();
        s.write_all(&m).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        s.read_exact(&mut rb).unwrap();
        check(&rb, size, i);
    }
    let rtt = t.elapsed();
    let cpu_rtt = cpu_self() - t_cpu;
    // Stream: frames marked 0xEE are not echoed; one final echoed frame marks the end.
    let t = Instant::now();
    let mut m = payload(size, 0);
    m[0] = 0xEE;
    for _ in 0..c.stream {
        s.write_all(&(size as u32).to_le_bytes()).unwrap();
        s.write_all(&m).unwrap();
    }
    let fin = payload(size, 7);
    s.write_all(&(size as u32).to_le_bytes()).unwrap();
    s.write_all(&fin).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    s.read_exact(&mut rb).unwrap();
    let stream = t.elapsed();
    drop(s);
    echo.join().unwrap();
    Result {
        path: "tcp",
        size,
        rtt_us: rtt.as_secs_f64() * 1e6 / c.rtt as f64,
        msgs_per_s: c.stream as f64 / stream.as_secs_f64(),
        cpu_us_per_msg: cpu_rtt.as_secs_f64() * 1e6 / c.rtt as f64,
        lost: 0,
    }
}

// ---- zenoh directly ----

fn zenoh_sessions() -> (zenoh::Session, zenoh::Session) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = |listen: bool| {
        let mut c = zenoh::Config::default();
        c.insert_json5("mode", "\"peer\"").unwrap();
        c.insert_json5("scouting/multicast/enabled", "false")
            .unwrap();
        let ep = format!("[\"tcp/127.0.0.1:{port}\"]");
        if listen {
            c.insert_json5("listen/endpoints", &ep).unwrap();
        } else {
            c.insert_json5("listen/endpoints", "[]").unwrap();
            c.insert_json5("connect/endpoints", &ep).unwrap();
        }
        c
    };
    let b = zenoh::open(conf(true)).wait().unwrap();
    let a = zenoh::open(conf(false)).wait().unwrap();
    (a, b)
}

fn zenoh_direct(size: usize, c: &Counts) -> Result {
    let (a, b) = zenoh_sessions();
    let k = format!("bench/{}", std::process::id());
    let (ping_k, pong_k, stream_k) = (format!("{k}/ping"), format!("{k}/pong"), format!("{k}/s"));
    // B echoes ping -> pong and counts the stream.
    let pong_pub = b
        .declare_publisher(pong_k.clone())
        .congestion_control(CongestionControl::Block)
        .wait()
        .unwrap();
    // The echo runs in its own thread (a blocking put inside a subscriber callback
    // stalls zenoh's receive path under load).
    let ping_sub = b.declare_subscriber(ping_k.clone()).wait().unwrap();
    let total = c.rtt + 1;
    let echo = std::thread::spawn(move || {
        for _ in 0..total {
            match ping_sub.recv_timeout(Duration::from_secs(10)) {
                Ok(Some(s)) => pong_pub
                    .put(s.payload().to_bytes().into_owned())
                    .wait()
                    .unwrap(),
                _ => break,
            }
        }
    });
    let (ctx, crx) = channel::<()>();
    let want = c.stream;
    let mut got = 0u64;
    let _count = b
        .declare_subscriber(stream_k.clone())
        .callback_mut(move |_| {
            got += 1;
            if got == want {
                let _ = ctx.send(());
            }
        })
        .wait()
        .unwrap();
    let (ptx, prx) = channel::<Vec<u8>>();
    let _pong = a
        .declare_subscriber(pong_k)
        .callback(move |s| {
            let _ = ptx.send(s.payload().to_bytes().into_owned());
        })
        .wait()
        .unwrap();
    let ping = a
        .declare_publisher(ping_k)
        .congestion_control(CongestionControl::Block)
        .wait()
        .unwrap();
    let stream = a
        .declare_publisher(stream_k)
        .congestion_control(CongestionControl::Block)
        .wait()
        .unwrap();
    // Wait (bounded) until both sides see each other's declarations.
    let t0 = Instant::now();
    while !(ping.matching_status().wait().unwrap().matching()
        && stream.matching_status().wait().unwrap().matching())
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "zenoh sessions never matched"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let warm = payload(size, u64::MAX);
    ping.put(warm).wait().unwrap();
    prx.recv_timeout(Duration::from_secs(10))
        .expect("warm-up pong");
    let t_cpu = cpu_self();
    let t = Instant::now();
    for i in 0..c.rtt {
        ping.put(payload(size, i)).wait().unwrap();
        let m = prx.recv_timeout(Duration::from_secs(10)).expect("pong");
        check(&m, size, i);
    }
    let rtt = t.elapsed();
    let cpu_rtt = cpu_self() - t_cpu;
    echo.join().unwrap();
    let t = Instant::now();
    for i in 0..c.stream {
        stream.put(payload(size, i)).wait().unwrap();
    }
    let lost = match crx.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    let el = t.elapsed();
    Result {
        path: "zenoh",
        size,
        rtt_us: rtt.as_secs_f64() * 1e6 / c.rtt as f64,
        msgs_per_s: c.stream as f64 / el.as_secs_f64(),
        cpu_us_per_msg: cpu_rtt.as_secs_f64() * 1e6 / c.rtt as f64,
        lost,
    }
}

// ---- shmkit -> bridge -> zenoh -> bridge -> shmkit ----

struct Bridge(Child, Receiver<String>);

impl Bridge {
    fn spawn(exe: &std::path::Path, args: &[String]) -> Bridge {
        let mut c = Command::new(exe)
            .args(args)
            .args([
                "--backlog",
                "4096",
                "--capacity",
                "1024",
                "--max-message",
                "65536",
                "--stats",
                "2000",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn shmkit-bridge (cargo build --release -p shmkit-bridge --bins)");
        let out = c.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let debug = std::env::var_os("BENCH_DEBUG").is_some();
            for l in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
                if debug {
                    eprintln!("bridge: {l}");
                }
                let _ = tx.send(l);
            }
        });
        Bridge(c, rx)
    }
    /// Waits (bounded) until every line of `want` was printed, in any order (a route
    /// may report `matched` before the bridge prints `ready`).
    fn wait_for(&self, want: &[&str]) {
        let mut left: Vec<&str> = want.to_vec();
        let end = Instant::now() + Duration::from_secs(20);
        while !left.is_empty() {
            let t = end.saturating_duration_since(Instant::now());
            match self.1.recv_timeout(t) {
                Ok(l) => left.retain(|w| *w != l),
                Err(_) => panic!("the bridge never printed {left:?}"),
            }
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Unlink(Vec<String>);
impl Drop for Unlink {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = shmkit::Segment::unlink(n);
        }
    }
}

fn bridged(size: usize, c: &Counts) -> Result {
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("shmkit-bridge");
    let pid = std::process::id();
    let n = |t: &str| format!("shmkit-bench-{t}-{pid}-{size}");
    let names = [n("pa"), n("pb"), n("qb"), n("qa"), n("sa"), n("sb")];
    let _u = Unlink(names.to_vec());
    let topic = |name: &str| {
        ByteTopic::options()
            .capacity(1024)
            .policy(Policy::Block)
            .create(name, 64 * 1024)
            .unwrap()
    };
    let t: Vec<ByteTopic> = names.iter().map(|x| topic(x)).collect();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let k = format!("bench/{pid}/{size}");
    // Host B: ping in, pong out, stream in. Host A: ping out, pong in, stream out.
    let b = Bridge::spawn(
        &exe,
        &[
            "--listen".into(),
            ep.clone(),
            "--in".into(),
            format!("{k}/ping=topic:{}", names[1]),
            "--out".into(),
            format!("topic:{}={k}/pong", names[2]),
            "--in".into(),
            format!("{k}/s=topic:{}", names[5]),
        ],
    );
    let a = Bridge::spawn(
        &exe,
        &[
            "--connect".into(),
            ep,
            "--out".into(),
            format!("topic:{}={k}/ping", names[0]),
            "--in".into(),
            format!("{k}/pong=topic:{}", names[3]),
            "--out".into(),
            format!("topic:{}={k}/s", names[4]),
        ],
    );
    // Every out route sees its remote subscriber.
    a.wait_for(&["ready", "route 0 matched", "route 2 matched"]);
    b.wait_for(&["ready", "route 1 matched"]);
    // Echo on host B: ping topic -> pong topic (copy out, publish from a loan).
    let ping_b = t[1].subscribe().unwrap();
    let pong_b = t[2].publisher().unwrap();
    let stream_b = t[5].subscribe().unwrap();
    let total = c.rtt + 1;
    let echo = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for _ in 0..total {
            ping_b
                .recv_timeout(&mut buf, Duration::from_secs(20))
                .expect("ping at B");
            let mut loan = pong_b.loan(buf.len()).unwrap();
            loan.copy_from_slice(&buf);
            loan.publish();
        }
    });
    let ping_a = t[0].publisher().unwrap();
    let pong_a = t[3].subscribe().unwrap();
    let stream_a = t[4].publisher().unwrap();
    let mut buf = Vec::new();
    ping_a.send(&payload(size, u64::MAX)).unwrap();
    pong_a
        .recv_timeout(&mut buf, Duration::from_secs(20))
        .expect("warm-up");
    let cpu0 = cpu_self() + cpu_of(a.0.id()) + cpu_of(b.0.id());
    let t0 = Instant::now();
    for i in 0..c.rtt {
        let mut loan = ping_a.loan(size).unwrap();
        loan.copy_from_slice(&payload(size, i));
        loan.publish();
        pong_a
            .recv_timeout(&mut buf, Duration::from_secs(20))
            .expect("pong");
        check(&buf, size, i);
    }
    let rtt = t0.elapsed();
    let cpu_rtt = cpu_self() + cpu_of(a.0.id()) + cpu_of(b.0.id()) - cpu0;
    echo.join().unwrap();
    // One way: every message sent, counted at B (a loss shows as a shortfall).
    let want = c.stream;
    let counter = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut got = 0u64;
        while got < want {
            match stream_b.recv_timeout(&mut buf, Duration::from_secs(5)) {
                Ok(_) => got += 1,
                Err(_) => break,
            }
        }
        (got, Instant::now())
    });
    let t0 = Instant::now();
    for i in 0..c.stream {
        // Bounded: a stalled path shows as lost messages, not as a hung bench.
        let Ok(mut loan) = stream_a.loan_timeout(size, Duration::from_secs(10)) else {
            eprintln!("bridge {size}: the stream stalled at message {i}");
            break;
        };
        loan[..8].copy_from_slice(&i.to_le_bytes());
        loan.publish();
    }
    let (got, end) = counter.join().unwrap();
    Result {
        path: "bridge",
        size,
        rtt_us: rtt.as_secs_f64() * 1e6 / c.rtt as f64,
        msgs_per_s: got as f64 / (end - t0).as_secs_f64(),
        cpu_us_per_msg: cpu_rtt.as_secs_f64() * 1e6 / c.rtt as f64,
        lost: want - got,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!(
        "{:<8} {:>8} {:>12} {:>14} {:>20} {:>6}",
        "path", "size", "rtt_us", "msgs_per_s", "cpu_us_per_roundtrip", "lost"
    );
    for size in SIZES {
        let c = counts(size, quick);
        let rows = [bridged(size, &c), zenoh_direct(size, &c), tcp(size, &c)];
        for r in rows {
            println!(
                "{:<8} {:>8} {:>12.1} {:>14.0} {:>20.1} {:>6}",
                r.path, r.size, r.rtt_us, r.msgs_per_s, r.cpu_us_per_msg, r.lost
            );
        }
    }
}
