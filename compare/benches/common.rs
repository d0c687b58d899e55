//! Shared criterion settings for the comparison benches.

use std::time::Duration;

use criterion::Criterion;

/// Few samples, short runs: each sample forks a peer process.
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
}

/// Aborts the bench with the adapter's error (a bench cannot return one).
pub fn must<T>(r: shmkit::Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}
