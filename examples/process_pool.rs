//! The multiprocessing tutorials' programs, done right: named `Process`es doubling
//! numbers, `Pool.map`, `apply_async(...).get(timeout=1s)`, and a pool that survives a
//! worker killed with SIGKILL mid-task (Python's Pool hangs forever there).
//!
//! `cargo run --release --example process_pool`

use std::time::{Duration, Instant};

use shmkit::process::{Entry, Pool, Process, current_process};

fn double(x: u64) -> (String, u64) {
    (current_process().name.to_owned(), x * 2)
}
fn square(x: u64) -> u64 {
    x * x
}
/// Item 13 kills its own worker, as the OOM killer would.
fn fragile(x: u64) -> u64 {
    if x == 13 {
        let _ = nix::sys::signal::raise(nix::sys::signal::SIGKILL);
    }
    x
}

static DOUBLE: Entry<u64, (String, u64)> = shmkit::entry!(double);
static SQUARE: Entry<u64, u64> = shmkit::entry!(square);
static FRAGILE: Entry<u64, u64> = shmkit::entry!(fragile);

fn main() -> shmkit::Result<()> {
    // First thing in main: a child started below dispatches here and never returns.
    shmkit::process::init(&[&DOUBLE, &SQUARE, &FRAGILE]);

    // Named processes doubling numbers.
    let mut ps = Vec::new();
    for (i, x) in [1u64, 2, 3].into_iter().enumerate() {
        ps.push(
            Process::new(&DOUBLE, x)
                .name(format!("doubler-{i}"))
                .start()?,
        );
    }
    for p in &mut ps {
        let (name, y) = p.join()?;
        println!("{name} (pid {}) -> {y}", p.pid());
    }

    // Pool.map and apply_async(...).get(timeout).
    let pool = Pool::new(&SQUARE, 2)?;
    println!("map: {:?}", pool.map(0..10)?);
    let r = pool.apply_async(12)?;
    println!(
        "apply_async(12).get(1s): {}",
        r.get(Some(Duration::from_secs(1)))?
    );
    let n = 100_000u64;
    let t = Instant::now();
    let v = pool.map(0..n)?;
    let dt = t.elapsed();
    assert_eq!(v.len() as u64, n);
    println!(
        "map of {n} trivial tasks on 2 workers: {:.0} tasks/s",
        n as f64 / dt.as_secs_f64()
    );

    // A worker SIGKILLed mid-task: that item fails naming the pid and the signal, the
    // rest completes, the worker is replaced; nothing hangs.
    let pool = Pool::new(&FRAGILE, 2)?;
    for (i, r) in pool.imap(0..20, 1).enumerate() {
        match r {
            Ok(_) => {}
            Err(e) => println!("item {i}: {e}"),
        }
    }
    println!("still working: {:?}", pool.map(0..5)?);
    Ok(())
}
