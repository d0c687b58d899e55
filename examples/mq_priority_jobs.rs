//! A priority job queue over a POSIX message queue fed by several producer processes.
//! Urgent jobs overtake normal and bulk ones whenever the queue backs up; jobs of one
//! priority keep their order. The queue is removed at the end (and on error).
//!
//! Run: `cargo run --example mq_priority_jobs`

use std::process::Command;
use std::time::Duration;

use shmkit::mq::MessageQueue;

const PRODUCERS: u32 = 3;
const JOBS_EACH: u32 = 20;
const PRIORITIES: [(u32, &str); 3] = [(1, "bulk"), (5, "normal"), (9, "urgent")];

/// Removes the queue when dropped.
struct Unlink(String);
impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = MessageQueue::unlink(&self.0);
    }
}

fn producer(queue: &str, id: u32) -> shmkit::Result<()> {
    let q = MessageQueue::open(queue)?;
    for seq in 0..JOBS_EACH {
        let (prio, kind) = PRIORITIES[((id + seq * 7) % 3) as usize];
        let job = format!("{kind} job {seq} from producer {id}");
        q.send_timeout(job.as_bytes(), prio, Duration::from_secs(30))?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "producer" {
        producer(&args[2], args[3].parse()?)?;
        return Ok(());
    }
    let name = format!("shmkit-example-jobs-{}", std::process::id());
    // Small on purpose: 4 slots of 128 bytes fit the default limits many times over.
    let q = MessageQueue::create(&name, 4, 128)?;
    let _cleanup = Unlink(name.clone());
    let exe = std::env::current_exe()?;
    let mut kids = Vec::new();
    for id in 0..PRODUCERS {
        kids.push(
            Command::new(&exe)
                .args(["producer", &name, &id.to_string()])
                .spawn()?,
        );
    }
    let mut buf = vec![0u8; q.msg_size()];
    let mut per_prio = [0u32; 3];
    for i in 0..PRODUCERS * JOBS_EACH {
        let (n, prio) = q.recv_timeout(&mut buf, Duration::from_secs(30))?;
        let job = String::from_utf8_lossy(&buf[..n]);
        let slot = PRIORITIES
            .iter()
            .position(|(p, _)| *p == prio)
            .ok_or("unknown priority")?;
        per_prio[slot] += 1;
        if i % 10 == 0 {
            println!("consumer: handling [prio {prio}] {job}");
        }
    }
    for mut k in kids {
        if !k.wait()?.success() {
            return Err("a producer failed".into());
        }
    }
    for ((_, kind), n) in PRIORITIES.iter().zip(per_prio) {
        println!("{kind:>7}: {n} jobs");
    }
    println!(
        "all {} jobs handled; queue {name} removed",
        PRODUCERS * JOBS_EACH
    );
    Ok(())
}
