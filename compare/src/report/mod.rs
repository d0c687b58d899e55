//! The benchmark driver behind the `shmkit-bench` binary (and `shmkit bench` when the CLI
//! is built with its `bench` feature): every workload for every mechanism in one run, a
//! table on stdout, optional JSON rows and an SVG chart.
//!
//! It lives in this crate, not in the CLI, so that installing the `shmkit` command does
//! not build the peer crates the harness compares against.

use std::io::Write;
use std::path::PathBuf;

use crate::Placement;
use crate::suite::{self, Options, Row, Workload};

pub mod baseline;
mod svg;
mod table;

use svg::svg;
use table::{fmt_size, table};

/// Options of `shmkit bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Small budget: the whole run takes well under a minute on 2 cores (the pool
    /// workload included: 5 maps of 100k trivial tasks and one of 1k x 1 ms per mechanism).
    #[arg(long)]
    quick: bool,
    /// Write the rows as a JSON array to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the ratios as an SVG bar chart (log scale) into FILE.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Compare with an earlier run's --json FILE: per row the change of the time per
    /// operation (by ratio to the same run's baseline where the row has one), flagged
    /// with `!` when it exceeds the noise band both runs measured (the spread of their
    /// repeats; compare/README.md, "Regressions").
    #[arg(long, value_name = "OLD.json")]
    baseline: Option<PathBuf>,
    /// Only these mechanism ids, comma-separated (the baselines always run).
    #[arg(long, value_name = "ID,...", value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Only this workload (repeatable). `pool`: Pool.map over available_parallelism
    /// worker processes, shmkit-pool against python-mp-pool (when python3 is present):
    /// 100k trivial tasks (tasks/s) and 1k tasks of 1 ms (overhead per task = workers *
    /// wall / tasks - 1 ms); ratio = speed-up over Python in the same run.
    ///
    /// `mpmc`: P producer processes to C consumer processes (P, C in 1, 2, 4, 8; --quick:
    /// 1x1, 2x1, 2x2, 4x4), aggregate messages/s. `sizes`: one-way throughput from 16 B to
    /// 16 MiB in powers of 4 (--quick: every other size). `bridge`: shmkit through
    /// shmkit-bridge and zenoh against zenoh and TCP, run by the shmkit-bridge-bench
    /// program (cargo build --release -p shmkit-bridge; or SHMKIT_BRIDGE_BENCH=PATH).
    #[arg(long, value_name = "rtt|stream|lock|wake|pool|mpmc|sizes|fanout|bridge", value_parser = parse_workload)]
    workload: Vec<Workload>,
    /// Which message lengths shmkit's copying sends write around the cache in this run
    /// (`shmkit::queue::set_cache_bypass`): `default` (16K..256K on x86-64), `off`, or a
    /// range of bytes `FROM..TO` (suffixes K and M: KiB, MiB; `TO` may be empty: no limit).
    /// Forked peers inherit it; the header line of the table says what was in force. The
    /// bridge rows' program (`shmkit-bridge-bench`) runs with the default.
    #[arg(long, value_name = "default|off|FROM..TO", value_parser = parse_bypass)]
    cache_bypass: Option<Bypass>,
}

/// A `--cache-bypass` value.
#[derive(Debug, Clone)]
pub enum Bypass {
    /// The library's default.
    Default,
    /// These lengths (`None`: none).
    Lengths(Option<std::ops::Range<usize>>),
}

fn parse_bypass(s: &str) -> Result<Bypass, String> {
    fn bytes(t: &str) -> Result<usize, String> {
        let (num, mul) = match t.as_bytes().last() {
            Some(b'K' | b'k') => (&t[..t.len() - 1], 1024),
            Some(b'M' | b'm') => (&t[..t.len() - 1], 1024 * 1024),
            _ => (t, 1),
        };
        num.parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(mul))
            .ok_or_else(|| format!("{t:?} is not a byte count (e.g. 4096, 16K, 1M)"))
    }
    match s {
        "default" => Ok(Bypass::Default),
        "off" => Ok(Bypass::Lengths(None)),
        _ => {
            let (a, b) = s
                .split_once("..")
                .ok_or_else(|| format!("{s:?}: expected default, off or FROM..TO"))?;
            let from = bytes(a)?;
            let to = if b.is_empty() { usize::MAX } else { bytes(b)? };
            if from >= to {
                return Err(format!("{s:?}: an empty range"));
            }
            Ok(Bypass::Lengths(Some(from..to)))
        }
    }
}

/// The cache-bypass setting in force, for the header line.
fn bypass_text() -> String {
    match shmkit::queue::cache_bypass() {
        None => "cache bypass off".into(),
        Some(r) if r.end == usize::MAX => format!("cache bypass from {} B", r.start),
        Some(r) => format!("cache bypass {}..{} B", r.start, r.end),
    }
}

fn parse_workload(s: &str) -> Result<Workload, String> {
    Workload::parse(s).ok_or_else(|| {
        let all: Vec<&str> = Workload::ALL.iter().map(|w| w.as_str()).collect();
        format!("unknown workload {s:?}: expected one of {}", all.join(", "))
    })
}

