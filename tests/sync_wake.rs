//! Condvar, Event, Barrier and semaphores across real processes: every waiter is woken,
//! a killed waiter does not hang a notify, timeouts are honoured, semaphore counts are
//! conserved, and a `NamedSemaphore` is shared with Python's `posix_ipc` and with C.

mod common;

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shmkit::Value;
use shmkit::sync::{
    Barrier, Condvar, Event, LockResult, Mutex, NamedSemaphore, Semaphore, SyncState,
};

const LIMIT: Duration = Duration::from_secs(20);

/// Polls `cond` until true, failing after `LIMIT` (a bounded wait, not a sleep).
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn spawn(test: &str, role: &str, args: &[&str]) -> std::process::Child {
    common::child(test, role, args).spawn().unwrap()
}

#[test]
fn event_set_wakes_every_waiting_process() {
    const T: &str = "event_set_wakes_every_waiting_process";
    if common::role().is_some() {
        let ev = Event::open(&common::args()[0]).unwrap();
        assert!(ev.wait_timeout(LIMIT).unwrap(), "not woken");
        std::process::exit(0);
    }
    let name = common::unique("ev");
    let _g = common::ShmGuard::new(&name);
    let ev = Event::create(&name).unwrap();
    let mut kids: Vec<_> = (0..4).map(|_| spawn(T, "waiter", &[&name])).collect();
    until("4 sleeping waiters", || ev.raw().state().1 == 4);
    ev.set();
    for c in &mut kids {
        common::wait_ok(c, LIMIT);
    }
    assert_eq!(ev.raw().state(), (true, 0));
}

#[test]
fn condvar_notify_all_wakes_every_waiting_process() {
    const T: &str = "condvar_notify_all_wakes_every_waiting_process";
    if common::role().is_some() {
        let a = common::args();
        let m = Mutex::<u32>::open(&a[0]).unwrap();
        let cv = Condvar::open(&a[1]).unwrap();
        let g = m.lock_timeout(LIMIT).unwrap().into_guard();
        let (g, r) = cv.wait_timeout_while(g, LIMIT, |v| *v == 0).unwrap();
        assert!(!r.timed_out());
        assert_eq!(*g.into_guard(), 7);
        std::process::exit(0);
    }
    let (mn, cn) = (common::unique("cvm"), common::unique("cv"));
    let _g = (common::ShmGuard::new(&mn), common::ShmGuard::new(&cn));
    let m = Mutex::<u32>::create(&mn, 0).unwrap();
    let cv = Condvar::create(&cn).unwrap();
    let mut kids: Vec<_> = (0..4).map(|_| spawn(T, "waiter", &[&mn, &cn])).collect();
    until("4 registered waiters", || cv.raw().waiters() == 4);
    *m.lock().unwrap().into_guard() = 7;
    cv.notify_all();
    for c in &mut kids {
        common::wait_ok(c, LIMIT);
    }
    assert_eq!(cv.raw().waiters(), 0);
}

#[test]
fn killed_waiter_does_not_hang_notify_all_or_set() {
    const T: &str = "killed_waiter_does_not_hang_notify_all_or_set";
    if let Some(role) = common::role() {
        let a = common::args();
        let m = Mutex::<u32>::open(&a[0]).unwrap();
        let cv = Condvar::open(&a[1]).unwrap();
        let ev = Event::open(&a[2]).unwrap();
        if role == "cv" {
            let g = m.lock_timeout(LIMIT).unwrap().into_guard();
            let (g, r) = cv.wait_timeout_while(g, LIMIT, |v| *v == 0).unwrap();
            assert!(!r.timed_out());
            drop(g);
        } else {
            assert!(ev.wait_timeout(LIMIT).unwrap());
        }
        std::process::exit(0);
    }
    let (mn, cn, en) = (
        common::unique("kwm"),
        common::unique("kwc"),
        common::unique("kwe"),
    );
    let _g = (
        common::ShmGuard::new(&mn),
        common::ShmGuard::new(&cn),
        common::ShmGuard::new(&en),
    );
    let m = Mutex::<u32>::create(&mn, 0).unwrap();
    let cv = Condvar::create(&cn).unwrap();
    let ev = Event::create(&en).unwrap();
    let args = [mn.as_str(), cn.as_str(), en.as_str()];
    let mut victims = vec![spawn(T, "cv", &args), spawn(T, "ev", &args)];
    until("victims asleep", || {
        cv.raw().waiters() == 1 && ev.raw().state().1 == 1
    });
    for v in &mut victims {
        kill(Pid::from_raw(v.id() as i32), Signal::SIGKILL).unwrap();
        let _ = v.wait();
    }
    // The dead waiters stay counted; that must cost nothing but a wake system call.
    let mut kids = vec![spawn(T, "cv", &args), spawn(T, "ev", &args)];
    until("survivors asleep", || {
        cv.raw().waiters() == 2 && ev.raw().state().1 == 2
    });
    *m.lock().unwrap().into_guard() = 1;
    cv.notify_all();
    ev.set();
    for c in &mut kids {
        common::wait_ok(c, LIMIT);
    }
    // The mutex was never held by a victim at death (they were asleep, unlocked).
    assert!(matches!(m.lock().unwrap(), LockResult::Acquired(_)));
}

