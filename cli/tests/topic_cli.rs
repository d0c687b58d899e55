//! `shmkit topic`: create, pub, sub (with history, lag and disconnection), stat.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Guard, shmkit, unique};

#[test]
fn create_pub_sub_stat() {
    let name = unique("topic");
    let _g = Guard(vec![name.clone()]);
    let o = shmkit(&[
        "topic",
        "create",
        &name,
        "--capacity",
        "4",
        "--max-message",
        "8",
        "--policy",
        "overwrite",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        shmkit(&["topic", "pub", &name, "one", "two", "three"])
            .status
            .success()
    );
    let o = shmkit(&["topic", "pub", &name, "far too long"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("exceeds the limit of 8 bytes"));
    // A late joiner with history gets the last two, then Disconnected (every publisher,
    // the `pub` processes, has gone): exit status 3 at once, not after the timeout.
    let t = Instant::now();
    let o = shmkit(&[
        "topic",
        "sub",
        &name,
        "-n",
        "3",
        "--history",
        "2",
        "--timeout",
        "60s",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "two\nthree\n");
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("disconnected"));
    assert!(t.elapsed() < Duration::from_secs(30));

    // A live subscriber process shows up in stat with its lag. (On a fresh topic: one
    // whose publishers have all left says Disconnected to a new subscriber at once.)
    assert!(shmkit(&["rm", &name]).status.success());
    let o = shmkit(&[
        "topic",
        "create",
        &name,
        "--capacity",
        "4",
        "--policy",
        "overwrite",
    ]);
    assert!(o.status.success(), "{o:?}");
    let mut sub = Command::new(env!("CARGO_BIN_EXE_shmkit"))
        .args(["topic", "sub", &name, "-n", "1", "--timeout", "20s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = shmkit(&["topic", "stat", &name, "--json"]);
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(s["capacity"], 4);
        assert_eq!(s["policy"], "overwrite");
        let subs: Vec<_> = s["participants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["subscriber"] == true)
            .cloned()
            .collect();
        if let Some(p) = subs.first() {
            assert_eq!(p["alive"], true);
            assert_eq!(p["pid"], sub.id());
            assert_eq!(p["lag"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "subscriber never appeared");
        std::thread::yield_now();
    }
    let text = String::from_utf8_lossy(&shmkit(&["topic", "stat", &name]).stdout).into_owned();
    assert!(text.contains("subscriber lag 0 alive"), "{text}");
    assert!(shmkit(&["topic", "pub", &name, "four"]).status.success());
    let mut line = String::new();
    std::io::BufReader::new(sub.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "four\n");
    assert!(sub.wait().unwrap().success());
    let o = shmkit(&["topic", "stat", "no-such-topic-anywhere"]);
    assert!(!o.status.success());
}

#[test]
fn typed_topics_publish_and_deliver_numbers() {
    let name = common::unique("typedtopic");
    let _g = Guard(vec![name.clone()]);
    common::ok(&["topic", "create", &name, "--type", "f64", "--capacity", "8"]);
    common::ok(&["topic", "pub", &name, "--", "1.5", "-2", "3"]);
    assert!(common::fails(&["topic", "pub", &name, "x"]).contains("is not a f64"));
    let recs = common::json_lines(&common::ok(&[
        "topic",
        "sub",
        &name,
        "-n",
        "2",
        "--history",
        "2",
        "--json",
    ]));
    let data: Vec<_> = recs.iter().map(|r| r["data"].as_f64().unwrap()).collect();
    assert_eq!(data, [-2.0, 3.0]);
    assert_eq!(
        (&recs[0]["kind"], &recs[0]["op"], &recs[0]["type"]),
        (&"topic".into(), &"sub".into(), &"f64".into())
    );
    let out = common::ok(&[
        "topic",
        "sub",
        &name,
        "-n",
        "1",
        "--history",
        "1",
        "--type",
        "f64",
    ]);
    assert_eq!(out, "3\n");
    assert!(common::fails(&["topic", "sub", &name, "--type", "u8"]).contains("element type"));
    assert_eq!(
        common::json_one(&common::ok(&["topic", "stat", &name, "--json"]))["kind"],
        "topic"
    );
    assert!(common::ok(&["topic", "rm", &name]).contains("removed"));
}
