//! Async forms (features `async`, `tokio`) across real processes: async receivers and
//! senders against blocking peers, cancellation, a killed async waiter, current-thread
//! and multi-thread runtimes, and the kernel transports through tokio.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use shmkit::queue::{ByteQueue, Mode, Queue, RecvError};
use shmkit::sync::Event;

const LONG: Duration = Duration::from_secs(30);

fn arg(i: usize) -> String {
    common::args()[i].clone()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `f` on `rt`, failing the test if it takes longer than [`LONG`].
fn bounded<F: Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    rt.block_on(async { tokio::time::timeout(LONG, f).await })
        .expect("async operation did not finish in time")
}

/// A waker that records that it was called.
struct Flag(AtomicBool);
impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A new MPMC `Queue<u64>` of `capacity` slots named `name`.
fn mpmc_u64(name: &str, capacity: u64) -> Queue<u64> {
    Queue::<u64>::options()
        .mode(Mode::Mpmc)
        .capacity(capacity)
        .create(name)
        .unwrap()
}

/// Opens the MPMC `Queue<u64>` named `name`.
fn open_mpmc_u64(name: &str) -> Queue<u64> {
    Queue::<u64>::options().mode(Mode::Mpmc).open(name).unwrap()
}

/// Polls `f` once with a waker that does nothing; returns whether it completed.
fn poll_once<F: Future>(f: F) -> bool {
    let mut f = pin!(f);
    matches!(
        f.as_mut().poll(&mut Context::from_waker(Waker::noop())),
        Poll::Ready(_)
    )
}

#[test]
fn async_receiver_sync_sender_across_processes() {
    if let Some(_role) = common::role() {
        let q = Queue::<u64>::open(&arg(0)).unwrap();
        for i in 0..2000u64 {
            q.send_timeout(i, LONG).unwrap();
        }
        std::process::exit(0);
    }
    for (rt, tag) in [(current_thread(), "ct"), (multi_thread(), "mt")] {
        let name = common::unique(&format!("aio-rx-{tag}"));
        let _g = common::ShmGuard::new(&name);
        // Small and SPSC: the sender blocks on a full ring, the receiver on an empty one.
        let mut q = Queue::<u64>::options()
            .mode(Mode::Spsc)
            .capacity(4)
            .create(&name)
            .unwrap();
        let mut c = common::child(
            "async_receiver_sync_sender_across_processes",
            "tx",
            &[&name],
        )
        .spawn()
        .unwrap();
        let got = bounded(&rt, async {
            let mut v = Vec::new();
            for _ in 0..2000 {
                v.push(q.recv_async().await.unwrap());
            }
            v
        });
        assert_eq!(got, (0..2000).collect::<Vec<_>>());
        common::wait_ok(&mut c, LONG);
        assert_eq!(q.sleepers(), (0, 0));
    }
}

#[test]
fn async_sender_sync_receiver_across_processes() {
    if let Some(_role) = common::role() {
        let q = ByteQueue::open(&arg(0)).unwrap();
        let mut buf = Vec::new();
        for i in 0..2000u32 {
            q.recv_timeout(&mut buf, LONG).unwrap();
            assert_eq!(buf, i.to_le_bytes().repeat(1 + i as usize % 7));
        }
        std::process::exit(0);
    }
    for (rt, tag) in [(multi_thread(), "mt"), (current_thread(), "ct")] {
        let name = common::unique(&format!("aio-tx-{tag}"));
        let _g = common::ShmGuard::new(&name);
        let mut q = ByteQueue::create(&name, 2, 64).unwrap();
        let mut c = common::child(
            "async_sender_sync_receiver_across_processes",
            "rx",
            &[&name],
        )
        .spawn()
        .unwrap();
        // Spawned (so the future must be Send) on the multi-thread runtime.
        let q = bounded(&rt, async move {
            tokio::spawn(async move {
                for i in 0..2000u32 {
                    let m = i.to_le_bytes().repeat(1 + i as usize % 7);
                    q.send_async(&m).await.unwrap();
                }
                q
            })
            .await
        })
        .unwrap();
        common::wait_ok(&mut c, LONG);
        assert_eq!(q.sleepers(), (0, 0));
    }
}

