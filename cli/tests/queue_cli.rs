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
    let o = shmkit(&["queue", "recv", &name, "--timeout-ms", "20"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("timed out"));
    let o = shmkit(&["queue", "stat", "no-such-queue-anywhere"]);
    assert!(!o.status.success());
}
