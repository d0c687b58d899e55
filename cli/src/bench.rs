//! `shmkit bench`: every workload for every mechanism in one run, a table on stdout,
//! optional JSON rows and an SVG chart. The adapters live in the `shmkit-compare` crate.

use std::fmt::Write as _;
use std::path::PathBuf;

use shmkit_compare::suite::{self, Options, Row, Workload};
use shmkit_compare::{Placement, Style};

use crate::out::{Out, note};

/// Options of `shmkit bench`.
#[derive(clap::Args, Debug)]
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
    /// Only these mechanism ids, comma-separated (the baselines always run).
    #[arg(long, value_name = "ID,...", value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Only this workload (repeatable). `pool`: Pool.map over available_parallelism
    /// worker processes, shmkit-pool against python-mp-pool (when python3 is present):
    /// 100k trivial tasks (tasks/s) and 1k tasks of 1 ms (overhead per task = workers *
    /// wall / tasks - 1 ms); ratio = speed-up over Python in the same run.
    #[arg(long, value_name = "rtt|stream|lock|wake|pool", value_parser = parse_workload)]
    workload: Vec<Workload>,
}

fn parse_workload(s: &str) -> Result<Workload, String> {
    Workload::parse(s)
        .ok_or_else(|| format!("unknown workload {s:?}: expected rtt, stream, lock, wake or pool"))
}

