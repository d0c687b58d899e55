//! The logging tutorial's deadlock, done right: a thread logs in a loop while pools are
//! created over and over (spawn and fork). Python deadlocks when a fork copies the
//! logging lock held; shmkit's producers hold no process-private lock (see
//! `shmkit::logging`). Every line: time, level, process name[pid], target, message.
//!
//! `cargo run --example logging_while_forking`

use std::sync::atomic::{AtomicBool, Ordering};

use shmkit::logging::{Dest, LogOptions};
use shmkit::process::{Entry, PoolOptions, StartMethod};

fn work(x: u64) -> u64 {
    log::info!("working on {x}");
    x + 1
}
static WORK: Entry<u64, u64> = shmkit::entry!(work);

fn main() -> shmkit::Result<()> {
    shmkit::process::init(&[&WORK]);
    let collector = LogOptions::default().install(Dest::Stderr)?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> shmkit::Result<()> {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                log::info!("background tick {i}");
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        for round in 0..10 {
            let method = if round % 2 == 0 {
                StartMethod::Spawn
            } else {
                StartMethod::Fork
            };
            let pool = PoolOptions::default()
                .workers(2)
                .start_method(method)
                .build(&WORK)?;
            let out = pool.map(0..4)?;
            log::info!("round {round} ({method:?}): {out:?}");
        }
        stop.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    collector.flush(std::time::Duration::from_secs(5))?;
    Ok(())
}
