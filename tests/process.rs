//! `Process` (and `Pool`, `logging`) across real processes. This test owns `main`
//! (harness = false): a child re-executes this binary and must dispatch in
//! `shmkit::process::init` before any test runner starts.

mod common;

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use shmkit::Array;
use shmkit::Error;
use shmkit::process::{
    Entry, ExitStatus, Failure, Pool, PoolOptions, Process, StartMethod, current_process,
};

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
fn len_of(v: Vec<u8>) -> usize {
    v.len()
}

fn square(x: u64) -> u64 {
    x * x
}
fn pid_of(_: u64) -> u32 {
    std::process::id()
}
fn maybe_panic(x: u64) -> u64 {
    if x == 13 {
        panic!("unlucky {x}");
    }
    x
}
/// Item 999 publishes its worker's pid in `[1]` and blocks on its first attempt
/// (attempts counted in `[0]`); everything else returns at once.
fn block_once((x, name): (u64, String)) -> u64 {
    if x == 999 {
        let a = Array::<u32>::open(&name).unwrap();
        if a.fetch_add(0, 1).unwrap() == 0 {
            a.store(1, std::process::id()).unwrap();
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    x
}

/// Serialises fine except the value 3, whose `Serialize` fails.
#[derive(Debug, PartialEq, serde::Deserialize)]
struct Flaky(u64);
impl serde::Serialize for Flaky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 3 {
            return Err(serde::ser::Error::custom("three cannot be encoded"));
        }
        s.serialize_u64(self.0)
    }
}
fn flaky(x: Flaky) -> Flaky {
    Flaky(x.0 + 1)
}
fn square_pod(x: u64) -> u64 {
    x.wrapping_mul(x)
}
fn pod_maybe_panic(x: u32) -> [u32; 2] {
    if x == 13 {
        panic!("unlucky {x}");
    }
    [x, x * 2]
}
fn one(_: ()) -> u32 {
    1
}
fn nothing(_: u64) {}
/// The name of the array `pod_block_once` reports to: one per test process (the
/// workers' parent).
fn pod_block_name(parent: u32) -> String {
    format!("shmkit-test-podblock-{parent}")
}
/// [`block_once`] for a plain-data entry: item 999 of a run blocks on its first attempt.
fn pod_block_once(x: u64) -> u64 {
    if x == 999 {
        let a = Array::<u32>::open(&pod_block_name(std::os::unix::process::parent_id())).unwrap();
        if a.fetch_add(0, 1).unwrap() == 0 {
            a.store(1, std::process::id()).unwrap();
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    x
}

fn pod_big_result(x: u32) -> [u8; 2048] {
    [x as u8; 2048]
}
fn pod_big_arg(a: [u8; 2048]) -> u32 {
    u32::from(a[0])
}

/// Runs `f` on a thread of its own and waits for it at most [`LIMIT`]: a pool that hangs
/// fails the test instead of hanging it.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(LIMIT) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("{what}: no answer within {LIMIT:?}"),
    }
}

/// Starts a pool, publishes `[count, pids...]` in the named array, then sleeps.
fn pool_parent(name: String) {
    let a = Array::<u32>::open(&name).unwrap();
    let pool = Pool::new(&SQUARE, 2).unwrap();
    assert_eq!(pool.map(0..10u64).unwrap()[3], 9);
    let pids = pool.pids();
    for (i, p) in pids.iter().enumerate() {
        a.store(i + 1, *p).unwrap();
    }
    // Our own mappings of /dev/shm: only the test's array.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let named = maps.lines().filter(|l| l.contains("/dev/shm/")).count();
    a.store(7, named as u32).unwrap();
    a.store(0, pids.len() as u32).unwrap();
    std::thread::sleep(Duration::from_secs(3600));
}