/// Runs the suite and reports.
pub fn run(args: Args, out: &mut Out) -> shmkit::Result<()> {
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
    // Fail on an unwritable output path now, not after the whole run.
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
    let rows = suite::run_all(&opts, |i, _, t| {
        bar.set_position(i as u64);
        bar.set_message(format!(
            "{} {} {}",
            t.workload.as_str(),
            t.mechanism,
            t.size.map(fmt_size).unwrap_or_default()
        ));
    });
    bar.finish_and_clear();
    writeln!(
        out,
        "# shmkit bench{}: measuring process on core {}, peer on core {}; {} CPUs online; \
         POSIX mq msgsize_max {} B, msg_max {}",
        if opts.quick { " --quick" } else { "" },
        core(placement.parent),
        core(placement.child),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        shmkit_compare::mq::msgsize_max(),
        shmkit_compare::mq::msg_max(),
    )?;
    writeln!(
        out,
        "# timing: spinning mechanisms in batches of {} round trips per clock pair (p99 = p99 of \
         batch means), sleeping ones per operation; wake = cross-process CLOCK_MONOTONIC stamps",
        shmkit_compare::measure::BATCH
    )?;
    write!(out, "{}", table(&rows))?;
    out.flush()?;
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

fn fmt_size(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

fn fmt_ns(ns: Option<f64>) -> String {
    match ns {
        None => "-".into(),
        Some(v) if v < 1_000.0 => format!("{v:.1} ns"),
        Some(v) if v < 1_000_000.0 => format!("{:.2} µs", v / 1e3),
        Some(v) => format!("{:.2} ms", v / 1e6),
    }
}

fn fmt_rate(r: &Row) -> String {
    match (r.throughput_bytes_per_s, r.ops_per_s) {
        (Some(b), Some(m)) => format!("{:.2} GB/s {}", b / 1e9, fmt_ops(m, "msg")),
        (None, Some(o)) if r.workload == Workload::Rtt => fmt_ops(o, "rt"),
        (None, Some(o)) if r.workload == Workload::Pool => fmt_ops(o, "task"),
        (None, Some(o)) => fmt_ops(o, "op"),
        _ => "-".into(),
    }
}

fn fmt_ops(o: f64, unit: &str) -> String {
    if o >= 1e6 {
        format!("{:.1} M{unit}/s", o / 1e6)
    } else {
        format!("{:.0} k{unit}/s", o / 1e3)
    }
}

fn fmt_ratio(x: f64) -> String {
    if x >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

fn notes(r: &Row) -> String {
    let mut n = Vec::new();
    if let Some(s) = r.style {
        n.push(s.as_str().to_string());
    }
    if let Some(v) = r.variant {
        n.push(v.to_string());
    }
    if let Some(f) = r.local_floor_ns {
        n.push(format!(
            "ratio to the floor measured next to it ({f:.0} ns)"
        ));
    }
    if !r.note.is_empty() {
        n.push(r.note.clone());
    }
    if let Some(e) = &r.error {
        n.push(e.clone());
    }
    n.join("; ")
}

/// The text table: one block per workload.
fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    for w in Workload::ALL {
        let block: Vec<&Row> = rows.iter().filter(|r| r.workload == w).collect();
        if block.is_empty() {
            continue;
        }
        let (what, ratio_to) = match w {
            Workload::Rtt => ("round trip", "x spin-floor"),
            Workload::Stream => ("per message", "x memcpy"),
            Workload::Lock => ("lock+unlock", "x cas-spinlock"),
            Workload::Wake => ("wake-up", "x spin-floor"),
            Workload::Pool => (
                "per task: wall time (trivial), overhead beyond 1 ms (1 ms tasks)",
                "speed-up over python-mp-pool, bigger = faster",
            ),
            Workload::Fanout => (
                "publish to last subscriber; throughput = deliveries/s",
                "x shmkit-queues (one queue per subscriber)",
            ),
        };
        let _ = writeln!(out, "\n## {} (median {what}; ratio {ratio_to})", w.as_str());
        let header = [
            "mechanism",
            "size",
            "median",
            "p99",
            "p99.9",
            "throughput",
            "ratio",
            "notes",
        ];
        let mut lines: Vec<[String; 8]> = vec![header.map(String::from)];
        for r in block {
            lines.push([
                r.mechanism.clone(),
                r.size.map(fmt_size).unwrap_or_else(|| "-".into()),
                if r.error.is_some() {
                    "-".into()
                } else {
                    fmt_ns(r.median_ns)
                },
                fmt_ns(r.p99_ns),
                fmt_ns(r.p999_ns),
                fmt_rate(r),
                r.ratio.map_or("-".into(), fmt_ratio),
                notes(r),
            ]);
        }
        let widths: Vec<usize> = (0..7)
            .map(|i| {
                lines
                    .iter()
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for (k, l) in lines.iter().enumerate() {
            let mut s = String::new();
            for (i, cell) in l.iter().enumerate().take(7) {
                let pad = widths[i] - cell.chars().count();
                if i == 0 || i == 7 {
                    let _ = write!(s, "{cell}{}  ", " ".repeat(pad));
                } else {
                    let _ = write!(s, "{}{cell}  ", " ".repeat(pad));
                }
            }
            let _ = writeln!(out, "{s}{}", l[7]);
            if k == 0 {
                let _ = writeln!(out, "{}", "-".repeat(widths.iter().sum::<usize>() + 14 + 5));
            }
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar chart of the ratios, log scale, one panel per workload. Bars to the
/// right are slower (time ratios) or faster (stream bandwidth ratios), as the panel says.
fn svg(rows: &[Row]) -> String {
    let measured: Vec<&Row> = rows
        .iter()
        .filter(|r| r.ratio.is_some_and(|x| x > 0.0))
        .collect();
    let (lo, hi) = measured
        .iter()
        .filter_map(|r| r.ratio)
        .fold((1.0f64, 1.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (lmin, lmax) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let (label_w, bar_w, row_h, top) = (330.0, 560.0, 16.0, 40.0);
    let x_of = |v: f64| label_w + (v.log10() - lmin) / (lmax - lmin) * bar_w;
    let mut body = String::new();
    let mut y = top;
    for w in Workload::ALL {
        let block: Vec<&&Row> = measured.iter().filter(|r| r.workload == w).collect();
        if block.is_empty() {
            continue;
        }
        let title = match w {
            Workload::Stream => "stream: bandwidth / memcpy (longer = faster)",
            Workload::Rtt => "rtt: round trip / spin-floor (longer = slower)",
            Workload::Lock => "lock: time / cas-spinlock (longer = slower)",
            Workload::Wake => "wake: wake-up / spin-floor (longer = slower)",
            Workload::Pool => "pool: speed-up over python-mp-pool (longer = faster)",
            Workload::Fanout => "fanout: latency / shmkit-queues (longer = slower)",
        };
        let _ = writeln!(
            body,
            r#"<text x="4" y="{:.0}" font-weight="bold">{}</text>"#,
            y + 12.0,
            esc(title)
        );
        y += row_h + 4.0;
        for r in block {
            let ratio = r.ratio.unwrap_or(1.0);
            let label = format!(
                "{} {}{}",
                r.mechanism,
                r.size.map(fmt_size).unwrap_or_default(),
                r.variant.map(|v| format!(" {v}")).unwrap_or_default()
            );
            let color = match r.style {
                Some(Style::Spinning) => "#d95f02",
                Some(Style::Sleeping) => "#1b9e77",
                None => "#7570b3",
            };
            let (x0, x1) = (x_of(1.0), x_of(ratio));
            let (bx, bw) = if x1 >= x0 {
                (x0, x1 - x0)
            } else {
                (x1, x0 - x1)
            };
            let _ = writeln!(
                body,
                r#"<text x="{:.0}" y="{:.0}" text-anchor="end">{}</text><rect x="{bx:.1}" y="{:.0}" width="{:.1}" height="{:.0}" fill="{color}"/><text x="{:.1}" y="{:.0}">{ratio:.2}x {}</text>"#,
                label_w - 6.0,
                y + 11.0,
                esc(&label),
                y + 2.0,
                bw.max(1.0),
                row_h - 4.0,
                bx + bw.max(1.0) + 4.0,
                y + 11.0,
                esc(&fmt_ns(r.median_ns))
            );
            y += row_h;
        }
        y += 8.0;
    }
    let mut axis = String::new();
    let mut d = lmin;
    while d <= lmax + 1e-9 {
        let x = x_of(10f64.powf(d));
        let _ = writeln!(
            axis,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.0}" stroke="#ccc"/><text x="{x:.1}" y="{:.0}" text-anchor="middle">{}</text>"##,
            y,
            top - 6.0,
            10f64.powf(d)
        );
        d += 1.0;
    }
    let width = label_w + bar_w + 160.0;
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{:.0}" font-family="monospace" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="4" y="14">shmkit bench: ratios to the baselines of the same run (log scale); orange spinning, green sleeping</text>
{axis}{body}</svg>
"#,
        y + 10.0
    )
}
