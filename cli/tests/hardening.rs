//! The CLI never crashes: closed or full stdout, undeliverable queue messages, non-UTF-8
//! names, setuid modes, and objects resized while the CLI reads them. Real processes only.

mod common;
#[path = "../../tests/common/mod.rs"]
mod harness;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Guard, ok, one_line_failure, unique};

/// Where the command's stdout goes.
#[derive(Clone, Copy, Debug)]
enum Sink {
    /// A pipe whose read end is already closed (EPIPE).
    ClosedPipe,
    /// /dev/full (ENOSPC).
    Full,
}

fn run_to<S: AsRef<OsStr>>(sink: Sink, args: &[S]) -> Output {
    let stdout = match sink {
        Sink::ClosedPipe => {
            // O_CLOEXEC: a command another test thread spawns meanwhile must not inherit
            // the read end (it would keep the pipe readable, and the write would succeed).
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
            drop(r);
            Stdio::from(w)
        }
        Sink::Full => Stdio::from(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full"),
        ),
    };
    Command::new(env!("CARGO_BIN_EXE_shmkit"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("run shmkit")
}

#[test]
fn closed_or_full_stdout_is_one_line_and_exit_1_in_every_command() {
    let (v, a, q, e, s) = (
        unique("out-v"),
        unique("out-a"),
        unique("out-q"),
        unique("out-e"),
        unique("out-s"),
    );
    let _g = Guard(vec![v.clone(), a.clone(), q.clone(), e.clone(), s.clone()]);
    ok(&["value", "create", &v, "--type", "u32", "--init", "7"]);
    ok(&["array", "create", &a, "--type", "u8", "--len", "100000"]);
    ok(&["queue", "create", &q]);
    ok(&["queue", "send", &q, "kept"]);
    ok(&["event", "create", &e]);
    ok(&["event", "set", &e]);
    ok(&["sem", "create", &s, "2"]);
    let (m, tq, l, tt) = (
        unique("out-m"),
        unique("out-tq"),
        unique("out-l"),
        unique("out-tt"),
    );
    let _g2 = Guard(vec![m.clone(), tq.clone(), l.clone(), tt.clone()]);
    ok(&["topic", "create", &tt, "--type", "u16"]);
    ok(&["topic", "pub", &tt, "7"]);
    ok(&["mutex", "create", &m, "--type", "u64", "--init", "5"]);
    ok(&["queue", "create", &tq, "--type", "u32"]);
    ok(&["queue", "send", &tq, "42"]);
    ok(&["latest", "create", &l, "--type", "f32"]);
    let commands: Vec<Vec<&str>> = vec![
        vec!["ls"],
        vec!["ls", "--json"],
        vec!["info", &v],
        vec!["info", &e, "--json"],
        vec!["gc", "--dry-run", "--prefix", &v],
        vec!["value", "get", &v],
        vec!["value", "get", &v, "--json"],
        vec!["value", "add", &v, "1"],
        vec!["array", "get", &a, "3"],
        vec!["array", "dump", &a],
        vec!["array", "dump", &a, "--json"],
        vec!["array", "dump", &a, "--raw", "--type", "u8"],
        vec!["queue", "recv", &q, "--timeout", "2s"],
        vec!["queue", "recv", &q, "--json", "--timeout", "2s"],
        vec!["queue", "stat", &q],
        vec!["event", "wait", &e, "--timeout", "2s"],
        vec!["sem", "value", &s],
        vec!["sem", "get", &s, "--json"],
        vec!["sem", "stat", &s, "--json"],
        vec!["event", "get", &e, "--json"],
        vec!["event", "stat", &e],
        vec!["value", "stat", &v, "--json"],
        vec!["value", "add", &v, "1", "--json"],
        vec!["array", "get", &a, "3", "--json"],
        vec!["array", "stat", &a],
        vec!["mutex", "get", &m],
        vec!["mutex", "get", &m, "--json"],
        vec!["mutex", "stat", &m, "--json"],
        vec!["queue", "recv", &tq, "--timeout", "2s"],
        vec!["queue", "recv", &tq, "--json", "--timeout", "2s"],
        vec!["queue", "stat", &q, "--json"],
        vec!["latest", "get", &l, "--json"],
        vec!["latest", "stat", &l],
        vec!["topic", "sub", &tt, "--history", "1", "--json"],
        vec!["topic", "sub", &tt, "--history", "1"],
        vec!["topic", "stat", &tt, "--json"],
        vec!["mq", "ls"],
        vec!["bench", "--help"],
        vec!["--help"],
        vec!["--version"],
    ];
    // `mq ls` lists /dev/mqueue; where the mqueue filesystem is not mounted (scripts/test.sh
    // mounts it when run as root) it fails before writing, with its own one-line error.
    let mqueue = std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split(' ').nth(1) == Some("/dev/mqueue"))
    });
    for sink in [Sink::ClosedPipe, Sink::Full] {
        for args in &commands {
            let o = run_to(sink, args);
            let err = one_line_failure(&format!("{sink:?} {args:?}"), &o);
            if args[..] == ["mq", "ls"] && !mqueue {
                assert!(
                    err.contains("mqueue filesystem not mounted"),
                    "{args:?}: {err}"
                );
                continue;
            }
            assert!(err.contains("stdout"), "{sink:?} {args:?}: {err}");
            let expected = match sink {
                Sink::ClosedPipe => "EPIPE",
                Sink::Full => "ENOSPC",
            };
            assert!(err.contains(expected), "{sink:?} {args:?}: {err}");
            if matches!(sink, Sink::Full) {
                assert!(!err.contains("/dev/shm"), "advice names /dev/shm: {err}");
            }
        }
    }
    // Every undelivered message went back: still exactly one, intact.
    assert_eq!(ok(&["queue", "recv", &q, "--timeout", "2s"]), "kept\n");
    assert_eq!(ok(&["queue", "recv", &tq, "--timeout", "2s"]), "42\n");
}