static DOUBLE: Entry<u64, u64> = shmkit::entry!(double);
static WHOAMI: Entry<(), (String, u32, Option<u32>)> = shmkit::entry!(whoami);
static SLEEP: Entry<(), ()> = shmkit::entry!(sleep_forever);
static PANICS: Entry<String, u8> = shmkit::entry!(panics);
static EXITS: Entry<i32, ()> = shmkit::entry!(exits);
static BIG: Entry<usize, Vec<u8>> = shmkit::entry!(big);
static MIDDLE: Entry<String, ()> = shmkit::entry!(middle);
static UNREGISTERED: Entry<(), ()> = shmkit::entry!(unregistered);
static SQUARE: Entry<u64, u64> = shmkit::entry!(square);
static PID_OF: Entry<u64, u32> = shmkit::entry!(pid_of);
static MAYBE_PANIC: Entry<u64, u64> = shmkit::entry!(maybe_panic);
static BLOCK_ONCE: Entry<(u64, String), u64> = shmkit::entry!(block_once);
static FLAKY: Entry<Flaky, Flaky> = shmkit::entry!(flaky);
static POOL_PARENT: Entry<String, ()> = shmkit::entry!(pool_parent);
static LEN_OF: Entry<Vec<u8>, usize> = shmkit::entry!(len_of);
static SQUARE_POD: Entry<u64, u64> = shmkit::entry!(pod square_pod);
static POD_PANIC: Entry<u32, [u32; 2]> = shmkit::entry!(pod pod_maybe_panic);
static POD_BLOCK: Entry<u64, u64> = shmkit::entry!(pod pod_block_once);
static ONE_POD: Entry<(), u32> = shmkit::entry!(pod one);
static NOTHING_POD: Entry<u64, ()> = shmkit::entry!(pod nothing);
/// [`SQUARE_POD`] built without the macro: its item loop calls through the pointer.
static SQUARE_POD_PTR: Entry<u64, u64> = Entry::pod("process::square_pod (pointer)", square_pod);
static POD_BIG_RESULT: Entry<u32, [u8; 2048]> = shmkit::entry!(pod pod_big_result);
static POD_BIG_ARG: Entry<[u8; 2048], u32> = shmkit::entry!(pod pod_big_arg);

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

fn pool_map_imap_apply_async() {
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let pool = PoolOptions::default()
            .workers(2)
            .start_method(method)
            .build(&SQUARE)
            .unwrap();
        let want: Vec<u64> = (0..1000u64).map(|x| x * x).collect();
        assert_eq!(pool.map(0..1000u64).unwrap(), want);
        assert_eq!(pool.map_chunked(0..1000u64, 1).unwrap(), want);
        assert_eq!(pool.map(Vec::<u64>::new()).unwrap(), Vec::<u64>::new());
        let got: Vec<u64> = pool.imap(0..1000u64, 7).map(Result::unwrap).collect();
        assert_eq!(got, want);
        let mut seen = vec![false; 1000];
        let mut it = pool.imap_unordered(0..1000u64, 3);
        while let Some((i, r)) = it.next_indexed() {
            assert_eq!(r.unwrap(), want[i]);
            seen[i] = true;
        }
        assert!(seen.iter().all(|&b| b));
        let r = pool.apply_async(12).unwrap();
        assert_eq!(r.get(Some(Duration::from_secs(10))).unwrap(), 144);
        assert_eq!(pool.apply(5).unwrap(), 25);
    }
}

fn pool_imap_streams_a_long_input() {
    let pool = Pool::new(&SQUARE, 2).unwrap();
    // An unbounded input: only the window is ever materialised.
    let mut it = pool.imap((0..).map(|x: u64| x % 1000), 16);
    for i in 0..20_000u64 {
        assert_eq!(it.next().unwrap().unwrap(), (i % 1000) * (i % 1000));
    }
}

