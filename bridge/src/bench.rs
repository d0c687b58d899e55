//! `shmkit-bridge-bench`: round-trip time and one-way throughput, on one machine, of
//!
//! - `bridge`: shmkit topic -> shmkit-bridge -> zenoh (TCP loopback) -> shmkit-bridge ->
//!   shmkit topic (two bridge processes; back the same way for the round trip);
//! - `zenoh`: zenoh pub/sub used directly (one session per process, TCP loopback);
//! - `tcp`: a plain TCP socket pair on loopback (4-byte length prefix per message);
//!
//! at 64 B and 64 KiB, with the CPU time of every process involved per message.
//!
//! ```text
//! cargo build --release -p shmkit-bridge
//! target/release/shmkit-bridge-bench [--quick]          # the table, every path and size
//! target/release/shmkit-bridge-bench --json --path bridge --what rtt --size 64 [--quick]
//! ```
//!
//! The second form is how `shmkit-bench --workload bridge` (compare/src/bridge.rs) runs
//! it: one measurement, JSON on stdout, an error on stderr with a non-zero exit.
//!
//! Method, the same for the three paths:
//!
//! - Two sides, each its own process: side A (this process: it sends and times) and
//!   side B (this program re-executed as `--role echo`: it checks and answers). On the
//!   bridge path each side also has its bridge process (bridge A connects, bridge B
//!   listens). Side A and its bridge are pinned to the first core given (`--cpus A,B`,
//!   default: the first two this process may use), side B and its bridge to the second:
//!   a child inherits the core of the thread that spawns it, so this process moves its
//!   main thread to B's core for the moment of spawning B's processes. zenoh's and the
//!   bridges' threads run on their side's core with the rest of that side.
//! - Every message is written by its sender (sequence number, kind, count, repetition,
//!   then a pattern derived from the sequence number in every other byte) and checked by
//!   its receiver, every byte (B checks pings and stream messages, A checks the answers);
//!   a mismatch fails the run. On the bridge path the sender writes straight into the
//!   loaned topic slot.
//! - rtt: a warm-up (a first ping resent every 200 ms until one comes back, as routes and
//!   declarations settle, then `warmup` untimed round trips), then `iters` round trips
//!   timed one by one. stream: `reps` runs of `count` messages sent back to back; B
//!   acknowledges the last one with the number it received; the figure is the median
//!   run's time per message.
//! - The bridges run with `--backlog` at least the stream run's message count. A one-way
//!   burst at full speed outruns side B's reader (it shares a core with bridge B), and
//!   with a smaller backlog bridge B drops the excess and counts it, as its in routes
//!   promise (bridge/README.md, "Delivery"); the run would then fail with the loss. So
//!   the stream figure is the path's throughput with the bridge buffering the burst,
//!   clocked until side B has checked the last message.
//! - Every wait is bounded ([`WAIT`]): a lost answer, a lost stream message (B reports
//!   how many it got), a stalled sender or a dead peer ends the run with an error saying
//!   what was lost, never a hang.
//! - CPU: user + system time of every process of the run (this one by getrusage, the
//!   others from /proc/PID/stat, clock-tick resolution) over the timed part, per message.
//!   On the bridge path that includes the bridges' waiting (a route thread spins briefly
//!   before it sleeps).

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::resource::{UsageWho, getrusage};
use nix::unistd::Pid;
use shmkit::topic::{BytePublisher, ByteSubscriber, ByteTopic, Policy};
use zenoh::Wait;
use zenoh::qos::CongestionControl;

/// The longest any single wait of the run may take.
const WAIT: Duration = Duration::from_secs(10);
/// Header words: sequence, kind, count (stream), repetition (stream).
const HEADER: usize = 32;

const WARM: u64 = 1;
const PING: u64 = 2;
const STREAM: u64 = 3;
const ACK: u64 = 4;
const END: u64 = 5;

