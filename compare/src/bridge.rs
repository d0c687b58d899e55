//! The `bridge` workload: shmkit -> shmkit-bridge -> zenoh -> shmkit-bridge -> shmkit
//! (`shmkit-bridge`) against zenoh pub/sub used directly (`zenoh-pubsub`) and a plain TCP
//! socket pair (`tcp-loopback`), rtt and stream (the row's variant), 64 B and 64 KiB.
//!
//! zenoh stays out of this crate's build: the measuring program is the bridge crate's
//! `shmkit-bridge-bench` (bridge/src/bench.rs, which has the method), run as an external
//! process like the Python rows ([`crate::python_mp`]): one program run per run of a row
//! (the harness makes 3 or 5, in rounds) with `--json`, its samples summarised here. It
//! is found where a user has it: the path in `SHMKIT_BRIDGE_BENCH`, else next to the
//! running executable (`target/release/` holds both after `cargo build --release -p
//! shmkit-bridge`). Without it the rows say how to build it.
//!
//! Same rules as the other rows: each message written by its sender and checked (every
//! byte) by its receiver; side A (the measuring process, with its bridge) on the
//! placement's parent core, side B (the echo process, with its bridge) on the child's;
//! CPU of every process of the run per message. Ratios: time per message over that of
//! `tcp-loopback` in the same variant and size of the same run (bigger is slower).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmkit::{Error, Result};

use crate::measure::{Measurement, Timing, summarise};
use crate::proc::Placement;

/// The ratios' baseline.
pub const TCP: &str = "tcp-loopback";

/// Message sizes.
pub const SIZES: [usize; 2] = [64, 64 << 10];

/// The variants: round trips, one-way stream.
pub const VARIANTS: [&str; 2] = ["rtt", "stream"];

/// The mechanism ids, the program's `--path` for each, and the table note.
pub const MECHANISMS: [(&str, &str, &str); 3] = [
    (
        "shmkit-bridge",
        "bridge",
        "shmkit topic -> shmkit-bridge -> zenoh TCP loopback -> shmkit-bridge -> shmkit topic (2 bridge processes); bridge/src/bench.rs",
    ),
    (
        "zenoh-pubsub",
        "zenoh",
        "zenoh 1.10 pub/sub directly, one peer session per process, TCP loopback, CongestionControl::Block; bridge/src/bench.rs",
    ),
    (
        TCP,
        "tcp",
        "plain TCP socket pair on loopback, TCP_NODELAY, 4-byte length prefix; bridge/src/bench.rs",
    ),
];

/// The row's reason when the program is not there.
pub const UNAVAILABLE: &str = "unavailable: build it with cargo build --release -p shmkit-bridge (first build measured 508 s here)";

/// The program's file name.
pub const PROGRAM: &str = "shmkit-bridge-bench";

/// The measuring program: `SHMKIT_BRIDGE_BENCH`, else next to this executable.
pub fn program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SHMKIT_BRIDGE_BENCH") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let p = std::env::current_exe().ok()?.with_file_name(PROGRAM);
    p.is_file().then_some(p)
}

/// The longest one run of the program may take before it is killed (its own waits are
/// bounded far below this; this bounds a program that misbehaves).
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// Runs the program once and returns its JSON.
fn run_program(id: &str, args: &[String]) -> Result<serde_json::Value> {
    let fail = |op: &'static str, e: String| Error::invalid(id.to_string(), op, e);
    let exe = program().ok_or_else(|| fail("find program", UNAVAILABLE.into()))?;
    let mut child = Command::new(&exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail("spawn", format!("{}: {e}", exe.display())))?;
    let drain = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let end = Instant::now() + RUN_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail("run", format!("killed after {RUN_LIMIT:?}")));
            }
            Err(e) => return Err(fail("wait", e.to_string())),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        return Err(fail(
            "run",
            format!("{status}: {}", String::from_utf8_lossy(&err).trim()),
        ));
    }
    serde_json::from_slice(&out)
        .map_err(|e| Error::corrupt(id.to_string(), format!("output is not JSON: {e}")))
}

fn core(c: Option<usize>) -> String {
    c.map_or("-1".into(), |c| c.to_string())
}

/// One run of a row: `variant` (`rtt` or `stream`) of mechanism `id` at `size`.
pub fn measure(
    id: &str,
    variant: &str,
    size: usize,
    quick: bool,
    placement: Placement,
) -> Result<Measurement> {
    let path = MECHANISMS
        .iter()
        .find(|m| m.0 == id)
        .map(|m| m.1)
        .ok_or_else(|| Error::invalid(id.to_string(), "run", "unknown bridge-workload id"))?;
    let mut args: Vec<String> = vec![
        "--json".into(),
        "--path".into(),
        path.into(),
        "--what".into(),
        variant.into(),
        "--size".into(),
        size.to_string(),
        format!(
            "--cpus={},{}",
            core(placement.parent),
            core(placement.child)
        ),
    ];
    if quick {
        args.push("--quick".into());
    }
    let v = run_program(id, &args)?;
    parse(id, &v, variant, size, placement)
}

/// The program's JSON as a measurement.
fn parse(
    id: &str,
    v: &serde_json::Value,
    variant: &str,
    size: usize,
    placement: Placement,
) -> Result<Measurement> {
    let ns = crate::python_mp::timings(id, v)?;
    let ops = v["ops"].as_u64().unwrap_or(ns.len() as u64);
    let mut m = if variant == "rtt" {
        let mut m = summarise(ns, ops, Timing::PerOp, placement);
        m.ops_per_s = (m.sum_ns > 0.0).then(|| m.samples as f64 * 1e9 / m.sum_ns);
        m
    } else {
        let mut m = summarise(ns, ops, Timing::Total, placement);
        m.p99_ns = None;
        m.p999_ns = None;
        m.ops_per_s = (m.median_ns > 0.0).then(|| 1e9 / m.median_ns);
        m.throughput_bytes_per_s = (m.median_ns > 0.0).then(|| size as f64 * 1e9 / m.median_ns);
        m
    };
    m.cpu_ns_per_op = v["cpu_ns_per_op"].as_f64();
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Placement = Placement {
        parent: Some(0),
        child: Some(1),
    };

    #[test]
    fn json_becomes_a_measurement() {
        let v = serde_json::json!({"ns": [300.0, 100.0, 200.0], "ops": 3, "cpu_ns_per_op": 50.0});
        let m = parse("x", &v, "rtt", 64, P).unwrap();
        assert_eq!(m.median_ns, 200.0);
        assert_eq!(m.cpu_ns_per_op, Some(50.0));
        assert_eq!(m.ops_per_s, Some(5e6));
        let v =
            serde_json::json!({"ns": [1000.0, 2000.0, 4000.0], "ops": 300, "cpu_ns_per_op": 9.0});
        let m = parse("x", &v, "stream", 64, P).unwrap();
        assert_eq!(m.median_ns, 2000.0);
        assert_eq!(m.ops_per_s, Some(5e5));
        assert_eq!(m.throughput_bytes_per_s, Some(64.0 * 5e5));
        assert_eq!(m.operations, 300);
        assert!(parse("x", &serde_json::json!({"ns": []}), "rtt", 64, P).is_err());
    }
}