#[test]
fn timeouts_are_honoured_across_processes() {
    const T: &str = "timeouts_are_honoured_across_processes";
    if common::role().is_some() {
        let m = Mutex::<u32>::open(&common::args()[0]).unwrap();
        let _g = m.lock().unwrap().into_guard();
        loop {
            std::thread::park(); // hold until killed
        }
    }
    let name = common::unique("tmo");
    let _g = common::ShmGuard::new(&name);
    let m = Mutex::<u32>::create(&name, 0).unwrap();
    let mut holder = spawn(T, "holder", &[&name]);
    until("holder locked", || m.raw().owner().token != 0);
    let d = Duration::from_millis(30);
    let t = Instant::now();
    assert!(m.lock_timeout(d).unwrap_err().is_timeout());
    assert!(t.elapsed() >= d);
    assert!(matches!(
        m.try_lock(),
        Err(shmkit::Error::WouldBlock { .. })
    ));

    let ev = Event::anonymous().unwrap();
    let t = Instant::now();
    assert!(!ev.wait_timeout(d).unwrap());
    assert!(t.elapsed() >= d);

    let m2 = Mutex::<u32>::anonymous(0).unwrap();
    let cv = Condvar::anonymous().unwrap();
    let t = Instant::now();
    let (g, r) = cv.wait_timeout(m2.lock().unwrap().into_guard(), d).unwrap();
    assert!(r.timed_out() && t.elapsed() >= d);
    drop(g);

    let s = Semaphore::anonymous(0).unwrap();
    let t = Instant::now();
    assert!(s.wait_timeout(d).unwrap_err().is_timeout());
    assert!(t.elapsed() >= d);

    let b = Barrier::anonymous(2).unwrap();
    let t = Instant::now();
    assert!(b.wait_timeout(d).unwrap_err().is_timeout());
    assert!(t.elapsed() >= d);

    kill(Pid::from_raw(holder.id() as i32), Signal::SIGKILL).unwrap();
    let _ = holder.wait();
    let r = m.lock_timeout(LIMIT).unwrap();
    assert!(r.owner_died());
    r.into_guard().make_consistent().unwrap();
}

#[test]
fn semaphore_counts_are_conserved_under_concurrency() {
    const T: &str = "semaphore_counts_are_conserved_under_concurrency";
    const PERMITS: u32 = 2;
    const ROUNDS: u32 = 2000;
    if common::role().is_some() {
        let a = common::args();
        let s = Semaphore::open(&a[0]).unwrap();
        let inside = Value::<i64>::open(&a[1]).unwrap();
        let peak = Value::<i64>::open(&a[2]).unwrap();
        for _ in 0..ROUNDS {
            s.wait_timeout(LIMIT).unwrap();
            let now = inside.fetch_add(1) + 1;
            let mut p = peak.load();
            while now > p {
                match peak.compare_exchange(p, now) {
                    Ok(_) => break,
                    Err(cur) => p = cur,
                }
            }
            inside.fetch_sub(1);
            s.post().unwrap();
        }
        std::process::exit(0);
    }
    let (sn, inn, pn) = (
        common::unique("sem"),
        common::unique("semin"),
        common::unique("sempk"),
    );
    let _g = (
        common::ShmGuard::new(&sn),
        common::ShmGuard::new(&inn),
        common::ShmGuard::new(&pn),
    );
    let s = Semaphore::create(&sn, PERMITS).unwrap();
    let _inside = Value::<i64>::create(&inn, 0).unwrap();
    let peak = Value::<i64>::create(&pn, 0).unwrap();
    let mut kids: Vec<_> = (0..4)
        .map(|_| spawn(T, "user", &[&sn, &inn, &pn]))
        .collect();
    for c in &mut kids {
        common::wait_ok(c, Duration::from_secs(60));
    }
    assert_eq!(s.value(), PERMITS, "permits lost or created");
    assert!(
        peak.load() <= PERMITS as i64,
        "more holders than permits: {}",
        peak.load()
    );
    assert!(peak.load() >= 1);
}

