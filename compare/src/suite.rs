//! One run of every workload for every mechanism: the plan (a list of tasks, for a
//! progress bar), the runner, and the rows (with ratios) that the CLI prints and writes.

use std::time::Duration;

use crate::channel::{ChannelSpec, Style};
use crate::fanout;
use crate::locks::LockSpec;
use crate::measure::{self, Measurement, Timing};
use crate::mpmc::{self, MpmcParams, MpmcSpec};
use crate::pool::{self, PYTHON_POOL, PoolImpl, PoolKind};
use crate::proc::Placement;
use crate::{bridge, python_mp, registry};

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Round-trip latency.
    Rtt,
    /// One-way throughput.
    Stream,
    /// Lock + unlock, uncontended and contended.
    Lock,
    /// Wake-up latency of a sleeping waiter.
    Wake,
    /// `Pool.map` over worker processes ([`crate::pool`]).
    Pool,
    /// P producer processes to C consumer processes ([`crate::mpmc`]).
    Mpmc,
    /// One-way throughput from 16 B to 16 MiB.
    Sizes,
    /// One publisher to 1..8 subscriber processes ([`crate::fanout`]).
    Fanout,
    /// shmkit through shmkit-bridge and zenoh, against zenoh and TCP ([`crate::bridge`]).
    Bridge,
}

impl Workload {
    /// All, in table order.
    pub const ALL: [Workload; 9] = [
        Workload::Rtt,
        Workload::Stream,
        Workload::Lock,
        Workload::Wake,
        Workload::Pool,
        Workload::Mpmc,
        Workload::Sizes,
        Workload::Fanout,
        Workload::Bridge,
    ];

    /// `rtt`, `stream`, `lock`, `wake`, `pool`, `mpmc`, `sizes`, `fanout` or `bridge`.
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Rtt => "rtt",
            Workload::Stream => "stream",
            Workload::Lock => "lock",
            Workload::Wake => "wake",
            Workload::Pool => "pool",
            Workload::Mpmc => "mpmc",
            Workload::Sizes => "sizes",
            Workload::Fanout => "fanout",
            Workload::Bridge => "bridge",
        }
    }

    /// Parses a workload name.
    pub fn parse(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.as_str() == s)
    }
}

/// Message sizes of the rtt workload.
pub const RTT_SIZES: [usize; 2] = [64, 4096];
/// Message sizes of the stream workload.
pub const STREAM_SIZES: [usize; 4] = [64, 4096, 64 << 10, 1 << 20];

/// Message sizes of the sizes workload: 16 B (the payload's minimum: sequence number and
/// one extra word) to 16 MiB in powers of 4.
pub const SIZES: [usize; 11] = [
    16,
    64,
    256,
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
];
/// The `--quick` subset of [`SIZES`].
pub const QUICK_SIZES: [usize; 6] = [16, 256, 4 << 10, 64 << 10, 1 << 20, 16 << 20];

/// The mpmc ratios' baseline: the same mechanism with one producer and one consumer.
pub const MPMC_BASE: &str = "1x1";

/// How long the peer holds each message in the wake table's held rows: twice the default
/// adaptive spin budget (50 µs), so that the measuring side's wait for the reply always
/// outlasts it, the case where an adaptive wait should cost about what a parked one does.
pub const WAKE_HOLD: Duration = Duration::from_micros(100);

/// The variant label of the held wake rows.
pub const WAKE_HOLD_VARIANT: &str = "peer holds 100 us";

/// The mechanisms the wake table also measures with a held reply: the queue's adaptive
/// and parked waits (typed and bytes) and the raw futex they are built on.
pub const WAKE_HELD: [&str; 4] = [
    "futex",
    "shmkit-queue",
    "shmkit-queue-park",
    "shmkit-bytequeue",
];

/// The mechanism id every rtt and wake ratio is relative to.
pub const FLOOR: &str = "spin-floor";
/// The stream baseline's id.
pub const MEMCPY: &str = "memcpy";
/// The lock baseline.
pub const LOCK_FLOOR: &str = "cas-spinlock";

/// What to run and how long.
#[derive(Debug, Clone)]
pub struct Options {
    /// The quick budget (whole suite well under a minute on 2 cores).
    pub quick: bool,
    /// Only these mechanism ids (the baselines always run, for the ratios).
    pub only: Option<Vec<String>>,
    /// Only these workloads.
    pub workloads: Vec<Workload>,
    /// Where the two processes run.
    pub placement: Placement,
}

impl Options {
    /// Everything, with the quick or full budget, default placement.
    pub fn new(quick: bool) -> Options {
        Options {
            quick,
            only: None,
            workloads: Workload::ALL.to_vec(),
            placement: Placement::detect(),
        }
    }

    fn wants(&self, id: &str) -> bool {
        id == FLOOR
            || id == MEMCPY
            || id == LOCK_FLOOR
            || id == PYTHON_POOL
            || self.only.as_ref().is_none_or(|o| o.iter().any(|x| x == id))
    }

    fn explicitly(&self, id: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|x| x == id))
    }
}

