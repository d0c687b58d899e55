//! Python's `multiprocessing` in the rtt and stream workloads: `python-mp-pipe`
//! (`Pipe()`, `send_bytes` / `recv_bytes`), `python-mp-queue` (two `Queue`s, `put` /
//! `get`) and `python-mp-simplequeue` (two `SimpleQueue`s), so "faster than Python" is a
//! ratio measured in the same run as the other rows.
//!
//! Both ends are Python: `python3` runs `compare/scripts/mp_rtt.py` (embedded in this
//! crate), which pins itself to the parent's core, starts the peer as a
//! `multiprocessing.Process` pinned to the peer's core, and follows the harness's rules
//! (the sender builds each message: sequence number, extra word, fixed pattern; the
//! receiver checks its length, sequence number and every pattern byte; a mismatch fails
//! the run). rtt: each round trip timed on its own with `perf_counter_ns` (like every
//! sleeping mechanism), the samples come back as JSON and are summarised here. stream: a
//! 64-message probe sizes each run for the budget, the peer checks every message and
//! answers once per run; the figure is the median run's time per message.
//!
//! The interpreter's start-up and imports are outside the clock. Without `python3` the
//! rows say `unavailable: python3 not found`.

use std::time::Duration;

use shmkit::{Error, Result};

use crate::measure::{Measurement, Timing, summarise};
use crate::proc::Placement;

/// The embedded driver script.
pub const SCRIPT: &str = include_str!("../scripts/mp_rtt.py");

/// The mechanism ids, with the script's name for each and the table note.
pub const MECHANISMS: [(&str, &str, &str); 3] = [
    (
        "python-mp-pipe",
        "pipe",
        "Python multiprocessing.Pipe() send_bytes / recv_bytes (no pickling), peer a multiprocessing.Process; compare/scripts/mp_rtt.py",
    ),
    (
        "python-mp-queue",
        "queue",
        "Python multiprocessing.Queue x2, put / get (pickled bytes, feeder thread), peer a multiprocessing.Process; compare/scripts/mp_rtt.py",
    ),
    (
        "python-mp-simplequeue",
        "simplequeue",
        "Python multiprocessing.SimpleQueue x2, put / get (pickled bytes over a pipe), peer a multiprocessing.Process; compare/scripts/mp_rtt.py",
    ),
];

/// Runs the script and returns its `ns` list.
fn run_script(id: &str, args: &[String]) -> Result<Vec<f64>> {
    let mech = MECHANISMS
        .iter()
        .find(|m| m.0 == id)
        .map(|m| m.1)
        .ok_or_else(|| Error::invalid(id.to_string(), "run", "unknown python mechanism"))?;
    let dir = tempfile::tempdir()
        .map_err(|e| Error::invalid(id.to_string(), "tempdir", e.to_string()))?;
    let script = dir.path().join("mp_rtt.py");
    std::fs::write(&script, SCRIPT)
        .map_err(|e| Error::invalid(id.to_string(), "write script", e.to_string()))?;
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(mech)
        .args(args)
        .output()
        .map_err(|e| Error::invalid(id.to_string(), "run python3", e.to_string()))?;
    if !out.status.success() {
        return Err(Error::invalid(
            id.to_string(),
            "run python3",
            format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::corrupt(id.to_string(), format!("output is not JSON: {e}")))?;
    timings(id, &v)
}

/// The `ns` array of an external measuring program's JSON output (the Python scripts,
/// `shmkit-bridge-bench`): one timing per sample, at least one.
pub(crate) fn timings(id: &str, v: &serde_json::Value) -> Result<Vec<f64>> {
    let ns: Vec<f64> = v["ns"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    if ns.is_empty() {
        return Err(Error::corrupt(id.to_string(), "no timings in the output"));
    }
    Ok(ns)
}

fn cpu(c: Option<usize>) -> String {
    c.map_or("-1".into(), |c| c.to_string())
}

/// Round trips of `size` bytes: `warmup` untimed, `iters` timed one by one.
pub fn rtt(
    id: &str,
    size: usize,
    warmup: u64,
    iters: u64,
    placement: Placement,
) -> Result<Measurement> {
    let ns = run_script(
        id,
        &[
            "rtt".into(),
            size.to_string(),
            cpu(placement.parent),
            cpu(placement.child),
            warmup.to_string(),
            iters.to_string(),
        ],
    )?;
    let mut m = summarise(ns, iters, Timing::PerOp, placement);
    m.ops_per_s = (m.sum_ns > 0.0).then(|| m.samples as f64 * 1e9 / m.sum_ns);
    Ok(m)
}

/// One-way throughput at `size`: `reps` runs of about `target` each, median reported.
pub fn stream(
    id: &str,
    size: usize,
    target: Duration,
    reps: usize,
    placement: Placement,
) -> Result<Measurement> {
    let per_msg = run_script(
        id,
        &[
            "stream".into(),
            size.to_string(),
            cpu(placement.parent),
            cpu(placement.child),
            target.as_millis().max(1).to_string(),
            reps.max(1).to_string(),
        ],
    )?;
    let n = per_msg.len() as u64;
    let mut m = summarise(per_msg, n, Timing::Total, placement);
    m.p99_ns = None;
    m.p999_ns = None;
    m.ops_per_s = Some(1e9 / m.median_ns);
    m.throughput_bytes_per_s = Some(size as f64 * 1e9 / m.median_ns);
    Ok(m)
}
