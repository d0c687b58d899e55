//! Real-time signal events across real processes. This test owns `main` (harness = false)
//! so that the signals are blocked before any thread exists, as the listener requires.
//!
//! Signal numbers: `SIGRTMIN+1` carries data to children, `+2` is a control signal to
//! children, `+3` tells the parent a child is ready.

mod common;

use std::time::{Duration, Instant};

use shmkit::Error;
use shmkit::signal::{SignalListener, SignalNotifier};

const LIMIT: Duration = Duration::from_secs(30);
const DATA: u32 = 1;
const CONTROL: u32 = 2;
const READY: u32 = 3;

fn parent_pid() -> u32 {
    common::args()[0].parse().unwrap()
}

fn say_ready() {
    SignalNotifier::new(READY)
        .unwrap()
        .notify(parent_pid(), u64::from(std::process::id()))
        .unwrap();
}

fn spawn(test: &str, role: &str, ready: &SignalListener) -> std::process::Child {
    let me = std::process::id().to_string();
    let c = common::child(test, role, &[&me]).spawn().unwrap();
    let m = ready.recv_timeout(LIMIT).expect("child never became ready");
    assert_eq!(m.payload, u64::from(c.id()));
    assert_eq!(m.sender_pid, c.id());
    c
}

fn run_child(role: &str) {
    match role {
        "ordered" => {
            let data = SignalListener::new(DATA).unwrap();
            let control = SignalListener::new(CONTROL).unwrap();
            say_ready();
            // Read nothing until the parent has queued everything: all of it must be
            // pending at once, in order, none lost.
            let n = control.recv_timeout(LIMIT).unwrap().payload;
            for i in 0..n {
                let m = data.try_recv().unwrap();
                assert_eq!(m.payload, i * 0x1_0000_0001, "out of order or lost");
                assert_eq!(m.sender_pid, parent_pid());
                assert!(m.queued);
            }
            assert!(matches!(data.try_recv(), Err(Error::WouldBlock { .. })));
        }
        "tiny-queue" => {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_SIGPENDING, 4, 4)
                .unwrap();
            let _data = SignalListener::new(DATA).unwrap();
            say_ready();
            // Hold the queue full until killed.
            std::thread::sleep(LIMIT);
        }
        "notify4" => {
            say_ready();
            let n = SignalNotifier::new(4).unwrap();
            for i in 1..=20u64 {
                n.notify(parent_pid(), i).unwrap();
            }
        }
        "idle" => {
            let _data = SignalListener::new(DATA).unwrap();
            say_ready();
            std::thread::sleep(LIMIT);
        }
        "threaded" => {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
            let t = std::thread::spawn(move || {
                // glibc starts a thread with every signal blocked and installs the
                // inherited mask once it runs: report only after that.
                started_tx.send(()).unwrap();
                rx.recv()
            });
            started_rx.recv_timeout(LIMIT).unwrap();
            let e = SignalListener::new(7).unwrap_err();
            assert!(e.to_string().contains("before spawning threads"), "{e}");
            drop(tx);
            let _ = t.join();
        }
        r => panic!("unknown role {r}"),
    }
}

fn payloads_arrive_in_order_none_lost(ready: &SignalListener) {
    const N: u64 = 2000;
    let mut c = spawn("payloads_arrive_in_order_none_lost", "ordered", ready);
    let data = SignalNotifier::new(DATA).unwrap();
    for i in 0..N {
        data.notify(c.id(), i * 0x1_0000_0001).unwrap();
    }
    SignalNotifier::new(CONTROL)
        .unwrap()
        .notify(c.id(), N)
        .unwrap();
    common::wait_ok(&mut c, LIMIT);
}

fn queue_overflow_is_reported(ready: &SignalListener) {
    let mut c = spawn("queue_overflow_is_reported", "tiny-queue", ready);
    let data = SignalNotifier::new(DATA).unwrap();
    let mut sent = 0;
    let e = loop {
        match data.notify(c.id(), sent) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent <= 4, "RLIMIT_SIGPENDING of 4 was not enforced");
    };
    assert_eq!(e.errno(), Some(nix::errno::Errno::EAGAIN), "{e}");
    assert!(e.to_string().contains("RLIMIT_SIGPENDING"), "{e}");
    c.kill().unwrap();
    c.wait().unwrap();
}

