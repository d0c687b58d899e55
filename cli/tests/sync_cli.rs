//! `shmkit event`, `shmkit sem`, `shmkit mutex` on real objects.

mod common;

use common::{Guard, fails, ok, unique};
use shmkit::sync::{Event, Mutex};

#[test]
fn event_commands() {
    let n = unique("ev");
    let _g = Guard(vec![n.clone()]);
    ok(&["event", "create", &n]);
    let err = fails(&["event", "wait", &n, "--timeout", "0.01"]);
    assert!(err.contains("timed out"), "{err}");
    ok(&["event", "set", &n]);
    assert!(Event::open(&n).unwrap().is_set());
    assert_eq!(ok(&["event", "wait", &n]).trim(), "set");
    ok(&["event", "clear", &n]);
    assert!(!Event::open(&n).unwrap().is_set());
    let err = fails(&["event", "wait", &n, "--timeout=-1"]);
    assert!(err.contains("--timeout"), "{err}");
}

fn with<'a>(a: &[&'a str], flag: &[&'a str]) -> Vec<&'a str> {
    [a, flag].concat()
}

#[test]
fn semaphore_commands_in_a_segment_and_named() {
    for named in [false, true] {
        let n = unique("sem");
        let _g = Guard(vec![n.clone()]);
        let flag: &[&str] = if named { &["--named"] } else { &[] };
        ok(&with(&["sem", "create", &n, "1"], flag));
        ok(&with(&["sem", "post", &n], flag));
        assert_eq!(ok(&with(&["sem", "value", &n], flag)).trim(), "2");
        ok(&with(&["sem", "wait", &n], flag));
        ok(&with(&["sem", "wait", &n], flag));
        let err = fails(&with(&["sem", "wait", &n, "--timeout", "0.01"], flag));
        assert!(err.contains("timed out"), "{err}");
        if named {
            ok(&["sem", "unlink", &n]);
        }
    }
}

#[test]
fn mutex_status_and_repair_after_a_holder_died() {
    let n = unique("mx");
    let _g = Guard(vec![n.clone()]);
    let m = Mutex::<u64>::create(&n, 0).unwrap();
    assert!(ok(&["mutex", "status", &n]).contains("unlocked"));
    // A process that exits holding the mutex is a dead owner.
    // SAFETY: the child only opens the mutex, locks it (drawing its liveness token: open,
    // fcntl and a small allocation, which glibc's fork-safe malloc allows) and leaves with
    // _exit; it takes no lock another thread could hold.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let code = match Mutex::<u64>::open(&n)
                .and_then(|c| c.lock().map(|g| std::mem::forget(g.into_guard())))
            {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: ends the child at once, without unwinding or atexit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
    assert!(ok(&["mutex", "status", &n]).contains("DIED"));
    assert!(ok(&["mutex", "repair", &n]).contains("had died"));
    assert!(ok(&["mutex", "repair", &n]).contains("nothing to repair"));
    assert!(!m.lock().unwrap().owner_died());
    // Given up (unrecoverable): status says so, lockers fail, repair resets it in place.
    m.lock().unwrap().into_guard().mark_unrecoverable();
    assert!(ok(&["mutex", "status", &n]).contains("NOT RECOVERABLE"));
    assert!(matches!(m.lock(), Err(shmkit::Error::Unrecoverable { .. })));
    assert!(ok(&["mutex", "repair", &n]).contains("NOT RECOVERABLE"));
    assert!(!m.lock().unwrap().owner_died());
    assert!(ok(&["mutex", "status", &n]).contains("unlocked"));
    // Not a mutex: a clear error.
    let e = unique("notmx");
    let _g2 = Guard(vec![e.clone()]);
    Event::create(&e).unwrap();
    let err = fails(&["mutex", "status", &e]);
    assert!(err.contains("kind"), "{err}");
}
