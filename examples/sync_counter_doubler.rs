//! Python's `multiprocessing` shared-state tutorial, done right: four processes add to a
//! counter under its lock (`with counter.get_lock(): counter.value += 1`), then a child
//! doubles every element of a locked array.
//!
//! Run: `cargo run --example sync_counter_doubler`. It spawns copies of itself, waits
//! for them, checks the results and removes its segments.

use std::process::Command;

use shmkit::Segment;
use shmkit::sync::{Mutex, MutexArray};

const WORKERS: u64 = 4;
const ADDS: u64 = 10_000;

fn main() -> shmkit::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("adder") => {
            let counter = Mutex::<u64>::open(&args[2])?;
            for _ in 0..ADDS {
                // An increment is a single store: a dead holder cannot leave it half
                // done, so the repair after an owner death is "accept the value".
                *counter.lock_or_repair(|_| {})? += 1;
            }
            return Ok(());
        }
        Some("doubler") => {
            let arr = MutexArray::<i32>::open(&args[2])?;
            let mut g = arr.lock_or_repair(|_| {})?;
            for x in g.iter_mut() {
                *x *= 2;
            }
            return Ok(());
        }
        _ => {}
    }

    let pid = std::process::id();
    let (cname, aname) = (
        format!("example-counter-{pid}"),
        format!("example-array-{pid}"),
    );
    let opts = Segment::options().unlink_on_drop(true);
    let counter = Mutex::<u64>::create_with(&opts, &cname, 0)?;
    let arr = MutexArray::<i32>::create_with(&opts, &aname, 10, 0)?;
    {
        let mut g = arr.lock()?.into_guard();
        for (i, x) in g.iter_mut().enumerate() {
            *x = i as i32;
        }
    }

    let me = std::env::current_exe()
        .map_err(|e| shmkit::Error::invalid("example", "current_exe", e.to_string()))?;
    let spawn = |role: &str, name: &str| Command::new(&me).args([role, name]).spawn();
    let mut kids = Vec::new();
    for _ in 0..WORKERS {
        kids.push(spawn("adder", &cname).expect("spawn adder"));
    }
    kids.push(spawn("doubler", &aname).expect("spawn doubler"));
    for mut k in kids {
        assert!(k.wait().expect("wait").success());
    }

    let total = *counter.lock_or_repair(|_| {})?;
    println!("counter = {total} (expected {})", WORKERS * ADDS);
    assert_eq!(total, WORKERS * ADDS);
    let doubled = arr.lock()?.into_guard().to_vec();
    println!("array   = {doubled:?}");
    assert_eq!(doubled, (0..10).map(|i| i * 2).collect::<Vec<i32>>());
    Ok(())
}
