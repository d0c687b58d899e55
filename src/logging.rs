//! Logging from every process into one place (feature `log`): a [`log::Log`] whose
//! records go through an anonymous [`ByteQueue`] to one collector thread in the parent,
//! which writes each as one whole line — time, level, process name and pid, target,
//! message — to stderr or a file. Lines never interleave: one thread writes them all.
//!
//! ```no_run
//! let collector = shmkit::logging::LogOptions::default()
//!     .install(shmkit::logging::Dest::Stderr)?;
//! log::info!("from the parent");
//! // Children started by shmkit::process (Process, Pool; spawn or fork) log to it too.
//! collector.flush(std::time::Duration::from_secs(1))?;
//! # Ok::<(), shmkit::Error>(())
//! ```
//!
//! # Children
//! [`install`](LogOptions::install) keeps the queue's descriptor; every child started by
//! [`crate::process`] inherits it and [`crate::process::init`] installs the same logger in
//! the child (spawn). A forked child already has the logger.
//!
//! # Nothing `fork` can copy in a held state
//! Python's classic deadlock: a thread holds the logging handler's lock while another
//! forks; the child inherits the lock held and hangs on its first log call. Here the
//! producer path takes no process-private lock at all: each thread formats into its own
//! thread-local buffer and sends through its own queue handle (its own participant entry;
//! no lock shared with other threads), and the queue is lock-free. A handle a forked
//! child inherited from its parent's thread is not used: the child opens its own (the
//! handle records the pid that opened it). Only the collector writes to the destination.
//!
//! # A writer killed mid-record
//! A record is one queue message: a producer killed while writing it holds a claim on a
//! slot, and the queue's dead-claim recovery skips that slot once the kernel says the
//! claimer is dead (see [`crate::queue`]): the collector never sees half a record and
//! never waits on it past its recovery.
//!
//! # A full queue
//! A producer waits at most [`LogOptions::full_wait`] (default 10 ms) for room, then
//! drops the record and counts it; its next record that gets through carries the count,
//! and the collector writes a line saying how many records that process dropped (a
//! process killed before it logs again cannot report its drops). Children started by
//! `Process` or a `Pool` use the parent's `full_wait`. Logging never blocks a program for
//! long.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::queue::ByteQueue;
use crate::segment::SegmentOptions;

const RECORD: u8 = b'L';
const MARK: u8 = b'F';

/// Where the collector writes.
pub enum Dest {
    /// Standard error.
    Stderr,
    /// A file, created if needed, appended to.
    File(PathBuf),
    /// Any writer.
    Writer(Box<dyn Write + Send>),
}

/// Options of the cross-process logger.
#[derive(Clone, Debug)]
pub struct LogOptions {
    level: log::LevelFilter,
    capacity: u64,
    max_record: usize,
    full_wait: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            level: log::LevelFilter::Info,
            capacity: 1024,
            max_record: 1024,
            full_wait: Duration::from_millis(10),
        }
    }
}

impl LogOptions {
    /// Most verbose level logged (default `Info`).
    pub fn level(mut self, l: log::LevelFilter) -> Self {
        self.level = l;
        self
    }

    /// Records the queue holds (default 1024).
    pub fn capacity(mut self, n: u64) -> Self {
        self.capacity = n.max(2);
        self
    }

    /// Longest record in bytes; longer messages are cut (default 1024).
    pub fn max_record(mut self, n: usize) -> Self {
        self.max_record = n.max(128);
        self
    }

    /// How long a producer waits for room in a full queue before dropping the record.
    pub fn full_wait(mut self, d: Duration) -> Self {
        self.full_wait = d;
        self
    }

    /// Creates the queue, starts the collector thread and installs the logger
    /// (`log::set_boxed_logger`: once per process).
    pub fn install(self, dest: Dest) -> Result<Collector> {
        let q = ByteQueue::options()
            .capacity(self.capacity.next_power_of_two())
            .max_handles(1024)
            .anonymous(self.max_record)?;
        let fd = q
            .segment()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::os("log queue", "dup", crate::process::errno_of(&e)))?;
        let out: Box<dyn Write + Send> = match dest {
            Dest::Stderr => Box::new(std::io::stderr()),
            Dest::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .map_err(|e| {
                        Error::os(
                            p.display().to_string(),
                            "open log file",
                            crate::process::errno_of(&e),
                        )
                    })?,
            ),
            Dest::Writer(w) => w,
        };
        let shared = Arc::new(CollectorShared {
            stop: AtomicBool::new(false),
            marks: Mutex::new(0),
            marked: Condvar::new(),
            lines: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("shmkit-log".into())
            .spawn(move || collect(q, out, &sh))
            .map_err(|e| {
                Error::os(
                    "log collector",
                    "spawn thread",
                    crate::process::errno_of(&e),
                )
            })?;
        install_logger(fd, self.level, self.full_wait, self.max_record)?;
        Ok(Collector {
            shared,
            thread: Some(thread),
            next_mark: AtomicU64::new(1),
        })
    }
}