#[derive(Parser, Debug)]
#[command(
    name = "shmkit-bridge-bench",
    about = "rtt and throughput: shmkit through the bridge vs zenoh directly vs TCP"
)]
struct Cli {
    /// Smaller counts (seconds rather than tens of seconds).
    #[arg(long)]
    quick: bool,
    /// One measurement as JSON (needs --path, --what, --size).
    #[arg(long)]
    json: bool,
    /// bridge, zenoh or tcp.
    #[arg(long)]
    path: Option<String>,
    /// rtt or stream.
    #[arg(long)]
    what: Option<String>,
    /// Message size in bytes (at least 64).
    #[arg(long)]
    size: Option<usize>,
    /// Cores of side A and side B (`-1,-1`: not pinned).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    cpus: Vec<i64>,
    /// Internal: `echo` runs side B.
    #[arg(long, hide = true)]
    role: Option<String>,
    /// Internal (side B): the endpoint or the topic names.
    #[arg(long, hide = true)]
    at: Option<String>,
}

// ---- messages ----

fn pattern(seq: u64, j: usize) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(j as u8)
}

/// Writes message `seq` of `kind` into `m` (its whole length).
fn fill(m: &mut [u8], seq: u64, kind: u64, count: u64, rep: u64) {
    for (i, w) in [seq, kind, count, rep].into_iter().enumerate() {
        m[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    for (j, b) in m.iter_mut().enumerate().skip(HEADER) {
        *b = pattern(seq, j);
    }
}

/// Checks a received message: its length and every byte; returns its header.
fn check(m: &[u8], size: usize) -> Result<[u64; 4], String> {
    if m.len() != size {
        return Err(format!("a message of {} B, expected {size}", m.len()));
    }
    let w = |i: usize| u64::from_le_bytes(m[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let h = [w(0), w(1), w(2), w(3)];
    if let Some(j) = (HEADER..size).find(|&j| m[j] != pattern(h[0], j)) {
        return Err(format!(
            "message {} (kind {}): byte {j} differs",
            h[0], h[1]
        ));
    }
    Ok(h)
}

// ---- links: one side's sending and receiving end ----

trait Link {
    /// Sends one message of `size` bytes, written in place.
    fn send(&mut self, size: usize, h: [u64; 4]) -> Result<(), String>;
    /// The next message, or `None` after `timeout`.
    fn recv(&mut self, timeout: Duration) -> Result<Option<&[u8]>, String>;
}

struct Tcp {
    s: TcpStream,
    w: Vec<u8>,
    r: Vec<u8>,
}

impl Tcp {
    fn new(s: TcpStream) -> Result<Tcp, String> {
        s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        s.set_write_timeout(Some(WAIT))
            .map_err(|e| format!("write timeout: {e}"))?;
        Ok(Tcp {
            s,
            w: Vec::new(),
            r: Vec::new(),
        })
    }
}

impl Link for Tcp {
    fn send(&mut self, size: usize, h: [u64; 4]) -> Result<(), String> {
        self.w.resize(4 + size, 0);
        self.w[..4].copy_from_slice(&(size as u32).to_le_bytes());
        fill(&mut self.w[4..], h[0], h[1], h[2], h[3]);
        self.s
            .write_all(&self.w)
            .map_err(|e| format!("tcp send: {e}"))
    }
    fn recv(&mut self, timeout: Duration) -> Result<Option<&[u8]>, String> {
        self.s
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|e| format!("read timeout: {e}"))?;
        let mut len = [0u8; 4];
        match self.s.read_exact(&mut len) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(format!("tcp receive: {e}")),
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > 64 << 20 {
            return Err(format!("tcp frame of {n} B"));
        }
        // The rest of a frame whose start arrived: bounded by the read timeout too.
        self.r.resize(n, 0);
        self.s
            .read_exact(&mut self.r)
            .map_err(|e| format!("tcp receive (frame body): {e}"))?;
        Ok(Some(&self.r))
    }
}

struct Zenoh {
    _session: zenoh::Session,
    publisher: zenoh::pubsub::Publisher<'static>,
    sub: zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>,
    r: Vec<u8>,
}

impl Zenoh {
    /// A session listening on (`listen`) or connecting to `endpoint`, publishing on `out`
    /// and subscribed to `inp`.
    fn open(endpoint: &str, listen: bool, out: &str, inp: &str) -> Result<Zenoh, String> {
        let mut c = zenoh::Config::default();
        let ep = format!("[\"{endpoint}\"]");
        let (l, k) = if listen {
            (ep.as_str(), "[]")
        } else {
            ("[]", ep.as_str())
        };
        for (key, v) in [
            ("mode", "\"peer\""),
            ("scouting/multicast/enabled", "false"),
            ("listen/endpoints", l),
            ("connect/endpoints", k),
            ("connect/timeout_ms", "-1"),
            ("connect/exit_on_failure", "false"),
            (
                "connect/retry",
                "{period_init_ms: 50, period_max_ms: 200, period_increase_factor: 2}",
            ),
        ] {
            c.insert_json5(key, v)
                .map_err(|e| format!("zenoh config {key}: {e}"))?;
        }
        let session = zenoh::open(c)
            .wait()
            .map_err(|e| format!("zenoh session: {e}"))?;
        let sub = session
            .declare_subscriber(inp.to_string())
            .wait()
            .map_err(|e| format!("zenoh subscriber: {e}"))?;
        let publisher = session
            .declare_publisher(out.to_string())
            .congestion_control(CongestionControl::Block)
            .wait()
            .map_err(|e| format!("zenoh publisher: {e}"))?;
        Ok(Zenoh {
            _session: session,
            publisher,
            sub,
            r: Vec::new(),
        })
    }
}

impl Link for Zenoh {
    fn send(&mut self, size: usize, h: [u64; 4]) -> Result<(), String> {
        let mut m = vec![0u8; size];
        fill(&mut m, h[0], h[1], h[2], h[3]);
        self.publisher
            .put(m)
            .wait()
            .map_err(|e| format!("zenoh put: {e}"))
    }
    fn recv(&mut self, timeout: Duration) -> Result<Option<&[u8]>, String> {
        match self.sub.recv_timeout(timeout) {
            Ok(Some(s)) => {
                self.r.clear();
                self.r.extend_from_slice(&s.payload().to_bytes());
                Ok(Some(&self.r))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(format!("zenoh receive: {e}")),
        }
    }
}

struct Topics {
    publisher: BytePublisher,
    sub: ByteSubscriber,
    r: Vec<u8>,
}

impl Topics {
    fn open(out: &str, inp: &str) -> Result<Topics, String> {
        let open = |n: &str| {
            ByteTopic::options()
                .open(n)
                .map_err(|e| format!("topic {n}: {e}"))
        };
        let (o, i) = (open(out)?, open(inp)?);
        Ok(Topics {
            sub: i.subscribe().map_err(|e| format!("subscribe {inp}: {e}"))?,
            publisher: o.publisher().map_err(|e| format!("publisher {out}: {e}"))?,
            r: Vec::new(),
        })
    }
}

impl Link for Topics {
    fn send(&mut self, size: usize, h: [u64; 4]) -> Result<(), String> {
        // The sender writes the message straight into the slot (no staging copy).
        let mut loan = self
            .publisher
            .loan_timeout(size, WAIT)
            .map_err(|e| format!("topic loan (no room within {WAIT:?}): {e}"))?;
        fill(&mut loan, h[0], h[1], h[2], h[3]);
        loan.publish();
        Ok(())
    }
    fn recv(&mut self, timeout: Duration) -> Result<Option<&[u8]>, String> {
        match self.sub.recv_timeout(&mut self.r, timeout) {
            Ok(_) => Ok(Some(&self.r)),
            Err(e) if e.is_timeout() => Ok(None),
            Err(e) => Err(format!("topic receive: {e}")),
        }
    }
}

// ---- side B ----

/// Side B: checks every message and answers pings, warm-ups and the last message of
/// each stream run, until END or until nothing arrives for [`WAIT`] three times over.
fn echo(link: &mut dyn Link, size: usize) -> Result<(), String> {
    let mut next_ping = 0u64;
    let (mut rep, mut next, mut got) = (u64::MAX, 0u64, 0u64);
    loop {
        let h = match link.recv(3 * WAIT)? {
            Some(m) => check(m, size)?,
            None => return Err(format!("side B: nothing received for {:?}", 3 * WAIT)),
        };
        let [seq, kind, count, r] = h;
        match kind {
            WARM => link.send(size, [seq, WARM, 0, 0])?,
            PING => {
                if seq != next_ping {
                    return Err(format!("side B: ping {seq}, expected {next_ping}"));
                }
                next_ping += 1;
                link.send(size, [seq, PING, 0, 0])?;
            }
            STREAM => {
                if r != rep {
                    (rep, next, got) = (r, 0, 0);
                }
                if seq < next {
                    return Err(format!(
                        "side B: stream run {r}: message {seq} after {}",
                        next - 1
                    ));
                }
                // A gap is a loss: the acknowledgement tells A how many arrived.
                got += 1;
                next = seq + 1;
                if seq + 1 == count {
                    link.send(size, [got, ACK, count, r])?;
                }
            }
            END => return Ok(()),
            k => return Err(format!("side B: message of unknown kind {k}")),
        }
    }
}

// ---- side A ----

/// Waits for the answer of kind `kind` to `seq`, skipping late warm-up answers.
fn answer(link: &mut dyn Link, size: usize, kind: u64, seq: u64) -> Result<[u64; 4], String> {
    let end = Instant::now() + WAIT;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let h = match link.recv(left)? {
            Some(m) => check(m, size)?,
            None => {
                return Err(format!(
                    "no answer to message {seq} within {WAIT:?} (lost on the way)"
                ));
            }
        };
        if h[1] == kind && (kind == ACK || h[0] == seq) {
            return Ok(h);
        }
        if h[1] != WARM {
            return Err(format!(
                "answer {} of kind {} while waiting for {seq} of kind {kind}",
                h[0], h[1]
            ));
        }
    }
}

/// A first round trip, resent until it comes back (routes and declarations settling).
fn warm_up(link: &mut dyn Link, size: usize, peers: &mut [Child]) -> Result<(), String> {
    let end = Instant::now() + 3 * WAIT;
    while Instant::now() < end {
        link.send(size, [0, WARM, 0, 0])?;
        if let Some(m) = link.recv(Duration::from_millis(200))? {
            if check(m, size)?[1] == WARM {
                return Ok(());
            }
        }
        alive(peers)?;
    }
    Err(format!("no warm-up answer within {:?}", 3 * WAIT))
}

fn alive(peers: &mut [Child]) -> Result<(), String> {
    for c in peers.iter_mut() {
        if let Ok(Some(st)) = c.try_wait() {
            return Err(format!("process {} exited: {st}", c.id()));
        }
    }
    Ok(())
}

/// What one measurement gives.
struct Out {
    /// rtt: one sample per round trip; stream: time per message of each run.
    ns: Vec<f64>,
    cpu_ns_per_op: f64,
    ops: u64,
}

struct Counts {
    warmup: u64,
    iters: u64,
    count: u64,
    reps: u64,
}

fn counts(size: usize, quick: bool) -> Counts {
    match (size <= 4096, quick) {
        (true, true) => Counts {
            warmup: 50,
            iters: 500,
            count: 2_000,
            reps: 3,
        },
        (true, false) => Counts {
            warmup: 200,
            iters: 5_000,
            count: 20_000,
            reps: 5,
        },
        (false, true) => Counts {
            warmup: 20,
            iters: 200,
            count: 200,
            reps: 3,
        },
        (false, false) => Counts {
            warmup: 50,
            iters: 1_000,
            count: 2_000,
            reps: 5,
        },
    }
}

fn rtt(link: &mut dyn Link, size: usize, c: &Counts, cpu: &Cpu) -> Result<Out, String> {
    for i in 0..c.warmup {
        link.send(size, [i, WARM, 0, 0])?;
        answer(link, size, WARM, i)?;
    }
    let mut ns = Vec::with_capacity(c.iters as usize);
    let c0 = cpu.now();
    for i in 0..c.iters {
        let t = Instant::now();
        link.send(size, [i, PING, 0, 0])?;
        answer(link, size, PING, i).map_err(|e| format!("round trip {i}: {e}"))?;
        ns.push(t.elapsed().as_nanos() as f64);
    }
    let used = cpu.now().saturating_sub(c0);
    Ok(Out {
        ns,
        cpu_ns_per_op: used.as_nanos() as f64 / c.iters as f64,
        ops: c.iters,
    })
}

fn stream(link: &mut dyn Link, size: usize, c: &Counts, cpu: &Cpu) -> Result<Out, String> {
    let mut ns = Vec::new();
    let c0 = cpu.now();
    for rep in 0..c.reps {
        let t = Instant::now();
        for i in 0..c.count {
            link.send(size, [i, STREAM, c.count, rep])
                .map_err(|e| format!("stream run {rep}, message {i}: {e}"))?;
        }
        let h =
            answer(link, size, ACK, c.count - 1).map_err(|e| format!("stream run {rep}: {e}"))?;
        if h[0] != c.count || h[3] != rep {
            return Err(format!(
                "stream run {rep}: side B received {} of {} messages ({} lost)",
                h[0],
                c.count,
                c.count.saturating_sub(h[0])
            ));
        }
        ns.push(t.elapsed().as_nanos() as f64 / c.count as f64);
    }
    let used = cpu.now().saturating_sub(c0);
    let ops = c.count * c.reps;
    Ok(Out {
        ns,
        cpu_ns_per_op: used.as_nanos() as f64 / ops as f64,
        ops,
    })
}

// ---- processes, cores, CPU time ----

/// CPU time of this process and of the given children.
struct Cpu(Vec<u32>);

impl Cpu {
    fn now(&self) -> Duration {
        let tv = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(t.tv_sec().max(0) as u64)
                + Duration::from_micros(t.tv_usec().max(0) as u64)
        };
        let me = getrusage(UsageWho::RUSAGE_SELF)
            .map(|u| tv(u.user_time()) + tv(u.system_time()))
            .unwrap_or_default();
        me + self.0.iter().map(|&p| cpu_of(p)).sum::<Duration>()
    }
}

/// utime + stime of process `pid` (all its threads) from /proc.
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
        .unwrap_or(100)
        .max(1) as u64;
    // Fields 14 and 15 of stat; `after` starts at field 3.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_micros(ticks * 1_000_000 / tck)
}

/// Moves the calling thread to `core` (no-op for `None`).
fn pin(core: Option<usize>) -> Result<(), String> {
    let Some(core) = core else { return Ok(()) };
    let mut set = CpuSet::new();
    set.set(core).map_err(|e| format!("core {core}: {e}"))?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("pin to core {core}: {e}"))
}

