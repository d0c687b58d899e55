//! fork() while a lock is held (the classic "logging lock" deadlock), with a real fork.
//!
//! A shmkit `Mutex` is process-shared and owned by the *parent process* (its liveness
//! token), which still lives after the fork: the child, which draws a token of its own,
//! blocks until the parent unlocks, then proceeds. A
//! `std::sync::Mutex` held by another thread at fork time stays locked forever in the
//! child, because the thread that would unlock the child's copy does not exist there.

use std::time::Duration;

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use shmkit::sync::{Event, LockResult, Mutex};

const LIMIT: Duration = Duration::from_secs(20);

/// Leaves a forked child without running atexit handlers or unwinding.
fn child_exit(code: i32) -> ! {
    // SAFETY: _exit only ends the process; it is async-signal-safe and touches no state
    // another (non-existent, in the child) thread could hold.
    unsafe { libc::_exit(code) }
}

/// Waits for `pid` at most LIMIT; returns its exit code.
fn wait_child(pid: Pid) -> i32 {
    let start = std::time::Instant::now();
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::Exited(_, code) => return code,
            WaitStatus::StillAlive => {}
            other => panic!("child ended abnormally: {other:?}"),
        }
        if start.elapsed() > LIMIT {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, None);
            panic!("forked child did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn fork_while_another_thread_holds_the_lock() {
    let shm = std::sync::Arc::new(Mutex::<u64>::anonymous(0).unwrap());
    let private = std::sync::Arc::new(std::sync::Mutex::new(0u64));
    let child_tried = Event::anonymous().unwrap();
    let released = Event::anonymous().unwrap();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();

    // Another thread of the parent holds both locks across the fork.
    let holder = {
        let (shm, private) = (shm.clone(), private.clone());
        std::thread::spawn(move || {
            let g1 = shm.lock().unwrap().into_guard();
            let g2 = private.lock().unwrap();
            locked_tx.send(()).unwrap();
            release_rx.recv_timeout(LIMIT).unwrap();
            drop(g2);
            drop(g1);
        })
    };
    locked_rx.recv_timeout(LIMIT).unwrap();

    // SAFETY: the child only uses shmkit locks and events (futex calls on shared memory,
    // and drawing its own liveness token: open + fcntl and a small allocation, which
    // glibc's fork-safe malloc allows), reads an atomic and exits with _exit; it takes no
    // lock that another thread could have left held (error paths format only on failure).
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            // Both look locked in the child.
            if shm.try_lock().is_ok() {
                child_exit(10);
            }
            if private.try_lock().is_ok() {
                child_exit(11);
            }
            child_tried.set();
            // The shmkit lock's owner is the parent's thread, alive: we wait for it.
            match shm.lock_timeout(LIMIT) {
                Ok(LockResult::Acquired(mut g)) => *g += 1,
                Ok(LockResult::OwnerDied(_)) => child_exit(12),
                Err(_) => child_exit(13),
            }
            // The private lock never comes free in the child, even after the parent's
            // thread released its own copy.
            if !released.wait_timeout(LIMIT).unwrap_or(false) {
                child_exit(14);
            }
            if private.try_lock().is_ok() {
                child_exit(15);
            }
            child_exit(0);
        }
        ForkResult::Parent { child } => {
            assert!(child_tried.wait_timeout(LIMIT).unwrap());
            release_tx.send(()).unwrap();
            holder.join().unwrap();
            released.set();
            assert_eq!(
                wait_child(child),
                0,
                "see the exit codes in the child branch"
            );
            assert_eq!(*shm.lock().unwrap().into_guard(), 1);
            // In the parent the private lock is free again, of course.
            drop(private.try_lock().unwrap());
        }
    }
}

#[test]
fn fork_while_the_forking_thread_holds_the_lock() {
    let m = Mutex::<u64>::anonymous(0).unwrap();
    let dropped = Event::anonymous().unwrap();
    let mut g = m.lock().unwrap().into_guard();
    *g = 5;
    let parent_token = m.raw().owner().token;
    // SAFETY: as above, the child only uses shmkit objects and exits with _exit.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            // The child has a copy of the guard but does not own the lock (the owner is
            // the parent's liveness token; the child draws its own): dropping it must not
            // release the parent's lock.
            drop(g);
            if m.raw().owner().token != parent_token {
                child_exit(20);
            }
            dropped.set();
            match m.lock_timeout(LIMIT) {
                Ok(LockResult::Acquired(mut g)) if *g == 6 => *g = 7,
                _ => child_exit(21),
            }
            child_exit(0);
        }
        ForkResult::Parent { child } => {
            assert!(dropped.wait_timeout(LIMIT).unwrap());
            *g = 6;
            drop(g);
            assert_eq!(wait_child(child), 0);
            assert_eq!(*m.lock().unwrap().into_guard(), 7);
        }
    }
}
