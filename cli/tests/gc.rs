//! `shmkit gc` and `ls` decide liveness with kernel locks: PID namespaces, dead creators,
//! live creators' temporaries and reused pids. Real processes; `unshare` needs root.

mod common;
#[path = "../../tests/common/mod.rs"]
mod harness;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Guard, ok, unique};

const BIN: &str = env!("CARGO_BIN_EXE_shmkit");

/// Runs a child role if this process is one; returns true if it was.
fn child_role() -> bool {
    let Some(role) = harness::role() else {
        return false;
    };
    let args = harness::args();
    match role.as_str() {
        // Creates a non-persistent segment and exits (its handle dies with it).
        "creator" => {
            let _v = shmkit::Value::<u64>::create(&args[0], 5).expect("create");
        }
        // Creates a segment whose initialisation blocks until stdin closes.
        "blocked-creator" => {
            use shmkit::segment::{ElemInfo, Kind, Layout};
            let layout = Layout::new(Kind::Bytes, ElemInfo::bytes(16));
            shmkit::Segment::options()
                .create(&args[0], &layout, |_| {
                    harness::tell("initialising");
                    let mut b = [0u8; 1];
                    let _ = std::io::Read::read(&mut std::io::stdin(), &mut b);
                    Ok(())
                })
                .expect("create");
        }
        // Plays a creator between steps 1 and 2 of the init protocol: a small temporary
        // (no header yet) under its exclusive flock, until stdin closes.
        "temp-holder" => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(Path::new("/dev/shm").join(&args[0]))
                .expect("create temporary");
            std::io::Write::write_all(&mut &f, &[0u8; 100]).expect("write");
            let _lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
                .map_err(|(_, e)| e)
                .expect("flock");
            harness::tell("holding");
            let mut b = [0u8; 1];
            let _ = std::io::Read::read(&mut std::io::stdin(), &mut b);
        }
        r => panic!("unknown role {r}"),
    }
    std::process::exit(0);
}

fn exists(name: &str) -> bool {
    Path::new("/dev/shm").join(name).exists()
}

/// The `gc --dry-run --json` row for `name`.
fn plan(name: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["gc", "--dry-run", "--json", "--prefix", name];
    args.extend_from_slice(extra);
    let rows = common::json_rows(&ok(&args));
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in {rows}"))
}

/// `unshare -p --fork --mount-proc`, or `None` (with the reason printed) if the command
/// does not exist here.
fn unshare() -> Option<Command> {
    match Command::new("unshare").arg("--version").output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: `unshare` is not installed");
            None
        }
        _ => {
            let mut c = Command::new("unshare");
            c.args(["-p", "--fork", "--mount-proc"])
                .stdin(Stdio::null());
            Some(c)
        }
    }
}

/// Runs a command to completion within 60 s (killed and failed otherwise).
fn run_bounded(mut c: Command) -> std::process::Output {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(o) => o.expect("wait"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{c:?} did not finish within 60 s");
        }
    }
}

#[test]
fn gc_in_a_pid_namespace_keeps_a_segment_held_outside() {
    let Some(_) = unshare() else { return };
    let name = unique("gc-ns");
    let _g = Guard(vec![name.clone()]);
    // Held (and mapped) by this process, which the namespace cannot see.
    let _v = shmkit::Value::<u64>::create(&name, 1).unwrap();
    let mut ls = unshare().unwrap();
    ls.args([BIN, "ls", "--json"]);
    let o = run_bounded(ls);
    assert!(o.status.success(), "{o:?}");
    let rows = common::json_rows(&String::from_utf8(o.stdout).unwrap());
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name.as_str())
        .unwrap();
    // The namespace hides the mapper: only the kernel lock tells.
    assert_eq!(row["attached_pids"], serde_json::json!([]), "{row}");
    assert_eq!(row["usage"], "in use", "{row}");
    for dry in [true, false] {
        let mut gc = unshare().unwrap();
        gc.args([
            BIN,
            "gc",
            "--json",
            "--include-persistent",
            "--prefix",
            &name,
        ]);
        if dry {
            gc.arg("--dry-run");
        }
        let o = run_bounded(gc);
        assert!(o.status.success(), "{o:?}");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("\"keep\"") && text.contains("in use"),
            "{text}"
        );
        assert!(
            exists(&name),
            "gc in a PID namespace removed a segment in use"
        );
    }
}