#[test]
fn barrier_releases_processes_together() {
    const T: &str = "barrier_releases_processes_together";
    if common::role().is_some() {
        let b = Barrier::open(&common::args()[0]).unwrap();
        for _ in 0..50 {
            b.wait_timeout(LIMIT).unwrap();
        }
        std::process::exit(0);
    }
    let name = common::unique("bar");
    let _g = common::ShmGuard::new(&name);
    let b = Barrier::create(&name, 3).unwrap();
    let mut kids: Vec<_> = (0..2).map(|_| spawn(T, "p", &[&name])).collect();
    let leaders = (0..50)
        .filter(|_| b.wait_timeout(LIMIT).unwrap().is_leader())
        .count();
    for c in &mut kids {
        common::wait_ok(c, LIMIT);
    }
    assert!(leaders <= 50);
    let st = shmkit::sync::describe(b.segment());
    assert!(
        matches!(
            st,
            Some(SyncState::Barrier {
                arrived: 0,
                parties: 3,
                ..
            })
        ),
        "{st:?}"
    );
}

fn python_posix_ipc() -> std::process::Command {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import posix_ipc"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 with posix_ipc is required for this test: pip install posix_ipc"
    );
    std::process::Command::new("python3")
}

#[test]
fn named_semaphore_interoperates_with_python_posix_ipc() {
    let name = common::unique("nsem-py");
    let _g = common::PathGuard(format!("/dev/shm/sem.{name}").into());
    // Rust creates, Python posts 3 times and reads the value.
    let s = NamedSemaphore::create(&name, 1).unwrap();
    let out = python_posix_ipc()
        .args([
            "-c",
            "import posix_ipc, sys\n\
             s = posix_ipc.Semaphore('/' + sys.argv[1])\n\
             s.acquire(5)\n\
             for _ in range(3): s.release()\n\
             print(s.value)\n\
             s.close()",
            &name,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    assert_eq!(s.value(), 3);
    for _ in 0..3 {
        s.try_wait().unwrap();
    }
    assert!(s.try_wait().is_err());
    drop(s);
    NamedSemaphore::unlink(&name).unwrap();

    // Python creates, Rust opens and waits for Python's post.
    let name2 = common::unique("nsem-py2");
    let _g2 = common::PathGuard(format!("/dev/shm/sem.{name2}").into());
    let mut py = python_posix_ipc()
        .args([
            "-c",
            "import posix_ipc, sys\n\
             s = posix_ipc.Semaphore('/' + sys.argv[1], posix_ipc.O_CREX, 0o600, 0)\n\
             print('ready', flush=True)\n\
             s.release()\n\
             s.close()",
            &name2,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(py.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let s2 = NamedSemaphore::open(&name2).unwrap();
    s2.wait_timeout(LIMIT).unwrap();
    common::wait_ok(&mut py, LIMIT);
    NamedSemaphore::unlink(&name2).unwrap();
}

#[test]
fn named_semaphore_interoperates_with_c() {
    let dir = std::env::temp_dir().join(common::unique("csem"));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("post.c");
    let exe = dir.join("post");
    let _g = common::DirGuard(dir.clone());
    std::fs::write(
        &src,
        "#include <semaphore.h>\n#include <fcntl.h>\n#include <stdio.h>\n\
         int main(int argc, char **argv) {\n\
           sem_t *s = sem_open(argv[1], 0);\n\
           if (s == SEM_FAILED) { perror(\"sem_open\"); return 2; }\n\
           if (sem_wait(s) != 0) return 3;\n\
           if (sem_post(s) != 0 || sem_post(s) != 0) return 4;\n\
           return sem_close(s);\n\
         }\n",
    )
    .unwrap();
    let cc = std::process::Command::new("cc")
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg("-pthread")
        .status()
        .expect("a C compiler (cc) is required for this test");
    assert!(cc.success());
    let name = common::unique("nsem-c");
    let _g2 = common::PathGuard(format!("/dev/shm/sem.{name}").into());
    let s = NamedSemaphore::create(&name, 1).unwrap();
    let st = std::process::Command::new(&exe)
        .arg(format!("/{name}"))
        .status()
        .unwrap();
    assert!(st.success(), "{st:?}");
    assert_eq!(s.value(), 2);
    NamedSemaphore::unlink(&name).unwrap();
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn rwlock_dead_writer_is_taken_over_and_shown_by_info() {
    const T: &str = "rwlock_dead_writer_is_taken_over_and_shown_by_info";
    if common::role().is_some() {
        let l = shmkit::sync::RwLock::<u64>::open(&common::args()[0]).unwrap();
        let mut g = l.write().unwrap();
        *g = 1;
        loop {
            std::thread::park(); // killed holding the write lock
        }
    }
    let name = common::unique("rw");
    let _g = common::ShmGuard::new(&name);
    let l = shmkit::sync::RwLock::<u64>::create(&name, 0).unwrap();
    {
        // Many readers at once, across handles.
        let other = shmkit::sync::RwLock::<u64>::open(&name).unwrap();
        let (_r1, _r2) = (l.read().unwrap(), other.read().unwrap());
        let st = shmkit::sync::describe(l.segment());
        assert!(
            matches!(st, Some(SyncState::RwLock { state, .. }) if state.readers == 2),
            "{st:?}"
        );
    }
    let mut c = spawn(T, "writer", &[&name]);
    until("writer holds the lock", || l.try_read().is_err());
    let pid = c.id();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let _ = c.wait();
    // Before anyone locks, `info` shows the dead writer; the next locker takes the lock
    // over and learns that a writer died (the RwLock is robust to writers' deaths).
    let st = shmkit::sync::describe(l.segment());
    assert!(
        matches!(st, Some(SyncState::RwLock { state, writer_alive: false })
            if state.write_locked && state.writer_pid == pid),
        "{st:?}"
    );
    let r = l.read_timeout(Duration::from_secs(20)).unwrap();
    assert!(r.writer_died());
    assert_eq!(*r, 1);
    drop(r);
    let st = shmkit::sync::describe(l.segment());
    assert!(
        matches!(st, Some(SyncState::RwLock { state, .. }) if state.writer_died),
        "{st:?}"
    );
    let mut w = l.write_timeout(Duration::from_secs(20)).unwrap();
    w.make_consistent();
    drop(w);
    assert!(!l.read().unwrap().writer_died());
}

#[test]
fn condvar_waiter_learns_that_the_mutex_holder_died() {
    const T: &str = "condvar_waiter_learns_that_the_mutex_holder_died";
    if let Some(role) = common::role() {
        let a = common::args();
        let m = Mutex::<u32>::open(&a[0]).unwrap();
        let cv = Condvar::open(&a[1]).unwrap();
        if role == "waiter" {
            let g = m.lock_timeout(LIMIT).unwrap().into_guard();
            let (r, t) = cv.wait_timeout_while(g, LIMIT, |v| *v == 0).unwrap();
            assert!(!t.timed_out());
            // The holder that changed the value died before unlocking.
            let LockResult::OwnerDied(mut g) = r else {
                panic!("owner death not reported through the condvar");
            };
            assert_eq!(*g, 5);
            g.make_consistent().unwrap();
            drop(g); // exit() runs no destructors: unlock first
            std::process::exit(0);
        }
        // "dier": lock, change, notify while holding, die holding.
        let mut g = m.lock_timeout(LIMIT).unwrap().into_guard();
        *g = 5;
        cv.notify_all();
        std::process::exit(0);
    }
    let (mn, cn) = (common::unique("cdm"), common::unique("cdc"));
    let _g = (common::ShmGuard::new(&mn), common::ShmGuard::new(&cn));
    let m = Mutex::<u32>::create(&mn, 0).unwrap();
    let cv = Condvar::create(&cn).unwrap();
    let mut w = spawn(T, "waiter", &[&mn, &cn]);
    until("waiter registered", || cv.raw().waiters() == 1);
    let mut d = spawn(T, "dier", &[&mn, &cn]);
    common::wait_ok(&mut d, LIMIT);
    common::wait_ok(&mut w, LIMIT);
    assert!(matches!(m.lock().unwrap(), LockResult::Acquired(_)));
}