fn dead_receiver_is_disconnected(ready: &SignalListener) {
    let mut c = spawn("dead_receiver_is_disconnected", "idle", ready);
    let pid = c.id();
    c.kill().unwrap();
    c.wait().unwrap();
    let e = SignalNotifier::new(DATA)
        .unwrap()
        .notify(pid, 1)
        .unwrap_err();
    assert!(matches!(e, Error::Disconnected { .. }), "{e}");
}

fn listener_refuses_unblocked_threads(_: &SignalListener) {
    let mut c = common::child("listener_refuses_unblocked_threads", "threaded", &["0"])
        .spawn()
        .unwrap();
    common::wait_ok(&mut c, LIMIT);
}

fn bounded_waits_and_polling(_: &SignalListener) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let l = SignalListener::new(4).unwrap();
    assert!(matches!(l.try_recv(), Err(Error::WouldBlock { .. })));
    let t = Instant::now();
    let e = l.recv_timeout(Duration::from_millis(50)).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(50));
    SignalNotifier::new(4)
        .unwrap()
        .notify(std::process::id(), 99)
        .unwrap();
    let mut fds = [PollFd::new(l.as_fd(), PollFlags::POLLIN)];
    assert_eq!(poll(&mut fds, PollTimeout::from(10_000u16)).unwrap(), 1);
    let m = l.recv_timeout(Duration::MAX).unwrap();
    assert_eq!(
        (m.payload, m.sender_pid, m.queued),
        (99, std::process::id(), true)
    );
    // A thread that unblocked the signal cannot receive (it would die on delivery).
    let e = std::thread::scope(|s| {
        s.spawn(|| {
            // nix's SigSet cannot name real-time signals: go through libc.
            // SAFETY: `raw` is initialised by sigemptyset before sigaddset; unblocking
            // in this thread only.
            unsafe {
                let mut raw: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut raw);
                libc::sigaddset(&mut raw, libc::SIGRTMIN() + 4);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &raw, std::ptr::null_mut());
            }
            l.try_recv().unwrap_err()
        })
        .join()
        .unwrap()
    });
    assert!(e.to_string().contains("does not block"), "{e}");
}

/// The async listener (feature `tokio`) receives every notification from another
/// process, in order, on a current-thread runtime (signal blocked before it starts).
fn async_listener_across_processes(ready: &SignalListener) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = shmkit::aio::AsyncSignalListener::new(SignalListener::new(4).unwrap()).unwrap();
        let mut c = spawn("async_listener_across_processes", "notify4", ready);
        for i in 1..=20u64 {
            let m = tokio::time::timeout(LIMIT, l.recv())
                .await
                .expect("notification did not arrive")
                .unwrap();
            assert_eq!((m.payload, m.sender_pid), (i, c.id()));
        }
        common::wait_ok(&mut c, LIMIT);
    });
}

type Test = fn(&SignalListener);

fn main() {
    if let Some(role) = common::role() {
        run_child(&role);
        std::process::exit(0);
    }
    // Before any thread: every signal the tests use is blocked in main.
    for n in [DATA, CONTROL, READY, 4] {
        shmkit::signal::block(n).unwrap();
    }
    let ready = SignalListener::new(READY).unwrap();
    let tests: &[(&str, Test)] = &[
        (
            "payloads_arrive_in_order_none_lost",
            payloads_arrive_in_order_none_lost,
        ),
        ("queue_overflow_is_reported", queue_overflow_is_reported),
        (
            "dead_receiver_is_disconnected",
            dead_receiver_is_disconnected,
        ),
        (
            "listener_refuses_unblocked_threads",
            listener_refuses_unblocked_threads,
        ),
        ("bounded_waits_and_polling", bounded_waits_and_polling),
        (
            "async_listener_across_processes",
            async_listener_across_processes,
        ),
    ];
    common::run_tests_with(tests, |f| f(&ready));
}
