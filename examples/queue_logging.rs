//! Many processes logging to one file through a `ByteQueue` and a single writer.
//!
//! Python programs that mix `fork` and `logging` can deadlock: a child forked while
//! another thread held a logging lock inherits the lock held forever. Here no process
//! shares a lock with another: workers only *send* bytes to a shared-memory queue, and one
//! writer process owns the file. A worker killed mid-send leaves no torn line (a message
//! is published whole or not at all) and does not block the others.
//!
//! ```text
//! cargo run --example queue_logging [-- LOGFILE]
//! ```

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use shmkit::queue::ByteQueue;
use shmkit::segment::SegmentOptions;

const WORKERS: usize = 4;
const LINES: usize = 25;

fn worker(name: &str, n: usize) -> shmkit::Result<()> {
    let q = ByteQueue::open(name)?;
    let pid = std::process::id();
    for i in 0..LINES {
        let line = format!("worker {n} (pid {pid}): step {i} of {LINES}\n");
        q.send_timeout(line.as_bytes(), Duration::from_secs(10))?;
    }
    q.send(b"")?; // an empty message: this worker is done
    Ok(())
}

fn writer(name: &str, path: &str) -> shmkit::Result<()> {
    let q = ByteQueue::open(name)?;
    let mut file = std::fs::File::create(path)
        .map_err(|e| shmkit::Error::invalid(path, "create log file", e.to_string()))?;
    let mut buf = Vec::new();
    let mut done = 0;
    while done < WORKERS {
        q.recv_timeout(&mut buf, Duration::from_secs(30))?;
        if buf.is_empty() {
            done += 1;
            continue;
        }
        file.write_all(&buf)
            .map_err(|e| shmkit::Error::invalid(path, "write log file", e.to_string()))?;
    }
    Ok(())
}

fn main() -> shmkit::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("worker") => return worker(&args[2], args[3].parse().unwrap_or(0)),
        Some("writer") => return writer(&args[2], &args[3]),
        _ => {}
    }
    let path = args.get(1).cloned().unwrap_or_else(|| {
        std::env::temp_dir()
            .join("shmkit-example.log")
            .display()
            .to_string()
    });
    let name = format!("example-log-{}", std::process::id());
    let _q = ByteQueue::options()
        .capacity(32)
        .segment(SegmentOptions::default().unlink_on_drop(true))
        .create(&name, 256)?;
    let exe = std::env::current_exe().expect("current_exe");
    let mut writer = Command::new(&exe)
        .args(["writer", &name, &path])
        .spawn()
        .expect("spawn writer");
    let mut workers: Vec<_> = (0..WORKERS)
        .map(|n| {
            Command::new(&exe)
                .args(["worker", &name, &n.to_string()])
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    for w in &mut workers {
        w.wait().expect("wait worker");
    }
    let st = writer.wait().expect("wait writer");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    println!(
        "writer exited with {st}; {} lines in {path} (expected {})",
        text.lines().count(),
        WORKERS * LINES
    );
    Ok(())
}