/// Prints a line on stderr, ignoring a failure (stderr is the last resort; unlike
/// `eprintln!`, this never panics).
pub fn note(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// A failed write to `out` (stdout) as the crate's error.
fn out_err(e: std::io::Error) -> shmkit::Error {
    let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    if errno == nix::errno::Errno::EPIPE {
        shmkit::Error::os_with_advice(
            "stdout",
            "write",
            errno,
            "the reader of stdout has gone (e.g. `| head`); output stopped there",
        )
    } else {
        shmkit::Error::os("stdout", "write", errno)
    }
}

/// Runs the suite and reports: the table goes to `out`, progress and notes to stderr.
pub fn run(args: Args, out: &mut dyn Write) -> shmkit::Result<()> {
    if let Some(Bypass::Lengths(r)) = &args.cache_bypass {
        shmkit::queue::set_cache_bypass(r.clone());
    }
    let placement = Placement::detect();
    let opts = Options {
        quick: args.quick,
        only: args.only.clone(),
        workloads: if args.workload.is_empty() {
            Workload::ALL.to_vec()
        } else {
            args.workload.clone()
        },
        placement,
    };
    if let Some(only) = &opts.only {
        let known: Vec<String> = suite::plan(&Options {
            only: None,
            ..opts.clone()
        })
        .into_iter()
        .map(|t| t.mechanism)
        .collect();
        for id in only {
            if !known.iter().any(|k| k == id) {
                return Err(shmkit::Error::invalid(
                    "--only",
                    "bench",
                    format!(
                        "unknown mechanism {id:?}; known: {}",
                        dedup(&known).join(", ")
                    ),
                ));
            }
        }
    }
    // Fail on an unreadable baseline or an unwritable output path now, not after the run.
    let old = args.baseline.as_deref().map(baseline::load).transpose()?;
    for path in [&args.json, &args.plot].into_iter().flatten() {
        write(path, "")?;
    }
    note(format_args!(
        "shmkit bench: measuring process on core {}, peer on core {}{}",
        core(placement.parent),
        core(placement.child),
        if placement.parent == placement.child {
            " (only one core available: both share it)"
        } else {
            ""
        }
    ));
    let bar = indicatif::ProgressBar::new(suite::plan(&opts).len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut rows = suite::run_all(&opts, |i, _, t| {
        bar.set_position(i as u64);
        bar.set_message(format!(
            "{} {} {}",
            t.workload.as_str(),
            t.mechanism,
            t.size.map(fmt_size).unwrap_or_default()
        ));
    });
    bar.finish_and_clear();
    let mut text = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        text,
        "# shmkit bench{}: measuring process on core {}, peer on core {}; {} CPUs online; \
         POSIX mq msgsize_max {} B, msg_max {}; {}",
        if opts.quick { " --quick" } else { "" },
        core(placement.parent),
        core(placement.child),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        crate::mq::msgsize_max(),
        crate::mq::msg_max(),
        bypass_text(),
    );
    let _ = writeln!(
        text,
        "# timing: round trips of spinning mechanisms, and of others whose pilot round trips' \
         median was under {:.0} us, in batches of {} per clock pair (p99 = p99 of batch \
         means), the rest per operation; wake = cross-process CLOCK_MONOTONIC stamps",
        crate::measure::FAST_RTT_NS / 1000.0,
        crate::measure::BATCH
    );
    if let Some(old) = &old {
        baseline::compare(&mut rows, old);
    }
    text.push_str(&table(&rows, old.is_some()));
    if let Some(path) = &args.baseline {
        text.push_str(&baseline::summary(&rows, path));
    }
    out.write_all(text.as_bytes()).map_err(out_err)?;
    out.flush().map_err(out_err)?;
    let failed: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            r.error.as_deref().is_some_and(|e| {
                !["limit ", "unavailable:", "n/a:", "not run:"]
                    .iter()
                    .any(|p| e.starts_with(p))
            })
        })
        .collect();
    for r in &failed {
        note(format_args!(
            "shmkit bench: {} {} failed: {}",
            r.workload.as_str(),
            r.mechanism,
            r.error.as_deref().unwrap_or_default()
        ));
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rows)
            .map_err(|e| shmkit::Error::invalid("rows", "serialize JSON", e.to_string()))?;
        write(path, &text)?;
        note(format_args!("wrote {}", path.display()));
    }
    if let Some(path) = &args.plot {
        write(path, &svg(&rows))?;
        note(format_args!("wrote {}", path.display()));
    }
    Ok(())
}

fn dedup(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for x in v {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

fn write(path: &PathBuf, text: &str) -> shmkit::Result<()> {
    std::fs::write(path, text).map_err(|e| {
        shmkit::Error::os(
            path.display().to_string(),
            "write",
            nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        )
    })
}

fn core(c: Option<usize>) -> String {
    c.map_or("?".into(), |c| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_bypass_values_parse() {
        assert!(matches!(parse_bypass("default"), Ok(Bypass::Default)));
        assert!(matches!(parse_bypass("off"), Ok(Bypass::Lengths(None))));
        match parse_bypass("16K..1M") {
            Ok(Bypass::Lengths(Some(r))) => assert_eq!(r, 16 * 1024..1024 * 1024),
            other => panic!("{other:?}"),
        }
        match parse_bypass("4096..") {
            Ok(Bypass::Lengths(Some(r))) => assert_eq!(r, 4096..usize::MAX),
            other => panic!("{other:?}"),
        }
        for bad in [
            "",
            "16K",
            "1M..16K",
            "x..1",
            "1..y",
            "99999999999999999999M..",
        ] {
            assert!(parse_bypass(bad).is_err(), "{bad}");
        }
    }
}
