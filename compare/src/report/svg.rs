//! The SVG chart: the ratios as horizontal bars on a log scale, one panel per workload.

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