/// What a task measures.
#[derive(Debug, Clone)]
pub enum Job {
    /// Round trips through a channel.
    Rtt(ChannelSpec, usize),
    /// One-way stream through a channel.
    Stream(ChannelSpec, usize),
    /// The single-process memcpy baseline.
    Memcpy(usize),
    /// Wake-up latency; with a hold, the peer answers that long after each wake-up.
    Wake(ChannelSpec, Option<Duration>),
    /// Lock + unlock in one process.
    LockUncontended(LockSpec),
    /// Lock + unlock from two processes at once.
    LockContended(LockSpec),
    /// `Pool.map` of one of the pools.
    Pool(PoolKind, PoolImpl),
    /// P producers to C consumers.
    Mpmc(MpmcSpec, MpmcParams),
    /// One-way throughput at one size of the sweep.
    Sizes(ChannelSpec, usize),
    /// rtt (`false`) or stream (`true`) of a Python `multiprocessing` mechanism
    /// ([`crate::python_mp`]) at a size.
    PythonMp(&'static str, bool, usize),
    /// One publisher to `subs` subscribers ([`crate::fanout`]).
    Fanout(&'static str, usize, usize),
    /// Mechanism, variant (`rtt` / `stream`) and size of the bridge workload
    /// ([`crate::bridge`]).
    Bridge(&'static str, &'static str, usize),
    /// Not runnable: the row carries the reason.
    Skip(String),
}

/// One unit of work: one row of the table.
#[derive(Debug, Clone)]
pub struct Task {
    /// The workload.
    pub workload: Workload,
    /// Mechanism id.
    pub mechanism: String,
    /// Message size, when the workload has one.
    pub size: Option<usize>,
    /// `uncontended` / `contended` for locks, the task set for pools, the shape for mpmc,
    /// [`WAKE_HOLD_VARIANT`] for held wake-ups.
    pub variant: Option<&'static str>,
    /// Spinning or sleeping.
    pub style: Option<Style>,
    /// The adapter's note.
    pub note: String,
    /// What to do.
    pub job: Job,
}

/// One table / JSON row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// `rtt`, `stream`, `lock`, `wake`, `pool`, `mpmc`, `sizes`.
    pub workload: Workload,
    /// Stable mechanism id.
    pub mechanism: String,
    /// Message size in bytes (rtt, stream, wake).
    pub size: Option<usize>,
    /// Lock variant; pool task set (`100k trivial`, `1k x 1 ms`); mpmc shape
    /// (`PxC`: producers x consumers); wake: [`WAKE_HOLD_VARIANT`] when the peer held
    /// its reply.
    pub variant: Option<&'static str>,
    /// Median per operation (ns): round trip, message, wake-up, lock+unlock; pool: wall
    /// time per task (trivial tasks) or overhead per task beyond its 1 ms (`workers *
    /// wall / tasks - 1 ms`), see [`crate::pool`].
    pub median_ns: Option<f64>,
    /// 99th percentile (ns), when the timing gives one.
    pub p99_ns: Option<f64>,
    /// 99.9th percentile (ns), when there are at least 1000 samples.
    pub p999_ns: Option<f64>,
    /// Bytes per second (stream, sizes, mpmc).
    pub throughput_bytes_per_s: Option<f64>,
    /// Operations per second (pool: tasks per second; mpmc: messages per second over all
    /// producers).
    pub ops_per_s: Option<f64>,
    /// Ratio to the baseline named in `ratio_to` (time ratio for rtt/wake/lock, so 1.0 is
    /// the floor and bigger is slower; bandwidth ratio for stream, so 1.0 is memcpy and
    /// smaller is slower; speed-up for pool, `python-mp-pool`'s time per task (or
    /// overhead per task) over this row's, so bigger is faster; for mpmc, messages per
    /// second over those of the same mechanism at 1x1, so bigger is faster).
    pub ratio: Option<f64>,
    /// The baseline of `ratio`.
    pub ratio_to: Option<&'static str>,
    /// For fast (spinning) rtt and wake rows: the floor measured right after this row, at
    /// the same size. The host may move the two vCPUs during a run (the floor then jumps
    /// between ~70 ns and ~300 ns), so a spinning mechanism's ratio is taken against this
    /// neighbour rather than against the `spin-floor` row measured minutes earlier.
    pub local_floor_ns: Option<f64>,
    /// For stream and sizes rows: a 64 B `spin-floor` round trip measured right after the
    /// row, which says where the host had the two vCPUs (here ~85-140 ns: one core
    /// complex, sharing an L3; ~400 ns: two complexes). Through-the-cache bandwidth
    /// between two cores depends on it several-fold, so two stream rows are comparable
    /// only at similar probes. Not used for any ratio.
    pub placement_probe_ns: Option<f64>,
    /// CPU time (user + system) of both processes per operation (round trip, message,
    /// wake-up, lock+unlock) over the measured interval, in nanoseconds; a spinning
    /// waiter's spin counts. Not measured for `pool` (its workers outlive the timed maps).
    pub cpu_ns_per_op: Option<f64>,
    /// The run's own noise in `median_ns`, relative ([`measure::spread`]): the spread of
    /// the medians of consecutive parts of the samples, or of the repetitions.
    pub spread: Option<f64>,
    /// With `--baseline OLD.json`: the relative change of this row's time per operation
    /// against the same row of the old run (positive = slower), normalised by the
    /// same-run baseline where the row has one (see compare/README.md, "Regressions").
    pub change: Option<f64>,
    /// With `--baseline`: the noise band `change` was judged against (relative).
    pub noise_band: Option<f64>,
    /// With `--baseline`: the change lies outside the noise band.
    pub outside_noise: Option<bool>,
    /// With `--baseline`: why the old run's row of the same name was not compared (the
    /// two were timed differently, e.g. one in batches and one per round trip).
    pub not_compared: Option<&'static str>,
    /// Spinning or sleeping.
    pub style: Option<Style>,
    /// How it was timed.
    pub timing: Option<Timing>,
    /// Samples behind the percentiles.
    pub samples: Option<usize>,
    /// Cores of the measuring process and of the peer.
    pub cores: Option<Placement>,
    /// What the adapter does.
    pub note: String,
    /// Why there is no number (limit, error, unavailable).
    pub error: Option<String>,
}

/// The single-process memcpy row of a bandwidth workload.
fn memcpy_task(workload: Workload, size: usize) -> Task {
    Task {
        workload,
        mechanism: MEMCPY.into(),
        size: Some(size),
        variant: None,
        style: None,
        note: "single-process memcpy, the ceiling".into(),
        job: Job::Memcpy(size),
    }
}

/// The tasks of one run, in table order.
pub fn plan(opts: &Options) -> Vec<Task> {
    let mut tasks = Vec::new();
    let chans: Vec<ChannelSpec> = registry::channels()
        .into_iter()
        .filter(|c| opts.wants(c.id))
        .collect();
    let locks: Vec<LockSpec> = registry::locks()
        .into_iter()
        .filter(|l| opts.wants(l.id))
        .collect();
    let unavailable: Vec<_> = registry::unavailable()
        .into_iter()
        .filter(|u| opts.explicitly(u.id))
        .collect();
    let pythons: Vec<_> = python_mp::MECHANISMS
        .into_iter()
        .filter(|m| opts.wants(m.0))
        .collect();
    let python = !pythons.is_empty() && pool::python_available();
    let python_task = |workload, m: (&'static str, &str, &str), size, stream| Task {
        workload,
        mechanism: m.0.into(),
        size: Some(size),
        variant: None,
        style: Some(Style::Sleeping),
        note: m.2.into(),
        job: if python {
            Job::PythonMp(m.0, stream, size)
        } else {
            Job::Skip("unavailable: python3 not found".into())
        },
    };
    let task = |workload, c: &ChannelSpec, size: Option<usize>, job| Task {
        workload,
        mechanism: c.id.to_string(),
        size,
        variant: None,
        style: Some(c.style),
        note: c.note.to_string(),
        job,
    };
    for &w in &opts.workloads {
        match w {
            Workload::Rtt => {
                for size in RTT_SIZES {
                    for c in &chans {
                        let job = match c.max_msg {
                            Some(max) if size > max => Job::Skip(format!("limit {max} B")),
                            _ => Job::Rtt(*c, size),
                        };
                        tasks.push(task(w, c, Some(size), job));
                    }
                    for m in &pythons {
                        tasks.push(python_task(w, *m, size, false));
                    }
                }
            }
            Workload::Stream => {
                for size in STREAM_SIZES {
                    tasks.push(memcpy_task(w, size));
                    for c in &chans {
                        let job = match c.max_msg {
                            _ if c.id == FLOOR => Job::Skip(
                                "n/a: the floor is a ping-pong reference; the stream ceiling is memcpy"
                                    .into(),
                            ),
                            _ if registry::RTT_ONLY.contains(&c.id) => {
                                Job::Skip("n/a: one request in flight (rtt and wake only)".into())
                            }
                            Some(max) if size > max => Job::Skip(format!("limit {max} B")),
                            _ => Job::Stream(*c, size),
                        };
                        tasks.push(task(w, c, Some(size), job));
                    }
                    for m in &pythons {
                        tasks.push(python_task(w, *m, size, true));
                    }
                }
            }
            Workload::Wake => {
                for c in &chans {
                    tasks.push(task(w, c, Some(64), Job::Wake(*c, None)));
                }
                for c in chans.iter().filter(|c| WAKE_HELD.contains(&c.id)) {
                    tasks.push(Task {
                        variant: Some(WAKE_HOLD_VARIANT),
                        ..task(w, c, Some(64), Job::Wake(*c, Some(WAKE_HOLD)))
                    });
                }
            }
            Workload::Mpmc => {
                let specs: Vec<MpmcSpec> = registry::mpmc()
                    .into_iter()
                    .filter(|m| opts.wants(m.id))
                    .collect();
                for &(producers, consumers, label) in &mpmc::SHAPES {
                    if opts.quick && !mpmc::QUICK_SHAPES.contains(&label) {
                        continue;
                    }
                    for m in &specs {
                        tasks.push(Task {
                            workload: w,
                            mechanism: m.id.into(),
                            size: Some(mpmc::SIZE),
                            variant: Some(label),
                            style: Some(m.style),
                            note: m.note.into(),
                            job: Job::Mpmc(
                                *m,
                                MpmcParams {
                                    producers,
                                    consumers,
                                },
                            ),
                        });
                    }
                }
            }
            Workload::Sizes => {
                let sizes: &[usize] = if opts.quick { &QUICK_SIZES } else { &SIZES };
                let swept: Vec<&ChannelSpec> = chans
                    .iter()
                    .filter(|c| registry::sizes().contains(&c.id))
                    .collect();
                for &size in sizes {
                    tasks.push(memcpy_task(w, size));
                    for c in &swept {
                        let job = match c.max_msg {
                            Some(max) if size > max => Job::Skip(format!("limit {max} B")),
                            _ => Job::Sizes(**c, size),
                        };
                        tasks.push(task(w, c, Some(size), job));
                    }
                }
            }
            Workload::Pool => {
                let python = pool::python_available();
                for kind in PoolKind::ALL {
                    for imp in PoolImpl::ALL {
                        let id = imp.id();
                        if !opts.wants(id) {
                            continue;
                        }
                        tasks.push(Task {
                            workload: w,
                            mechanism: id.into(),
                            size: None,
                            variant: Some(kind.label()),
                            style: None,
                            note: format!("{} workers; {}", pool::workers(), imp.note()),
                            job: if imp == PoolImpl::Python && !python {
                                Job::Skip("unavailable: python3 not found".into())
                            } else {
                                Job::Pool(kind, imp)
                            },
                        });
                    }
                }
            }
            Workload::Fanout => {
                // The mechanisms and their baseline run together (also for
                // `--only shmkit-topic-*`).
                let ids = [
                    fanout::TOPIC,
                    fanout::QUEUES,
                    fanout::ICEORYX2,
                    "shmkit-topic-spin",
                    "shmkit-topic-park",
                ];
                let wanted = ids.iter().any(|i| opts.wants(i));
                for size in fanout::SIZES.into_iter().filter(|_| wanted) {
                    for (subs, label) in fanout::SUBSCRIBERS {
                        for id in fanout::MECHANISMS {
                            tasks.push(Task {
                                workload: w,
                                mechanism: id.into(),
                                size: Some(size),
                                variant: Some(label),
                                style: Some(if id == fanout::ICEORYX2 {
                                    Style::Spinning
                                } else {
                                    Style::Sleeping
                                }),
                                note: fanout::note(id).into(),
                                job: Job::Fanout(id, subs, size),
                            });
                        }
                    }
                }
            }
            Workload::Bridge => {
                // One external program measures all three (zenoh stays out of this
                // crate); without it every row says how to build it.
                // The TCP baseline runs whenever one of the three is asked for.
                let found = bridge::program().is_some();
                let any = bridge::MECHANISMS.iter().any(|m| opts.explicitly(m.0));
                let wanted: Vec<_> = bridge::MECHANISMS
                    .into_iter()
                    .filter(|m| any && (m.0 == bridge::TCP || opts.explicitly(m.0)))
                    .collect();
                for size in bridge::SIZES {
                    for variant in bridge::VARIANTS {
                        for m in &wanted {
                            tasks.push(Task {
                                workload: w,
                                mechanism: m.0.into(),
                                size: Some(size),
                                variant: Some(variant),
                                style: Some(Style::Sleeping),
                                note: m.2.into(),
                                job: if found {
                                    Job::Bridge(m.0, variant, size)
                                } else {
                                    Job::Skip(bridge::UNAVAILABLE.into())
                                },
                            });
                        }
                    }
                }
            }
            Workload::Lock => {
                for (variant, contended) in [("uncontended", false), ("contended", true)] {
                    for l in &locks {
                        tasks.push(Task {
                            workload: w,
                            mechanism: l.id.into(),
                            size: None,
                            variant: Some(variant),
                            style: Some(l.style),
                            note: l.note.into(),
                            job: if contended {
                                Job::LockContended(*l)
                            } else {
                                Job::LockUncontended(*l)
                            },
                        });
                    }
                }
            }
        }
        for u in unavailable.iter().filter(|u| u.workloads.contains(&w)) {
            tasks.push(Task {
                workload: w,
                mechanism: u.id.into(),
                size: None,
                variant: None,
                style: None,
                note: String::new(),
                job: Job::Skip(format!("unavailable: {}", u.reason)),
            });
        }
    }
    tasks
}

/// Runs one task (a task of a workload measured in rounds, see [`run_all`], in rounds of
/// its own). Errors become rows with `error` set.
pub fn run(task: &Task, opts: &Options) -> Row {
    if let Some(kind) = Rounds::of(&task.job) {
        if let Some(row) = run_rounds(kind, &[task], opts, |_| {}).pop() {
            return row;
        }
    }
    to_row(task, opts, measure_task(task, opts), Neighbours::default())
}

/// What the rounds measured next to a row (see [`run_all`]).
#[derive(Default, Clone, Copy)]
struct Neighbours {
    /// [`Row::local_floor_ns`].
    floor: Option<f64>,
    /// [`Row::placement_probe_ns`].
    probe: Option<f64>,
}

/// Warm-up and timed round trips of an rtt row timed in batches or one by one:
/// `(warmup per instance, iterations over all instances)`.
fn rtt_budget(quick: bool, batched: bool) -> (u64, u64) {
    match (quick, batched) {
        (true, true) => (4_000, 64 * 400),
        (true, false) => (200, 2_000),
        (false, true) => (50_000, 64 * 5_000),
        (false, false) => (1_000, 20_000),
    }
}

/// Length and byte cap of a timed stream run, and runs per row: `(target, max_bytes,
/// reps)`.
fn stream_budget(quick: bool) -> (Duration, u64, usize) {
    if quick {
        (Duration::from_millis(25), 64 << 20, 3)
    } else {
        (Duration::from_millis(250), 1 << 30, 7)
    }
}

/// Length and byte cap of a timed sizes run: `(target, max_bytes)`.
fn sizes_budget(quick: bool) -> (Duration, u64) {
    if quick {
        (Duration::from_millis(10), 128 << 20)
    } else {
        (Duration::from_millis(100), 1 << 30)
    }
}

/// Whether `task` cannot run here: a spinning peer with only one core available.
fn needs_missing_core(task: &Task, opts: &Options) -> bool {
    let p = opts.placement;
    let one_core = p.parent.is_some() && p.parent == p.child;
    let needs_two = !matches!(
        task.job,
        Job::LockUncontended(_) | Job::Memcpy(_) | Job::Skip(_) | Job::Pool(..)
    );
    task.style == Some(Style::Spinning) && one_core && needs_two
}

/// The measurement of a task that runs once (memcpy, Python's `multiprocessing` rows, a
/// skipped row), or of one run of a lock, pool, fan-out or bridge row
/// ([`run_repeat_rounds`], which calls this once per round).
fn measure_task(task: &Task, opts: &Options) -> Result<Measurement, String> {
    let q = opts.quick;
    let p = opts.placement;
    match &task.job {
        _ if needs_missing_core(task, opts) => Err(NO_SECOND_CORE.into()),
        Job::Rtt(..) | Job::Wake(..) | Job::Stream(..) | Job::Sizes(..) | Job::Mpmc(..) => Err(
            "internal: this workload is measured in rounds of its own (suite::run_rounds)".into(),
        ),
        Job::Memcpy(size) => Ok(measure::memcpy_bandwidth(
            *size,
            Duration::from_millis(if q { 20 } else { 200 }),
        )),
        // Lock, pool, fan-out and bridge rows: one of the row's runs (see
        // `run_repeat_rounds`), a fresh lock, pool or set of processes each.
        Job::LockUncontended(l) => {
            let n = if q { 64 * 1_000 } else { 64 * 10_000 };
            measure::lock_uncontended(l, 10_000, n, p).map_err(|e| e.to_string())
        }
        Job::LockContended(l) => {
            let n = if q { 20_000 } else { 100_000 };
            measure::lock_contended(l, n, p).map_err(|e| e.to_string())
        }
        Job::Pool(kind, imp) => {
            // Odd, so that a run's median is one map's figure (of 2, the nearest-rank
            // median is the faster one).
            let reps = match (q, kind) {
                (true, PoolKind::Trivial) => 3,
                (false, PoolKind::Trivial) => 5,
                (_, PoolKind::Busy1ms) => 1,
            };
            let workers = pool::workers();
            match imp {
                PoolImpl::Python => pool::python_pool(*kind, workers, reps),
                PoolImpl::Shmkit | PoolImpl::ShmkitPod => {
                    pool::shmkit_pool(*kind, *imp, workers, reps)
                }
            }
            .map_err(|e| e.to_string())
        }
        Job::PythonMp(id, false, size) => {
            let (warm, iters) = if q { (200, 2_000) } else { (1_000, 20_000) };
            python_mp::rtt(id, *size, warm, iters, p).map_err(|e| e.to_string())
        }
        Job::PythonMp(id, true, size) => {
            let (target, reps) = if q {
                (Duration::from_millis(25), 3)
            } else {
                (Duration::from_millis(250), 7)
            };
            python_mp::stream(id, *size, target, reps, p).map_err(|e| e.to_string())
        }
        Job::Fanout(id, subs, size) => fanout::run(id, *subs, *size, q).map_err(|e| e.to_string()),
        Job::Bridge(id, variant, size) => {
            bridge::measure(id, variant, *size, q, p).map_err(|e| e.to_string())
        }
        Job::Skip(reason) => Err(reason.clone()),
    }
}

const NO_SECOND_CORE: &str =
    "not run: a spinning peer needs its own core and only one is available";

/// The row of `task` from its measurement and what the rounds measured next to it (kept
/// where the row has a use for it: the floor for a fast rtt or wake row, the probe for a
/// stream or sizes row).
fn to_row(
    task: &Task,
    opts: &Options,
    result: Result<Measurement, String>,
    near: Neighbours,
) -> Row {
    let p = opts.placement;
    let one_core = p.parent.is_some() && p.parent == p.child;
    let needs_two = !matches!(
        task.job,
        Job::LockUncontended(_) | Job::Memcpy(_) | Job::Skip(_) | Job::Pool(..)
    );
    let mut row = Row {
        workload: task.workload,
        mechanism: task.mechanism.clone(),
        size: task.size,
        variant: task.variant,
        median_ns: None,
        p99_ns: None,
        p999_ns: None,
        throughput_bytes_per_s: None,
        ops_per_s: None,
        ratio: None,
        ratio_to: None,
        local_floor_ns: None,
        placement_probe_ns: None,
        cpu_ns_per_op: None,
        spread: None,
        change: None,
        noise_band: None,
        outside_noise: None,
        not_compared: None,
        style: task.style,
        timing: None,
        samples: None,
        cores: None,
        note: task.note.clone(),
        error: None,
    };
    // Fast rows (spinning mechanisms, and others that answer while still spinning: rtt
    // rows timed in batches, wake rows under measure::FAST_RTT_NS; decided once, where the
    // rounds measured the floor next to them) are compared with that floor.
    let fast = result.is_ok() && near.floor.is_some();
    let floor_neighbour = fast
        && task.mechanism != FLOOR
        && matches!(task.job, Job::Rtt(..) | Job::Wake(..))
        && !(one_core && needs_two);
    if floor_neighbour {
        row.local_floor_ns = near.floor;
    }
    if result.is_ok() && matches!(task.job, Job::Stream(..) | Job::Sizes(..)) && !one_core {
        row.placement_probe_ns = near.probe;
    }
    match result {
        Ok(m) => {
            row.median_ns = Some(m.median_ns);
            row.p99_ns = m.p99_ns;
            row.p999_ns = m.p999_ns;
            row.throughput_bytes_per_s = m.throughput_bytes_per_s;
            row.ops_per_s = m.ops_per_s;
            row.cpu_ns_per_op = m.cpu_ns_per_op;
            row.spread = m.spread;
            row.timing = Some(m.timing);
            row.samples = Some(m.samples);
            row.cores = (m.placement.parent.is_some()).then_some(m.placement);
        }
        Err(e) => row.error = Some(e),
    }
    row
}

/// [`Row::placement_probe_ns`]: a short 64 B `spin-floor` round trip (~10 ms) on one
/// channel instance.
fn placement_probe(opts: &Options) -> Option<f64> {
    let floor = registry::channels().into_iter().find(|c| c.id == FLOOR)?;
    measure::rtt_on(&floor, 64, 2_000, 64 * 200, opts.placement, 1)
        .ok()
        .map(|m| m.median_ns)
}

/// Fills in the ratios: rtt and wake to `spin-floor` at the same size (for spinning rows,
/// to the floor measured right next to them, see [`Row::local_floor_ns`]), stream to
/// memcpy at the same size, locks to `cas-spinlock` in the same variant. All baselines
/// come from the same run.
pub fn add_ratios(rows: &mut [Row]) {
    let base = |rows: &[Row], w: Workload, id: &str, size: Option<usize>, variant: Option<&str>| {
        rows.iter()
            .find(|r| {
                r.workload == w && r.mechanism == id && r.size == size && r.variant == variant
            })
            .and_then(|r| match w {
                Workload::Stream | Workload::Sizes => r.throughput_bytes_per_s,
                Workload::Mpmc => r.ops_per_s,
                _ => r.median_ns,
            })
    };
    let ratios: Vec<(Option<f64>, Option<&'static str>)> = rows
        .iter()
        .map(|r| {
            let (id, value) = match r.workload {
                Workload::Rtt | Workload::Wake => (FLOOR, r.median_ns),
                Workload::Stream | Workload::Sizes => (MEMCPY, r.throughput_bytes_per_s),
                Workload::Lock => (LOCK_FLOOR, r.median_ns),
                Workload::Pool => (PYTHON_POOL, r.median_ns),
                Workload::Mpmc => {
                    let b = base(rows, r.workload, &r.mechanism, r.size, Some(MPMC_BASE));
                    return match (r.ops_per_s, b) {
                        (Some(v), Some(b)) if b > 0.0 => (Some(v / b), Some(MPMC_BASE)),
                        _ => (None, None),
                    };
                }
                Workload::Fanout => (fanout::QUEUES, r.median_ns),
                Workload::Bridge => (bridge::TCP, r.median_ns),
            };
            // A held wake-up is still a wake-up: compared with the floor's (no variant).
            let variant = if r.workload == Workload::Wake {
                None
            } else {
                r.variant
            };
            let baseline = r
                .local_floor_ns
                .or_else(|| base(rows, r.workload, id, r.size, variant));
            match (value, baseline) {
                // Speed-up: the baseline's time per task over ours (both positive: an
                // overhead measured as <= 0 has no meaningful ratio).
                (Some(v), Some(b)) if r.workload == Workload::Pool && v > 0.0 && b > 0.0 => {
                    (Some(b / v), Some(id))
                }
                _ if r.workload == Workload::Pool => (None, None),
                (Some(v), Some(b)) if b > 0.0 => (Some(v / b), Some(id)),
                _ => (None, None),
            }
        })
        .collect();
    for (r, (ratio, to)) in rows.iter_mut().zip(ratios) {
        r.ratio = ratio;
        r.ratio_to = to;
    }
}

/// Plans and runs everything, calling `progress` before each task; returns the rows with
/// ratios.
///
/// The rows of the workloads that compare mechanisms under the host's placement run in
/// rounds instead of one after the other (`Rounds`): each round measures one fresh
/// channel instance (rtt, wake) or one timed run (stream, sizes, mpmc) of every row of
/// the workload, in plan order, or one run of every lock, pool, fan-out and bridge row;
/// a row's figures pool its instances or runs. A fast rtt or
/// wake row is followed in each round by one instance of the floor (its
/// [`Row::local_floor_ns`]), a stream or sizes run by a placement probe. The host moves
/// the two vCPUs between placements within seconds, so rows measured one after the other
/// in ~50 ms each could each see another placement; in rounds every row samples the same
/// stretch of the run. The memcpy and Python rows run once, one after the other.
pub fn run_all(opts: &Options, mut progress: impl FnMut(usize, usize, &Task)) -> Vec<Row> {
    let tasks = plan(opts);
    let mut rows: Vec<Option<Row>> = vec![None; tasks.len()];
    for (i, t) in tasks.iter().enumerate() {
        if rows[i].is_some() {
            continue;
        }
        let n = tasks.len();
        if let Some(kind) = Rounds::of(&t.job) {
            let group: Vec<usize> = (i..n)
                .filter(|&j| Rounds::of(&tasks[j].job) == Some(kind))
                .collect();
            let members: Vec<&Task> = group.iter().map(|&j| &tasks[j]).collect();
            let report = |k: usize| progress(group[k], n, &tasks[group[k]]);
            let done = run_rounds(kind, &members, opts, report);
            for (&j, row) in group.iter().zip(done) {
                rows[j] = Some(row);
            }
            continue;
        }
        progress(i, n, t);
        rows[i] = Some(run(t, opts));
    }
    let mut rows: Vec<Row> = rows.into_iter().flatten().collect();
    add_ratios(&mut rows);
    rows
}

/// How a job runs in rounds ([`run_all`]); jobs of one workload share a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rounds {
    /// rtt and wake: [`measure::RTT_INSTANCES`] channel instances, the samples pooled.
    Instances,
    /// stream, sizes, mpmc: their usual number of timed runs, one per round.
    Runs,
    /// lock, pool, fan-out, bridge: [`runs`] runs of [`measure_task`], one per round.
    Repeats,
}

impl Rounds {
    fn of(job: &Job) -> Option<Rounds> {
        match job {
            Job::Rtt(..) | Job::Wake(..) => Some(Rounds::Instances),
            Job::Stream(..) | Job::Sizes(..) | Job::Mpmc(..) => Some(Rounds::Runs),
            Job::LockUncontended(..)
            | Job::LockContended(..)
            | Job::Pool(..)
            | Job::Fanout(..)
            | Job::Bridge(..) => Some(Rounds::Repeats),
            Job::Memcpy(..) | Job::PythonMp(..) | Job::Skip(..) => None,
        }
    }
}

/// The rows `tasks` (every task of kind `kind`, of one or several workloads: [`run_all`]
/// groups by kind) measured in rounds; one row per task, in order. `progress` gets a
/// task's index before each of its steps.
fn run_rounds(
    kind: Rounds,
    tasks: &[&Task],
    opts: &Options,
    progress: impl FnMut(usize),
) -> Vec<Row> {
    match kind {
        Rounds::Instances => run_instance_rounds(tasks, opts, progress),
        Rounds::Runs => run_repeated_rounds(tasks, opts, progress),
        Rounds::Repeats => run_repeat_rounds(tasks, opts, progress),
    }
}

/// Runs `rounds` rounds over `tasks`: in each, `step` once for every task, in order, until
/// the task fails (one that cannot run here fails at once); then makes each task's row
/// from what `finish` makes of its gathered state, or from its error.
fn in_rounds<A: Default>(
    tasks: &[&Task],
    opts: &Options,
    rounds: u64,
    mut progress: impl FnMut(usize),
    mut step: impl FnMut(u64, &Task, &mut A) -> Result<(), String>,
    finish: impl Fn(&Task, A) -> Result<(Measurement, Neighbours), String>,
) -> Vec<Row> {
    let mut acc: Vec<(A, Option<String>)> = tasks.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        for (k, (t, (a, error))) in tasks.iter().zip(acc.iter_mut()).enumerate() {
            if error.is_some() {
                continue;
            }
            if needs_missing_core(t, opts) {
                *error = Some(NO_SECOND_CORE.into());
                continue;
            }
            progress(k);
            if let Err(e) = step(round, t, a) {
                *error = Some(e);
            }
        }
    }
    tasks
        .iter()
        .zip(acc)
        .map(
            |(t, (a, error))| match error.map_or_else(|| finish(t, a), Err) {
                Err(e) => to_row(t, opts, Err(e), Neighbours::default()),
                Ok((m, near)) => to_row(t, opts, Ok(m), near),
            },
        )
        .collect()
}

