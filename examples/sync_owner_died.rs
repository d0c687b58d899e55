//! A holder killed in the middle of an update, detected and repaired by the next process.
//!
//! The protected state is a transfer between two accounts plus an undo record written
//! before the update starts. A child locks, writes the record, debits one account and is
//! SIGKILLed before crediting the other. The parent's next `lock` returns `OwnerDied`;
//! it sees the pending record, rolls the half-done transfer back, marks the state
//! consistent, and carries on.
//!
//! Run: `cargo run --example sync_owner_died`.

use std::process::Command;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use shmkit::Segment;
use shmkit::sync::{Event, LockResult, Mutex};

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Bank {
    a: i64,
    b: i64,
    /// Undo record: 1 while a transfer is in flight, with the balances before it.
    pending: i64,
    old_a: i64,
    old_b: i64,
}

const LIMIT: Duration = Duration::from_secs(10);

fn main() -> shmkit::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("holder") {
        let bank = Mutex::<Bank>::open(&args[2])?;
        let midway = Event::open(&args[3])?;
        let mut g = bank.lock()?.into_guard();
        (g.old_a, g.old_b, g.pending) = (g.a, g.b, 1);
        g.a -= 30; // debit...
        midway.set(); // ...and get killed before the credit
        loop {
            std::thread::park();
        }
    }

    let pid = std::process::id();
    let (bn, en) = (
        format!("example-bank-{pid}"),
        format!("example-midway-{pid}"),
    );
    let opts = Segment::options().unlink_on_drop(true);
    let init = Bank {
        a: 100,
        b: 50,
        pending: 0,
        old_a: 0,
        old_b: 0,
    };
    let bank = Mutex::<Bank>::create_with(&opts, &bn, init)?;
    let midway = Event::create_with(&opts, &en)?;
    let me = std::env::current_exe()
        .map_err(|e| shmkit::Error::invalid("example", "current_exe", e.to_string()))?;
    let holder = Command::new(&me)
        .args(["holder", &bn, &en])
        .spawn()
        .expect("spawn holder");
    let mut holder = Reap(Some(holder));
    assert!(
        midway.wait_timeout(LIMIT)?,
        "holder never reached the middle"
    );
    println!("killing holder {} mid-transfer", holder.id());
    holder.kill_and_wait();

    // What `shmkit info` shows now (it builds its sentences from this state).
    let state = shmkit::sync::describe(bank.segment());
    println!("  state: {state:?}");
    assert!(
        matches!(state, Some(shmkit::sync::SyncState::Mutex(o)) if o.owner_died),
        "{state:?}"
    );
    match bank.lock_timeout(LIMIT)? {
        LockResult::Acquired(_) => panic!("the death should have been reported"),
        LockResult::OwnerDied(mut g) => {
            println!("OwnerDied: state {:?}", *g);
            if g.pending == 1 {
                (g.a, g.b, g.pending) = (g.old_a, g.old_b, 0);
                println!("rolled back the half-done transfer");
            }
            g.make_consistent()?;
        }
    }
    let g = bank.lock()?.into_guard();
    println!("repaired: a = {}, b = {}, total {}", g.a, g.b, g.a + g.b);
    assert_eq!((g.a, g.b), (100, 50));
    Ok(())
}

/// Kills and waits for a child on drop, so no path leaves a zombie or a stray process.
struct Reap(Option<std::process::Child>);

impl Reap {
    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, |c| c.id())
    }

    /// SIGKILL, then reap.
    fn kill_and_wait(&mut self) {
        if let Some(mut c) = self.0.take() {
            c.kill().expect("kill");
            c.wait().expect("wait");
        }
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        self.kill_and_wait();
    }
}
