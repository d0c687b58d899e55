//! The one duration syntax of every `--timeout`, `--older-than` (and any later time flag):
//! a decimal number followed by a unit, `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h` or `d`:
//! `1.5s`, `250ms`, `10us`, `2m`, `7d`. A bare number is refused with a message that says
//! to add a unit, so `--timeout 100` can never silently mean 100 seconds (or 100 ms).
//!
//! (`humantime` takes no fractions (`1.5s`) and its error for a bare number does not say
//! which unit to add; this is the whole grammar, so it is written out here.)

use std::time::Duration;

/// The units, longest suffix first so that `ms` is not read as `s`.
const UNITS: [(&str, f64); 9] = [
    ("ns", 1e-9),
    ("us", 1e-6),
    ("µs", 1e-6),
    ("ms", 1e-3),
    ("s", 1.0),
    ("m", 60.0),
    ("h", 3600.0),
    ("d", 86400.0),
    ("", 0.0), // sentinel: no unit
];

/// Parses `1.5s`, `250ms`, `10us`, `2m`... (clap `value_parser`).
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(num_end);
    let valid_num = !num.is_empty() && num != "." && num.matches('.').count() <= 1;
    if !valid_num {
        return Err(format!(
            "{s:?} is not a duration: write a number and a unit, e.g. 1.5s, 250ms, 10us, 2m"
        ));
    }
    if unit.is_empty() {
        return Err(format!(
            "{s:?} has no unit: write e.g. {num}ms or {num}s (units: ns, us, ms, s, m, h, d)"
        ));
    }
    let Some(&(_, scale)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!(
            "{s:?}: unknown unit {unit:?} (units: ns, us, ms, s, m, h, d)"
        ));
    };
    num.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v * scale).ok())
        .ok_or_else(|| format!("{s:?} is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        let ms = Duration::from_millis;
        assert_eq!(parse("1.5s"), Ok(ms(1500)));
        assert_eq!(parse("250ms"), Ok(ms(250)));
        assert_eq!(parse("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse(".5s"), Ok(ms(500)));
    }

    #[test]
    fn a_bare_number_is_refused_and_the_error_says_to_add_a_unit() {
        for bare in ["100", "0", "1.5"] {
            let e = parse(bare).unwrap_err();
            assert!(
                e.contains("no unit") && e.contains(&format!("{bare}ms")),
                "{e}"
            );
        }
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "s",
            "-1s",
            "1..2s",
            ".s",
            "1e3s",
            "inf",
            "nans",
            "1 s s",
            "5 parsecs",
            "1sec",
            "1S",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("99999999999999999999d").is_err());
    }
}