/// CPU nanoseconds summed over a row's instances or runs; `None` once one could not be
/// read.
struct CpuSum(Option<u64>);

impl Default for CpuSum {
    fn default() -> Self {
        CpuSum(Some(0))
    }
}

impl CpuSum {
    fn add(&mut self, ns: Option<u64>) {
        self.0 = self.0.zip(ns).map(|(a, b)| a + b);
    }
}

/// What the rounds gathered for one rtt or wake row.
#[derive(Default)]
struct InstanceRounds {
    /// How an rtt row is timed, decided before its first instance
    /// ([`measure::rtt_timing`]).
    timing: Option<Timing>,
    /// Whether the row gets a floor instance after each of its own, decided after its
    /// first instance and kept.
    floor_next: Option<bool>,
    samples: Vec<f64>,
    iters: u64,
    cpu: CpuSum,
    floor: Vec<f64>,
}

/// Wake-ups of a wake row over all its instances.
fn wake_samples(quick: bool) -> u64 {
    if quick { 300 } else { 3_000 }
}

/// Untimed wake-ups before each instance's timed ones.
const WAKE_WARMUP: u64 = 20;

/// The rtt or wake rows `tasks` on [`measure::RTT_INSTANCES`] channel instances each, in
/// rounds (see [`run_all`]).
fn run_instance_rounds(tasks: &[&Task], opts: &Options, progress: impl FnMut(usize)) -> Vec<Row> {
    let p = opts.placement;
    let parts = measure::RTT_INSTANCES;
    let floor_spec = registry::channels().into_iter().find(|c| c.id == FLOOR);
    let step = |_round: u64, t: &Task, a: &mut InstanceRounds| -> Result<(), String> {
        let c = match &t.job {
            Job::Rtt(c, size) => {
                let timing = match a.timing {
                    Some(t) => t,
                    None => {
                        let t = measure::rtt_timing(c, *size, p).map_err(|e| e.to_string())?;
                        *a.timing.insert(t)
                    }
                };
                let (warm, iters) = rtt_budget(opts.quick, timing == Timing::Batch);
                let per = measure::rtt_share(timing, iters);
                let cpu = measure::rtt_instance(c, *size, warm, per, timing, p, &mut a.samples)
                    .map_err(|e| e.to_string())?;
                a.iters += per;
                a.cpu.add(cpu);
                c
            }
            Job::Wake(c, hold) => {
                let per = wake_samples(opts.quick).div_ceil(parts);
                let cpu = measure::wake_instance(c, WAKE_WARMUP, per, p, *hold, &mut a.samples)
                    .map_err(|e| e.to_string())?;
                a.cpu.add(cpu);
                c
            }
            _ => return Ok(()),
        };
        // The floor next to a fast row, decided once per row: an rtt row timed in batches,
        // as the floor is (measure::rtt_timing); a wake row whose first instance answered
        // within measure::FAST_RTT_NS.
        let fast = match a.floor_next {
            Some(f) => f,
            None => {
                let f = match &t.job {
                    Job::Rtt(..) => a.timing == Some(Timing::Batch),
                    _ => {
                        measure::median(a.samples.clone()).is_some_and(|m| m < measure::FAST_RTT_NS)
                    }
                };
                *a.floor_next.insert(f)
            }
        };
        if let Some(f) = floor_spec.as_ref().filter(|_| fast && c.id != FLOOR) {
            // A failed floor instance leaves the row without that neighbour sample.
            let _ = match &t.job {
                Job::Rtt(_, size) => {
                    let (fw, fi) = rtt_budget(opts.quick, true);
                    let per = measure::rtt_share(Timing::Batch, fi);
                    measure::rtt_instance(f, *size, fw, per, Timing::Batch, p, &mut a.floor)
                }
                _ => {
                    let per = wake_samples(true).div_ceil(parts);
                    measure::wake_instance(f, WAKE_WARMUP, per, p, None, &mut a.floor)
                }
            };
        }
        Ok(())
    };
    let finish = |t: &Task, a: InstanceRounds| {
        let m = if matches!(t.job, Job::Rtt(..)) {
            let timing = a.timing.unwrap_or(Timing::PerOp);
            measure::rtt_summary(a.samples, a.iters, a.cpu.0, timing, p)
        } else {
            measure::wake_summary(a.samples, a.cpu.0, p)
        };
        let near = Neighbours {
            floor: measure::median(a.floor),
            probe: None,
        };
        Ok((m, near))
    };
    in_rounds(tasks, opts, parts, progress, step, finish)
}

