//! The text table: one block per workload, and the cell formatting shared with the chart.

use std::fmt::Write as _;

use crate::channel::Style;
use crate::measure::Timing;
use crate::suite::{Row, Workload};

pub(crate) fn fmt_size(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

pub(crate) fn fmt_ns(ns: Option<f64>) -> String {
    match ns {
        None => "-".into(),
        Some(v) if v < 1_000.0 => format!("{v:.1} ns"),
        Some(v) if v < 1_000_000.0 => format!("{:.2} µs", v / 1e3),
        Some(v) => format!("{:.2} ms", v / 1e6),
    }
}

pub(crate) fn fmt_rate(r: &Row) -> String {
    match (r.throughput_bytes_per_s, r.ops_per_s) {
        (Some(b), Some(m)) => format!("{:.2} GB/s {}", b / 1e9, fmt_ops(m, "msg")),
        (None, Some(o)) if r.workload == Workload::Rtt => fmt_ops(o, "rt"),
        (None, Some(o)) if r.workload == Workload::Pool => fmt_ops(o, "task"),
        (None, Some(o)) => fmt_ops(o, "op"),
        _ => "-".into(),
    }
}

pub(crate) fn fmt_ops(o: f64, unit: &str) -> String {
    if o >= 1e6 {
        format!("{:.1} M{unit}/s", o / 1e6)
    } else if o >= 1e3 {
        format!("{:.0} k{unit}/s", o / 1e3)
    } else {
        format!("{o:.1} {unit}/s")
    }
}

pub(crate) fn fmt_ratio(x: f64) -> String {
    if x >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

pub(crate) fn notes(r: &Row) -> String {
    let mut n = Vec::new();
    if let Some(s) = r.style {
        n.push(s.as_str().to_string());
    }
    if let Some(v) = r.variant {
        n.push(v.to_string());
    }
    if r.workload == Workload::Rtt
        && r.style == Some(Style::Sleeping)
        && r.timing == Some(Timing::Batch)
    {
        // Answered while still spinning: timed as the spinning rows are.
        n.push(format!(
            "timed in batches (pilot median under {:.0} us)",
            crate::measure::FAST_RTT_NS / 1000.0
        ));
    }
    if let Some(f) = r.local_floor_ns {
        n.push(format!(
            "ratio to the floor measured next to it ({f:.0} ns)"
        ));
    }
    if let Some(f) = r.placement_probe_ns {
        n.push(format!("placement probe {f:.0} ns"));
    }
    if !r.note.is_empty() {
        n.push(r.note.clone());
    }
    if let Some(e) = &r.error {
        n.push(e.clone());
    }
    n.join("; ")
}

/// CPU nanoseconds per operation, or `-`.
pub(crate) fn fmt_cpu(r: &Row) -> String {
    if r.error.is_some() {
        return "-".into();
    }
    fmt_ns(r.cpu_ns_per_op)
}

/// Aligned columns: the first left-aligned, the middle ones right-aligned, the last one
/// (notes) as it is; a rule under the header.
pub(crate) fn grid(lines: &[Vec<String>]) -> String {
    let cols = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            lines
                .iter()
                .filter_map(|l| l.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (k, l) in lines.iter().enumerate() {
        let mut s = String::new();
        for (i, cell) in l.iter().enumerate() {
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if i + 1 == cols {
                s.push_str(cell);
            } else if i == 0 {
                let _ = write!(s, "{cell}{pad}  ");
            } else {
                let _ = write!(s, "{pad}{cell}  ");
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
        if k == 0 {
            let rule: usize = widths[..cols.saturating_sub(1)].iter().map(|w| w + 2).sum();
            let _ = writeln!(out, "{}", "-".repeat(rule + 5));
        }
    }
    out
}

/// The text table: one block per workload.
pub(crate) fn table(rows: &[Row], with_baseline: bool) -> String {
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
            Workload::Mpmc => (
                "per message over all producers; variant = producers x consumers",
                "x the same mechanism at 1x1 in messages/s, bigger = faster",
            ),
            Workload::Sizes => ("per message", "x memcpy"),
            Workload::Fanout => (
                "publish to last subscriber; throughput = deliveries/s",
                "x shmkit-queues (one queue per subscriber)",
            ),
            Workload::Bridge => (
                "round trip (rtt) or per message (stream); cpu over all processes of the path",
                "x tcp-loopback in the same variant and size, bigger = slower",
            ),
        };
        let _ = writeln!(
            out,
            "\n## {} (median {what}; cpu = CPU time of both processes per operation; ratio {ratio_to})",
            w.as_str()
        );
        let mut header: Vec<String> = [
            "mechanism",
            "size",
            "median",
            "p99",
            "p99.9",
            "throughput",
            "cpu",
            "ratio",
            "notes",
        ]
        .map(String::from)
        .to_vec();
        if with_baseline {
            header.insert(8, "vs base".into());
        }
        let mut lines: Vec<Vec<String>> = vec![header];
        for r in block {
            let mut line = vec![
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
                fmt_cpu(r),
                r.ratio.map_or("-".into(), fmt_ratio),
                notes(r),
            ];
            if with_baseline {
                line.insert(8, super::baseline::cell(r));
            }
            lines.push(line);
        }
        out.push_str(&grid(&lines));
    }
    out
}
