//! Routes: what one forwarding path reads and writes, its counters, and the two
//! workers (local -> zenoh, zenoh -> local).
//!
//! Each route owns its local handle, its zenoh publisher or subscriber, its bounded
//! backlog and its thread: nothing is shared between routes but the zenoh session, so a
//! message of one route never reaches another's local object (unless their key
//! expressions overlap, which is the user's choice: see bridge/README.md).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError as ChanTimeout, SyncSender, TrySendError};
use std::time::Duration;

use serde::Deserialize;
use shmkit::queue::{
    ByteQueue, RecvTimeoutError as QRecvTimeout, SendTimeoutError as QSendTimeout,
};
use shmkit::topic::{
    BytePublisher, ByteSubscriber, ByteTopic, RecvTimeoutError as TRecvTimeout,
    SendTimeoutError as TSendTimeout,
};
use zenoh::Wait;
use zenoh::sample::Sample;

/// How long a worker blocks before it looks at the stop flag again.
pub const POLL: Duration = Duration::from_millis(50);

/// The kind of local object at one end of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalKind {
    /// A [`ByteTopic`]: the bridge subscribes (out) or publishes (in).
    Topic,
    /// A [`ByteQueue`]: the bridge consumes (out) or produces (in).
    Queue,
}

/// Which way a route forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// Local object -> zenoh key expression.
    Out,
    /// Zenoh key expression -> local object.
    In,
}

/// One route, from a flag or the config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub dir: Dir,
    pub kind: LocalKind,
    /// The local object's name (a shmkit segment name).
    pub name: String,
    /// The zenoh key expression.
    pub key: String,
    /// Largest message this route forwards (default: the local object's `max_message`;
    /// never more than it).
    #[serde(default)]
    pub max_message: Option<usize>,
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let local = format!("{}:{}", self.kind.as_str(), self.name);
        match self.dir {
            Dir::Out => write!(f, "{local} -> {}", self.key),
            Dir::In => write!(f, "{} -> {local}", self.key),
        }
    }
}