/// What the rounds gathered for one stream, sizes or mpmc row.
#[derive(Default)]
struct RunRounds {
    msgs: u64,
    per_msg_ns: Vec<f64>,
    cpu: CpuSum,
    probes: Vec<f64>,
}

/// Timed runs of a stream, sizes, mpmc, lock, pool, fan-out or bridge row.
fn runs(job: &Job, quick: bool) -> u64 {
    match (job, quick) {
        (Job::Stream(..), _) => stream_budget(quick).2 as u64,
        (_, true) => 3,
        (_, false) => 5,
    }
}

/// Messages asked of one mpmc run (split over the producers).
const MPMC_MESSAGES: u64 = 200_000;

/// The stream, sizes and mpmc rows `tasks` (one rounds group: [`run_all`] gathers every
/// task of these workloads) in rounds: round 0 calibrates each stream or sizes row and
/// makes its first timed run, each later round one more run of every row that has not
/// had its [`runs`] yet (a full run gives stream rows 7, sizes and mpmc rows 5), each run
/// a fresh channel and processes, a stream or sizes run followed by a placement probe; a
/// row reports the median of its runs and of its probes.
fn run_repeated_rounds(tasks: &[&Task], opts: &Options, progress: impl FnMut(usize)) -> Vec<Row> {
    let p = opts.placement;
    let q = opts.quick;
    let one_core = p.parent.is_some() && p.parent == p.child;
    let rounds = tasks.iter().map(|t| runs(&t.job, q)).max().unwrap_or(0);
    let step = |round: u64, t: &Task, a: &mut RunRounds| -> Result<(), String> {
        if round >= runs(&t.job, q) {
            return Ok(());
        }
        let (c, size, shape, target, max_bytes) = match &t.job {
            Job::Stream(c, size) => {
                let (target, max_bytes, _) = stream_budget(q);
                let shape = measure::StreamShape {
                    depth: measure::STREAM_DEPTH,
                    probe: 64,
                    min_msgs: 16,
                };
                (c, *size, shape, target, max_bytes)
            }
            Job::Sizes(c, size) => {
                let (target, max_bytes) = sizes_budget(q);
                (
                    c,
                    *size,
                    measure::StreamShape::for_size(*size, q),
                    target,
                    max_bytes,
                )
            }
            Job::Mpmc(m, shape) => {
                let (ns, cpu) =
                    mpmc::measure_once(m, *shape, MPMC_MESSAGES).map_err(|e| e.to_string())?;
                a.msgs = mpmc::messages(*shape, MPMC_MESSAGES);
                a.per_msg_ns.push(ns);
                a.cpu.add(cpu);
                return Ok(());
            }
            _ => return Ok(()),
        };
        let run = || -> shmkit::Result<(u64, (f64, Option<u64>))> {
            let msgs = if round == 0 {
                measure::stream_calibrate(c, size, shape, target, max_bytes, p)?
            } else {
                a.msgs
            };
            Ok((msgs, measure::stream_rep(c, size, shape, msgs, p)?))
        };
        let (msgs, (ns, cpu)) = run().map_err(|e| e.to_string())?;
        a.msgs = msgs;
        a.per_msg_ns.push(ns);
        a.cpu.add(cpu);
        if !one_core {
            a.probes.extend(placement_probe(opts));
        }
        Ok(())
    };
    let finish = |t: &Task, a: RunRounds| {
        let m = if matches!(t.job, Job::Mpmc(..)) {
            mpmc::summary(a.per_msg_ns, a.msgs, a.cpu.0)
        } else {
            measure::stream_summary(a.per_msg_ns, a.msgs, a.cpu.0, t.size.unwrap_or(0), p)
        };
        let near = Neighbours {
            floor: None,
            probe: measure::median(a.probes),
        };
        Ok((m, near))
    };
    in_rounds(tasks, opts, rounds, progress, step, finish)
}

