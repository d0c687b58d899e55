//! `--baseline OLD.json`: each row against the same row (workload, mechanism, size,
//! variant) of an earlier run's JSON, and whether the change is larger than the noise the
//! two runs measured themselves.
//!
//! What is compared is the row's time per operation, normalised by its baseline **of the
//! same run** where it has one (rtt, wake and lock rows by their ratio to `spin-floor` /
//! `cas-spinlock`; stream and sizes rows by memcpy's bandwidth over theirs), because the
//! host moves the two vCPUs between runs and the floor moves with them; rows without such
//! a baseline (the baselines themselves, mpmc, pool) compare `median_ns`.
//!
//! The noise band of a row is the larger [`spread`](crate::suite::Row::spread) of the two
//! runs' rows (the spread of the medians of consecutive parts of its samples, or of its
//! repetitions), plus the larger spread of the baseline row when the comparison is by
//! ratio, and at least [`MIN_BAND`]. A row whose runs give no spread (one sample: memcpy,
//! contended locks, a pool run) gets [`DEFAULT_BAND`].

use std::path::Path;

use serde_json::Value;
use shmkit::{Error, Result};

use crate::suite::{FLOOR, LOCK_FLOOR, MEMCPY, Row, Workload};

/// Smallest noise band: below it a change is not flagged.
pub const MIN_BAND: f64 = 0.02;
/// The band of a row without repeated measurements in either run.
pub const DEFAULT_BAND: f64 = 0.10;

/// One row of the old run (only the fields the comparison needs; unknown fields and
/// fields a run of an older harness lacks are ignored).
#[derive(Debug, Clone, Default)]
pub struct OldRow {
    workload: String,
    mechanism: String,
    size: Option<u64>,
    variant: Option<String>,
    median_ns: Option<f64>,
    ratio: Option<f64>,
    ratio_to: Option<String>,
    spread: Option<f64>,
    timing: Option<String>,
}

impl OldRow {
    fn from_json(v: &Value) -> Option<OldRow> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        Some(OldRow {
            workload: s("workload")?,
            mechanism: s("mechanism")?,
            size: v.get("size").and_then(Value::as_u64),
            variant: s("variant"),
            median_ns: f("median_ns"),
            ratio: f("ratio"),
            ratio_to: s("ratio_to"),
            spread: f("spread"),
            timing: s("timing"),
        })
    }
}

/// Reads the rows of an earlier `--json` file.
pub fn load(path: &Path) -> Result<Vec<OldRow>> {
    let bad = |why: String| Error::invalid(path.display().to_string(), "--baseline", why);
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let rows = v
        .as_array()
        .ok_or_else(|| bad("not a JSON array of rows (a --json file)".into()))?;
    Ok(rows.iter().filter_map(OldRow::from_json).collect())
}

fn same(r: &Row, o: &OldRow) -> bool {
    same_as(r, &r.mechanism, o)
}

/// Whether `o` is `mechanism`'s row in `r`'s workload, size and variant.
fn same_as(r: &Row, mechanism: &str, o: &OldRow) -> bool {
    o.workload == r.workload.as_str()
        && o.mechanism == mechanism
        && o.size == r.size.map(|s| s as u64)
        && o.variant.as_deref() == r.variant
}

/// The same-run baseline a row's ratio is taken against, when the comparison goes by
/// ratio: rtt / wake / lock time ratios, stream / sizes bandwidth ratios.
fn ratio_baseline(r: &Row) -> Option<&'static str> {
    let base = match r.workload {
        Workload::Rtt | Workload::Wake => FLOOR,
        Workload::Lock => LOCK_FLOOR,
        Workload::Stream | Workload::Sizes => MEMCPY,
        _ => return None,
    };
    (r.mechanism != base && r.ratio_to == Some(base)).then_some(base)
}

/// Time per operation relative to the baseline, from a ratio of `workload`.
fn time_ratio(workload: Workload, ratio: f64) -> f64 {
    match workload {
        // Bandwidth ratios: bigger is faster.
        Workload::Stream | Workload::Sizes => 1.0 / ratio,
        _ => ratio,
    }
}

/// The JSON name of a row's timing (`batch`, `per_op`, ...), as `--json` writes it.
fn timing_name(r: &Row) -> Option<String> {
    let v = serde_json::to_value(r.timing?).ok()?;
    v.as_str().map(str::to_string)
}

/// Whether the two rows were timed differently (one in batches, one per round trip): their
/// medians are different statistics, so a change between them is not a regression.
/// Rows of an old run without the field are compared as before.
fn timing_differs(r: &Row, o: &OldRow) -> bool {
    match (timing_name(r), o.timing.as_deref()) {
        (Some(new), Some(old)) => new != old,
        _ => false,
    }
}

