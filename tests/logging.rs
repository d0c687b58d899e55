//! Cross-process logging (`shmkit::logging`) with real processes: records from pools
//! started and dropped over and over (spawn and fork) while a thread logs in a loop, and
//! a writer SIGKILLed while logging. Owns `main` (harness = false).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shmkit::logging::{Collector, Dest, LogOptions};
use shmkit::process::{Entry, PoolOptions, Process, StartMethod};

const LIMIT: Duration = Duration::from_secs(30);

fn logged_double(x: u64) -> u64 {
    log::info!("doubling {x}");
    x * 2
}
fn spam(_: ()) {
    let t = std::thread::spawn(|| {
        for i in 0.. {
            log::info!("spam thread {i} with a longer message body to fill the slot");
        }
    });
    for i in 0.. {
        log::warn!("spam main {i}");
    }
    let _ = t.join();
}

static LOGGED_DOUBLE: Entry<u64, u64> = shmkit::entry!(logged_double);
static SPAM: Entry<(), ()> = shmkit::entry!(spam);

/// `SECS.MICROS LEVEL NAME[PID] TARGET: MESSAGE`
fn well_formed(line: &str) -> bool {
    let mut f = line.splitn(4, ' ');
    let (Some(t), Some(level), Some(who), Some(rest)) = (f.next(), f.next(), f.next(), f.next())
    else {
        return false;
    };
    let level_ok = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level);
    let (name_ok, pid_ok) = match who.split_once('[') {
        Some((n, p)) => (
            !n.is_empty(),
            p.strip_suffix(']')
                .is_some_and(|p| p.parse::<u32>().is_ok()),
        ),
        None => (false, false),
    };
    let time_ok = t
        .split_once('.')
        .is_some_and(|(s, us)| s.parse::<u64>().is_ok() && us.len() == 6);
    // A level column is padded: "WARN " / "INFO " leave an empty field before the name.
    let _ = rest;
    time_ok && level_ok && name_ok && pid_ok
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("[shmkit log:"))
        .map(|l| {
            l.replacen("WARN  ", "WARN ", 1)
                .replacen("INFO  ", "INFO ", 1)
        })
        .collect()
}

fn logging_while_pools_start_over_and_over(c: &Collector, path: &std::path::Path) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                log::info!("tick {i}");
                i += 1;
            }
        });
        for round in 0..8u64 {
            let method = if round % 2 == 0 {
                StartMethod::Spawn
            } else {
                StartMethod::Fork
            };
            let pool = PoolOptions::default()
                .workers(2)
                .start_method(method)
                .build(&LOGGED_DOUBLE)
                .unwrap();
            let got = pool.map(0..20u64).unwrap();
            assert_eq!(got, (0..20u64).map(|x| x * 2).collect::<Vec<_>>());
        }
        stop.store(true, Ordering::Relaxed);
    });
    c.flush(LIMIT).unwrap();
    let ls = lines(path);
    for l in &ls {
        assert!(well_formed(l), "malformed line: {l:?}");
    }
    assert!(
        ls.iter()
            .any(|l| l.contains("MainProcess[") && l.contains("tick "))
    );
    let worker_lines = ls
        .iter()
        .filter(|l| l.contains("PoolWorker-") && l.contains("doubling"))
        .count();
    // With a 5 s full-queue wait every record arrives; should one still be dropped, the
    // dropping process says so when it logs again.
    let raw = std::fs::read_to_string(path).unwrap();
    let drops_reported = raw.lines().any(|l| l.starts_with("[shmkit log: process"));
    assert!(worker_lines > 0, "worker records arrive");
    assert!(
        worker_lines == 8 * 20 || drops_reported,
        "{worker_lines} of 160 worker records arrived and no drop was reported"
    );
}

fn a_writer_killed_while_logging_never_blocks_the_log(c: &Collector, path: &std::path::Path) {
    let before = c.lines();
    let p = Process::new(&SPAM, ()).name("spammer").start().unwrap();
    let start = Instant::now();
    while c.lines() < before + 5000 {
        assert!(
            start.elapsed() < LIMIT,
            "the spammer's records never arrived"
        );
        std::thread::yield_now();
    }
    p.kill().unwrap();
    drop(p);
    // What the spammer queued drains (a record meeting a full queue for 10 ms is dropped
    // and counted, by policy), then the log goes on.
    c.flush(LIMIT).unwrap();
    log::error!("after the kill");
    c.flush(LIMIT).unwrap();
    let ls = lines(path);
    for l in &ls {
        assert!(well_formed(l), "malformed line: {l:?}");
    }
    assert!(ls.iter().any(|l| l.contains("spammer[")));
    assert!(ls.iter().any(|l| l.ends_with("after the kill")));
}

type Test = fn(&Collector, &std::path::Path);

fn main() {
    shmkit::process::init(&[&LOGGED_DOUBLE, &SPAM]);
    if std::env::args().any(|a| a == "--list" || a == "--ignored") {
        if std::env::args().any(|a| a == "--list") {
            println!("logging: test");
        }
        return;
    }
    let dir = std::env::temp_dir().join(common::unique("log"));
    std::fs::create_dir_all(&dir).unwrap();
    let _g = common::DirGuard(dir.clone());
    let path = dir.join("all.log");
    // Producers wait up to 5 s for room (inherited by spawned workers): the collector
    // drains far faster, so every record must arrive; a killed worker could never report
    // a drop made under the default 10 ms policy.
    let c = LogOptions::default()
        .full_wait(Duration::from_secs(5))
        .install(Dest::File(path.clone()))
        .unwrap();
    let tests: &[(&str, Test)] = &[
        (
            "logging_while_pools_start_over_and_over",
            logging_while_pools_start_over_and_over,
        ),
        (
            "a_writer_killed_while_logging_never_blocks_the_log",
            a_writer_killed_while_logging_never_blocks_the_log,
        ),
    ];
    let ok = common::run_tests_status(tests, |f| f(&c, &path));
    drop(_g); // exit runs no destructors: remove the log directory first
    if !ok {
        std::process::exit(1);
    }
}
