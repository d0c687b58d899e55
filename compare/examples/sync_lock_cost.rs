//! Uncontended lock+unlock cost of the robust shmkit mutex against a raw robust pshared
//! pthread mutex, a plain (non-robust) pshared pthread mutex and `std::sync::Mutex`, single process, `Instant` over 10M iterations.
//! A quick measurement, not a benchmark suite (see benches/ for criterion).
//!
//! Run: `cargo run --release -p shmkit-compare --example sync_lock_cost`.

use std::time::Instant;

use shmkit::sync::{Event, Mutex, RawRobustMutex};

const N: u32 = 10_000_000;

fn main() -> shmkit::Result<()> {
    let m = Mutex::<u64>::anonymous(0)?;
    let t = Instant::now();
    for _ in 0..N {
        *m.lock_or_repair(|v| *v = 0)? += 1;
    }
    let shm = t.elapsed().as_secs_f64() * 1e9 / N as f64;

    let raw: &RawRobustMutex = m.raw();
    let t = Instant::now();
    for _ in 0..N {
        drop(raw.lock(m.segment().liveness())?);
    }
    let rawr = t.elapsed().as_secs_f64() * 1e9 / N as f64;

    let plain = PlainPshared::new();
    let t = Instant::now();
    for _ in 0..N {
        plain.lock_unlock();
    }
    let plain_ns = t.elapsed().as_secs_f64() * 1e9 / N as f64;

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
    println!("raw pthread pshared, NOT robust    : {plain_ns:6.2} ns");
    println!("std::sync::Mutex lock+add+unlock   : {std_ns:6.2} ns");
    println!("Event set+clear, no waiter         : {ev_ns:6.2} ns");
    Ok(())
}

/// A plain `PTHREAD_PROCESS_SHARED` mutex (not robust), for comparison.
struct PlainPshared(Box<std::cell::UnsafeCell<libc::pthread_mutex_t>>);

impl PlainPshared {
    fn new() -> Self {
        // SAFETY: an all-zero pthread_mutex_t is a valid target for pthread_mutex_init.
        let m = Box::new(std::cell::UnsafeCell::new(unsafe { std::mem::zeroed() }));
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: attr is initialised before use and destroyed after; the mutex lives in a
        // Box that is never moved out of while in use.
        unsafe {
            assert_eq!(libc::pthread_mutexattr_init(attr.as_mut_ptr()), 0);
            assert_eq!(
                libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED),
                0
            );
            assert_eq!(libc::pthread_mutex_init(m.get(), attr.as_ptr()), 0);
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        }
        PlainPshared(m)
    }

    fn lock_unlock(&self) {
        // SAFETY: initialised in new(); locked and unlocked by the same thread.
        unsafe {
            libc::pthread_mutex_lock(self.0.get());
            libc::pthread_mutex_unlock(self.0.get());
        }
    }
}

impl Drop for PlainPshared {
    fn drop(&mut self) {
        // SAFETY: unlocked and no longer used.
        unsafe { libc::pthread_mutex_destroy(self.0.get()) };
    }
}
