//! `shmkit queue`: create, send, recv, stat on a real queue.

mod common;

use common::{Guard, shmkit};

#[test]
fn create_send_recv_stat() {
    let name = format!("shmkit-test-cliq-{}", std::process::id());
    let _g = Guard(vec![name.clone()]);
    let o = shmkit(&[
        "queue",
        "create",
        &name,
        "--capacity",
        "4",
        "--max-message",
        "8",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        shmkit(&["queue", "send", &name, "one", "two"])
            .status
            .success()
    );
    let o = shmkit(&["queue", "send", &name, "far too long"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("exceeds the limit of 8 bytes"));
    let o = shmkit(&["queue", "stat", &name, "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(s["len"], 2);
    assert_eq!(s["capacity"], 4);
    assert_eq!(s["mode"], "mpmc");
    let o = shmkit(&["queue", "recv", &name, "-n", "2"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "one\ntwo\n");
    // Every producer (the `send` processes) has gone: disconnected at once, exit status 3,
    // not after the (long) timeout.
    let t = std::time::Instant::now();
    let o = shmkit(&["queue", "recv", &name, "--timeout-ms", "60000"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("disconnected"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
    // A producer that comes back reconnects: its message is received.
    assert!(shmkit(&["queue", "send", &name, "three"]).status.success());
    let o = shmkit(&["queue", "recv", &name]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "three\n");
    let o = shmkit(&["queue", "stat", "no-such-queue-anywhere"]);
    assert!(!o.status.success());
}
