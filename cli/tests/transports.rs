//! `shmkit mq` and `shmkit fifo` end to end, through the built binary.

mod common;

use common::{fails, json_one, ok, shmkit};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct MqGuard(String);
impl Drop for MqGuard {
    fn drop(&mut self) {
        let _ = shmkit::mq::MessageQueue::unlink(&self.0);
    }
}

#[test]
fn mq_commands() {
    let name = format!("shmkit-cli-mq-{}", std::process::id());
    let _g = MqGuard(name.clone());
    ok(&["mq", "create", &name, "--capacity", "4", "--msg-size", "64"]);
    ok(&["mq", "send", &name, "low", "--prio", "1"]);
    ok(&[
        "mq",
        "send",
        &name,
        "high",
        "--prio",
        "8",
        "--timeout",
        "1s",
    ]);
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["mq", "stat", &name, "--json"])).unwrap();
    assert_eq!(info["capacity"], 4);
    assert_eq!(info["msg_size"], 64);
    assert_eq!(info["current"], 2);
    let out = ok(&["mq", "recv", &name, "-n", "2", "--json"]);
    let msgs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(msgs[0]["data"], "high");
    assert_eq!(msgs[0]["priority"], 8);
    assert_eq!(msgs[1]["data"], "low");
    assert_eq!(
        (&msgs[1]["kind"], &msgs[1]["op"]),
        (&"mq".into(), &"recv".into())
    );
    // A bare number is no duration: refused (usage error), whatever the command.
    let o = shmkit(&["mq", "recv", &name, "--timeout", "100"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no unit"),
        "{o:?}"
    );
    // Empty queue: a bounded receive fails with a timeout message.
    let t = Instant::now();
    let o = shmkit(&["mq", "recv", &name, "--timeout", "100ms"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("timed out"));
    assert!(t.elapsed() < Duration::from_secs(20));
    // Limits name the knob.
    let o = shmkit(&[
        "mq",
        "create",
        &format!("{name}-big"),
        "--capacity",
        "100000",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/proc/sys/fs/mqueue/msg_max"));
    // ls: lists the queue when the mqueue file system is (or can be) mounted, and says
    // how to mount it otherwise.
    let o = shmkit(&["mq", "ls", "--json"]);
    if o.status.success() {
        let rows = common::json_lines(&String::from_utf8(o.stdout).unwrap());
        let row = rows
            .iter()
            .find(|r| r["name"] == name.as_str())
            .expect("queue listed");
        assert_eq!(row["capacity"], 4);
        assert_eq!(row["mode"], "600");
    } else {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("mount -t mqueue"), "{err}");
    }
    assert!(ok(&["mq", "rm", &name]).contains("removed"));
    assert!(!shmkit(&["mq", "info", &name]).status.success());
}

#[test]
fn fifo_commands() {
    let path = std::env::temp_dir().join(format!("shmkit-cli-fifo-{}", std::process::id()));
    let p = path.to_str().unwrap();
    let _ = std::fs::remove_file(&path);
    ok(&["fifo", "create", p]);
    let reader = Command::new(env!("CARGO_BIN_EXE_shmkit"))
        .args(["fifo", "recv", p, "-n", "2", "--json", "--timeout", "30s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    ok(&["fifo", "send", p, "hello", "wörld", "--timeout", "30s"]);
    let out = reader.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["data"], "hello");
    assert_eq!(lines[1]["data"], "wörld");
    assert_eq!(lines[1]["len"], "wörld".len());
    assert_eq!(
        (&lines[1]["kind"], &lines[1]["encoding"]),
        (&"fifo".into(), &"utf8".into())
    );
    // stat: lstat only, mode 600 by default; --json one record.
    let text = ok(&["fifo", "stat", p]);
    assert!(text.contains("mode  600"), "{text}");
    let v = json_one(&ok(&["fifo", "stat", p, "--json"]));
    assert_eq!((&v["kind"], &v["op"]), (&"fifo".into(), &"stat".into()));
    assert_eq!(v["mode"], "600");
    ok(&["fifo", "rm", p]);
    assert!(!path.exists());
    // Not a FIFO (a regular file): refused, and left alone.
    std::fs::write(&path, b"x").unwrap();
    let err = fails(&["fifo", "stat", p]);
    assert!(err.contains("not a FIFO"), "{err}");
    std::fs::remove_file(&path).unwrap();
}

/// `mq ls` without the mqueue file system: says how to mount it, mounts nothing. Needs a
/// private mount namespace to unmount it in (root, `unshare`); skipped otherwise.
#[test]
fn mq_ls_unmounted_says_how_to_mount_it() {
    let script = r#"
        while dir=$(awk '$3 == "mqueue" { print $2; exit }' /proc/self/mounts); [ -n "$dir" ]; do
            umount -l "$dir" || exit 99
        done
        exec "$SHMKIT" mq ls
    "#;
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("SHMKIT", env!("CARGO_BIN_EXE_shmkit"))
        .stdin(Stdio::null())
        .output();
    let o = match o {
        Ok(o)
            if o.status.code() != Some(99)
                && !String::from_utf8_lossy(&o.stderr).contains("unshare:") =>
        {
            o
        }
        other => {
            eprintln!("skipped: no private mount namespace here ({other:?})");
            return;
        }
    };
    let err = common::one_line_failure("mq ls unmounted", &o);
    assert!(err.contains("mqueue filesystem not mounted"), "{err}");
    assert!(err.contains("mount -t mqueue none /dev/mqueue"), "{err}");
}