/// The descriptor children inherit (-1: logging not installed) and its settings.
static CHILD_FD: AtomicI32 = AtomicI32::new(-1);
static CHILD_LEVEL: AtomicI32 = AtomicI32::new(0);
/// The full-queue wait children use, in microseconds (the parent's [`LogOptions::full_wait`]).
static CHILD_WAIT_US: AtomicU64 = AtomicU64::new(10_000);

/// For [`crate::process`]: the log queue's descriptor, level and full-queue wait (µs) to
/// hand to a child.
pub(crate) fn for_child() -> Option<(RawFd, usize, u64)> {
    match CHILD_FD.load(Ordering::Acquire) {
        -1 => None,
        fd => Some((
            fd,
            CHILD_LEVEL.load(Ordering::Acquire) as usize,
            CHILD_WAIT_US.load(Ordering::Acquire),
        )),
    }
}

/// In a spawned child: installs the logger on the inherited queue descriptor.
pub(crate) fn install_child(fd: OwnedFd, level: usize, wait_us: Option<u64>) -> Result<()> {
    let level = match level {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let d = LogOptions::default();
    let wait = wait_us.map_or(d.full_wait, Duration::from_micros);
    install_logger(fd, level, wait, d.max_record)
}

fn install_logger(
    fd: OwnedFd,
    level: log::LevelFilter,
    full_wait: Duration,
    max_record: usize,
) -> Result<()> {
    CHILD_LEVEL.store(level as i32, Ordering::Release);
    CHILD_WAIT_US.store(
        u64::try_from(full_wait.as_micros()).unwrap_or(u64::MAX),
        Ordering::Release,
    );
    CHILD_FD.store(fd.as_raw_fd(), Ordering::Release);
    let logger = QueueLogger {
        fd,
        level,
        full_wait,
        max_record,
    };
    log::set_boxed_logger(Box::new(logger)).map_err(|_| {
        Error::invalid(
            "log",
            "install",
            "a logger is already installed in this process",
        )
    })?;
    log::set_max_level(level);
    Ok(())
}

/// Records this process dropped because the queue stayed full.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// A thread's queue handle (with the pid that opened it) and record buffer.
type Local = (Option<(u32, ByteQueue)>, Vec<u8>);

thread_local! {
    static LOCAL: RefCell<Local> = const { RefCell::new((None, Vec::new())) };
}

struct QueueLogger {
    fd: OwnedFd,
    level: log::LevelFilter,
    full_wait: Duration,
    max_record: usize,
}

impl QueueLogger {
    fn send(&self, r: &log::Record<'_>) -> bool {
        let sent = LOCAL.try_with(|l| {
            let Ok(mut l) = l.try_borrow_mut() else {
                return false; // logging from inside a log call
            };
            let (handle, buf) = &mut *l;
            let pid = std::process::id();
            if handle.as_ref().is_none_or(|(p, _)| *p != pid) {
                // First record of this thread, or a handle inherited through fork.
                if let Some((p, h)) = handle.take() {
                    if p != pid {
                        std::mem::forget(h); // the parent's entry: not ours to release
                    }
                }
                let Ok(fd) = self.fd.try_clone() else {
                    return false;
                };
                let Ok(q) = SegmentOptions::default()
                    .open_fd(fd)
                    .and_then(|s| ByteQueue::options().from_segment(s))
                else {
                    return false;
                };
                *handle = Some((pid, q));
            }
            let Some((_, q)) = handle.as_ref() else {
                return false;
            };
            let me = crate::process::current_process();
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            buf.clear();
            buf.push(RECORD);
            buf.push(r.level() as u8);
            buf.extend_from_slice(&pid.to_le_bytes());
            buf.extend_from_slice(&now.to_le_bytes());
            let dropped = DROPPED.load(Ordering::Relaxed);
            buf.extend_from_slice(&dropped.to_le_bytes());
            let name = &me.name.as_bytes()[..me.name.len().min(255)];
            buf.push(name.len() as u8);
            buf.extend_from_slice(name);
            let target = &r.target().as_bytes()[..r.target().len().min(255)];
            buf.push(target.len() as u8);
            buf.extend_from_slice(target);
            let _ = write!(buf, "{}", r.args());
            let max = self.max_record.min(q.max_message());
            if buf.len() > max {
                let mut cut = max;
                while cut > 0 && (buf[cut] & 0xc0) == 0x80 {
                    cut -= 1; // keep UTF-8 whole
                }
                buf.truncate(cut);
            }
            q.send_timeout(buf, self.full_wait).is_ok()
        });
        sent.unwrap_or(false)
    }
}

impl log::Log for QueueLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) && !self.send(r) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

