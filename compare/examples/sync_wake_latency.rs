//! Cross-process wake-up latency: two processes ping-pong through shmkit `Event`s, shmkit
//! `Semaphore`s (`sem_t`) and a shmkit `Condvar` + `Mutex`; prints the mean round trip.
//! Processes are not pinned: the numbers depend on where the scheduler runs them (see
//! DESIGN §7: a wake across idle vCPUs costs 15–25 µs one way).
//!
//! Run: `cargo run --release -p shmkit-compare --example sync_wake_latency`.

use std::process::Command;
use std::time::{Duration, Instant};

use shmkit::Segment;
use shmkit::sync::{Condvar, Event, Mutex, Semaphore};

const N: u64 = 20_000;
const LIMIT: Duration = Duration::from_secs(10);

fn names(pid: &str) -> [String; 6] {
    ["ev-a", "ev-b", "sem-a", "sem-b", "cv-m", "cv"].map(|n| format!("example-lat-{n}-{pid}"))
}

fn peer(pid: &str) -> shmkit::Result<()> {
    let n = names(pid);
    let (a, b) = (Event::open(&n[0])?, Event::open(&n[1])?);
    for _ in 0..N {
        assert!(a.wait_timeout(LIMIT)?);
        a.clear();
        b.set();
    }
    let (sa, sb) = (Semaphore::open(&n[2])?, Semaphore::open(&n[3])?);
    for _ in 0..N {
        sa.wait_timeout(LIMIT)?;
        sb.post()?;
    }
    let (m, cv) = (Mutex::<u64>::open(&n[4])?, Condvar::open(&n[5])?);
    let mut g = m.lock()?.into_guard();
    for _ in 0..N {
        let (g2, r) = cv.wait_timeout_while(g, LIMIT, |v| *v % 2 == 0)?;
        g = g2.into_guard();
        assert!(!r.timed_out());
        *g += 1;
        cv.notify_one();
    }
    Ok(())
}

fn main() -> shmkit::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("peer") {
        return peer(&args[2]);
    }
    let pid = std::process::id().to_string();
    let n = names(&pid);
    let o = Segment::options().unlink_on_drop(true);
    let (a, b) = (
        Event::create_with(&o, &n[0])?,
        Event::create_with(&o, &n[1])?,
    );
    let (sa, sb) = (
        Semaphore::create_with(&o, &n[2], 0)?,
        Semaphore::create_with(&o, &n[3], 0)?,
    );
    let (m, cv) = (
        Mutex::<u64>::create_with(&o, &n[4], 0)?,
        Condvar::create_with(&o, &n[5])?,
    );
    let me = std::env::current_exe()
        .map_err(|e| shmkit::Error::invalid("example", "current_exe", e.to_string()))?;
    let child = Command::new(me)
        .args(["peer", &pid])
        .spawn()
        .expect("spawn peer");
    let mut child = Reap(Some(child));

    let t = Instant::now();
    for _ in 0..N {
        a.set();
        assert!(b.wait_timeout(LIMIT)?);
        b.clear();
    }
    let ev = t.elapsed();

    let t = Instant::now();
    for _ in 0..N {
        sa.post()?;
        sb.wait_timeout(LIMIT)?;
    }
    let sem = t.elapsed();

    let t = Instant::now();
    let mut g = m.lock()?.into_guard();
    for _ in 0..N {
        *g += 1; // odd: the peer's turn
        cv.notify_one();
        let (g2, r) = cv.wait_timeout_while(g, LIMIT, |v| *v % 2 == 1)?;
        g = g2.into_guard();
        assert!(!r.timed_out());
    }
    drop(g);
    let cvt = t.elapsed();
    assert!(child.wait().success());

    let per = |d: Duration| d.as_secs_f64() * 1e6 / N as f64;
    println!("round trip, {N} iterations, two processes (not pinned):");
    println!("  Event set/wait           : {:7.2} µs", per(ev));
    println!("  Semaphore post/wait      : {:7.2} µs", per(sem));
    println!("  Condvar + Mutex          : {:7.2} µs", per(cvt));
    Ok(())
}

/// Kills and waits for a child on drop, so no path leaves a zombie or a stray process.
struct Reap(Option<std::process::Child>);

impl Reap {
    fn wait(&mut self) -> std::process::ExitStatus {
        self.0.take().expect("child").wait().expect("wait")
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
