//! Helpers shared by the CLI tests: unique names, cleanup, running the built binary.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// `shmkit-test-cli-TAG-PID-N`: unique per process and call.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "shmkit-test-cli-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes the segments (and named semaphores of the same names) when dropped.
pub struct Guard(pub Vec<String>);

impl Drop for Guard {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = std::fs::remove_file(format!("/dev/shm/{n}"));
            let _ = std::fs::remove_file(format!("/dev/shm/sem.{n}"));
        }
    }
}

/// Parses `--json` output: JSON Lines, one object per line (the CLI's one shape); each
/// line must be a JSON object with `kind`, `name` and `op`.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            for k in ["kind", "name", "op"] {
                assert!(v.get(k).is_some(), "no {k:?} in {l}");
            }
            v
        })
        .collect()
}

/// The one record of a `--json` output about one object.
pub fn json_one(text: &str) -> serde_json::Value {
    let mut v = json_lines(text);
    assert_eq!(v.len(), 1, "not one line: {text}");
    v.remove(0)
}

/// `--json` lines as one JSON array (for lists: `ls`, `gc`, `mq ls`).
pub fn json_rows(text: &str) -> serde_json::Value {
    serde_json::Value::Array(json_lines(text))
}

/// Runs the built `shmkit` with `args` (stdin closed).
pub fn shmkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shmkit"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run shmkit")
}

/// Runs `shmkit args`, asserts success, returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = shmkit(args);
    assert!(
        o.status.success(),
        "shmkit {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs `shmkit args`, asserts it fails with exit status 1 and exactly one line on stderr
/// (no panic); returns that line.
pub fn fails(args: &[&str]) -> String {
    one_line_failure(&format!("shmkit {args:?}"), &shmkit(args))
}

/// Asserts that a run ended with exit status 1 (not a signal) and exactly one line
/// `shmkit: ...` on stderr (no panic); returns that line.
pub fn one_line_failure(what: &str, o: &Output) -> String {
    use std::os::unix::process::ExitStatusExt;
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.signal(), None, "{what}: killed by a signal");
    assert_eq!(o.status.code(), Some(1), "{what}: {err}");
    assert_eq!(err.lines().count(), 1, "{what}: not one line: {err}");
    assert!(
        err.starts_with("shmkit: ") && !err.contains("panicked"),
        "{what}: {err}"
    );
    err
}
