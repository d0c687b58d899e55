//! What one atomic add on a shared `Value<u64>` costs: alone, and with a second process
//! (pinned to the other core) adding to the same value at the same time.
//!
//! `cargo run --release -p shmkit-compare --example atomic_add_cost` — prints ns per add (median of batches).

use std::time::Instant;

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::{ForkResult, Pid, fork};
use shmkit::Value;

const BATCH: u64 = 100_000;
const BATCHES: usize = 50;

fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

fn median_ns_per_add(v: &Value<u64>) -> f64 {
    let mut per: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..BATCH {
                v.fetch_add(1);
            }
            t.elapsed().as_nanos() as f64 / BATCH as f64
        })
        .collect();
    per.sort_by(f64::total_cmp);
    per[per.len() / 2]
}

fn main() -> Result<(), shmkit::Error> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let v = Value::<u64>::anonymous(0)?;
    let stop = Value::<u32>::anonymous(0)?;
    pin(0);
    let alone = median_ns_per_add(&v);
    println!("uncontended fetch_add (one process):        {alone:6.1} ns");
    if cpus < 2 {
        println!("only one CPU: skipping the contended case");
        return Ok(());
    }
    // SAFETY: single-threaded here; the child only spins on shared atomics and _exits.
    match unsafe { fork() }.map_err(|e| shmkit::Error::os("fork", "fork", e))? {
        ForkResult::Child => {
            pin(1);
            while stop.load() == 0 {
                v.fetch_add(1);
            }
            // SAFETY: _exit skips destructors and atexit handlers of the parent's state.
            unsafe { libc::_exit(0) };
        }
        ForkResult::Parent { child } => {
            let contended = median_ns_per_add(&v);
            stop.store(1);
            let _ = nix::sys::wait::waitpid(child, None);
            println!("contended fetch_add (2 processes, 2 cores):  {contended:6.1} ns");
            println!("total adds observed: {}", v.load());
        }
    }
    Ok(())
}
