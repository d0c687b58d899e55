//! The vendor/customer hand-off from the Python `Event` tutorials: the customer waits
//! (bounded) for the vendor to stock the shelf, pays, and the vendor waits for payment.
//!
//! Run: `cargo run --example sync_event_handoff`.

use std::process::Command;
use std::time::Duration;

use shmkit::Segment;
use shmkit::sync::{Event, Mutex};

const LIMIT: Duration = Duration::from_secs(10);

fn main() -> shmkit::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("customer") {
        let shelf = Mutex::<[u32; 2]>::open(&args[2])?; // [item, price]
        let stocked = Event::open(&args[3])?;
        let paid = Event::open(&args[4])?;
        println!("customer: waiting for the shelf to be stocked");
        if !stocked.wait_timeout(LIMIT)? {
            eprintln!("customer: the vendor never came");
            std::process::exit(1);
        }
        let [item, price] = *shelf.lock()?.into_guard();
        println!("customer: buying item {item} for {price}");
        shelf.lock()?.into_guard()[1] = 0; // paid in full
        paid.set();
        return Ok(());
    }

    let pid = std::process::id();
    let names = [
        format!("example-shelf-{pid}"),
        format!("example-stocked-{pid}"),
        format!("example-paid-{pid}"),
    ];
    let opts = Segment::options().unlink_on_drop(true);
    let shelf = Mutex::<[u32; 2]>::create_with(&opts, &names[0], [0, 0])?;
    let stocked = Event::create_with(&opts, &names[1])?;
    let paid = Event::create_with(&opts, &names[2])?;
    let me = std::env::current_exe()
        .map_err(|e| shmkit::Error::invalid("example", "current_exe", e.to_string()))?;
    let customer = Command::new(&me)
        .arg("customer")
        .args(&names)
        .spawn()
        .expect("spawn customer");
    // Reaped on every path (killed first if we bail out early).
    let mut customer = Reap(Some(customer));

    println!("vendor: stocking item 42 at price 7");
    *shelf.lock()?.into_guard() = [42, 7];
    stocked.set();
    assert!(paid.wait_timeout(LIMIT)?, "vendor: the customer never paid");
    println!(
        "vendor: paid, balance due {}",
        shelf.lock()?.into_guard()[1]
    );
    assert!(customer.wait().success());
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
