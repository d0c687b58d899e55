//! A parent and a forked child talking over a duplex `Pipe`, like Python's
//! `multiprocessing.Pipe()`: the parent sends work, the child answers, and the child sees
//! end-of-stream when the parent closes its end.
//!
//! Run: `cargo run --example pipe_parent_child`

use std::time::Duration;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use shmkit::Error;
use shmkit::pipe::Pipe;

fn child(mut conn: Pipe) -> i32 {
    // Answer every request with its length and a checksum until the parent hangs up.
    loop {
        match conn.recv() {
            Ok(req) => {
                let sum: u64 = req.iter().map(|&b| u64::from(b)).sum();
                let reply = format!("{} bytes, checksum {sum}", req.len());
                if conn.send(reply.as_bytes()).is_err() {
                    return 1;
                }
            }
            Err(Error::Disconnected { .. }) => return 0, // parent closed: done
            Err(e) => {
                eprintln!("child: {e}");
                return 1;
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (parent_end, child_end) = Pipe::pair()?;
    // SAFETY: this program is single-threaded here, so the child may do anything.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(parent_end); // keep only our end, or end-of-stream never comes
            std::process::exit(child(child_end));
        }
        ForkResult::Parent { child } => {
            drop(child_end);
            let mut conn = parent_end;
            for req in [&b"hello"[..], &[7u8; 100_000][..], b""] {
                conn.send(req)?;
                // poll() first, like Connection.poll(timeout) in Python.
                if !conn.poll(Some(Duration::from_secs(10)))? {
                    return Err("child did not answer within 10 s".into());
                }
                let reply = conn.recv()?;
                println!(
                    "parent: sent {} bytes, child says: {}",
                    req.len(),
                    String::from_utf8_lossy(&reply)
                );
            }
            drop(conn); // the child sees Disconnected and exits
            match waitpid(child, None)? {
                WaitStatus::Exited(_, 0) => println!("parent: child exited cleanly"),
                st => return Err(format!("child ended badly: {st:?}").into()),
            }
        }
    }
    Ok(())
}