fn pool_task_panic_is_an_error_and_the_worker_survives() {
    let pool = Pool::new(&MAYBE_PANIC, 2).unwrap();
    let before = pool.pids();
    let e = pool.map(0..20u64).unwrap_err();
    assert!(
        matches!(&e, shmkit::Error::Failed { failure: Failure::Panicked(m), .. } if m == "unlucky 13"),
        "{e}"
    );
    let outcomes: Vec<_> = pool.imap(0..20u64, 4).collect();
    for (i, r) in outcomes.iter().enumerate() {
        assert_eq!(r.is_err(), i == 13, "{i}: {r:?}");
    }
    assert_eq!(pool.map(0..5u64).unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(
        pool.pids(),
        before,
        "a panicking task must not cost a worker"
    );
}

fn wait_for_pid(a: &Array<u32>) -> u32 {
    let start = Instant::now();
    loop {
        match a.load(1).unwrap() {
            0 if start.elapsed() < LIMIT => std::thread::yield_now(),
            0 => panic!("the blocking task never started"),
            pid => return pid,
        }
    }
}

/// Runs `f` on a thread of its own, SIGKILLs the worker whose blocking task reported its
/// pid in `a` (see [`wait_for_pid`]), and returns that pid with `f`'s outcome.
fn kill_blocked_worker<T: Send>(a: &Array<u32>, f: impl FnOnce() -> T + Send) -> (u32, T) {
    std::thread::scope(|s| {
        let h = s.spawn(f);
        let pid = wait_for_pid(a);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
        (pid, h.join().unwrap())
    })
}

fn pool_worker_sigkilled_mid_task() {
    let name = common::unique("pool-kill");
    let _g = common::ShmGuard::new(&name);
    let a = Array::<u32>::create(&name, 2, 0).unwrap();
    let pool = Pool::new(&BLOCK_ONCE, 2).unwrap();
    let items: Vec<(u64, String)> = (0..50u64)
        .map(|i| (if i == 25 { 999 } else { i }, name.clone()))
        .collect();
    let t = Instant::now();
    let outcome = std::thread::scope(|s| {
        let h = s.spawn(|| pool.map_chunked(items.clone(), 4));
        let pid = wait_for_pid(&a);
        assert!(pool.pids().contains(&pid));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
        (pid, h.join().unwrap())
    });
    assert!(t.elapsed() < LIMIT);
    let (pid, r) = outcome;
    match r.unwrap_err() {
        shmkit::Error::Failed {
            failure: Failure::Died { pid: p, status },
            resource,
        } => {
            assert_eq!(p, pid);
            assert_eq!(status, ExitStatus::Signal(libc::SIGKILL));
            assert!(resource.contains(&pid.to_string()), "{resource}");
        }
        e => panic!("{e}"),
    }
    // Every other item of the map ran; the worker was replaced; the pool goes on.
    let outcomes: Vec<_> = pool.imap(items.clone(), 4).collect();
    assert!(outcomes.iter().all(|r| r.is_ok()));
    assert!(!pool.pids().contains(&pid));
    assert_eq!(pool.pids().len(), 2);

    // With a retry, the item runs again and succeeds.
    a.store(0, 0).unwrap();
    a.store(1, 0).unwrap();
    let pool = PoolOptions::default()
        .workers(2)
        .retries(1)
        .build(&BLOCK_ONCE)
        .unwrap();
    let r = pool.apply_async((999, name.clone())).unwrap();
    let pid = wait_for_pid(&a);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(r.get(Some(LIMIT)).unwrap(), 999);
    assert_eq!(a.load(0).unwrap(), 2);
}

fn pool_unserialisable_arguments_and_results() {
    let pool = Pool::new(&FLAKY, 2).unwrap();
    let outcomes: Vec<_> = pool.imap((0..6).map(Flaky), 2).collect();
    for (i, r) in outcomes.iter().enumerate() {
        match i {
            // Argument 3 cannot be encoded; the result of 2 (= 3) cannot either.
            2 | 3 => {
                let e = r.as_ref().unwrap_err();
                assert!(
                    matches!(e, shmkit::Error::Failed { failure: Failure::Codec(m), .. } if m.contains("encoding") && m.contains("Flaky")),
                    "{i}: {e}"
                );
            }
            _ => assert_eq!(r.as_ref().unwrap(), &Flaky(i as u64 + 1)),
        }
    }
    assert_eq!(pool.apply(Flaky(7)).unwrap(), Flaky(8));
}

fn pool_max_tasks_per_child_close_join_terminate() {
    let mut pool = PoolOptions::default()
        .workers(1)
        .max_tasks_per_child(2)
        .build(&PID_OF)
        .unwrap();
    let mut pids: Vec<u32> = (0..6).map(|i| pool.apply(i).unwrap()).collect();
    pids.dedup();
    assert_eq!(pids.len(), 3, "{pids:?}");
    pool.close();
    assert!(pool.apply_async(1).is_err());
    pool.join(Some(LIMIT)).unwrap();

    let mut pool = Pool::new(&SQUARE, 2).unwrap();
    let r = pool.apply_async(3).unwrap();
    assert_eq!(r.get(Some(LIMIT)).unwrap(), 9);
    let fds: Vec<OwnedFd> = pool.pids().into_iter().map(pidfd_of).collect();
    pool.terminate();
    for fd in &fds {
        assert!(exits_within(fd, Duration::ZERO));
    }
    assert!(pool.apply_async(1).is_err());
}

fn pool_chunks_span_several_messages() {
    // Arguments: one chunk of 40 x 500 bytes does not fit a 2 KiB message.
    let pool = PoolOptions::default()
        .workers(2)
        .max_message(2048)
        .build(&LEN_OF)
        .unwrap();
    let args: Vec<Vec<u8>> = (0..40).map(|i| vec![1; 400 + i]).collect();
    let want: Vec<usize> = (0..40).map(|i| 400 + i).collect();
    assert_eq!(pool.map_chunked(args.clone(), 40).unwrap(), want);
    // One argument alone too large: that item fails, the others of its chunk do not.
    let mut args = args;
    args[7] = vec![0; 4096];
    let outcomes: Vec<_> = pool.imap(args, 40).collect();
    for (i, r) in outcomes.iter().enumerate() {
        match r {
            Ok(n) => assert_eq!(*n, want[i]),
            Err(e) => {
                assert_eq!(i, 7);
                assert!(
                    matches!(e, Error::Failed { failure: Failure::Codec(m), .. } if m.contains("max_message")),
                    "{e}"
                );
            }
        }
    }
    // Results: a chunk of 30 x 300-byte results comes back in several messages; one
    // result too large alone fails alone.
    let pool = PoolOptions::default()
        .workers(2)
        .max_message(2048)
        .build(&BIG)
        .unwrap();
    let mut sizes = vec![300usize; 30];
    sizes[11] = 5000;
    let outcomes: Vec<_> = pool.imap(sizes, 30).collect();
    for (i, r) in outcomes.iter().enumerate() {
        match (i, r) {
            (
                11,
                Err(Error::Failed {
                    failure: Failure::Codec(m),
                    ..
                }),
            ) => {
                assert!(m.contains("max_message"), "{m}")
            }
            (_, Ok(v)) => assert_eq!(v.len(), 300),
            (_, r) => panic!("{i}: {r:?}"),
        }
    }
}

fn pool_reused_buffers_stay_within_max_message() {
    // Encode buffers of finished messages are reused; one whose capacity had grown past
    // max_message once let a message outgrow the task queue, and the map hung.
    within("maps with reused buffers", || {
        let pool = PoolOptions::default()
            .workers(2)
            .max_message(4096)
            .build(&SQUARE)
            .unwrap();
        let want: Vec<u64> = (0..20_000u64).map(|x| x * x).collect();
        for chunk in [10, 500, 2000, 20_000, 7, 20_000] {
            assert_eq!(
                pool.map_chunked(0..20_000u64, chunk).unwrap(),
                want,
                "chunk {chunk}"
            );
        }
    });
}

fn pool_pod_entries() {
    assert_eq!(SQUARE_POD.codec(), "pod");
    assert_eq!(SQUARE.codec(), "postcard");
    within("plain-data pool", || {
        for method in [StartMethod::Spawn, StartMethod::Fork] {
            let pool = PoolOptions::default()
                .workers(2)
                .start_method(method)
                .max_message(4096)
                .build(&SQUARE_POD)
                .unwrap();
            let want: Vec<u64> = (0..20_000u64).map(|x| x.wrapping_mul(x)).collect();
            assert_eq!(pool.map_chunked(0..500u64, 1).unwrap(), want[..500]);
            for chunk in [7, 5000, 20_000] {
                assert_eq!(pool.map_chunked(0..20_000u64, chunk).unwrap(), want);
            }
            assert_eq!(pool.map(0..20_000u64).unwrap(), want);
            let got: Vec<u64> = pool.imap(0..20_000u64, 333).map(Result::unwrap).collect();
            assert_eq!(got, want);
            let mut seen = 0;
            let mut it = pool.imap_unordered(0..1000u64, 9);
            while let Some((i, r)) = it.next_indexed() {
                assert_eq!(r.unwrap(), want[i]);
                seen += 1;
            }
            assert_eq!(seen, 1000);
            assert_eq!(pool.apply(12).unwrap(), 144);
            let mut p = Process::new(&SQUARE_POD, 9)
                .start_method(method)
                .start()
                .unwrap();
            assert_eq!(p.join_timeout(LIMIT).unwrap(), 81);
        }
        // A panic inside a run of plain results: that item fails, the items after it
        // in the same message still arrive, in order, and the worker survives.
        let pool = Pool::new(&POD_PANIC, 2).unwrap();
        let before = pool.pids();
        let outcomes: Vec<_> = pool.imap(0..40u32, 40).collect();
        for (i, r) in outcomes.iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(*v, [i as u32, 2 * i as u32]),
                Err(Error::Failed {
                    failure: Failure::Panicked(m),
                    ..
                }) => assert_eq!((i, m.as_str()), (13, "unlucky 13")),
                Err(e) => panic!("{i}: {e}"),
            }
        }
        assert_eq!(pool.pids(), before);
        // Zero-sized arguments and results.
        let pool = Pool::new(&ONE_POD, 2).unwrap();
        assert_eq!(pool.map(vec![(); 5000]).unwrap(), vec![1; 5000]);
        let pool = Pool::new(&NOTHING_POD, 2).unwrap();
        assert_eq!(pool.map(0..5000u64).unwrap().len(), 5000);
    });
    // A worker SIGKILLed inside a run: the running item fails naming it, every other
    // item of the map arrives.
    let name = pod_block_name(std::process::id());
    let _g = common::ShmGuard::new(&name);
    let a = Array::<u32>::create(&name, 2, 0).unwrap();
    let pool = Pool::new(&POD_BLOCK, 2).unwrap();
    let items: Vec<u64> = (0..50u64).map(|i| if i == 25 { 999 } else { i }).collect();
    let (pid, outcomes) =
        kill_blocked_worker(&a, || pool.imap(items.clone(), 10).collect::<Vec<_>>());
    for (i, r) in outcomes.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, items[i]),
            Err(Error::Failed {
                failure: Failure::Died { pid: p, .. },
                ..
            }) => assert_eq!((i, *p), (25, pid)),
            Err(e) => panic!("{i}: {e}"),
        }
    }
}