#[test]
fn gc_removes_an_unused_segment_whose_creator_died() {
    if child_role() {
        return;
    }
    let name = unique("gc-dead");
    let _g = Guard(vec![name.clone()]);
    let mut c = harness::child(
        "gc_removes_an_unused_segment_whose_creator_died",
        "creator",
        &[&name],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    harness::wait_ok(&mut c, Duration::from_secs(30));
    let row = plan(&name, &[]);
    assert_eq!(row["action"], "would remove", "{row}");
    assert!(exists(&name));
    ok(&["gc", "--prefix", &name]);
    assert!(!exists(&name), "an unused segment of a dead creator stayed");
}

/// Starts `role` for `name` with a pipe on its stdin and waits for its report `said`.
fn start_held(test: &str, role: &str, name: &str, said: &str) -> std::process::Child {
    let mut c = harness::child(test, role, &[name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let listener = harness::Listener::new(c.stdout.take().unwrap());
    assert_eq!(listener.next(Duration::from_secs(30)), said);
    c
}

#[test]
fn gc_never_removes_what_a_live_creator_is_initialising() {
    if child_role() {
        return;
    }
    const TEST: &str = "gc_never_removes_what_a_live_creator_is_initialising";
    let all = ["--include-persistent", "--older-than", "0s"];
    // A temporary (100 bytes, no header yet) under a live creator's lock.
    // Whatever gc is told, it keeps `name` while `holder` lives; then lets the holder go.
    let kept_while_held = |name: &str, mut holder: std::process::Child| {
        let row = plan(name, &all);
        assert_eq!(row["action"], "keep", "{row}");
        let why = row["reason"].as_str().unwrap();
        assert!(
            why.contains("initialising") || why.contains("in use"),
            "{row}"
        );
        let mut gc = vec!["gc", "--prefix", name];
        gc.extend_from_slice(&all);
        ok(&gc);
        assert!(exists(name), "gc removed {name} under a live creator");
        drop(holder.stdin.take());
        harness::wait_ok(&mut holder, Duration::from_secs(30));
    };
    // A temporary (100 bytes, no header yet) under a live creator's lock.
    let temp = format!(".shmkit-init.{}", unique("tmp"));
    let _t = Guard(vec![temp.clone()]);
    kept_while_held(&temp, start_held(TEST, "temp-holder", &temp, "holding"));
    // The creator died: now it is litter, and goes.
    assert_eq!(plan(&temp, &[])["action"], "would remove");
    ok(&["gc", "--prefix", &temp]);
    assert!(!exists(&temp), "a dead creator's temporary stayed");
    // A published segment whose initialiser is still running.
    let name = unique("gc-init");
    let _g = Guard(vec![name.clone()]);
    kept_while_held(
        &name,
        start_held(TEST, "blocked-creator", &name, "initialising"),
    );
    assert!(exists(&name));
}

#[test]
fn ls_does_not_take_a_reused_pid_for_the_dead_creator() {
    if child_role() {
        return;
    }
    let Some(mut sh) = unshare() else { return };
    let name = unique("reuse");
    let _g = Guard(vec![name.clone()]);
    let dir = std::env::temp_dir().join(unique("reuse-dir"));
    std::fs::create_dir(&dir).unwrap();
    let _d = harness::DirGuard(dir.clone());
    let exe = std::env::current_exe().unwrap();
    // Inside a new PID namespace: the creator gets pid 200 and exits; a sleeper gets pid
    // 200 again (ns_last_pid), and `ls` runs while it lives.
    let script = r#"
        set -e
        echo 199 > /proc/sys/kernel/ns_last_pid
        SHMKIT_TEST_ROLE=creator "$EXE" ls_does_not_take_a_reused_pid_for_the_dead_creator \
            --exact --nocapture --test-threads=1 > /dev/null
        echo 199 > /proc/sys/kernel/ns_last_pid
        sleep 60 &
        echo $! > "$DIR/sleeper"
        "$SHMKIT" ls --json > "$DIR/ls.json"
        kill $!
    "#;
    sh.args(["sh", "-c", script])
        .env("EXE", &exe)
        .env("SHMKIT", BIN)
        .env("DIR", &dir)
        .env("SHMKIT_TEST_ARGS", &name);
    let o = run_bounded(sh);
    assert!(o.status.success(), "{o:?}");
    let sleeper: u64 = std::fs::read_to_string(dir.join("sleeper"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let rows = common::json_rows(&std::fs::read_to_string(dir.join("ls.json")).unwrap());
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name.as_str())
        .unwrap();
    // The pid was reused: the creator's pid is the live sleeper's...
    assert_eq!(row["creator_pid"], sleeper, "{row}");
    // ...and still the creator's handle is known to be gone.
    assert_eq!(row["creator"], "gone", "{row}");
    assert_eq!(row["usage"], "unused", "{row}");
}
