//! `Process` (and `Pool`, `logging`) across real processes. This test owns `main`
//! (harness = false): a child re-executes this binary and must dispatch in
//! `shmkit::process::init` before any test runner starts.

mod common;

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use shmkit::Error;
use shmkit::process::{Entry, ExitStatus, Failure, Process, StartMethod, current_process};

const LIMIT: Duration = Duration::from_secs(30);

fn double(x: u64) -> u64 {
    x * 2
}
fn whoami(_: ()) -> (String, u32, Option<u32>) {
    let me = current_process();
    (me.name.to_owned(), me.pid, me.parent)
}
fn sleep_forever(_: ()) {
    std::thread::sleep(Duration::from_secs(3600));
}
fn panics(msg: String) -> u8 {
    panic!("{msg}")
}
fn exits(code: i32) {
    std::process::exit(code)
}
fn big(n: usize) -> Vec<u8> {
    vec![7; n]
}
/// Starts a grandchild that sleeps, publishes its pid in the named value, then sleeps.
fn middle(value: String) {
    let v = shmkit::Value::<u32>::open(&value).unwrap();
    let gc = Process::new(&SLEEP, ()).name("grandchild").start().unwrap();
    v.store(gc.pid());
    std::thread::sleep(Duration::from_secs(3600));
}
fn unregistered(_: ()) {}

static DOUBLE: Entry<u64, u64> = shmkit::entry!(double);
static WHOAMI: Entry<(), (String, u32, Option<u32>)> = shmkit::entry!(whoami);
static SLEEP: Entry<(), ()> = shmkit::entry!(sleep_forever);
static PANICS: Entry<String, u8> = shmkit::entry!(panics);
static EXITS: Entry<i32, ()> = shmkit::entry!(exits);
static BIG: Entry<usize, Vec<u8>> = shmkit::entry!(big);
static MIDDLE: Entry<String, ()> = shmkit::entry!(middle);
static UNREGISTERED: Entry<(), ()> = shmkit::entry!(unregistered);

fn starts_joins_and_names() {
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let mut p = Process::new(&DOUBLE, 21)
            .start_method(method)
            .start()
            .unwrap();
        assert!(p.name().starts_with("Process-"), "{}", p.name());
        assert_eq!(p.join_timeout(LIMIT).unwrap(), 42);
        assert_eq!(p.exit_status().unwrap(), Some(ExitStatus::Code(0)));
        assert!(!p.is_alive());
        assert!(p.join().unwrap_err().to_string().contains("already joined"));

        let mut w = Process::new(&WHOAMI, ())
            .name("worker-a")
            .start_method(method)
            .start()
            .unwrap();
        let pid = w.pid();
        let (name, child_pid, parent) = w.join_timeout(LIMIT).unwrap();
        assert_eq!(name, "worker-a");
        assert_eq!(child_pid, pid);
        assert_eq!(parent, Some(std::process::id()));
    }
    let me = current_process();
    assert_eq!((me.name, me.parent), ("MainProcess", None));
}

fn large_results_do_not_deadlock_join() {
    let mut p = Process::new(&BIG, 3 << 20).start().unwrap();
    assert_eq!(p.join_timeout(LIMIT).unwrap().len(), 3 << 20);
}

fn join_timeout_terminate_and_kill() {
    let mut p = Process::new(&SLEEP, ()).start().unwrap();
    assert!(p.is_alive());
    let t = Instant::now();
    let e = p.join_timeout(Duration::from_millis(100)).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert!(p.is_alive());
    p.terminate().unwrap();
    let e = p.join_timeout(LIMIT).unwrap_err();
    match e {
        Error::Failed {
            failure: Failure::Died { pid, status },
            ..
        } => {
            assert_eq!(pid, p.pid());
            assert_eq!(status, ExitStatus::Signal(libc::SIGTERM));
        }
        e => panic!("{e}"),
    }
    assert_eq!(p.exit_status().unwrap().unwrap().exitcode(), -libc::SIGTERM);

    let mut p = Process::new(&SLEEP, ())
        .start_method(StartMethod::Fork)
        .start()
        .unwrap();
    p.kill().unwrap();
    let e = p.join_timeout(LIMIT).unwrap_err();
    assert!(e.to_string().contains("SIGKILL"), "{e}");
    // Signalling an exited, reaped child is not an error and reaches nobody else.
    p.kill().unwrap();
}

fn panics_and_exit_codes_are_reported() {
    let mut p = Process::new(&PANICS, "boom 7".to_owned()).start().unwrap();
    let e = p.join_timeout(LIMIT).unwrap_err();
    assert!(
        matches!(&e, Error::Failed { failure: Failure::Panicked(m), .. } if m == "boom 7"),
        "{e}"
    );
    assert_eq!(p.exit_status().unwrap(), Some(ExitStatus::Code(101)));

    let mut p = Process::new(&EXITS, 3).start().unwrap();
    let e = p.join_timeout(LIMIT).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Failed {
                failure: Failure::Died {
                    status: ExitStatus::Code(3),
                    ..
                },
                ..
            }
        ),
        "{e}"
    );
}

fn unregistered_entries_are_refused() {
    let e = Process::new(&UNREGISTERED, ()).start().unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Failed {
                failure: Failure::NotRegistered(_),
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("shmkit::process::init"), "{e}");
}

fn pidfd_of(pid: u32) -> OwnedFd {
    // SAFETY: pidfd_open takes integers and returns a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    assert!(r >= 0, "pidfd_open({pid})");
    // SAFETY: just returned by the kernel, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

/// Waits until the process behind `fd` exits, at most `limit`.
fn exits_within(fd: &OwnedFd, limit: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
    poll(&mut fds, PollTimeout::from(ms)).unwrap() == 1
}

fn children_die_with_their_parent() {
    let name = common::unique("proc-middle");
    let _g = common::ShmGuard::new(&name);
    let v = shmkit::Value::<u32>::create(&name, 0).unwrap();
    let m = Process::new(&MIDDLE, name.clone()).start().unwrap();
    let start = Instant::now();
    let gc = loop {
        match v.load() {
            0 if start.elapsed() < LIMIT => std::thread::yield_now(),
            0 => panic!("the middle process never started its child"),
            pid => break pid,
        }
    };
    let gc_fd = pidfd_of(gc);
    assert!(!exits_within(&gc_fd, Duration::ZERO));
    m.kill().unwrap();
    // PR_SET_PDEATHSIG: the grandchild is killed by the kernel, well within a second.
    assert!(
        exits_within(&gc_fd, Duration::from_secs(1)),
        "grandchild {gc} outlived its parent"
    );
}

fn main() {
    shmkit::process::init(&[&DOUBLE, &WHOAMI, &SLEEP, &PANICS, &EXITS, &BIG, &MIDDLE]);
    let tests: &[(&str, fn())] = &[
        ("starts_joins_and_names", starts_joins_and_names),
        (
            "large_results_do_not_deadlock_join",
            large_results_do_not_deadlock_join,
        ),
        (
            "join_timeout_terminate_and_kill",
            join_timeout_terminate_and_kill,
        ),
        (
            "panics_and_exit_codes_are_reported",
            panics_and_exit_codes_are_reported,
        ),
        (
            "unregistered_entries_are_refused",
            unregistered_entries_are_refused,
        ),
        (
            "children_die_with_their_parent",
            children_die_with_their_parent,
        ),
    ];
    common::run_tests(tests);
}