#[test]
fn dropped_async_recv_leaves_the_queue_usable() {
    if let Some(_role) = common::role() {
        let q = open_mpmc_u64(&arg(0));
        q.send(7).unwrap();
        std::process::exit(0);
    }
    let name = common::unique("aio-drop");
    let _g = common::ShmGuard::new(&name);
    let mut q = mpmc_u64(&name, 8);
    {
        let f = q.recv_async();
        let mut f = pin!(f);
        let pending = f
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending();
        assert!(pending, "empty queue");
    }
    // Dropped while registered: no sleeper count remains (and the registration went
    // with the future), so the sender's fast path makes no system call.
    assert_eq!(q.sleepers(), (0, 0));
    let mut c = common::child("dropped_async_recv_leaves_the_queue_usable", "tx", &[&name])
        .spawn()
        .unwrap();
    common::wait_ok(&mut c, LONG);
    assert_eq!(q.recv_timeout(LONG).unwrap(), 7);
    // And a dropped send on a full queue sends nothing.
    let mut small = Queue::<u64>::anonymous(1).unwrap();
    small.send(1).unwrap();
    assert!(!poll_once(small.send_async(2)));
    assert_eq!(small.sleepers(), (0, 0));
    assert_eq!(small.recv().unwrap(), 1);
    assert!(small.try_recv().is_err());
}

#[test]
fn async_zero_copy_across_processes_and_cancelled_claims() {
    if let Some(_role) = common::role() {
        // Echo: receive every message (blocking), send it back.
        let q = ByteQueue::open(&arg(0)).unwrap();
        let back = ByteQueue::open(&arg(1)).unwrap();
        let mut buf = Vec::new();
        for _ in 0..500 {
            q.recv_timeout(&mut buf, LONG).unwrap();
            back.send_timeout(&buf, LONG).unwrap();
        }
        std::process::exit(0);
    }
    let (n1, n2) = (common::unique("aio-zc-a"), common::unique("aio-zc-b"));
    let _g = (common::ShmGuard::new(&n1), common::ShmGuard::new(&n2));
    let mut out = ByteQueue::create(&n1, 2, 256).unwrap();
    let mut back = ByteQueue::create(&n2, 2, 256).unwrap();
    // A pending zero-copy receive dropped before anything arrived claims nothing.
    assert!(!poll_once(back.recv_ref_async()));
    assert_eq!(back.sleepers(), (0, 0));
    let mut c = common::child(
        "async_zero_copy_across_processes_and_cancelled_claims",
        "echo",
        &[&n1, &n2],
    )
    .spawn()
    .unwrap();
    let rt = multi_thread();
    bounded(&rt, async {
        for i in 0..500usize {
            let m = vec![(i % 251) as u8; i % 200];
            let mut slot = out.reserve_async(m.len()).await.unwrap();
            slot.copy_from_slice(&m);
            slot.commit();
            let r = back.recv_ref_async().await.unwrap();
            assert_eq!(&*r, &m[..]);
        }
    });
    common::wait_ok(&mut c, LONG);
    // A zero-copy send dropped while the queue is full claims no slot: the receiver
    // gets exactly what was committed, in order, and nothing after it.
    let mut q = Queue::<u64>::options()
        .mode(Mode::Spsc)
        .capacity(2)
        .anonymous()
        .unwrap();
    let mut rx = q.try_clone().unwrap();
    for v in [1, 2] {
        q.reserve_async_commit(v);
    }
    assert!(!poll_once(q.reserve_async()));
    assert_eq!(q.sleepers(), (0, 0));
    assert_eq!(rx.recv().unwrap(), 1);
    q.reserve_async_commit(3);
    assert_eq!(rx.recv().unwrap(), 2);
    assert_eq!(rx.recv().unwrap(), 3);
    assert!(rx.try_recv().is_err());
    let rt = current_thread();
    assert_eq!(
        *bounded(&rt, async {
            q.send(4).unwrap();
            rx.recv_ref_async().await
        })
        .unwrap(),
        4
    );
}

trait CommitAsync {
    fn reserve_async_commit(&mut self, v: u64);
}