/// Sets `change`, `noise_band` and `outside_noise` of every row that has a counterpart in
/// `old` timed the same way, and `not_compared` of one timed differently.
pub fn compare(rows: &mut [Row], old: &[OldRow]) {
    // Per row: `Err(())` when its old counterpart was timed differently, `Ok(None)` when
    // there is nothing to compare, else the change and the band.
    let results: Vec<Result<Option<(f64, f64)>, ()>> = rows
        .iter()
        .map(|r| {
            let Some(o) = old.iter().find(|o| same(r, o)) else {
                return Ok(None);
            };
            if timing_differs(r, o) {
                return Err(());
            }
            Ok(compared(rows, old, r, o))
        })
        .collect();
    for (r, res) in rows.iter_mut().zip(results) {
        match res {
            Err(()) => r.not_compared = Some("timed differently"),
            Ok(Some((change, band))) => {
                r.change = Some(change);
                r.noise_band = Some(band);
                r.outside_noise = Some(change.abs() > band);
            }
            Ok(None) => {}
        }
    }
}

/// The change of `r` against its old counterpart `o` (timed the same way) and the noise
/// band it is judged against; `None` when either has no usable figure.
fn compared(rows: &[Row], old: &[OldRow], r: &Row, o: &OldRow) -> Option<(f64, f64)> {
    let by_ratio = ratio_baseline(r)
        .filter(|b| o.ratio_to.as_deref() == Some(*b) && o.ratio.is_some() && r.ratio.is_some());
    let (new, was, base_noise) = match by_ratio {
        Some(b) => {
            // `o` is `r`'s counterpart, so `r` locates the baseline in both runs.
            let old_base = old.iter().find(|x| same_as(r, b, x)).and_then(|x| x.spread);
            let new_base = rows
                .iter()
                .find(|x| {
                    (x.workload, x.size, x.variant) == (r.workload, r.size, r.variant)
                        && x.mechanism == b
                })
                .and_then(|x| x.spread);
            (
                time_ratio(r.workload, r.ratio?),
                time_ratio(r.workload, o.ratio?),
                max_opt(new_base, old_base).unwrap_or(0.0),
            )
        }
        None => (r.median_ns?, o.median_ns?, 0.0),
    };
    if !(new > 0.0 && was > 0.0) || r.error.is_some() {
        return None;
    }
    let band = match max_opt(r.spread, o.spread) {
        Some(s) => (s + base_noise).max(MIN_BAND),
        None => DEFAULT_BAND,
    };
    Some((new / was - 1.0, band))
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The table cell: `+12.3%` (slower) / `-4.0%` (faster), `!` when outside the band,
/// `new` when the old run has no such row.
pub(crate) fn cell(r: &Row) -> String {
    match (r.change, r.outside_noise) {
        (Some(c), Some(out)) => format!("{:+.1}%{}", c * 100.0, if out { " !" } else { "" }),
        _ if r.error.is_some() => "-".into(),
        _ if r.not_compared.is_some() => "timing".into(),
        _ => "new".into(),
    }
}

/// The summary under the table: every row outside its band.
pub(crate) fn summary(rows: &[Row], path: &Path) -> String {
    let compared = rows.iter().filter(|r| r.change.is_some()).count();
    let flagged: Vec<&Row> = rows
        .iter()
        .filter(|r| r.outside_noise == Some(true))
        .collect();
    let mut out = format!(
        "\n## against {}: {} of {compared} compared rows changed by more than their noise band\n",
        path.display(),
        flagged.len()
    );
    let skipped: Vec<&Row> = rows.iter().filter(|r| r.not_compared.is_some()).collect();
    if !skipped.is_empty() {
        out.push_str(&format!(
            "{} rows not compared, timed differently from the old run (in batches against one \
             by one, or the reverse):",
            skipped.len()
        ));
        for r in skipped {
            out.push_str(&format!(
                " {} {} {};",
                r.workload.as_str(),
                r.mechanism,
                r.size.map(super::table::fmt_size).unwrap_or_default()
            ));
        }
        out.push('\n');
    }
    for r in flagged {
        let (Some(c), Some(b)) = (r.change, r.noise_band) else {
            continue;
        };
        out.push_str(&format!(
            "{} {} {}{}: {:+.1}% ({}; band ±{:.1}%, by {})\n",
            r.workload.as_str(),
            r.mechanism,
            r.size.map(super::table::fmt_size).unwrap_or_default(),
            r.variant.map(|v| format!(" {v}")).unwrap_or_default(),
            c * 100.0,
            if c > 0.0 { "slower" } else { "faster" },
            b * 100.0,
            match ratio_baseline(r) {
                Some(base) => format!("ratio to {base}"),
                None => "median".into(),
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(w: Workload, id: &str, median: f64, ratio: Option<f64>, spread: Option<f64>) -> Row {
        let mut r = crate::suite::tests_support::row(w, id, Some(64), median, None);
        r.ratio = ratio;
        r.ratio_to = ratio.map(|_| FLOOR);
        r.spread = spread;
        r
    }

    fn old(r: &Row) -> OldRow {
        OldRow {
            workload: r.workload.as_str().into(),
            mechanism: r.mechanism.clone(),
            size: r.size.map(|s| s as u64),
            variant: r.variant.map(String::from),
            median_ns: r.median_ns,
            ratio: r.ratio,
            ratio_to: r.ratio_to.map(String::from),
            spread: r.spread,
            timing: timing_name(r),
        }
    }

    #[test]
    fn a_change_beyond_the_spread_is_flagged_and_one_within_is_not() {
        let before = [
            row(Workload::Rtt, FLOOR, 100.0, Some(1.0), Some(0.05)),
            row(Workload::Rtt, "q", 200.0, Some(2.0), Some(0.05)),
            row(Workload::Rtt, "p", 30_000.0, Some(300.0), Some(0.05)),
        ];
        let old: Vec<OldRow> = before.iter().map(old).collect();
        // The floor doubled (the host moved the vCPUs): q's ratio is unchanged, so q is
        // not flagged although its nanoseconds doubled; p got 30% slower by ratio.
        let mut now = vec![
            row(Workload::Rtt, FLOOR, 200.0, Some(1.0), Some(0.05)),
            row(Workload::Rtt, "q", 400.0, Some(2.0), Some(0.05)),
            row(Workload::Rtt, "p", 78_000.0, Some(390.0), Some(0.05)),
            row(Workload::Rtt, "new-one", 1.0, None, None),
        ];
        compare(&mut now, &old);
        assert_eq!(now[1].change, Some(0.0));
        assert_eq!(now[1].outside_noise, Some(false));
        let p = now[2].change.unwrap();
        assert!((p - 0.3).abs() < 1e-9, "{p}");
        // Band: the row's spread plus the floor's, 10%.
        assert!((now[2].noise_band.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(now[2].outside_noise, Some(true));
        // The floor itself compares nanoseconds: +100%, flagged.
        assert_eq!(now[0].outside_noise, Some(true));
        assert_eq!(now[3].change, None);
        assert_eq!(cell(&now[3]), "new");
        assert_eq!(cell(&now[2]), "+30.0% !");
    }

    #[test]
    fn rows_without_repeats_get_the_default_band() {
        let before = [row(Workload::Mpmc, "m", 100.0, None, None)];
        let old: Vec<OldRow> = before.iter().map(old).collect();
        let mut now = vec![row(Workload::Mpmc, "m", 108.0, None, None)];
        compare(&mut now, &old);
        assert_eq!(now[0].noise_band, Some(DEFAULT_BAND));
        assert_eq!(now[0].outside_noise, Some(false));
    }

    #[test]
    fn rows_timed_differently_are_not_compared() {
        use crate::measure::Timing;
        let timed = |median: f64, ratio: f64, t: Option<Timing>| {
            let mut r = row(Workload::Rtt, "q", median, Some(ratio), Some(0.05));
            r.timing = t;
            r
        };
        let floor = row(Workload::Rtt, FLOOR, 100.0, Some(1.0), Some(0.05));
        let before = [floor.clone(), timed(200.0, 2.0, Some(Timing::PerOp))];
        let old: Vec<OldRow> = before.iter().map(old).collect();
        assert_eq!(old[1].timing.as_deref(), Some("per_op"));
        // Half the time, but a batch mean against a median of single round trips: no change.
        let mut now = vec![floor.clone(), timed(100.0, 1.0, Some(Timing::Batch))];
        compare(&mut now, &old);
        assert_eq!(now[1].change, None);
        assert_eq!(now[1].not_compared, Some("timed differently"));
        assert_eq!(cell(&now[1]), "timing");
        assert!(summary(&now, Path::new("old.json")).contains("timed differently"));
        // The same timing compares as before; an old run without the field too.
        let mut same = vec![floor.clone(), timed(100.0, 1.0, Some(Timing::PerOp))];
        compare(&mut same, &old);
        assert_eq!(same[1].not_compared, None);
        assert!((same[1].change.unwrap() + 0.5).abs() < 1e-9);
        let mut untimed = old.clone();
        untimed[1].timing = None;
        let mut now = vec![floor, timed(100.0, 1.0, Some(Timing::Batch))];
        compare(&mut now, &untimed);
        assert!(now[1].change.is_some());
    }
}