/// The cores of sides A and B.
#[derive(Clone, Copy)]
struct Cores {
    a: Option<usize>,
    b: Option<usize>,
}

impl Cores {
    fn from_args(cpus: &[i64]) -> Cores {
        let c = |x: Option<&i64>| x.and_then(|&v| usize::try_from(v).ok());
        if !cpus.is_empty() {
            return Cores {
                a: c(cpus.first()),
                b: c(cpus.get(1)),
            };
        }
        let mine = sched_getaffinity(Pid::from_raw(0)).ok();
        let allowed: Vec<usize> = (0..CpuSet::count())
            .filter(|&i| mine.as_ref().is_some_and(|s| s.is_set(i).unwrap_or(false)))
            .collect();
        match allowed.as_slice() {
            [a, b, ..] => Cores {
                a: Some(*a),
                b: Some(*b),
            },
            _ => Cores { a: None, b: None },
        }
    }

    /// Spawns `cmd` on side B's core: the child inherits this thread's mask at fork.
    fn spawn_b(&self, cmd: &mut Command) -> Result<Child, String> {
        let before = sched_getaffinity(Pid::from_raw(0)).map_err(|e| format!("affinity: {e}"))?;
        pin(self.b)?;
        let child = cmd.spawn();
        sched_setaffinity(Pid::from_raw(0), &before)
            .map_err(|e| format!("restore affinity: {e}"))?;
        child.map_err(|e| format!("spawn {:?}: {e}", cmd.get_program()))
    }
}