/// Asserts that every outcome is a codec error naming `max_message`.
fn all_codec_errors<T: std::fmt::Debug>(outcomes: Vec<shmkit::Result<T>>, n: usize) {
    assert_eq!(outcomes.len(), n);
    for r in outcomes {
        match r {
            Err(Error::Failed {
                failure: Failure::Codec(m),
                ..
            }) => assert!(m.contains("max_message"), "{m}"),
            r => panic!("{r:?}"),
        }
    }
}

fn pool_pod_chunks_of_many_messages() {
    within("plain-data chunks of many messages", || {
        // One chunk of 20,000 u64 (160 kB) travels as messages of 4 KiB; the entry
        // built without the macro gives the same results.
        let want: Vec<u64> = (0..20_000u64).map(|x| x.wrapping_mul(x)).collect();
        for entry in [&SQUARE_POD, &SQUARE_POD_PTR] {
            let pool = PoolOptions::default()
                .workers(2)
                .max_message(4096)
                .build(entry)
                .unwrap();
            assert_eq!(pool.map_chunked(0..20_000u64, 20_000).unwrap(), want);
            // An input whose length is not known up front.
            let odd = (0..40_000u64).filter(|x| x % 2 == 0).map(|x| x / 2);
            assert_eq!(pool.map(odd).unwrap(), want);
        }
        // A plain-data result or argument larger than any message: each item fails
        // with a codec error naming max_message; the workers go on.
        let pool = PoolOptions::default()
            .workers(2)
            .max_message(1024)
            .build(&POD_BIG_RESULT)
            .unwrap();
        let before = pool.pids();
        all_codec_errors(pool.imap(0..5u32, 5).collect(), 5);
        assert_eq!(pool.pids(), before);
        let pool = PoolOptions::default()
            .workers(2)
            .max_message(1024)
            .build(&POD_BIG_ARG)
            .unwrap();
        all_codec_errors(pool.imap(vec![[1u8; 2048]; 3], 3).collect(), 3);
    });
    // A worker SIGKILLed in the second message of a chunk of ten: the running item
    // fails naming it, every other item arrives; with a retry, the map succeeds.
    let name = pod_block_name(std::process::id());
    let _g = common::ShmGuard::new(&name);
    let a = Array::<u32>::create(&name, 2, 0).unwrap();
    let items: Vec<u64> = (0..5000).collect();
    for retries in [0, 1] {
        a.store(0, 0).unwrap();
        a.store(1, 0).unwrap();
        let pool = PoolOptions::default()
            .workers(2)
            .max_message(4096)
            .retries(retries)
            .build(&POD_BLOCK)
            .unwrap();
        let t = Instant::now();
        let (pid, outcomes) =
            kill_blocked_worker(&a, || pool.imap(items.clone(), 5000).collect::<Vec<_>>());
        assert!(t.elapsed() < LIMIT);
        assert_eq!(outcomes.len(), items.len());
        for (i, r) in outcomes.iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(*v, items[i]),
                Err(Error::Failed {
                    failure: Failure::Died { pid: p, status },
                    resource,
                }) if retries == 0 => {
                    assert_eq!((i, *p), (999, pid));
                    assert_eq!(*status, ExitStatus::Signal(libc::SIGKILL));
                    assert!(resource.contains(&format!(".999 (worker pid {pid})")));
                }
                Err(e) => panic!("{i}: {e}"),
            }
        }
        assert_eq!(
            outcomes.iter().filter(|r| r.is_err()).count(),
            1 - retries as usize
        );
        assert!(!pool.pids().contains(&pid));
        assert_eq!(pool.pids().len(), 2);
        assert_eq!(pool.map_chunked(items.clone(), 5000).unwrap(), items);
    }
}

