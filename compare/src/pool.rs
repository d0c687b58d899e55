//! The `pool` workload: `Pool.map` over N worker processes, shmkit's
//! [`Pool`] against Python's `multiprocessing.Pool`.
//!
//! Unlike the other workloads this one is not two pinned processes: a pool is a parent
//! and `workers` children (default: [`std::thread::available_parallelism`]) that the
//! scheduler places. Both mechanisms get the same worker count, the same tasks and
//! Python's default chunk size (`len / (4 * workers)`, rounded up: what
//! [`Pool::map`](shmkit::process::Pool::map) picks too).
//!
//! - [`PoolKind::Trivial`]: `map` of 100,000 tasks `x -> x * x` (u64 / int). Reported as
//!   tasks per second and wall time per task (`median_ns`).
//! - [`PoolKind::Busy1ms`]: `map` of 1,000 tasks that each spin 1 ms on the monotonic
//!   clock. Reported as **overhead per task** = `workers * wall / tasks - 1 ms`: the
//!   worker time each task costs beyond its own 1 ms (0 for a perfect pool: `tasks`
//!   milliseconds of work spread over `workers` workers take `tasks / workers` ms).
//!
//! Each timed `map` runs on a warm pool (started, and given one small map, before the
//! clock starts); a run's value is the median over its maps (an odd number of them, so
//! that it is one map's figure), the row's the median of its runs' (the harness makes 3
//! or 5 runs in rounds, each on a fresh pool).
//!
//! `shmkit-pool` starts its workers by re-executing the current program
//! ([`StartMethod::Spawn`](shmkit::process::StartMethod::Spawn)): the program must call
//! `shmkit::process::init(&shmkit_compare::pool::ENTRIES)` first thing in `main` (the
//! `shmkit` CLI does). `python-mp-pool` runs `compare/scripts/mp_pool.py` (embedded in
//! this crate) with `python3`, which prints its timings as JSON.

use std::time::{Duration, Instant};

use shmkit::process::{Entry, Pool, Role};
use shmkit::{Error, Result};

use crate::measure::{Measurement, Timing, summarise};
use crate::proc::Placement;

/// The mechanism id of shmkit's pool over the default entry (serde: postcard).
pub const SHMKIT_POOL: &str = "shmkit-pool";
/// The mechanism id of shmkit's pool over a plain-data entry (`entry!(pod f)`).
pub const SHMKIT_POOL_POD: &str = "shmkit-pool-pod";
/// The mechanism id of Python's `multiprocessing.Pool`, the baseline of the ratios.
pub const PYTHON_POOL: &str = "python-mp-pool";

/// The Python peer, run by `python3`.
pub const SCRIPT: &str = include_str!("../scripts/mp_pool.py");

/// The pools measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolImpl {
    /// `shmkit-pool`: arguments and results with serde (postcard).
    Shmkit,
    /// `shmkit-pool-pod`: arguments and results as their own bytes.
    ShmkitPod,
    /// `python-mp-pool`.
    Python,
}

impl PoolImpl {
    /// All, in table order.
    pub const ALL: [PoolImpl; 3] = [PoolImpl::Shmkit, PoolImpl::ShmkitPod, PoolImpl::Python];

    /// The mechanism id.
    pub fn id(self) -> &'static str {
        match self {
            PoolImpl::Shmkit => SHMKIT_POOL,
            PoolImpl::ShmkitPod => SHMKIT_POOL_POD,
            PoolImpl::Python => PYTHON_POOL,
        }
    }

    /// The row's note.
    pub fn note(self) -> &'static str {
        match self {
            PoolImpl::Shmkit => "shmkit::process::Pool, entry!(f): postcard, spawn start method",
            PoolImpl::ShmkitPod => {
                "shmkit::process::Pool, entry!(pod f): plain bytes, spawn start method"
            }
            PoolImpl::Python => "multiprocessing.Pool, compare/scripts/mp_pool.py",
        }
    }
}

/// The two pool workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// 100,000 trivial tasks: throughput.
    Trivial,
    /// 1,000 tasks of 1 ms busy work: overhead per task.
    Busy1ms,
}

impl PoolKind {
    /// Both, in table order.
    pub const ALL: [PoolKind; 2] = [PoolKind::Trivial, PoolKind::Busy1ms];

    /// The row's variant label.
    pub fn label(self) -> &'static str {
        match self {
            PoolKind::Trivial => "100k trivial",
            PoolKind::Busy1ms => "1k x 1 ms",
        }
    }

    /// Tasks per `map`.
    pub fn tasks(self) -> usize {
        match self {
            PoolKind::Trivial => 100_000,
            PoolKind::Busy1ms => 1_000,
        }
    }

    /// The workload's name in `mp_pool.py`.
    fn script_name(self) -> &'static str {
        match self {
            PoolKind::Trivial => "trivial",
            PoolKind::Busy1ms => "busy1ms",
        }
    }
}