impl CommitAsync for Queue<u64> {
    fn reserve_async_commit(&mut self, v: u64) {
        let rt = current_thread();
        rt.block_on(async {
            let mut s = self.reserve_async().await.unwrap();
            *s = v;
            s.commit();
        });
    }
}

#[test]
fn killed_async_waiter_does_not_block_the_sender() {
    if let Some(_role) = common::role() {
        let mut q = open_mpmc_u64(&arg(0));
        let rt = current_thread();
        rt.block_on(async {
            let mut f = pin!(q.recv_async());
            std::future::poll_fn(|cx| {
                let r = f.as_mut().poll(cx);
                if r.is_pending() {
                    common::tell("waiting");
                }
                r
            })
            .await
        })
        .unwrap();
        // Only reached if the parent sent before killing us: fail loudly.
        std::process::exit(3);
    }
    let name = common::unique("aio-kill");
    let _g = common::ShmGuard::new(&name);
    let q = mpmc_u64(&name, 8);
    let mut c = common::child(
        "killed_async_waiter_does_not_block_the_sender",
        "w",
        &[&name],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let l = common::Listener::new(c.stdout.take().unwrap());
    assert_eq!(l.next(LONG), "waiting");
    assert_eq!(q.sleepers(), (1, 0), "the async waiter counts as a sleeper");
    c.kill().unwrap();
    let st = common::wait_bounded(&mut c, LONG);
    assert!(!st.success());
    // The dead waiter's count remains (one needless FUTEX_WAKE per send); nothing blocks.
    q.send_timeout(5, LONG).unwrap();
    assert_eq!(q.recv_timeout(LONG).unwrap(), 5);
}

#[test]
fn async_receiver_sees_producers_leave() {
    if let Some(role) = common::role() {
        let q = Queue::<u64>::open(&arg(0)).unwrap();
        for i in 0..3 {
            q.send(i).unwrap();
        }
        if role == "killed" {
            common::tell("sent");
            // Wait to be killed: no close, no drop.
            loop {
                std::thread::park();
            }
        }
        std::process::exit(0); // drops nothing explicitly: exit is the close
    }
    for role in ["exits", "killed"] {
        let name = common::unique(&format!("aio-gone-{role}"));
        let _g = common::ShmGuard::new(&name);
        let mut q = Queue::<u64>::create(&name, 8).unwrap();
        let mut c = common::child("async_receiver_sees_producers_leave", role, &[&name])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let rt = current_thread();
        let out = c.stdout.take().unwrap();
        let observer = Queue::<u64>::open(&name).unwrap();
        let killer = std::thread::spawn(move || {
            if role == "killed" {
                let l = common::Listener::new(out);
                assert_eq!(l.next(LONG), "sent");
                // Kill while the async receiver is registered on the empty queue: the
                // death wakes nobody, its periodic sweep must notice.
                let t = std::time::Instant::now();
                while observer.sleepers().0 == 0 {
                    assert!(t.elapsed() < LONG, "receiver never waited");
                    std::thread::yield_now();
                }
                c.kill().unwrap();
            }
            common::wait_bounded(&mut c, LONG);
        });
        let got = bounded(&rt, async {
            let mut v = Vec::new();
            loop {
                match q.recv_async().await {
                    Ok(x) => v.push(x),
                    Err(RecvError::Disconnected) => break v,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        assert_eq!(got, [0, 1, 2], "{role}: every message, then Disconnected");
        killer.join().unwrap();
        assert_eq!(q.sleepers(), (0, 0));
    }
}

#[test]
fn event_async_wait_across_processes() {
    if let Some(_role) = common::role() {
        let ev = Event::open(&arg(0)).unwrap();
        let go = Event::open(&arg(1)).unwrap();
        go.wait_timeout(LONG).unwrap();
        ev.set();
        std::process::exit(0);
    }
    for (rt, tag) in [(current_thread(), "ct"), (multi_thread(), "mt")] {
        let (n, g) = (
            common::unique(&format!("aio-ev-{tag}")),
            common::unique(&format!("aio-go-{tag}")),
        );
        let _g = (common::ShmGuard::new(&n), common::ShmGuard::new(&g));
        let ev = Event::create(&n).unwrap();
        let go = Event::create(&g).unwrap();
        // A bounded wait that expires leaves no sleeper behind.
        assert!(!bounded(&rt, ev.wait_timeout_async(Duration::from_millis(5))).unwrap());
        assert_eq!(ev.raw().state(), (false, 0));
        let mut c = common::child("event_async_wait_across_processes", "set", &[&n, &g])
            .spawn()
            .unwrap();
        bounded(&rt, async {
            let w = ev.wait_async();
            let mut w = pin!(w);
            // Registered before the setter is told to go: a real wake-up.
            assert!(futures_poll(w.as_mut()).await.is_pending());
            go.set();
            w.await
        })
        .unwrap();
        common::wait_ok(&mut c, LONG);
        assert_eq!(ev.raw().state(), (true, 0));
        assert!(bounded(&rt, ev.wait_timeout_async(LONG)).unwrap());
    }
}

/// Polls a future once from inside a task (with the task's waker).
async fn futures_poll<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    let mut f = Some(f);
    std::future::poll_fn(|cx| Poll::Ready(f.take().map(|f| f.poll(cx))))
        .await
        .unwrap()
}

#[test]
fn async_echo_between_two_async_processes() {
    if let Some(_role) = common::role() {
        let mut a = Queue::<u64>::open(&arg(0)).unwrap();
        let mut b = Queue::<u64>::open(&arg(1)).unwrap();
        let rt = current_thread();
        bounded(&rt, async {
            for _ in 0..1000 {
                let v = a.recv_async().await.unwrap();
                b.send_async(v + 1).await.unwrap();
            }
        });
        std::process::exit(0);
    }
    let (na, nb) = (common::unique("aio-ping"), common::unique("aio-pong"));
    let _g = (common::ShmGuard::new(&na), common::ShmGuard::new(&nb));
    let mut a = Queue::<u64>::create(&na, 4).unwrap();
    let mut b = Queue::<u64>::create(&nb, 4).unwrap();
    let mut c = common::child(
        "async_echo_between_two_async_processes",
        "echo",
        &[&na, &nb],
    )
    .spawn()
    .unwrap();
    let rt = multi_thread();
    bounded(&rt, async {
        for i in 0..1000u64 {
            a.send_async(i).await.unwrap();
            assert_eq!(b.recv_async().await.unwrap(), i + 1);
        }
    });
    common::wait_ok(&mut c, LONG);
}

#[test]
fn many_words_use_more_than_one_waiter_thread() {
    // 200 events waited on at once: more distinct words than one futex_waitv takes.
    let events: Vec<Event> = (0..200).map(|_| Event::anonymous().unwrap()).collect();
    let rt = multi_thread();
    bounded(&rt, async {
        let mut waits: Vec<_> = events.iter().map(|e| Box::pin(e.wait_async())).collect();
        for w in &mut waits {
            assert!(futures_poll(w.as_mut()).await.is_pending());
        }
        let (regs, threads) = shmkit::aio::registrations();
        assert!(
            regs >= 200 && threads >= 2,
            "{regs} waits on {threads} threads"
        );
        for e in events.iter().rev() {
            e.set();
        }
        for w in waits {
            w.await.unwrap();
        }
    });
}

mod transports {
    use super::*;
    use shmkit::aio::{AsyncFifoReader, AsyncFifoWriter, AsyncMessageQueue, AsyncPipe};
    use shmkit::fifo::Fifo;
    use shmkit::mq::MessageQueue;
    use shmkit::pipe::Pipe;

    #[test]
    fn mq_async_round_trip_across_processes() {
        if let Some(_role) = common::role() {
            let rq = MessageQueue::open(&arg(0)).unwrap();
            let aq = MessageQueue::open(&arg(1)).unwrap();
            let mut buf = vec![0u8; rq.msg_size()];
            for _ in 0..50 {
                let (n, p) = rq.recv_timeout(&mut buf, LONG).unwrap();
                aq.send_timeout(&buf[..n], p + 1, LONG).unwrap();
            }
            std::process::exit(0);
        }
        struct Unlink(String);
        impl Drop for Unlink {
            fn drop(&mut self) {
                let _ = MessageQueue::unlink(&self.0);
            }
        }
        let (rn, an) = (common::unique("aio-mq-req"), common::unique("aio-mq-ans"));
        let rq = MessageQueue::create(&rn, 2, 64).unwrap();
        let _u1 = Unlink(rn.clone());
        let aq = MessageQueue::create(&an, 2, 64).unwrap();
        let _u2 = Unlink(an.clone());
        let mut c = common::child(
            "transports::mq_async_round_trip_across_processes",
            "echo",
            &[&rn, &an],
        )
        .spawn()
        .unwrap();
        let rt = current_thread();
        bounded(&rt, async {
            let (rq, aq) = (
                AsyncMessageQueue::new(rq).unwrap(),
                AsyncMessageQueue::new(aq).unwrap(),
            );
            let mut buf = [0u8; 64];
            for i in 0..50u32 {
                rq.send(&i.to_le_bytes(), i % 3).await.unwrap();
                let (n, p) = aq.recv(&mut buf).await.unwrap();
                assert_eq!((&buf[..n], p), (&i.to_le_bytes()[..], i % 3 + 1));
            }
        });
        common::wait_ok(&mut c, LONG);
    }

    #[test]
    fn fifo_async_round_trip_across_processes() {
        if let Some(_role) = common::role() {
            let mut rx = Fifo::open_reader(arg(0)).unwrap();
            let tx = Fifo::open_writer(arg(1), Some(LONG)).unwrap();
            for _ in 0..50 {
                let m = rx.recv_timeout(LONG).unwrap();
                tx.send_timeout(&m, LONG).unwrap();
            }
            std::process::exit(0);
        }
        let dir = std::env::temp_dir();
        let (p1, p2) = (
            dir.join(common::unique("aio-fifo-a")),
            dir.join(common::unique("aio-fifo-b")),
        );
        let _g = (common::PathGuard(p1.clone()), common::PathGuard(p2.clone()));
        Fifo::create(&p1, 0o600).unwrap();
        Fifo::create(&p2, 0o600).unwrap();
        let mut c = common::child(
            "transports::fifo_async_round_trip_across_processes",
            "echo",
            &[p1.to_str().unwrap(), p2.to_str().unwrap()],
        )
        .spawn()
        .unwrap();
        let rx = Fifo::open_reader(&p2).unwrap();
        let tx = Fifo::open_writer(&p1, Some(LONG)).unwrap();
        let rt = current_thread();
        bounded(&rt, async {
            let tx = AsyncFifoWriter::new(tx).unwrap();
            let mut rx = AsyncFifoReader::new(rx).unwrap();
            for i in 0..50usize {
                let m = vec![i as u8; i * 70];
                tx.send(&m).await.unwrap();
                assert_eq!(rx.recv().await.unwrap(), m);
            }
            // The echo exits: end of stream.
            assert!(matches!(
                rx.recv().await,
                Err(shmkit::Error::Disconnected { .. })
            ));
        });
        common::wait_ok(&mut c, LONG);
    }

    #[test]
    fn pipe_async_round_trip_across_processes() {
        if let Some(_role) = common::role() {
            use std::os::fd::{FromRawFd, OwnedFd};
            // SAFETY: the parent passed this end as descriptor 3 (pass_to), owned by us.
            let fd = unsafe { OwnedFd::from_raw_fd(3) };
            let mut p = Pipe::try_from(fd).unwrap();
            for _ in 0..50 {
                let m = p.recv_timeout(LONG).unwrap();
                p.send_timeout(&m, LONG).unwrap();
            }
            std::process::exit(0);
        }
        let (mine, theirs) = Pipe::pair().unwrap();
        let mut cmd = common::child(
            "transports::pipe_async_round_trip_across_processes",
            "echo",
            &[],
        );
        theirs.pass_to(&mut cmd, 3);
        let mut c = cmd.spawn().unwrap();
        drop(cmd);
        let rt = multi_thread();
        bounded(&rt, async {
            let mut p = AsyncPipe::new(mine).unwrap();
            for i in 0..50usize {
                let m = vec![i as u8; i * 600];
                p.send(&m).await.unwrap();
                assert_eq!(p.recv().await.unwrap(), m);
            }
            assert!(matches!(
                p.recv().await,
                Err(shmkit::Error::Disconnected { .. })
            ));
        });
        common::wait_ok(&mut c, LONG);
    }

    #[test]
    fn transports_outside_a_runtime_are_an_error() {
        let (a, _b) = Pipe::pair().unwrap();
        assert!(AsyncPipe::new(a).is_err());
    }
}

mod semaphore {
    use super::*;
    use shmkit::sync::{BoundedSemaphore, Semaphore};
    #[test]
    fn semaphore_async_across_processes() {
        if let Some(_role) = common::role() {
            let s = Semaphore::open(&arg(0)).unwrap();
            for _ in 0..200 {
                s.post().unwrap();
            }
            std::process::exit(0);
        }
        for (rt, tag) in [(current_thread(), "ct"), (multi_thread(), "mt")] {
            let name = common::unique(&format!("aio-sem-{tag}"));
            let _g = common::ShmGuard::new(&name);
            let s = Semaphore::create(&name, 0).unwrap();
            let mut c = common::child(
                "semaphore::semaphore_async_across_processes",
                "post",
                &[&name],
            )
            .spawn()
            .unwrap();
            bounded(&rt, async {
                for _ in 0..200 {
                    s.wait_async().await.unwrap();
                }
            });
            common::wait_ok(&mut c, LONG);
            assert_eq!((s.value(), s.raw().sleepers()), (0, 0));
        }
        let b = BoundedSemaphore::anonymous(1).unwrap();
        let rt = current_thread();
        bounded(&rt, b.wait_async()).unwrap();
        let e = bounded(&rt, b.wait_timeout_async(Duration::from_millis(5))).unwrap_err();
        assert!(e.is_timeout(), "{e}");
        b.post().unwrap();
        bounded(&rt, b.wait_timeout_async(LONG)).unwrap();
    }

    /// `post` wakes one sleeper. If it picks the async waiter, which is then dropped
    /// without taking the permit, the wake-up must reach the blocking sleeper in the
    /// other process (which would otherwise time out and fail).
    #[test]
    fn a_woken_but_dropped_async_waiter_passes_the_post_on() {
        if let Some(_role) = common::role() {
            let s = Semaphore::open(&arg(0)).unwrap();
            s.wait_timeout(LONG).unwrap();
            std::process::exit(0);
        }
        for i in 0..20 {
            // Odd rounds: the future is dropped before the post, while the waiter thread
            // still sleeps on the word; the post may reach the thread, which passes it on.
            let drop_first = i % 2 == 1;
            let name = common::unique("aio-sem-fwd");
            let _g = common::ShmGuard::new(&name);
            let s = Semaphore::create(&name, 0).unwrap();
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let waker = Waker::from(flag.clone());
            let mut c;
            {
                let f = s.wait_async();
                let mut f = pin!(f);
                // The async waiter sleeps first (the kernel wakes futex sleepers in
                // order), then the child.
                assert!(
                    f.as_mut()
                        .poll(&mut Context::from_waker(&waker))
                        .is_pending()
                );
                c = common::child(
                    "semaphore::a_woken_but_dropped_async_waiter_passes_the_post_on",
                    "sleeper",
                    &[&name],
                )
                .spawn()
                .unwrap();
                let t = std::time::Instant::now();
                while s.raw().sleepers() < 2 || !common::test_thread_asleep(c.id()) {
                    assert!(t.elapsed() < LONG, "the child never slept");
                    std::thread::yield_now();
                }
                if drop_first {
                    f.set(s.wait_async());
                }
                s.post().unwrap();
                // Whoever the kernel picked: the child takes the permit, or our future is
                // woken; then drop it without polling.
                while !flag.0.load(Ordering::SeqCst) && s.value() != 0 {
                    assert!(t.elapsed() < LONG, "post woke nobody");
                    std::thread::yield_now();
                }
            }
            common::wait_ok(&mut c, LONG);
            assert_eq!(s.raw().sleepers(), 0);
        }
    }
}

#[test]
fn shared_sender_send_async_from_many_tasks() {
    const TASKS: u64 = 4;
    const N: u64 = 500;
    if let Some(_role) = common::role() {
        // Every message once, in order per task, then Disconnected when the senders go.
        let q = Queue::<u64>::open(&arg(0)).unwrap();
        q.attach_consumer();
        let mut next = [0u64; TASKS as usize];
        loop {
            match q.recv_timeout(LONG) {
                Ok(v) => {
                    let (t, i) = ((v >> 32) as usize, v & 0xffff_ffff);
                    assert_eq!(next[t], i, "task {t} out of order");
                    next[t] += 1;
                }
                Err(e) if e.is_disconnected() => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(next, [N; TASKS as usize]);
        std::process::exit(0);
    }
    for (rt, tag) in [(multi_thread(), "mt"), (current_thread(), "ct")] {
        let name = common::unique(&format!("aio-shared-{tag}"));
        let _g = common::ShmGuard::new(&name);
        let q = Queue::<u64>::create(&name, 4).unwrap();
        let tx = q.sender().unwrap();
        let mut c = common::child("shared_sender_send_async_from_many_tasks", "rx", &[&name])
            .spawn()
            .unwrap();
        bounded(&rt, async {
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let tx = tx.clone();
                    // Spawned: the future must be Send.
                    tokio::spawn(async move {
                        for i in 0..N {
                            tx.send_async(t << 32 | i).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        assert_eq!(q.sleepers().1, 0, "no async sender left registered");
        drop((tx, q));
        common::wait_ok(&mut c, LONG);
    }
}

#[test]
fn dropped_shared_send_async_sends_nothing() {
    let q = ByteQueue::options().capacity(2).anonymous(16).unwrap();
    let tx = q.sender().unwrap();
    q.attach_consumer();
    tx.send(b"a").unwrap();
    tx.send(b"b").unwrap();
    // Full: the future registers and is dropped pending.
    assert!(!poll_once(tx.send_async(b"c")));
    assert_eq!(q.sleepers(), (0, 0), "no sleeper count left behind");
    let mut buf = Vec::new();
    q.recv(&mut buf).unwrap();
    assert_eq!(buf, b"a");
    let rt = current_thread();
    bounded(&rt, tx.send_async(b"d")).unwrap();
    q.recv(&mut buf).unwrap();
    assert_eq!(buf, b"b");
    q.recv(&mut buf).unwrap();
    assert_eq!(buf, b"d", "the dropped send sent nothing");
    assert!(q.try_recv(&mut buf).unwrap_err().is_empty());
}

/// An async send asleep on a full queue (no consumer attached yet when it went to
/// sleep) is woken for the slot a consumer in another process frees below the low-water
/// mark, though no consumer wakes it: the consumer receives once and exits without
/// closing. The future must call its waker (within a few 20 ms sleep slices; the bound
/// is 5 s), then complete.
#[test]
fn async_send_on_a_full_queue_gets_a_slot_freed_below_the_low_water_mark() {
    if let Some(_role) = common::role() {
        let q = open_mpmc_u64(&arg(0));
        assert_eq!(q.recv_timeout(LONG).unwrap(), 0);
        std::process::exit(0); // without dropping `q`: nobody is told
    }
    let name = common::unique("aio-lowwater");
    let _g = common::ShmGuard::new(&name);
    let mut q = mpmc_u64(&name, 8);
    for v in 0..8 {
        q.try_send(v).unwrap();
    }
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    {
        let mut f = pin!(q.send_async(100));
        let mut cx = Context::from_waker(&waker);
        assert!(f.as_mut().poll(&mut cx).is_pending(), "the queue is full");
        let mut c = common::child(
            "async_send_on_a_full_queue_gets_a_slot_freed_below_the_low_water_mark",
            "consumer",
            &[&name],
        )
        .spawn()
        .unwrap();
        common::wait_ok(&mut c, LONG);
        let t = std::time::Instant::now();
        loop {
            while !flag.0.swap(false, Ordering::SeqCst) {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "the send was never woken"
                );
                std::thread::yield_now();
            }
            if let Poll::Ready(r) = f.as_mut().poll(&mut cx) {
                r.unwrap();
                break;
            }
        }
    }
    let rest: Vec<u64> = std::iter::from_fn(|| q.try_recv().ok()).collect();
    assert_eq!(rest, [1, 2, 3, 4, 5, 6, 7, 100]);
}
