//! Uncontended lock+unlock cost of the robust shmkit mutex against a raw robust pshared
//! pthread mutex and `std::sync::Mutex`, single process, `Instant` over 10M iterations.
//! A quick measurement, not a benchmark suite (see benches/ for criterion).
//!
//! Run: `cargo run --release --example sync_lock_cost`.

use std::time::Instant;

use shmkit::sync::{Event, Mutex, RawRobustMutex};

const N: u32 = 10_000_000;

fn main() -> shmkit::Result<()> {
    let m = Mutex::<u64>::anonymous(0)?;
    let t = Instant::now();
    for _ in 0..N {
        let mut g = m.lock()?.into_guard();
        *g += 1;
    }
    let shm = t.elapsed().as_secs_f64() * 1e9 / N as f64;

    let raw: &RawRobustMutex = m.raw();
    let t = Instant::now();
    for _ in 0..N {
        drop(raw.lock()?);
    }
    let rawr = t.elapsed().as_secs_f64() * 1e9 / N as f64;

    let s = std::sync::Mutex::new(0u64);
    let t = Instant::now();
    for _ in 0..N {
        *s.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }
    let std_ns = t.elapsed().as_secs_f64() * 1e9 / N as f64;

    let ev = Event::anonymous()?;
    let t = Instant::now();
    for _ in 0..N {
        ev.set();
        ev.clear();
    }
    let ev_ns = t.elapsed().as_secs_f64() * 1e9 / N as f64;

    println!("shmkit Mutex<u64> lock+add+unlock : {shm:6.2} ns");
    println!("RawRobustMutex lock+unlock         : {rawr:6.2} ns");
    println!("std::sync::Mutex lock+add+unlock   : {std_ns:6.2} ns");
    println!("Event set+clear, no waiter         : {ev_ns:6.2} ns");
    Ok(())
}