#[test]
fn queue_recv_never_consumes_a_message_it_could_not_deliver() {
    let q = unique("undelivered");
    let _g = Guard(vec![q.clone()]);
    ok(&["queue", "create", &q, "--capacity", "4"]);
    ok(&["queue", "send", &q, "only"]);
    let stat = |q: &str| -> serde_json::Value {
        serde_json::from_str(&ok(&["queue", "stat", q, "--json"])).unwrap()
    };
    // Closed pipe: refused before anything is taken.
    let o = run_to(Sink::ClosedPipe, &["queue", "recv", &q, "--timeout", "2s"]);
    let err = one_line_failure("closed pipe", &o);
    assert!(err.contains("EPIPE"), "{err}");
    assert_eq!(stat(&q)["len"], 1);
    // Full device: taken, the write fails, put back, and the error says so.
    let o = run_to(Sink::Full, &["queue", "recv", &q, "--timeout", "2s"]);
    let err = one_line_failure("/dev/full", &o);
    assert!(err.contains("ENOSPC") && err.contains("put back"), "{err}");
    assert_eq!(stat(&q)["len"], 1);
    assert_eq!(ok(&["queue", "recv", &q, "--timeout", "2s"]), "only\n");
    assert_eq!(stat(&q)["len"], 0);
}

#[test]
fn non_utf8_names_and_special_modes_are_one_line_errors() {
    let bad = OsStr::from_bytes(b"shmkit-test-cli-\xff\xfe");
    let name = unique("mode");
    let fifo = std::env::temp_dir().join(unique("fifo"));
    let _g = Guard(vec![name.clone()]);
    let run = |args: &[&OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_shmkit"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run shmkit")
    };
    let o = OsStr::new;
    let name_cases: Vec<Vec<&OsStr>> = vec![
        vec![o("info"), bad],
        vec![o("rm"), bad],
        vec![o("value"), o("create"), bad, o("--type"), o("u8")],
        vec![o("array"), o("dump"), bad],
        vec![o("queue"), o("recv"), bad],
        vec![o("event"), o("set"), bad],
        vec![o("sem"), o("value"), bad, o("--named")],
        vec![o("mq"), o("info"), bad],
        vec![o("gc"), o("--dry-run"), o("--prefix"), bad],
    ];
    for args in &name_cases {
        let err = one_line_failure(&format!("{args:?}"), &run(args));
        assert!(err.contains("not valid UTF-8"), "{args:?}: {err}");
    }
    let mode_cases: Vec<Vec<&OsStr>> = vec![
        vec![o("value"), o("create"), o(&name), o("--type"), o("u8")],
        vec![o("array"), o("create"), o(&name), o("--type"), o("u8")],
        vec![o("mq"), o("create"), o(&name)],
        vec![o("fifo"), o("create"), fifo.as_os_str()],
    ];
    for base in &mode_cases {
        for mode in ["4755", "2700", "1777", "10000", "9"] {
            let mut args = base.clone();
            if base[1] == "create" && base[0] == "array" {
                args.extend([o("--len"), o("1")]);
            }
            args.extend([o("--mode"), o(mode)]);
            let err = one_line_failure(&format!("{args:?}"), &run(&args));
            assert!(err.contains("--mode"), "{args:?}: {err}");
        }
    }
    assert!(!std::path::Path::new(&format!("/dev/shm/{name}")).exists());
    assert!(!fifo.exists());
}

