//! A `Lock`-guarded printer (Python's `l.acquire(); print('hello world', i); l.release()`):
//! several processes print multi-line blocks; the robust lock keeps each block whole.
//!
//! Run: `cargo run --example sync_printer`.

use std::io::Write;
use std::process::Command;

use shmkit::Segment;
use shmkit::sync::Mutex;

fn main() -> shmkit::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("printer") {
        let lock = Mutex::<u64>::open(&args[2])?;
        let id = &args[3];
        for _ in 0..3 {
            // Whatever happened to the previous holder, printing is safe to resume:
            // mark consistent and go on.
            let mut g = lock.lock()?.into_guard();
            g.make_consistent()?;
            *g += 1;
            let mut out = std::io::stdout().lock();
            for line in 0..3 {
                writeln!(out, "printer {id}: line {line} of block {}", *g).ok();
            }
            out.flush().ok();
        }
        return Ok(());
    }

    let name = format!("example-printer-{}", std::process::id());
    let lock = Mutex::<u64>::create_with(&Segment::options().unlink_on_drop(true), &name, 0)?;
    let me = std::env::current_exe()
        .map_err(|e| shmkit::Error::invalid("example", "current_exe", e.to_string()))?;
    let kids: Vec<_> = (0..4)
        .map(|i| {
            Command::new(&me)
                .args(["printer", &name, &i.to_string()])
                .spawn()
                .expect("spawn printer")
        })
        .collect();
    for mut k in kids {
        assert!(k.wait().expect("wait").success());
    }
    let blocks = *lock.lock()?.into_guard();
    println!("{blocks} blocks printed, none interleaved");
    assert_eq!(blocks, 12);
    Ok(())
}