fn trivial(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn busy1ms(x: u64) -> u64 {
    let end = Instant::now() + Duration::from_millis(1);
    while Instant::now() < end {
        std::hint::spin_loop();
    }
    x
}

/// `x -> x * x`.
pub static TRIVIAL: Entry<u64, u64> = shmkit::entry!(trivial);
/// Spins 1 ms, returns its argument.
pub static BUSY_1MS: Entry<u64, u64> = shmkit::entry!(busy1ms);
/// [`TRIVIAL`] as a plain-data entry.
pub static TRIVIAL_POD: Entry<u64, u64> = shmkit::entry!(pod trivial);
/// [`BUSY_1MS`] as a plain-data entry.
pub static BUSY_1MS_POD: Entry<u64, u64> = shmkit::entry!(pod busy1ms);
/// What a program running the pool workload passes to `shmkit::process::init`.
pub static ENTRIES: [&'static dyn Role; 4] = [&TRIVIAL, &BUSY_1MS, &TRIVIAL_POD, &BUSY_1MS_POD];

/// Worker count of the workload: the CPUs this process may use.
pub fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Whether `python3` runs here.
pub fn python_available() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One measurement from the wall times of `reps` maps of `kind`.
fn from_walls(kind: PoolKind, workers: usize, walls: &[Duration]) -> Measurement {
    let tasks = kind.tasks() as f64;
    // Per task: wall / tasks, or for busy work the overhead beyond the task's 1 ms.
    let per: Vec<f64> = walls
        .iter()
        .map(|w| {
            let ns = w.as_nanos() as f64;
            match kind {
                PoolKind::Trivial => ns / tasks,
                PoolKind::Busy1ms => workers as f64 * ns / tasks - 1e6,
            }
        })
        .collect();
    let mut sorted_walls: Vec<f64> = walls.iter().map(|w| w.as_nanos() as f64).collect();
    sorted_walls.sort_by(f64::total_cmp);
    let median_wall = crate::measure::percentile(&sorted_walls, 0.5);
    let mut m = summarise(
        per,
        (kind.tasks() * walls.len()) as u64,
        Timing::Total,
        Placement {
            parent: None,
            child: None,
        },
    );
    m.ops_per_s = Some(tasks * 1e9 / median_wall);
    m
}

/// Times `reps` calls of `Pool::map` of `kind` on a warm shmkit pool of `workers`, over
/// the serde entry ([`PoolImpl::Shmkit`]) or the plain-data one.
pub fn shmkit_pool(
    kind: PoolKind,
    imp: PoolImpl,
    workers: usize,
    reps: usize,
) -> Result<Measurement> {
    let entry = match (kind, imp) {
        (PoolKind::Trivial, PoolImpl::ShmkitPod) => &TRIVIAL_POD,
        (PoolKind::Busy1ms, PoolImpl::ShmkitPod) => &BUSY_1MS_POD,
        (PoolKind::Trivial, _) => &TRIVIAL,
        (PoolKind::Busy1ms, _) => &BUSY_1MS,
    };
    let pool = Pool::new(entry, workers)?;
    let n = kind.tasks() as u64;
    pool.map(0..n.min(100))?;
    let mut walls = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let out = pool.map(0..n)?;
        walls.push(t.elapsed());
        if out.len() as u64 != n || (kind == PoolKind::Trivial && out[7] != 49) {
            return Err(Error::corrupt(imp.id(), "map returned wrong results"));
        }
    }
    Ok(from_walls(kind, workers, &walls))
}

/// Times `reps` calls of `multiprocessing.Pool.map` of `kind` with `workers` workers, in
/// a `python3` child running [`SCRIPT`].
pub fn python_pool(kind: PoolKind, workers: usize, reps: usize) -> Result<Measurement> {
    let dir =
        tempfile::tempdir().map_err(|e| Error::invalid(PYTHON_POOL, "tempdir", e.to_string()))?;
    let script = dir.path().join("mp_pool.py");
    std::fs::write(&script, SCRIPT)
        .map_err(|e| Error::invalid(PYTHON_POOL, "write script", e.to_string()))?;
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args([
            kind.script_name().to_string(),
            kind.tasks().to_string(),
            workers.to_string(),
            reps.max(1).to_string(),
        ])
        .output()
        .map_err(|e| Error::invalid(PYTHON_POOL, "run python3", e.to_string()))?;
    if !out.status.success() {
        return Err(Error::invalid(
            PYTHON_POOL,
            "run python3",
            format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::corrupt(PYTHON_POOL, format!("output is not JSON: {e}")))?;
    let walls: Vec<Duration> = v["seconds"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_f64())
                .map(Duration::from_secs_f64)
                .collect()
        })
        .unwrap_or_default();
    if walls.is_empty() {
        return Err(Error::corrupt(PYTHON_POOL, "no timings in the output"));
    }
    Ok(from_walls(kind, workers, &walls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_per_task_is_worker_time_beyond_the_work() {
        // 1000 tasks of 1 ms on 2 workers: 500 ms is perfect, 510 ms costs 20 µs a task.
        let m = from_walls(PoolKind::Busy1ms, 2, &[Duration::from_millis(510)]);
        assert!((m.median_ns - 20_000.0).abs() < 1e-6, "{}", m.median_ns);
        let m = from_walls(PoolKind::Trivial, 2, &[Duration::from_millis(10)]);
        assert_eq!(m.median_ns, 100.0);
        assert_eq!(m.ops_per_s, Some(1e7));
    }
}