/// Child role: resizes each `/dev/shm/NAME` to random sizes (restoring a valid first page
/// now and then) until its parent goes away or a minute passes. `objects`: (name, first
/// page) pairs.
fn resizer(objects: &[(String, Vec<u8>)]) {
    use std::os::unix::fs::FileExt;
    let files: Vec<_> = objects
        .iter()
        .map(|(name, page)| {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/dev/shm/{name}"))
                .expect("open");
            (f, page)
        })
        .collect();
    let parent = nix::unistd::getppid();
    let sizes = [0u64, 1, 100, 255, 256, 4095, 4096, 4097, 65536, 1 << 20];
    let start = std::time::Instant::now();
    let mut x = u64::from(std::process::id()) | 1;
    harness::tell("resizing");
    while nix::unistd::getppid() == parent && start.elapsed() < Duration::from_secs(60) {
        for (f, page) in &files {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let _ = f.set_len(sizes[(x % sizes.len() as u64) as usize]);
            if x % 3 == 0 {
                let _ = f.write_all_at(page, 0);
            }
        }
    }
}

/// The first page (at most) of `/dev/shm/NAME`, saved to a temporary file.
fn save_first_page(name: &str) -> harness::PathGuard {
    let path = std::env::temp_dir().join(unique("header"));
    let bytes = std::fs::read(format!("/dev/shm/{name}")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len().min(4096)]).unwrap();
    harness::PathGuard(path)
}

#[test]
fn resizing_an_object_never_kills_the_cli() {
    if let Some(role) = harness::role() {
        assert_eq!(role, "resizer");
        let objects: Vec<_> = harness::args()
            .chunks_exact(2)
            .map(|p| (p[0].clone(), std::fs::read(&p[1]).expect("page copy")))
            .collect();
        resizer(&objects);
        std::process::exit(0);
    }
    let name = unique("resize");
    let mx = unique("resize-mx");
    let _g = Guard(vec![name.clone(), mx.clone()]);
    // A real array's first page, which the resizer writes back now and then, so the CLI
    // sees valid headers over payloads that come and go.
    ok(&["array", "create", &name, "--type", "u8", "--len", "100000"]);
    // A mutex this process holds (`info` decodes its words and asks the kernel whether
    // the owner's token is held). The handle and guard are leaked on purpose: the
    // resizer shrinks the object under our mapping, and unlocking would touch it.
    let m = Box::leak(Box::new(
        shmkit::sync::Mutex::<u64>::create(&mx, 7).unwrap(),
    ));
    std::mem::forget(m.lock().unwrap().into_guard());
    let info = ok(&["info", &mx]);
    assert!(
        info.contains(&format!("locked by pid {}", std::process::id())) && info.contains("alive"),
        "{info}"
    );
    let (page, mx_page) = (save_first_page(&name), save_first_page(&mx));
    let mut child = harness::child(
        "resizing_an_object_never_kills_the_cli",
        "resizer",
        &[
            &name,
            page.0.to_str().unwrap(),
            &mx,
            mx_page.0.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let listener = harness::Listener::new(child.stdout.take().unwrap());
    let mut child = Kill(child);
    assert_eq!(listener.next(Duration::from_secs(30)), "resizing");
    let prefix = name.clone();
    let commands: Vec<Vec<&str>> = vec![
        vec!["ls"],
        vec!["ls", "--json"],
        vec!["info", &name],
        vec!["info", &name, "--json"],
        vec!["gc", "--dry-run", "--prefix", &prefix],
        vec!["array", "dump", &name, "--raw", "--type", "u8"],
        vec!["array", "dump", &name],
        vec!["info", &mx],
        vec!["info", &mx, "--json"],
    ];
    let mut errors = 0;
    for round in 0..100 {
        for args in &commands {
            let o = Command::new(env!("CARGO_BIN_EXE_shmkit"))
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(
                o.status.signal(),
                None,
                "round {round}: {args:?} killed by a signal: {err}"
            );
            assert!(
                matches!(o.status.code(), Some(0 | 1)) && !err.contains("panicked"),
                "round {round}: {args:?}: {:?} {err}",
                o.status
            );
            errors += usize::from(!o.status.success());
        }
    }
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the resizer stopped early"
    );
    drop(child);
    eprintln!(
        "resize race: {errors} clean errors in {} runs",
        100 * commands.len()
    );
}
