//! `shmkit event`, `shmkit sem`, `shmkit mutex` on real objects.

mod common;

use common::{Guard, fails, json_one, ok, shmkit, unique};
use shmkit::sync::{Event, Mutex};

#[test]
fn event_commands() {
    let n = unique("ev");
    let _g = Guard(vec![n.clone()]);
    ok(&["event", "create", &n]);
    let err = fails(&["event", "wait", &n, "--timeout", "10ms"]);
    assert!(err.contains("timed out"), "{err}");
    ok(&["event", "set", &n]);
    assert!(Event::open(&n).unwrap().is_set());
    assert_eq!(ok(&["event", "wait", &n]).trim(), "set");
    assert_eq!(
        json_one(&ok(&["event", "wait", &n, "--json"]))["data"],
        "set"
    );
    ok(&["event", "clear", &n]);
    assert!(!Event::open(&n).unwrap().is_set());
    assert_eq!(ok(&["event", "get", &n]), "clear\n");
    ok(&["event", "set", &n]);
    let j = json_one(&ok(&["event", "get", &n, "--json"]));
    assert_eq!(
        (&j["kind"], &j["op"], &j["data"]),
        (&"event".into(), &"get".into(), &"set".into())
    );
    assert_eq!(
        json_one(&ok(&["event", "stat", &n, "--json"]))["kind"],
        "event"
    );
    // Not a duration: usage errors (exit 2) that say what to write.
    for bad in ["-1s", "1", "10"] {
        let o = shmkit(&["event", "wait", &n, &format!("--timeout={bad}")]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--timeout"),
            "{o:?}"
        );
    }
    let o = shmkit(&["event", "wait", &n, "--timeout", "10"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("10ms or 10s"),
        "{o:?}"
    );
    assert!(fails(&["mutex", "rm", &n]).contains("kind mismatch"));
    assert!(ok(&["event", "rm", &n]).contains("removed"));
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
        let err = fails(&with(&["sem", "wait", &n, "--timeout", "10ms"], flag));
        assert!(err.contains("timed out"), "{err}");
        let j = json_one(&ok(&with(&["sem", "get", &n, "--json"], flag)));
        let kind = if named {
            "posix-semaphore"
        } else {
            "semaphore"
        };
        assert_eq!((&j["kind"], &j["data"]), (&kind.into(), &0.into()));
        assert!(json_one(&ok(&with(&["sem", "stat", &n, "--json"], flag)))["name"] == n.as_str());
        assert!(ok(&with(&["sem", "rm", &n], flag)).contains("removed"));
        assert!(fails(&with(&["sem", "value", &n], flag)).contains("ENOENT"));
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
    // A read after the death: the data, a warning, and the mutex left marked inconsistent.
    let o = shmkit(&["mutex", "get", &n, "--json", "--timeout", "5s"]);
    assert!(o.status.success(), "{o:?}");
    let j = json_one(&String::from_utf8_lossy(&o.stdout));
    assert_eq!((&j["data"], &j["consistent"]), (&0.into(), &false.into()));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("inconsistent"),
        "{o:?}"
    );
    let stat = json_one(&ok(&["mutex", "stat", &n, "--json"]));
    assert!(
        stat["consistency"]
            .as_str()
            .unwrap()
            .contains("inconsistent"),
        "{stat}"
    );
    assert!(ok(&["mutex", "repair", &n]).contains("had died"));
    let j = json_one(&ok(&["mutex", "repair", &n, "--json"]));
    assert_eq!(
        (&j["op"], &j["data"]),
        (&"repair".into(), &"consistent".into())
    );
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
    assert!(fails(&["mutex", "get", &e]).contains("kind"));
}

#[test]
fn mutex_create_get_under_the_lock_with_a_bounded_wait() {
    let n = unique("mxget");
    let _g = Guard(vec![n.clone()]);
    ok(&["mutex", "create", &n, "--type", "i16", "--init", "-3"]);
    assert_eq!(ok(&["mutex", "get", &n]), "-3\n");
    let m = Mutex::<i16>::open(&n).unwrap();
    *m.lock().unwrap().into_guard() = 12;
    let j = json_one(&ok(&["mutex", "get", &n, "--json"]));
    assert_eq!(
        (
            &j["kind"],
            &j["op"],
            &j["type"],
            &j["data"],
            &j["consistent"]
        ),
        (
            &"mutex".into(),
            &"get".into(),
            &"i16".into(),
            &12.into(),
            &true.into()
        )
    );
    // Held by this process: `get` gives up after its timeout.
    let g = m.lock().unwrap().into_guard();
    assert!(fails(&["mutex", "get", &n, "--timeout", "50ms"]).contains("timed out"));
    drop(g);
    // A MutexArray: every element.
    let a = unique("mxarr");
    let _g2 = Guard(vec![a.clone()]);
    let _arr = shmkit::sync::MutexArray::<u32>::create(&a, 3, 4).unwrap();
    assert_eq!(ok(&["mutex", "get", &a]), "4 4 4\n");
    assert_eq!(
        json_one(&ok(&["mutex", "get", &a, "--json"]))["data"],
        serde_json::json!([4, 4, 4])
    );
    assert!(ok(&["mutex", "rm", &n, &a]).contains("removed"));
}
