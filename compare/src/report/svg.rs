//! The SVG chart: the ratios as horizontal bars on a log scale, one panel per workload;
//! under them the scaling workloads as line charts on log-log axes (`sizes`: throughput
//! against message size; `mpmc`: aggregate messages per second against producers).

use std::fmt::Write as _;

use super::table::{fmt_ns, fmt_size};
use crate::channel::Style;
use crate::suite::{Row, Workload};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar chart of the ratios, log scale, one panel per workload. Bars to the
/// right are slower (time ratios) or faster (stream bandwidth ratios), as the panel says.
pub(crate) fn svg(rows: &[Row]) -> String {
    let measured: Vec<&Row> = rows
        .iter()
        .filter(|r| r.ratio.is_some_and(|x| x > 0.0) && !is_curve(r.workload))
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
            Workload::Bridge => "bridge: time per message / tcp-loopback (longer = slower)",
            Workload::Mpmc | Workload::Sizes => continue,
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
    for (title, x_label, points) in curves(rows) {
        let (panel, h) = line_panel(title, x_label, &points, y + 10.0, width);
        body.push_str(&panel);
        y += h + 20.0;
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{:.0}" font-family="monospace" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="4" y="14">shmkit bench: ratios to the baselines of the same run (log scale); orange spinning, green sleeping</text>
{axis}{body}</svg>
"#,
        y + 10.0
    )
}

/// The workloads drawn as curves rather than bars.
fn is_curve(w: Workload) -> bool {
    matches!(w, Workload::Mpmc | Workload::Sizes)
}

/// One curve: its label and its (x, y) points.
type Series = (String, Vec<(f64, f64)>);

/// The line panels: title, x axis label, series.
fn curves(rows: &[Row]) -> Vec<(&'static str, &'static str, Vec<Series>)> {
    let ok = |r: &&Row| r.error.is_none();
    let mut panels = Vec::new();
    // sizes: bytes per second against message size, one line per mechanism.
    let mut sizes: Vec<Series> = Vec::new();
    for r in rows
        .iter()
        .filter(ok)
        .filter(|r| r.workload == Workload::Sizes)
    {
        if let (Some(size), Some(bw)) = (r.size, r.throughput_bytes_per_s) {
            push_point(&mut sizes, &r.mechanism, (size as f64, bw));
        }
    }
    if !sizes.is_empty() {
        panels.push((
            "sizes: one-way throughput (bytes/s) against message size",
            "message size (bytes)",
            sizes,
        ));
    }
    // mpmc: messages per second against producers, with as many consumers as producers
    // (P=C) and with one consumer (C=1).
    let mut mpmc: Vec<Series> = Vec::new();
    for r in rows
        .iter()
        .filter(ok)
        .filter(|r| r.workload == Workload::Mpmc)
    {
        let (Some((p, c)), Some(rate)) = (r.variant.and_then(crate::mpmc::shape), r.ops_per_s)
        else {
            continue;
        };
        if p == c {
            push_point(&mut mpmc, &format!("{} P=C", r.mechanism), (p as f64, rate));
        }
        if c == 1 {
            push_point(&mut mpmc, &format!("{} C=1", r.mechanism), (p as f64, rate));
        }
    }
    if !mpmc.is_empty() {
        panels.push((
            "mpmc: aggregate messages/s against producer processes (P=C: as many consumers; C=1: one)",
            "producers",
            mpmc,
        ));
    }
    panels
}

fn push_point(series: &mut Vec<Series>, label: &str, point: (f64, f64)) {
    match series.iter_mut().find(|s| s.0 == label) {
        Some(s) => s.1.push(point),
        None => series.push((label.to_string(), vec![point])),
    }
}

const PALETTE: [&str; 8] = [
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
];

/// Decades (powers of 10) covering `lo..=hi`.
fn decades(lo: f64, hi: f64) -> (f64, f64) {
    let a = lo.max(1e-300).log10().floor();
    let b = hi.max(1e-300).log10().ceil();
    (a, if b > a { b } else { a + 1.0 })
}

/// One log-log line chart at `top`: returns the SVG fragment and its height.
fn line_panel(
    title: &str,
    x_label: &str,
    series: &[Series],
    top: f64,
    width: f64,
) -> (String, f64) {
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (xlo, xhi, ylo, yhi) = pts.fold(
        (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    let (x0, x1) = decades(xlo, xhi);
    let (y0, y1) = decades(ylo, yhi);
    let (left, plot_w, plot_h, legend_w) = (70.0, width - 300.0, 240.0, 220.0);
    let plot_top = top + 24.0;
    let xs = |x: f64| left + (x.log10() - x0) / (x1 - x0) * plot_w;
    let ys = |y: f64| plot_top + plot_h - (y.log10() - y0) / (y1 - y0) * plot_h;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<text x="4" y="{:.0}" font-weight="bold">{}</text>"#,
        top + 12.0,
        esc(title)
    );
    let mut d = x0;
    while d <= x1 + 1e-9 {
        let x = xs(10f64.powf(d));
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{plot_top:.0}" x2="{x:.1}" y2="{:.0}" stroke="#ddd"/><text x="{x:.1}" y="{:.0}" text-anchor="middle">1e{d:.0}</text>"##,
            plot_top + plot_h,
            plot_top + plot_h + 14.0
        );
        d += 1.0;
    }
    let mut d = y0;
    while d <= y1 + 1e-9 {
        let y = ys(10f64.powf(d));
        let _ = writeln!(
            out,
            r##"<line x1="{left:.0}" y1="{y:.1}" x2="{:.0}" y2="{y:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">1e{d:.0}</text>"##,
            left + plot_w,
            left - 4.0,
            y + 4.0
        );
        d += 1.0;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.0}" y="{:.0}" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        plot_top + plot_h + 30.0,
        esc(x_label)
    );
    for (i, (label, points)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let dash = if i >= PALETTE.len() {
            r#" stroke-dasharray="4 3""#
        } else {
            ""
        };
        let mut sorted = points.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = sorted
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", xs(x), ys(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"{dash}/>"#,
            path.join(" ")
        );
        for &(x, y) in &sorted {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                xs(x),
                ys(y)
            );
        }
        let ly = plot_top + 12.0 + 14.0 * i as f64;
        let lx = left + plot_w + 16.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.0}" y1="{:.0}" x2="{:.0}" y2="{:.0}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.0}" y="{ly:.0}">{}</text>"#,
            ly - 4.0,
            lx + 18.0,
            ly - 4.0,
            lx + 22.0,
            esc(label)
        );
    }
    let legend_h = 14.0 * series.len() as f64 + 12.0;
    let _ = legend_w;
    (out, 24.0 + plot_h.max(legend_h) + 36.0)
}