struct CollectorShared {
    stop: AtomicBool,
    marks: Mutex<u64>,
    marked: Condvar,
    lines: AtomicU64,
}

/// The collector thread. Dropping it (or [`shutdown`](Self::shutdown)) writes what is
/// queued and stops it.
pub struct Collector {
    shared: Arc<CollectorShared>,
    thread: Option<std::thread::JoinHandle<()>>,
    next_mark: AtomicU64,
}

impl Collector {
    /// Waits until every record sent before this call (by any process) is written.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let seq = self.next_mark.fetch_add(1, Ordering::Relaxed);
        let fd = CHILD_FD.load(Ordering::Acquire);
        if fd < 0 {
            return Ok(());
        }
        // SAFETY: CHILD_FD is the logger's descriptor, open for the life of the process
        // (the logger is never uninstalled); borrowed for the dup only.
        let owned = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .map_err(|e| Error::os("log queue", "dup", crate::process::errno_of(&e)))?;
        let q = ByteQueue::options().from_segment(SegmentOptions::default().open_fd(owned)?)?;
        let mut m = vec![MARK];
        m.extend_from_slice(&seq.to_le_bytes());
        q.send_timeout(&m, timeout).map_err(|_| Error::Timeout {
            resource: "log queue".into(),
            op: "flush",
            timeout,
        })?;
        let deadline = Instant::now() + timeout;
        let mut done = self.shared.marks.lock().unwrap_or_else(|p| p.into_inner());
        while *done < seq {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    resource: "log collector".into(),
                    op: "flush",
                    timeout,
                });
            }
            done = self
                .shared
                .marked
                .wait_timeout(done, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.shared.lines.load(Ordering::Relaxed)
    }

    /// Writes what is queued and stops the collector.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

fn collect(q: ByteQueue, mut out: Box<dyn Write + Send>, sh: &CollectorShared) {
    q.attach_producer(); // never "disconnected" while producers come and go
    let mut buf = Vec::new();
    let mut line = Vec::with_capacity(2048);
    let mut last_dropped: std::collections::HashMap<u32, u64> = Default::default();
    loop {
        let got = q.recv_timeout(&mut buf, Duration::from_millis(50)).is_ok();
        if !got {
            if sh.stop.load(Ordering::Acquire) {
                break;
            }
            continue;
        }
        match buf.first() {
            Some(&MARK) if buf.len() == 9 => {
                let _ = out.flush();
                let seq = u64::from_le_bytes(buf[1..9].try_into().unwrap_or_default());
                let mut m = sh.marks.lock().unwrap_or_else(|p| p.into_inner());
                *m = (*m).max(seq);
                sh.marked.notify_all();
            }
            Some(&RECORD) => {
                line.clear();
                if let Some((pid, dropped)) = format_record(&buf, &mut line) {
                    let before = last_dropped.insert(pid, dropped).unwrap_or(0);
                    if dropped > before {
                        let _ = writeln!(
                            out,
                            "[shmkit log: process {pid} dropped {} records: the queue was full]",
                            dropped - before
                        );
                    }
                    if out.write_all(&line).is_ok() {
                        sh.lines.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {} // garbage from a hostile peer: ignored
        }
    }
    let _ = out.flush();
}

/// Formats one record as a line; `(pid, dropped)` of its producer. Total on any input.
fn format_record(b: &[u8], line: &mut Vec<u8>) -> Option<(u32, u64)> {
    let level = match *b.get(1)? {
        1 => "ERROR",
        2 => "WARN",
        3 => "INFO",
        4 => "DEBUG",
        _ => "TRACE",
    };
    let pid = u32::from_le_bytes(b.get(2..6)?.try_into().ok()?);
    let nanos = u64::from_le_bytes(b.get(6..14)?.try_into().ok()?);
    let dropped = u64::from_le_bytes(b.get(14..22)?.try_into().ok()?);
    let nl = *b.get(22)? as usize;
    let name = b.get(23..23 + nl)?;
    let tl = *b.get(23 + nl)? as usize;
    let target = b.get(24 + nl..24 + nl + tl)?;
    let msg = b.get(24 + nl + tl..)?;
    let _ = write!(
        line,
        "{}.{:06} {level:<5} {}[{pid}] {}: ",
        nanos / 1_000_000_000,
        (nanos % 1_000_000_000) / 1000,
        String::from_utf8_lossy(name),
        String::from_utf8_lossy(target),
    );
    // One record is one line: newlines inside the message are escaped.
    for &c in msg {
        if c == b'\n' {
            line.extend_from_slice(b"\\n");
        } else {
            line.push(c);
        }
    }
    line.push(b'\n');
    Some((pid, dropped))
}