/// Side B, as a child process.
fn spawn_echo(cores: &Cores, path: &str, size: usize, at: &str) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    cores.spawn_b(
        Command::new(exe)
            .args(["--role", "echo", "--path", path, "--at", at])
            .args(["--size", &size.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    )
}

/// Children killed and reaped when the measurement ends, however it ends.
struct Reap(Vec<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
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

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("a free loopback port: {e}"))
}

/// A bridge process's stdout lines, read by a thread.
fn lines(c: &mut Child) -> Receiver<String> {
    let (tx, rx) = channel();
    if let Some(out) = c.stdout.take() {
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
                let _ = tx.send(l);
            }
        });
    }
    rx
}

/// Waits (bounded) until the bridge printed every line of `want`, in any order.
fn wait_lines(rx: &Receiver<String>, want: &[&str], who: &str) -> Result<(), String> {
    let mut left: Vec<&str> = want.to_vec();
    let end = Instant::now() + 2 * WAIT;
    while !left.is_empty() {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(l) => left.retain(|w| *w != l),
            Err(_) => return Err(format!("{who} never printed {left:?}")),
        }
    }
    Ok(())
}

/// Sets up `path` with side B running, measures, ends side B.
fn measure(path: &str, what: &str, size: usize, quick: bool, cores: Cores) -> Result<Out, String> {
    if size < 64 {
        return Err("size: at least 64 B".into());
    }
    pin(cores.a)?;
    let c = counts(size, quick);
    let mut reap = Reap(Vec::new());
    let link: Box<dyn Link> = match path {
        "tcp" => {
            let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("tcp bind: {e}"))?;
            let addr = l.local_addr().map_err(|e| format!("tcp addr: {e}"))?;
            reap.0
                .push(spawn_echo(&cores, path, size, &addr.to_string())?);
            l.set_nonblocking(true)
                .map_err(|e| format!("tcp nonblocking: {e}"))?;
            let end = Instant::now() + WAIT;
            let s = loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        alive(&mut reap.0)?;
                        if Instant::now() > end {
                            return Err(format!("side B did not connect within {WAIT:?}"));
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => return Err(format!("tcp accept: {e}")),
                }
            };
            s.set_nonblocking(false)
                .map_err(|e| format!("tcp blocking: {e}"))?;
            Box::new(Tcp::new(s)?)
        }
        "zenoh" => {
            let ep = format!("tcp/127.0.0.1:{}", free_port()?);
            let k = format!("shmkit-bench/{}", std::process::id());
            reap.0.push(spawn_echo(&cores, path, size, &ep)?);
            Box::new(Zenoh::open(
                &ep,
                false,
                &format!("{k}/ab"),
                &format!("{k}/ba"),
            )?)
        }
        "bridge" => {
            let exe = std::env::current_exe()
                .map_err(|e| format!("own executable: {e}"))?
                .with_file_name("shmkit-bridge");
            if !exe.exists() {
                return Err(format!(
                    "{} not found (cargo build --release -p shmkit-bridge)",
                    exe.display()
                ));
            }
            let pid = std::process::id();
            let names: Vec<String> = ["pa", "qa", "pb", "qb"]
                .iter()
                .map(|t| format!("shmkit-bench-bridge-{t}-{pid}"))
                .collect();
            let _u = Unlink(names.clone());
            for n in &names {
                ByteTopic::options()
                    .capacity(1024)
                    .policy(Policy::Block)
                    .create(n, size.max(4096))
                    .map_err(|e| format!("topic {n}: {e}"))?;
            }
            // Side A's own topics, subscribed before anything can be published into them.
            let a = Topics::open(&names[0], &names[1])?;
            let ep = format!("tcp/127.0.0.1:{}", free_port()?);
            let k = format!("shmkit-bench/{pid}");
            // A stream run is a burst faster than side B's reader: the in route holds
            // it all (see the module docs) rather than drop and count the excess.
            let backlog = c.count.max(4096).to_string();
            let bridge = |args: Vec<String>| {
                let mut cmd = Command::new(&exe);
                cmd.args(args)
                    .args(["--backlog", &backlog, "--stats", "0"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped());
                cmd
            };
            let mut b_bridge = cores.spawn_b(&mut bridge(vec![
                "--listen".into(),
                ep.clone(),
                "--in".into(),
                format!("{k}/ab=topic:{}", names[2]),
                "--out".into(),
                format!("topic:{}={k}/ba", names[3]),
            ]))?;
            let b_lines = lines(&mut b_bridge);
            reap.0.push(b_bridge);
            let mut a_bridge = bridge(vec![
                "--connect".into(),
                ep,
                "--out".into(),
                format!("topic:{}={k}/ab", names[0]),
                "--in".into(),
                format!("{k}/ba=topic:{}", names[1]),
            ])
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", exe.display()))?;
            let a_lines = lines(&mut a_bridge);
            reap.0.push(a_bridge);
            reap.0.push(spawn_echo(
                &cores,
                path,
                size,
                &format!("{},{}", names[2], names[3]),
            )?);
            wait_lines(&a_lines, &["ready", "route 0 matched"], "bridge A")?;
            wait_lines(&b_lines, &["ready", "route 1 matched"], "bridge B")?;
            let out = run(Box::new(a), what, size, &c, &mut reap);
            drop(_u);
            return out;
        }
        p => return Err(format!("path {p:?}: expected bridge, zenoh or tcp")),
    };
    run(link, what, size, &c, &mut reap)
}

