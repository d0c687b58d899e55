//! A worker pool fed by a joinable queue, with results coming back on a second queue:
//! Python's `JoinableQueue` tutorial, across processes.
//!
//! The parent sends tasks, `join`s the task queue (returns once every task was received
//! *and* marked done with `task_done`), then collects the results and stops the workers
//! with one sentinel each.
//!
//! ```text
//! cargo run --example queue_worker_pool
//! ```

use std::process::Command;
use std::time::Duration;

use shmkit::queue::Queue;
use shmkit::segment::SegmentOptions;

const WORKERS: usize = 3;
const TASKS: u64 = 40;
const STOP: u64 = u64::MAX;

fn worker(tasks: &str, results: &str) -> shmkit::Result<()> {
    let tasks = Queue::<u64>::open(tasks)?;
    let results = Queue::<[u64; 3]>::open(results)?;
    let me = std::process::id() as u64;
    loop {
        let n = tasks.recv_timeout(Duration::from_secs(30))?;
        if n == STOP {
            tasks.task_done()?;
            return Ok(());
        }
        // The "work": the n-th Fibonacci number.
        let (mut a, mut b) = (0u64, 1u64);
        for _ in 0..n {
            (a, b) = (b, a.wrapping_add(b));
        }
        results.send([n, a, me])?;
        tasks.task_done()?;
    }
}

fn main() -> shmkit::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        return worker(&args[2], &args[3]);
    }
    let pid = std::process::id();
    let (tn, rn) = (
        format!("example-pool-tasks-{pid}"),
        format!("example-pool-results-{pid}"),
    );
    let cleanup = SegmentOptions::default().unlink_on_drop(true);
    let tasks = Queue::<u64>::options()
        .joinable(true)
        .capacity(8)
        .segment(cleanup.clone())
        .create(&tn)?;
    let results = Queue::<[u64; 3]>::options()
        .capacity(64)
        .segment(cleanup)
        .create(&rn)?;
    let exe = std::env::current_exe().expect("current_exe");
    let mut workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            Command::new(&exe)
                .args(["worker", &tn, &rn])
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut got = Vec::new();
    for n in 0..TASKS {
        tasks.send(n)?;
        // Keep the results queue drained while sending.
        while let Ok(r) = results.try_recv() {
            got.push(r);
        }
    }
    // `complete()`: an error naming the tasks a dead worker took with it, if any.
    tasks.join(Some(Duration::from_secs(60)))?.complete()?;
    println!("all {TASKS} tasks done");
    while let Ok(r) = results.try_recv() {
        got.push(r);
    }
    got.sort_unstable();
    for [n, fib, pid] in &got {
        println!("fib({n:2}) = {fib:>12}  (worker {pid})");
    }
    assert_eq!(got.len() as u64, TASKS);
    for _ in 0..WORKERS {
        tasks.send(STOP)?;
    }
    for w in &mut workers {
        w.wait().expect("wait");
    }
    Ok(())
}
