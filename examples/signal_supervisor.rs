//! A supervisor that drives worker processes with real-time signals carrying payloads:
//! it hands each worker task numbers with `SIGRTMIN+1`, workers report results back with
//! `SIGRTMIN+2`, and a special payload tells them to stop. No signal handler anywhere:
//! both sides block the signals in `main` before any thread exists and read them from a
//! `signalfd`.
//!
//! Run: `cargo run --example signal_supervisor`

use std::process::Command;
use std::time::Duration;

use shmkit::signal::{SignalListener, SignalNotifier};

const TO_WORKER: u32 = 1;
const TO_SUPERVISOR: u32 = 2;
const STOP: u64 = u64::MAX;
const WORKERS: u64 = 3;
const TASKS_EACH: u64 = 5;
const LIMIT: Duration = Duration::from_secs(30);

fn worker(supervisor: u32) -> shmkit::Result<()> {
    let tasks = SignalListener::new(TO_WORKER)?; // first thing in main: no threads yet
    let report = SignalNotifier::new(TO_SUPERVISOR)?;
    // Our pid as the first report means "ready": only now may the supervisor signal us.
    report.notify(supervisor, u64::from(std::process::id()))?;
    loop {
        let m = tasks.recv_timeout(LIMIT)?;
        if m.payload == STOP {
            return Ok(());
        }
        // "Work": square the task number; report (pid << 32) | result.
        let result = m.payload * m.payload;
        report.notify(supervisor, (u64::from(std::process::id()) << 32) | result)?;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "worker" {
        worker(args[2].parse()?)?;
        return Ok(());
    }
    let reports = SignalListener::new(TO_SUPERVISOR)?;
    let me = std::process::id().to_string();
    let exe = std::env::current_exe()?;
    let mut kids = Vec::new();
    for _ in 0..WORKERS {
        kids.push(Command::new(&exe).args(["worker", &me]).spawn()?);
    }
    let mut pids = Vec::new();
    for _ in 0..WORKERS {
        let m = reports.recv_timeout(LIMIT)?;
        println!("supervisor: worker {} is ready", m.payload);
        pids.push(m.payload as u32);
    }
    let tasks = SignalNotifier::new(TO_WORKER)?;
    for (i, pid) in pids.iter().enumerate() {
        for t in 0..TASKS_EACH {
            tasks.notify(*pid, i as u64 * 100 + t)?;
        }
    }
    let mut total = 0u64;
    for _ in 0..WORKERS * TASKS_EACH {
        let m = reports.recv_timeout(LIMIT)?;
        let (pid, result) = (m.payload >> 32, m.payload & 0xffff_ffff);
        assert_eq!(
            pid,
            u64::from(m.sender_pid),
            "report from an unexpected process"
        );
        total += result;
    }
    let expected: u64 = (0..WORKERS)
        .flat_map(|i| (0..TASKS_EACH).map(move |t| (i * 100 + t).pow(2)))
        .sum();
    println!(
        "supervisor: {} results, sum of squares {total} (expected {expected})",
        WORKERS * TASKS_EACH
    );
    if total != expected {
        return Err("wrong results".into());
    }
    for pid in &pids {
        tasks.notify(*pid, STOP)?;
    }
    for mut k in kids {
        if !k.wait()?.success() {
            return Err("a worker failed".into());
        }
    }
    println!("supervisor: all workers stopped");
    Ok(())
}