fn run(
    mut link: Box<dyn Link>,
    what: &str,
    size: usize,
    c: &Counts,
    reap: &mut Reap,
) -> Result<Out, String> {
    let cpu = Cpu(reap.0.iter().map(|c| c.id()).collect());
    let l = link.as_mut();
    warm_up(l, size, &mut reap.0)?;
    let out = match what {
        "rtt" => rtt(l, size, c, &cpu),
        "stream" => stream(l, size, c, &cpu),
        w => Err(format!("what {w:?}: expected rtt or stream")),
    };
    let out = out.map_err(|e| match alive(&mut reap.0) {
        Err(dead) => format!("{e}; {dead}"),
        Ok(()) => e,
    })?;
    // Side B ends on END (and is killed by `Reap` otherwise).
    let _ = l.send(size, [0, END, 0, 0]);
    Ok(out)
}

/// Side B's main.
fn side_b(path: &str, size: usize, at: &str) -> Result<(), String> {
    let mut link: Box<dyn Link> = match path {
        "tcp" => Box::new(Tcp::new(
            TcpStream::connect(at).map_err(|e| format!("connect {at}: {e}"))?,
        )?),
        "zenoh" => {
            let k = format!("shmkit-bench/{}", std::os::unix::process::parent_id());
            Box::new(Zenoh::open(
                at,
                true,
                &format!("{k}/ba"),
                &format!("{k}/ab"),
            )?)
        }
        "bridge" => {
            let (inp, out) = at.split_once(',').ok_or("--at IN,OUT")?;
            Box::new(Topics::open(out, inp)?)
        }
        p => return Err(format!("path {p:?}")),
    };
    echo(link.as_mut(), size)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.role.as_deref() == Some("echo") {
        let r = side_b(
            cli.path.as_deref().unwrap_or(""),
            cli.size.unwrap_or(0),
            cli.at.as_deref().unwrap_or(""),
        );
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("shmkit-bridge-bench (side B): {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cores = Cores::from_args(&cli.cpus);
    if cli.json {
        let (Some(path), Some(what), Some(size)) = (&cli.path, &cli.what, cli.size) else {
            eprintln!("shmkit-bridge-bench: --json needs --path, --what and --size");
            return ExitCode::from(2);
        };
        return match measure(path, what, size, cli.quick, cores) {
            Ok(o) => {
                let v = serde_json::json!({
                    "path": path, "what": what, "size": size,
                    "ns": o.ns, "ops": o.ops, "cpu_ns_per_op": o.cpu_ns_per_op,
                    "cores": [cores.a, cores.b],
                });
                println!("{v}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shmkit-bridge-bench: {path} {what} {size} B: {e}");
                ExitCode::FAILURE
            }
        };
    }
    println!(
        "cores: side A {:?}, side B {:?}{}",
        cores.a,
        cores.b,
        if cli.quick { " (--quick)" } else { "" }
    );
    println!(
        "{:<7} {:>6} {:>7} {:>14} {:>16}  error",
        "path", "size", "what", "median_us", "cpu_us_per_msg"
    );
    let mut failed = false;
    for size in [64usize, 64 << 10] {
        for what in ["rtt", "stream"] {
            for path in ["bridge", "zenoh", "tcp"] {
                match measure(path, what, size, cli.quick, cores) {
                    Ok(o) => println!(
                        "{path:<7} {size:>6} {what:>7} {:>14.1} {:>16.1}",
                        median(&o.ns) / 1e3,
                        o.cpu_ns_per_op / 1e3
                    ),
                    Err(e) => {
                        failed = true;
                        println!("{path:<7} {size:>6} {what:>7} {:>14} {:>16}  {e}", "-", "-");
                    }
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