fn pool_workers_die_with_a_sigkilled_parent() {
    let name = common::unique("pool-parent");
    let _g = common::ShmGuard::new(&name);
    let a = Array::<u32>::create(&name, 8, 0).unwrap();
    let parent = Process::new(&POOL_PARENT, name.clone()).start().unwrap();
    let start = Instant::now();
    let n = loop {
        match a.load(0).unwrap() {
            0 if start.elapsed() < LIMIT => std::thread::yield_now(),
            0 => panic!("the pool parent never reported"),
            n => break n as usize,
        }
    };
    assert_eq!(n, 2);
    // The pool's queues are memfds: the parent maps nothing of it under /dev/shm.
    assert_eq!(a.load(7).unwrap(), 1, "only the test's own array is named");
    let fds: Vec<OwnedFd> = (1..=n).map(|i| pidfd_of(a.load(i).unwrap())).collect();
    parent.kill().unwrap();
    for fd in &fds {
        assert!(
            exits_within(fd, Duration::from_secs(1)),
            "a worker outlived its SIGKILLed parent by a second"
        );
    }
}

fn main() {
    shmkit::process::init(&[
        &DOUBLE,
        &WHOAMI,
        &SLEEP,
        &PANICS,
        &EXITS,
        &BIG,
        &MIDDLE,
        &SQUARE,
        &PID_OF,
        &MAYBE_PANIC,
        &BLOCK_ONCE,
        &FLAKY,
        &POOL_PARENT,
        &LEN_OF,
        &SQUARE_POD,
        &POD_PANIC,
        &POD_BLOCK,
        &ONE_POD,
        &NOTHING_POD,
        &SQUARE_POD_PTR,
        &POD_BIG_RESULT,
        &POD_BIG_ARG,
    ]);
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
        ("pool_map_imap_apply_async", pool_map_imap_apply_async),
        (
            "pool_imap_streams_a_long_input",
            pool_imap_streams_a_long_input,
        ),
        (
            "pool_reused_buffers_stay_within_max_message",
            pool_reused_buffers_stay_within_max_message,
        ),
        ("pool_pod_entries", pool_pod_entries),
        (
            "pool_pod_chunks_of_many_messages",
            pool_pod_chunks_of_many_messages,
        ),
        (
            "pool_task_panic_is_an_error_and_the_worker_survives",
            pool_task_panic_is_an_error_and_the_worker_survives,
        ),
        (
            "pool_worker_sigkilled_mid_task",
            pool_worker_sigkilled_mid_task,
        ),
        (
            "pool_unserialisable_arguments_and_results",
            pool_unserialisable_arguments_and_results,
        ),
        (
            "pool_max_tasks_per_child_close_join_terminate",
            pool_max_tasks_per_child_close_join_terminate,
        ),
        (
            "pool_chunks_span_several_messages",
            pool_chunks_span_several_messages,
        ),
        (
            "pool_workers_die_with_a_sigkilled_parent",
            pool_workers_die_with_a_sigkilled_parent,
        ),
    ];
    common::run_tests(tests);
}
