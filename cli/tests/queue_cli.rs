//! `shmkit queue`: create, send, recv, stat, rm on real queues (bytes and typed).

mod common;

use common::{Guard, fails, json_lines, ok, shmkit, unique};

#[test]
fn typed_queues_send_and_recv_numbers() {
    let name = unique("typedq");
    let _g = Guard(vec![name.clone()]);
    ok(&["queue", "create", &name, "--type", "i64", "--capacity", "8"]);
    ok(&["queue", "send", &name, "--", "-5", "7"]);
    // A program's Queue<i64> sees the same numbers.
    let q = shmkit::queue::Queue::<i64>::open(&name).unwrap();
    q.send(9).unwrap();
    assert_eq!(ok(&["queue", "recv", &name]), "-5\n");
    let recs = json_lines(&ok(&[
        "queue", "recv", &name, "-n", "2", "--json", "--type", "i64",
    ]));
    let data: Vec<_> = recs.iter().map(|r| r["data"].as_i64().unwrap()).collect();
    assert_eq!(data, [7, 9]);
    assert_eq!(
        (&recs[0]["kind"], &recs[0]["op"], &recs[0]["type"]),
        (&"queue".into(), &"recv".into(), &"i64".into())
    );
    // --type asserts the element type; a number that is not one is refused before sending.
    assert!(fails(&["queue", "recv", &name, "--type", "u8"]).contains("element type mismatch"));
    assert!(fails(&["queue", "send", &name, "1", "x"]).contains("is not a i64"));
    assert_eq!(
        json_lines(&ok(&["queue", "stat", &name, "--json"]))[0]["len"],
        0
    );
    drop(q);
    // rm checks the kind: not a topic, but a queue.
    assert!(fails(&["topic", "rm", &name]).contains("kind mismatch"));
    assert!(ok(&["queue", "rm", &name]).contains("removed"));
    assert!(!std::path::Path::new("/dev/shm").join(&name).exists());
}

#[test]
fn byte_queue_json_is_one_lossless_line_per_message() {
    let name = unique("jsonq");
    let _g = Guard(vec![name.clone()]);
    ok(&["queue", "create", &name]);
    let q = shmkit::queue::ByteQueue::open(&name).unwrap();
    q.send(b"text").unwrap();
    q.send(&[0xff, 0x00]).unwrap();
    let recs = json_lines(&ok(&["queue", "recv", &name, "-n", "2", "--json"]));
    assert_eq!(recs.len(), 2);
    assert_eq!(
        (&recs[0]["data"], &recs[0]["encoding"], &recs[0]["len"]),
        (&"text".into(), &"utf8".into(), &4.into())
    );
    assert_eq!(
        (&recs[1]["data"], &recs[1]["encoding"], &recs[1]["len"]),
        (&"ff00".into(), &"hex".into(), &2.into())
    );
    assert_eq!(recs[1]["kind"], "bytequeue");
    // Flags after the messages are flags, not messages.
    ok(&["queue", "send", &name, "a", "--timeout", "1s"]);
    assert_eq!(ok(&["queue", "recv", &name, "-n", "1"]), "a\n");
    assert_eq!(
        json_lines(&ok(&["queue", "stat", &name, "--json"]))[0]["len"],
        0
    );
    // --type on a byte queue: the mismatch says it holds bytes.
    assert!(fails(&["queue", "recv", &name, "--type", "u64"]).contains("bytes (a bytequeue)"));
}

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
    let o = shmkit(&["queue", "recv", &name, "--timeout", "60s"]);
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