/// The lock, pool, fan-out and bridge rows `tasks` in rounds: each round makes one run of
/// every row ([`measure_task`]: a fresh lock, pool, topic or bridge path and fresh
/// processes each time), [`runs`] rounds in all (3 / 5); a row reports the median of its
/// runs' figures ([`measure::median_of_runs`]).
fn run_repeat_rounds(tasks: &[&Task], opts: &Options, progress: impl FnMut(usize)) -> Vec<Row> {
    let step = |_round: u64, t: &Task, runs: &mut Vec<Measurement>| {
        runs.push(measure_task(t, opts)?);
        Ok(())
    };
    let finish = |_: &Task, runs: Vec<Measurement>| {
        measure::median_of_runs(runs)
            .map(|m| (m, Neighbours::default()))
            .ok_or_else(|| "internal: no run was made".to_string())
    };
    let rounds = tasks
        .iter()
        .map(|t| runs(&t.job, opts.quick))
        .max()
        .unwrap_or(0);
    in_rounds(tasks, opts, rounds, progress, step, finish)
}

/// Rows for unit tests (here and in the report).
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn row(
        w: Workload,
        id: &str,
        size: Option<usize>,
        median: f64,
        bw: Option<f64>,
    ) -> Row {
        Row {
            workload: w,
            mechanism: id.into(),
            size,
            variant: None,
            median_ns: Some(median),
            p99_ns: None,
            p999_ns: None,
            throughput_bytes_per_s: bw,
            ops_per_s: None,
            ratio: None,
            ratio_to: None,
            local_floor_ns: None,
            placement_probe_ns: None,
            cpu_ns_per_op: None,
            spread: None,
            change: None,
            noise_band: None,
            outside_noise: None,
            not_compared: None,
            style: None,
            timing: None,
            samples: None,
            cores: None,
            note: String::new(),
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::row;
    use super::*;

    /// The held wake rows' label says how long the peer holds, and the hold outlasts the
    /// default adaptive spin budget (what those rows are for).
    #[test]
    fn the_held_wake_label_and_hold_agree() {
        assert_eq!(
            WAKE_HOLD_VARIANT,
            format!("peer holds {} us", WAKE_HOLD.as_micros())
        );
        let shmkit::queue::WaitStrategy::Adaptive { spin } = shmkit::queue::WaitStrategy::default()
        else {
            panic!("the default wait strategy is no longer adaptive");
        };
        assert!(
            WAKE_HOLD > spin,
            "{WAKE_HOLD:?} does not outlast the {spin:?} spin budget"
        );
    }

    #[test]
    fn a_floor_measured_next_to_a_row_wins_over_the_early_one() {
        let mut rows = vec![
            row(Workload::Rtt, FLOOR, Some(64), 70.0, None),
            row(Workload::Rtt, "q", Some(64), 600.0, None),
        ];
        rows[1].local_floor_ns = Some(300.0);
        add_ratios(&mut rows);
        assert_eq!(rows[1].ratio, Some(2.0));
        assert_eq!(rows[1].ratio_to, Some(FLOOR));
    }

    #[test]
    fn ratios_use_the_baseline_of_the_same_workload_and_size() {
        let mut rows = vec![
            row(Workload::Rtt, FLOOR, Some(64), 100.0, None),
            row(Workload::Rtt, FLOOR, Some(4096), 400.0, None),
            row(Workload::Rtt, "pipe", Some(64), 3000.0, None),
            row(Workload::Rtt, "pipe", Some(4096), 4000.0, None),
            row(Workload::Stream, MEMCPY, Some(64), 5.0, Some(10e9)),
            row(Workload::Stream, "pipe", Some(64), 500.0, Some(1e8)),
            row(Workload::Wake, "pipe", Some(64), 10_000.0, None),
        ];
        add_ratios(&mut rows);
        assert_eq!(rows[0].ratio, Some(1.0));
        assert_eq!(rows[2].ratio, Some(30.0));
        assert_eq!(rows[3].ratio, Some(10.0));
        assert_eq!(rows[3].ratio_to, Some(FLOOR));
        // Stream: bandwidth ratio, not time ratio.
        assert_eq!(rows[5].ratio, Some(0.01));
        assert_eq!(rows[5].ratio_to, Some(MEMCPY));
        // No wake floor in this run: no ratio rather than a wrong one.
        assert_eq!(rows[6].ratio, None);
    }

    #[test]
    fn held_wake_rows_name_registered_channels_and_compare_with_the_plain_floor() {
        let ids: Vec<&str> = registry::channels().iter().map(|c| c.id).collect();
        for id in WAKE_HELD {
            assert!(ids.contains(&id), "{id} is not a registered channel");
        }
        let mut rows = vec![
            row(Workload::Wake, FLOOR, Some(64), 100.0, None),
            row(Workload::Wake, "futex", Some(64), 20_000.0, None),
        ];
        rows[1].variant = Some(WAKE_HOLD_VARIANT);
        add_ratios(&mut rows);
        assert_eq!(rows[1].ratio, Some(200.0));
        assert_eq!(rows[1].ratio_to, Some(FLOOR));
    }

    #[test]
    fn pool_ratios_are_speed_ups_over_python_in_the_same_task_set() {
        let mut rows = vec![
            row(Workload::Pool, PYTHON_POOL, None, 400.0, None),
            row(Workload::Pool, pool::SHMKIT_POOL, None, 20.0, None),
            row(Workload::Pool, PYTHON_POOL, None, 90_000.0, None),
            row(Workload::Pool, pool::SHMKIT_POOL, None, 3_000.0, None),
        ];
        for (r, v) in rows.iter_mut().zip(["t", "t", "b", "b"]) {
            r.variant = Some(v);
        }
        add_ratios(&mut rows);
        assert_eq!(rows[0].ratio, Some(1.0));
        assert_eq!(rows[1].ratio, Some(20.0));
        assert_eq!(rows[3].ratio, Some(30.0));
        assert_eq!(rows[3].ratio_to, Some(PYTHON_POOL));
    }

    #[test]
    fn spread_is_over_the_medians_of_consecutive_parts() {
        // Five parts with medians 10, 10, 10, 10, 12: spread 2 / median 10.
        let mut v = vec![10.0; 40];
        v.extend([12.0; 10]);
        assert_eq!(measure::spread(&v), Some(0.2));
        // One outlier inside a part moves its median not at all.
        v[3] = 1e9;
        assert_eq!(measure::spread(&v), Some(0.2));
        // Three repetitions: (max - min) / median.
        assert_eq!(measure::spread(&[90.0, 100.0, 110.0]), Some(0.2));
        assert_eq!(measure::spread(&[1.0, 2.0]), None);
    }

    #[test]
    fn every_workload_that_compares_mechanisms_runs_in_rounds() {
        let opts = Options {
            workloads: Workload::ALL.to_vec(),
            ..Options::new(true)
        };
        for t in plan(&opts) {
            let expect = match (&t.job, t.workload) {
                (Job::Memcpy(..) | Job::PythonMp(..) | Job::Skip(..), _) => None,
                (_, Workload::Rtt | Workload::Wake) => Some(Rounds::Instances),
                (_, Workload::Stream | Workload::Sizes | Workload::Mpmc) => Some(Rounds::Runs),
                (_, Workload::Lock | Workload::Pool | Workload::Fanout | Workload::Bridge) => {
                    Some(Rounds::Repeats)
                }
            };
            assert_eq!(
                Rounds::of(&t.job),
                expect,
                "{} {:?}",
                t.mechanism,
                t.workload
            );
        }
        // Bridge rows are `Skip` in the plan unless the bridge's program is built.
        assert_eq!(
            Rounds::of(&Job::Bridge(bridge::TCP, "rtt", 64)),
            Some(Rounds::Repeats)
        );
    }

    fn run_of(median: f64, p99: Option<f64>, ops: f64, cpu: Option<f64>) -> Measurement {
        let placement = Options::new(true).placement;
        let mut m = measure::summarise(vec![median; 3], 3, Timing::Total, placement);
        m.p99_ns = p99;
        m.ops_per_s = Some(ops);
        m.cpu_ns_per_op = cpu;
        m
    }

    #[test]
    fn a_repeated_row_reports_the_median_of_its_runs() {
        assert!(measure::median_of_runs(Vec::new()).is_none());
        // Skewed, so that a mean would not pass for the median.
        let m = measure::median_of_runs(vec![
            run_of(10.0, Some(15.0), 1.0, Some(1.0)),
            run_of(100.0, None, 30.0, Some(2.0)),
            run_of(20.0, Some(25.0), 2.0, Some(6.0)),
        ])
        .unwrap();
        assert_eq!(m.median_ns, 20.0);
        // Of the runs that have one (nearest rank of two: the lower).
        assert_eq!(m.p99_ns, Some(15.0));
        assert_eq!(m.p999_ns, None);
        assert_eq!(m.ops_per_s, Some(2.0));
        // CPU per operation is the mean (every run makes the same number of operations).
        assert_eq!(m.cpu_ns_per_op, Some(3.0));
        // (100 - 10) / 20, over the runs' medians.
        assert_eq!(m.spread, Some(4.5));
        assert_eq!((m.samples, m.operations), (9, 9));
        // A run without a CPU reading leaves the row without one.
        let m = measure::median_of_runs(vec![
            run_of(10.0, None, 1.0, Some(1.0)),
            run_of(10.0, None, 1.0, None),
        ])
        .unwrap();
        assert_eq!(m.cpu_ns_per_op, None);
        assert_eq!(m.spread, None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(measure::percentile(&v, 0.5), 500.0);
        assert_eq!(measure::percentile(&v, 0.99), 990.0);
        assert_eq!(measure::percentile(&v, 0.999), 999.0);
        assert_eq!(measure::percentile(&[7.0], 0.99), 7.0);
        assert!(measure::percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn bridge_rows_keep_their_tcp_baseline_and_ratio_to_it_per_variant() {
        let opts = Options {
            only: Some(vec!["shmkit-bridge".into()]),
            workloads: vec![Workload::Bridge],
            ..Options::new(true)
        };
        let tasks = plan(&opts);
        // 2 sizes x 2 variants x (shmkit-bridge + its baseline).
        assert_eq!(tasks.len(), 8);
        assert!(tasks.iter().any(|t| t.mechanism == bridge::TCP));
        for t in &tasks {
            match &t.job {
                Job::Bridge(..) => assert!(bridge::program().is_some()),
                Job::Skip(r) => assert_eq!(r, bridge::UNAVAILABLE),
                j => panic!("{j:?}"),
            }
        }
        let mut rows = vec![
            row(Workload::Bridge, bridge::TCP, Some(64), 40_000.0, None),
            row(Workload::Bridge, "shmkit-bridge", Some(64), 400_000.0, None),
            row(Workload::Bridge, bridge::TCP, Some(64), 5_000.0, None),
            row(Workload::Bridge, "shmkit-bridge", Some(64), 20_000.0, None),
        ];
        for (r, v) in rows.iter_mut().zip(["rtt", "rtt", "stream", "stream"]) {
            r.variant = Some(v);
        }
        add_ratios(&mut rows);
        assert_eq!(rows[1].ratio, Some(10.0));
        assert_eq!(rows[3].ratio, Some(4.0));
        assert_eq!(rows[3].ratio_to, Some(bridge::TCP));
    }

    #[test]
    fn only_keeps_the_baselines_and_lists_limits() {
        let opts = Options {
            only: Some(vec!["posix-mq".into()]),
            ..Options::new(true)
        };
        let tasks = plan(&opts);
        assert!(tasks.iter().all(|t| {
            [FLOOR, MEMCPY, LOCK_FLOOR, PYTHON_POOL, "posix-mq"].contains(&t.mechanism.as_str())
        }));
        let limited: Vec<_> = tasks
            .iter()
            .filter(|t| {
                t.mechanism == "posix-mq"
                    && matches!(&t.job, Job::Skip(r) if r.starts_with("limit"))
            })
            .map(|t| (t.workload, t.size))
            .collect();
        assert_eq!(
            limited,
            vec![
                (Workload::Stream, Some(64 << 10)),
                (Workload::Stream, Some(1 << 20))
            ]
        );
    }
}