impl LocalKind {
    fn as_str(self) -> &'static str {
        match self {
            LocalKind::Topic => "topic",
            LocalKind::Queue => "queue",
        }
    }

    fn parse(s: &str) -> Result<(LocalKind, String), String> {
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}`: expected topic:NAME or queue:NAME"))?;
        let kind = match kind {
            "topic" => LocalKind::Topic,
            "queue" | "bytequeue" => LocalKind::Queue,
            k => return Err(format!("`{k}`: the local side is `topic` or `queue`")),
        };
        if name.is_empty() {
            return Err(format!("`{s}`: empty name"));
        }
        Ok((kind, name.to_owned()))
    }
}

impl RouteSpec {
    /// `--out topic:NAME=key/expr` (`dir = Out`) or `--in key/expr=queue:NAME` (`In`).
    pub fn parse(dir: Dir, s: &str) -> Result<RouteSpec, String> {
        let (left, right) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected LOCAL=KEY (--out) or KEY=LOCAL (--in)"))?;
        let (local, key) = match dir {
            Dir::Out => (left, right),
            Dir::In => (right, left),
        };
        let (kind, name) = LocalKind::parse(local)?;
        if key.is_empty() {
            return Err(format!("`{s}`: empty key expression"));
        }
        Ok(RouteSpec {
            dir,
            kind,
            name,
            key: key.to_owned(),
            max_message: None,
        })
    }
}

/// Per-route counters, read by the stats line and at exit.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages delivered: put on zenoh (out) or published locally (in).
    pub forwarded: AtomicU64,
    /// Messages larger than the route's limit, dropped whole (never truncated).
    pub dropped_oversize: AtomicU64,
    /// Messages dropped because the backlog was full (remote absent or local side slow),
    /// overwritten locally before the bridge read them (`Lagged`), or refused by zenoh.
    pub dropped_backlog: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "forwarded={} dropped_oversize={} dropped_backlog={}",
            self.forwarded.load(Ordering::Relaxed),
            self.dropped_oversize.load(Ordering::Relaxed),
            self.dropped_backlog.load(Ordering::Relaxed)
        )
    }
}

/// The local side of an out route (the bridge reads).
pub enum Source {
    Topic(ByteSubscriber),
    Queue(ByteQueue),
}

/// The local side of an in route (the bridge writes).
pub enum Sink {
    Topic(BytePublisher),
    Queue(ByteQueue),
}

/// Opens a local object, or creates it if it does not exist (and opens it after all if
/// another process created it meanwhile).
fn open_or_create<T>(
    open: impl Fn() -> shmkit::Result<T>,
    create: impl FnOnce() -> shmkit::Result<T>,
) -> shmkit::Result<T> {
    match open() {
        Err(e) if e.is_not_found() => match create() {
            Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST) => open(),
            r => r,
        },
        r => r,
    }
}

fn open_or_create_topic(name: &str, capacity: u64, max: usize) -> shmkit::Result<ByteTopic> {
    open_or_create(
        || ByteTopic::open(name),
        || ByteTopic::create(name, capacity, max),
    )
}

fn open_or_create_queue(name: &str, capacity: u64, max: usize) -> shmkit::Result<ByteQueue> {
    open_or_create(
        || ByteQueue::open(name),
        || ByteQueue::create(name, capacity, max),
    )
}

/// Sizes used when the bridge has to create a local object that does not exist yet.
#[derive(Clone, Copy, Debug)]
pub struct CreateSizes {
    pub capacity: u64,
    pub max_message: usize,
}

impl Source {
    /// Opens (or creates) the local object and attaches as its reader.
    pub fn open(spec: &RouteSpec, sizes: CreateSizes) -> shmkit::Result<(Source, usize)> {
        match spec.kind {
            LocalKind::Topic => {
                let t = open_or_create_topic(&spec.name, sizes.capacity, sizes.max_message)?;
                let s = t.subscribe()?;
                let max = s.max_message();
                Ok((Source::Topic(s), max))
            }
            LocalKind::Queue => {
                let q = open_or_create_queue(&spec.name, sizes.capacity, sizes.max_message)?;
                q.attach_consumer();
                let max = q.max_message();
                Ok((Source::Queue(q), max))
            }
        }
    }

    /// The next local message into `buf`.
    fn recv(&self, buf: &mut Vec<u8>) -> Read {
        match self {
            Source::Topic(s) => match s.recv_timeout(buf, POLL) {
                Ok(_) => Read::Msg,
                Err(TRecvTimeout::Timeout) => Read::Idle,
                Err(TRecvTimeout::Lagged(n)) => Read::Lagged(n),
                Err(TRecvTimeout::Disconnected) => Read::NoWriter,
                Err(e) => Read::Error(e.to_string()),
            },
            Source::Queue(q) => match q.recv_timeout(buf, POLL) {
                Ok(()) => Read::Msg,
                Err(QRecvTimeout::Timeout) => Read::Idle,
                Err(QRecvTimeout::Disconnected) => Read::NoWriter,
                Err(e) => Read::Error(e.to_string()),
            },
        }
    }
}

enum Read {
    Msg,
    Idle,
    Lagged(u64),
    NoWriter,
    Error(String),
}

impl Sink {
    /// Opens (or creates) the local object and attaches as its writer.
    pub fn open(spec: &RouteSpec, sizes: CreateSizes) -> shmkit::Result<(Sink, usize)> {
        match spec.kind {
            LocalKind::Topic => {
                let t = open_or_create_topic(&spec.name, sizes.capacity, sizes.max_message)?;
                let p = t.publisher()?;
                let max = p.max_message();
                Ok((Sink::Topic(p), max))
            }
            LocalKind::Queue => {
                let q = open_or_create_queue(&spec.name, sizes.capacity, sizes.max_message)?;
                q.attach_producer();
                let max = q.max_message();
                Ok((Sink::Queue(q), max))
            }
        }
    }

    /// Writes `sample`'s payload in place into a loaned local slot (the only copy on
    /// this side: network buffers -> shared memory), waiting at most [`POLL`].
    fn write(&mut self, sample: &Sample) -> Write {
        let payload = sample.payload();
        let len = payload.len();
        let fill = |dst: &mut [u8]| {
            let mut off = 0;
            for s in payload.slices() {
                dst[off..off + s.len()].copy_from_slice(s);
                off += s.len();
            }
        };
        match self {
            Sink::Topic(p) => match p.loan_timeout(len, POLL) {
                Ok(mut loan) => {
                    fill(&mut loan);
                    loan.publish();
                    Write::Done
                }
                Err(TSendTimeout::Timeout) => Write::Busy,
                Err(e) => Write::Error(e.to_string()),
            },
            Sink::Queue(q) => match q.reserve(len, Some(POLL)) {
                Ok(mut slot) => {
                    fill(&mut slot);
                    slot.commit();
                    Write::Done
                }
                // No room yet: the reserve waited `POLL`.
                Err(QSendTimeout::Timeout(())) => Write::Busy,
                // Every consumer that attached is gone (one may come back): the reserve
                // returned at once, so wait here.
                Err(QSendTimeout::Disconnected(())) => {
                    std::thread::sleep(POLL);
                    Write::Busy
                }
                Err(e) => Write::Error(e.to_string()),
            },
        }
    }
}

enum Write {
    Done,
    Busy,
    Error(String),
}

/// Local -> zenoh. Reads local messages in order; puts each on zenoh while a remote
/// subscriber matches the key; holds up to `backlog` messages (in order) while none
/// does, and drops (counting) what does not fit.
#[allow(clippy::too_many_arguments)]
pub fn run_out(
    id: usize,
    src: Source,
    max: usize,
    publisher: zenoh::pubsub::Publisher<'static>,
    matched: Arc<AtomicBool>,
    counters: Arc<Counters>,
    backlog: usize,
    stop: Arc<AtomicBool>,
) {
    let mut held: VecDeque<Vec<u8>> = VecDeque::new();
    let put = |msg: Vec<u8>| {
        if let Err(e) = publisher.put(msg).wait() {
            eprintln!("shmkit-bridge: route {id}: zenoh put failed: {e}");
            Counters::add(&counters.dropped_backlog, 1);
        } else {
            Counters::add(&counters.forwarded, 1);
        }
    };
    let flush = |held: &mut VecDeque<Vec<u8>>| {
        while let Some(m) = held.pop_front() {
            put(m);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        if matched.load(Ordering::Acquire) {
            flush(&mut held);
        }
        // A fresh buffer per message (sized by the receive to the message): it becomes
        // the zenoh payload without a further copy.
        let mut buf = Vec::new();
        match src.recv(&mut buf) {
            Read::Msg => {
                // Whether a remote subscriber matches is decided after the message was
                // read: one published after `unmatched` was printed is never put blind.
                let up = matched.load(Ordering::Acquire);
                if up {
                    flush(&mut held);
                }
                if buf.len() > max {
                    Counters::add(&counters.dropped_oversize, 1);
                } else if up && held.is_empty() {
                    put(buf);
                } else if held.len() < backlog {
                    held.push_back(buf);
                } else {
                    Counters::add(&counters.dropped_backlog, 1);
                }
            }
            Read::Idle => {}
            Read::Lagged(n) => Counters::add(&counters.dropped_backlog, n),
            Read::NoWriter => {
                // Every local writer is gone; a new one may attach: poll slowly.
                std::thread::sleep(POLL);
            }
            Read::Error(e) => {
                eprintln!("shmkit-bridge: route {id}: local receive failed: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
}

/// The zenoh subscriber callback of an in route: checks the size, then hands the sample
/// to the route's writer through a bounded channel (never blocks zenoh's thread).
pub fn on_sample(
    max: usize,
    tx: SyncSender<Sample>,
    counters: Arc<Counters>,
) -> impl Fn(Sample) + Send + Sync + 'static {
    move |sample: Sample| {
        if sample.payload().len() > max {
            Counters::add(&counters.dropped_oversize, 1);
            return;
        }
        match tx.try_send(sample) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => Counters::add(&counters.dropped_backlog, 1),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Zenoh -> local: writes the samples in arrival order, each into a loaned slot; waits
/// (bounded by the stop flag) while the local side has no room.
pub fn run_in(
    id: usize,
    mut sink: Sink,
    rx: Receiver<Sample>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    'outer: while !stop.load(Ordering::Relaxed) {
        let sample = match rx.recv_timeout(POLL) {
            Ok(s) => s,
            Err(ChanTimeout::Timeout) => continue,
            Err(ChanTimeout::Disconnected) => break,
        };
        loop {
            match sink.write(&sample) {
                Write::Done => {
                    Counters::add(&counters.forwarded, 1);
                    break;
                }
                Write::Busy => {
                    if stop.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                }
                Write::Error(e) => {
                    eprintln!("shmkit-bridge: route {id}: local write failed: {e}");
                    Counters::add(&counters.dropped_backlog, 1);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags() {
        let r = RouteSpec::parse(Dir::Out, "topic:cam=robot/cam").unwrap();
        assert_eq!(
            (r.kind, r.name.as_str(), r.key.as_str()),
            (LocalKind::Topic, "cam", "robot/cam")
        );
        let r = RouteSpec::parse(Dir::In, "a/**=queue:jobs").unwrap();
        assert_eq!(
            (r.kind, r.name.as_str(), r.key.as_str()),
            (LocalKind::Queue, "jobs", "a/**")
        );
        assert_eq!(r.to_string(), "a/** -> queue:jobs");
        for bad in ["topic:cam", "pipe:x=k", "topic:=k", "topic:x="] {
            assert!(RouteSpec::parse(Dir::Out, bad).is_err(), "{bad}");
        }
    }
}
