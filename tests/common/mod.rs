//! Shared helpers for the integration tests: unique names, cleanup guards, and running a
//! test's own binary as a child process in a given role.
//!
//! Pattern:
//! ```ignore
//! #[test]
//! fn adds_from_children() {
//!     if let Some(role) = common::role() {          // we are a child
//!         match role.as_str() { "adder" => { /* ... */ } _ => unreachable!() }
//!         std::process::exit(0);
//!     }
//!     let name = common::unique("adds");
//!     let _guard = common::ShmGuard::new(&name);
//!     let mut c = common::child("adds_from_children", "adder", &[&name]).spawn().unwrap();
//!     common::wait_ok(&mut c, std::time::Duration::from_secs(30));
//! }
//! ```
#![allow(dead_code)]

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const ROLE_VAR: &str = "SHMKIT_TEST_ROLE";
const ARGS_VAR: &str = "SHMKIT_TEST_ARGS";

/// A name unique to this process and call: `shmkit-test-TAG-PID-N`.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "shmkit-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Unlinks a POSIX shm object when dropped (also on panic).
pub struct ShmGuard(pub String);

impl ShmGuard {
    pub fn new(name: &str) -> Self {
        ShmGuard(name.to_owned())
    }
}

impl Drop for ShmGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/{}", self.0.trim_start_matches('/')));
    }
}

/// Removes a file path when dropped.
pub struct PathGuard(pub std::path::PathBuf);

impl Drop for PathGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes a directory tree when dropped.
pub struct DirGuard(pub std::path::PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The role this process plays when it was started by [`child`], if any.
pub fn role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// The arguments passed to [`child`].
pub fn args() -> Vec<String> {
    std::env::var(ARGS_VAR)
        .map(|s| s.split('\u{1f}').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A command that re-runs this test binary, only the test `test_name`, as `role`.
pub fn child(test_name: &str, role: &str, args: &[&str]) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut c = Command::new(exe);
    c.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .env(ARGS_VAR, args.join("\u{1f}"))
        .stdin(Stdio::null());
    c
}

/// [`child`] with piped stdin (the child blocks on it; dropping the handle's stdin lets
/// it go) and stdout (read through the returned [`Listener`]), spawned.
pub fn spawn_talking(test_name: &str, role: &str, args: &[&str]) -> (Child, Listener) {
    let mut c = child(test_name, role, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let l = Listener::new(c.stdout.take().expect("child stdout"));
    (c, l)
}

/// Waits for a child at most `limit`, killing it (and failing) if it takes longer.
pub fn wait_bounded(c: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = c.try_wait().expect("try_wait") {
            return st;
        }
        if start.elapsed() > limit {
            let _ = c.kill();
            let _ = c.wait();
            panic!("child {} did not finish within {limit:?}", c.id());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether the thread running a child's test is asleep (`S`). A child re-executed as a
/// test role runs it on a thread of the test harness while the main thread waits for
/// that thread (asleep from the start): so with several threads, one other than the
/// main thread must sleep.
pub fn test_thread_asleep(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let tids: Vec<u32> = tasks
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let asleep = |tid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.bytes().next()))
            == Some(b'S')
    };
    match tids[..] {
        [only] => asleep(only),
        _ => tids.iter().any(|&t| t != pid && asleep(t)),
    }
}

/// Waits (bounded) and asserts success.
pub fn wait_ok(c: &mut Child, limit: Duration) {
    let st = wait_bounded(c, limit);
    assert!(st.success(), "child {} failed: {st:?}", c.id());
}

const TAG: &str = "@@shmkit@@ ";

/// Child side: sends one line to the parent over stdout (libtest writes its own lines
/// there too, so protocol lines carry a tag).
pub fn tell(msg: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // libtest may have written "test NAME ... " without a newline: start a fresh line.
    let _ = writeln!(out, "\n{TAG}{msg}");
    let _ = out.flush();
}

/// Parent side: reads the next tagged line from a child's stdout; the rest of the output
/// is drained in the background so the child never dies of a broken pipe.
pub struct Listener {
    rx: std::sync::mpsc::Receiver<String>,
}

impl Listener {
    pub fn new(out: std::process::ChildStdout) -> Self {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find(TAG) {
                    // A send error only means nobody listens any more: keep draining.
                    let _ = tx.send(line[i + TAG.len()..].to_owned());
                }
            }
        });
        Listener { rx }
    }

    /// The next tagged line, waiting at most `limit`.
    pub fn next(&self, limit: Duration) -> String {
        self.rx
            .recv_timeout(limit)
            .expect("child did not report in time")
    }
}

/// A minimal libtest stand-in for `harness = false` tests: `--list`, `--ignored` (none
/// is), name filters; runs each test, catching panics; exits 1 if any failed.
pub fn run_tests(tests: &[(&str, fn())]) {
    run_tests_with(tests, |f| f())
}

/// [`run_tests`] for tests that take something from `main` (`call` runs one).
pub fn run_tests_with<T>(tests: &[(&str, T)], call: impl Fn(&T)) {
    if !run_tests_status(tests, call) {
        std::process::exit(1);
    }
}

/// [`run_tests_with`] that returns whether every test passed instead of exiting, so that
/// `main` can drop its cleanup guards before `exit(1)` (exit runs no destructors).
pub fn run_tests_status<T>(tests: &[(&str, T)], call: impl Fn(&T)) -> bool {
    if std::env::args().any(|a| a == "--ignored") {
        return true;
    }
    if std::env::args().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return true;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = Vec::new();
    for (name, f) in tests {
        if !filter.is_empty() && !filter.iter().any(|x| name.contains(x.as_str())) {
            continue;
        }
        println!("test {name} ... ");
        let t = Instant::now();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(f))) {
            Ok(()) => println!("test {name} ... ok ({:?})", t.elapsed()),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        eprintln!("failed: {failed:?}");
        return false;
    }
    true
}

/// A xorshift64 generator seeded with `seed` and this process's id (test randomness
/// without a dependency; not for anything that needs quality).
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = (seed ^ u64::from(std::process::id())) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
