//! Producer/consumer with a sentinel, across processes.
//!
//! The parent creates a named queue and starts one consumer process (this same program,
//! re-executed with the argument `consumer`), sends a few work items, then a sentinel
//! that tells the consumer to stop. The queue is removed when the parent's handle drops.
//!
//! ```text
//! cargo run --example queue_producer_consumer
//! ```

use std::process::Command;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use shmkit::queue::Queue;
use shmkit::segment::SegmentOptions;

/// One work item: plain old data, so it can live in shared memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
struct Item {
    id: u64,
    value: f64,
}

const SENTINEL: Item = Item {
    id: u64::MAX,
    value: 0.0,
};

fn consumer(name: &str) -> shmkit::Result<()> {
    let q = Queue::<Item>::open(name)?;
    let mut sum = 0.0;
    loop {
        // Bounded: a producer that died without sending the sentinel ends the wait.
        let item = q.recv_timeout(Duration::from_secs(10))?;
        if item == SENTINEL {
            break;
        }
        println!(
            "consumer {}: item {} = {}",
            std::process::id(),
            item.id,
            item.value
        );
        sum += item.value;
    }
    println!("consumer: sentinel received, sum = {sum}");
    Ok(())
}

fn main() -> shmkit::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("consumer") {
        return consumer(&args[2]);
    }
    let name = format!("example-pc-{}", std::process::id());
    let q = Queue::<Item>::options()
        .capacity(16)
        .segment(SegmentOptions::default().unlink_on_drop(true))
        .create(&name)?;
    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .args(["consumer", &name])
        .spawn()
        .expect("spawn consumer");
    let sent = (|| {
        for id in 0..10 {
            q.send(Item {
                id,
                value: id as f64 * 1.5,
            })?;
        }
        Ok(q.send(SENTINEL)?)
    })();
    let status = child.wait().expect("wait");
    println!("producer: consumer exited with {status}");
    sent
}
