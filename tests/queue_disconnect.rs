//! Disconnection across real processes: a producer process that exits, closes or is
//! SIGKILLed; a consumer process that dies; `Sender` handles shared by threads.

mod common;

use std::time::{Duration, Instant};

use shmkit::queue::{Mode, Queue, RecvError, TryRecvError, TrySendError};

const LONG: Duration = Duration::from_secs(20);

fn arg(i: usize) -> String {
    common::args()[i].clone()
}

/// Child: opens the queue, sends `n` messages, then ends as told: `drop` (the handle is
/// dropped, then the process exits), `close` (closes, then waits to be killed), `exit`
/// (exits without dropping: counted as dead) or `hang` (stays attached until killed).
fn producer_child() {
    let q = Queue::<u64>::open(&arg(0)).unwrap();
    let n: u64 = arg(1).parse().unwrap();
    for i in 0..n {
        q.send_timeout(i, LONG).unwrap();
    }
    match arg(2).as_str() {
        "drop" => {
            drop(q);
            std::process::exit(0);
        }
        "close" => {
            q.close();
            common::tell("closed");
            std::thread::sleep(LONG); // killed by the parent
            std::process::exit(0);
        }
        "exit" => std::process::exit(0),
        _ => {
            common::tell("sent");
            std::thread::sleep(LONG); // killed by the parent
            std::process::exit(0);
        }
    }
}

fn setup(tag: &str, mode: Mode) -> (String, common::ShmGuard, Queue<u64>) {
    let name = common::unique(tag);
    let g = common::ShmGuard::new(&name);
    let q = Queue::<u64>::options()
        .mode(mode)
        .capacity(16)
        .create(&name)
        .unwrap();
    (name, g, q)
}

const TEST: &str = "producer_process_ending_disconnects_the_consumer";

#[test]
fn producer_process_ending_disconnects_the_consumer() {
    if common::role().is_some() {
        producer_child();
    }
    for mode in [Mode::Spsc, Mode::Mpmc] {
        for how in ["drop", "exit"] {
            let (name, _g, q) = setup("qd-exit", mode);
            let mut c = common::child(TEST, "p", &[&name, "5", how])
                .spawn()
                .unwrap();
            common::wait_ok(&mut c, LONG);
            // Messages first, then Disconnected: blocking, with a long timeout (returns
            // early), and try_recv.
            for i in 0..5 {
                assert_eq!(q.recv_timeout(LONG).unwrap(), i, "{mode:?} {how}");
            }
            let t = Instant::now();
            assert!(
                q.recv_timeout(LONG).unwrap_err().is_disconnected(),
                "{mode:?} {how}"
            );
            assert!(matches!(q.recv(), Err(RecvError::Disconnected)));
            assert!(matches!(q.try_recv(), Err(TryRecvError::Disconnected)));
            assert!(t.elapsed() < LONG / 2, "{mode:?} {how}: {:?}", t.elapsed());
            if how == "exit" {
                assert_eq!(q.peer_deaths(), 1, "an exit without drop is a death");
            }
        }
    }
}

#[test]
fn sigkilled_last_producer_disconnects_within_a_bounded_time() {
    if common::role().is_some() {
        producer_child();
    }
    let t_name = "sigkilled_last_producer_disconnects_within_a_bounded_time";
    for mode in [Mode::Spsc, Mode::Mpmc] {
        let (name, _g, q) = setup("qd-kill", mode);
        let mut c = common::child(t_name, "p", &[&name, "3", "hang"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let l = common::Listener::new(c.stdout.take().unwrap());
        assert_eq!(l.next(LONG), "sent");
        for i in 0..3 {
            assert_eq!(q.recv_timeout(LONG).unwrap(), i);
        }
        // Still attached: empty, not disconnected.
        assert!(matches!(q.try_recv(), Err(TryRecvError::Empty)));
        let _ = c.kill();
        let _ = c.wait();
        // A blocked receiver notices the dead producer by itself (no wake-up comes).
        let t = Instant::now();
        assert!(q.recv_timeout(LONG).unwrap_err().is_disconnected());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(q.peer_deaths(), 1);
        assert_eq!(q.last_dead_peer(), Some(c.id()));
    }
}

#[test]
fn close_ends_the_stream_while_the_process_lives() {
    if common::role().is_some() {
        producer_child();
    }
    let t_name = "close_ends_the_stream_while_the_process_lives";
    let (name, _g, q) = setup("qd-close", Mode::Mpmc);
    let mut c = common::child(t_name, "p", &[&name, "4", "close"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let l = common::Listener::new(c.stdout.take().unwrap());
    // iter() ends at the disconnection: every message, then nothing.
    let got: Vec<u64> = q.iter().take(10).collect();
    assert_eq!(l.next(LONG), "closed");
    assert_eq!(got, [0, 1, 2, 3]);
    assert!(matches!(q.try_recv(), Err(TryRecvError::Disconnected)));
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn consumer_death_disconnects_the_sender() {
    if common::role().is_some() {
        let q = Queue::<u64>::open(&arg(0)).unwrap();
        q.attach_consumer();
        common::tell("attached");
        std::thread::sleep(LONG); // killed by the parent
        std::process::exit(0);
    }
    let (name, _g, q) = setup("qd-cons", Mode::Mpmc);
    let mut c = common::child("consumer_death_disconnects_the_sender", "c", &[&name])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let l = common::Listener::new(c.stdout.take().unwrap());
    assert_eq!(l.next(LONG), "attached");
    let _ = c.kill();
    let _ = c.wait();
    // What fits waits for the next consumer; once full, the sender is told.
    let mut sent = 0;
    let t = Instant::now();
    loop {
        match q.try_send(sent) {
            Ok(()) => sent += 1,
            Err(TrySendError::Full(_)) => {
                assert!(t.elapsed() < LONG);
                let e = q.send_timeout(99, LONG).unwrap_err();
                assert!(e.is_disconnected(), "{e}");
                assert_eq!(e.into_inner(), 99);
                break;
            }
            Err(TrySendError::Disconnected(v)) => {
                assert_eq!(v, sent);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(sent, 16, "the queue was filled first");
}
