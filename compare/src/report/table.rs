//! The text table: one block per workload, and the cell formatting shared with the chart.

use std::fmt::Write as _;

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
    } else {
        format!("{:.0} k{unit}/s", o / 1e3)
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
pub(crate) fn table(rows: &[Row]) -> String {
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
