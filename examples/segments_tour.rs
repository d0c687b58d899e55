//! Creates a few segments, keeps them while it runs so that `shmkit ls` in another
//! terminal shows them (with this process as creator and attached), then removes them.
//!
//! `cargo run --example segments_tour -- [SECONDS]` (default 10 s; Enter ends it sooner).

use std::time::Duration;

use shmkit::{Array, Segment, Value};

fn main() -> Result<(), shmkit::Error> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let pid = std::process::id();
    let names = [format!("tour-counter-{pid}"), format!("tour-prices-{pid}")];
    let opts = Segment::options().unlink_on_drop(true);
    let counter = Value::<u64>::create_with(&opts, &names[0], 0)?;
    let prices = Array::<f64>::create_with(&opts, &names[1], 16, 1.0)?;
    prices.store(3, 99.5)?;
    counter.fetch_add(42);
    println!(
        "created {} and {}; try `shmkit ls` or `shmkit info {}`",
        names[0], names[1], names[0]
    );
    println!("removing them in {secs} s (or press Enter)");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        // EOF (stdin not a terminal) means "no Enter coming": wait for the timer.
        if matches!(std::io::stdin().read_line(&mut s), Ok(n) if n > 0) {
            let _ = tx.send(());
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) =
        rx.recv_timeout(Duration::from_secs(secs))
    {
        // stdin closed without an Enter: just wait out the time.
        std::thread::sleep(deadline.saturating_duration_since(std::time::Instant::now()));
    }
    println!(
        "counter = {}, prices[3] = {}",
        counter.load(),
        prices.load(3)?
    );
    Ok(()) // dropping the handles unlinks both names
}
