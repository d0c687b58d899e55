//! The `shmkit` binary on real segments.

mod common;

use common::{Guard, fails, json_one, json_rows, ok, unique};

#[test]
fn value_commands() {
    let v = unique("v");
    let _g = Guard(vec![v.clone()]);
    ok(&["value", "create", &v, "--type", "i32", "--init", "-5"]);
    assert_eq!(ok(&["value", "add", &v, "7"]).trim(), "2");
    assert_eq!(ok(&["value", "add", &v, "-10"]).trim(), "-8");
    ok(&["value", "set", &v, "123"]);
    let j = json_one(&ok(&["value", "get", &v, "--json"]));
    assert_eq!(j["data"], 123);
    assert_eq!(j["type"], "i32");
    assert_eq!((&j["kind"], &j["op"]), (&"value".into(), &"get".into()));
    assert_eq!(
        json_one(&ok(&["value", "add", &v, "1", "--json"]))["data"],
        124
    );
    assert_eq!(
        json_one(&ok(&["value", "stat", &v, "--json"]))["type"],
        "i32"
    );
    ok(&["value", "set", &v, "123"]);
    assert!(fails(&["value", "set", &v, "1.5"]).contains("is not a i32"));
    assert!(fails(&["value", "create", &v, "--type", "u8"]).contains("EEXIST"));
    let f = unique("f");
    let _g2 = Guard(vec![f.clone()]);
    ok(&["value", "create", &f, "--type", "f64", "--init", "2.5"]);
    assert!(fails(&["value", "add", &f, "1"]).contains("integer types"));
    ok(&["value", "set", &f, "-0.125"]);
    assert_eq!(ok(&["value", "get", &f]).trim(), "-0.125");
}

#[test]
fn array_commands_and_foreign_dump() {
    let a = unique("a");
    let _g = Guard(vec![a.clone()]);
    ok(&[
        "array", "create", &a, "--type", "u16", "--len", "5", "--fill", "3",
    ]);
    ok(&["array", "set", &a, "4", "65535"]);
    assert_eq!(ok(&["array", "dump", &a]).trim(), "3 3 3 3 65535");
    assert_eq!(ok(&["array", "get", &a, "4"]).trim(), "65535");
    assert!(fails(&["array", "set", &a, "5", "1"]).contains("out of bounds"));
    assert!(fails(&["array", "set", &a, "0", "65536"]).contains("is not a u16"));
    assert!(fails(&["array", "dump", &a, "--type", "u32"]).contains("mismatch"));
    let j = json_one(&ok(&["array", "dump", &a, "--json"]));
    assert_eq!(j["data"], serde_json::json!([3, 3, 3, 3, 65535]));
    assert_eq!(
        (&j["kind"], &j["op"], &j["type"]),
        (&"array".into(), &"dump".into(), &"u16".into())
    );
    let j = json_one(&ok(&["array", "get", &a, "4", "--json"]));
    assert_eq!((&j["data"], &j["index"]), (&65535.into(), &4.into()));
    // Opened as a value: kind mismatch.
    assert!(fails(&["value", "get", &a]).contains("kind mismatch"));
    // A foreign object, read raw.
    let raw = unique("raw");
    let _g2 = Guard(vec![raw.clone()]);
    std::fs::write(format!("/dev/shm/{raw}"), [1u8, 0, 2, 0, 3, 0]).unwrap();
    assert_eq!(
        ok(&["array", "dump", &raw, "--raw", "--type", "u16"]).trim(),
        "1 2 3"
    );
    assert!(fails(&["array", "dump", &raw]).contains("--raw"));
    assert!(fails(&["array", "dump", &raw, "--raw", "--type", "u32"]).contains("multiple of 4"));
}

#[test]
fn ls_info_rm_gc() {
    let live = unique("live");
    let dead = unique("dead");
    let _g = Guard(vec![live.clone(), dead.clone()]);
    // `live` stays mapped by this test process; `dead` was made by a CLI process that exited.
    let _v = shmkit::Value::<u64>::create(&live, 1).unwrap();
    ok(&["array", "create", &dead, "--type", "u8", "--len", "3"]);
    let rows = json_rows(&ok(&["ls", "--json"]));
    let row = |n: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .cloned()
            .unwrap()
    };
    let l = row(&live);
    assert_eq!(l["kind"], "value");
    assert_eq!(l["type"], "u64");
    assert_eq!(l["creator_pid"], std::process::id());
    assert_eq!(l["creator"], "holding");
    assert_eq!(l["usage"], "in use");
    assert_eq!(l["persistent"], false);
    assert!(
        l["attached_pids"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(std::process::id()))
    );
    let d = row(&dead);
    assert_eq!(d["creator"], "gone");
    assert_eq!(d["usage"], "unused");
    assert_eq!(d["persistent"], true);
    assert_eq!(d["len"], 3);
    let text = ok(&["ls"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&live) && l.contains("value")),
        "{text}"
    );

    let info = json_one(&ok(&["info", &live, "--json"]));
    assert_eq!(info["state"], "ready");
    assert_eq!(info["mode"], "0600");
    assert!(fails(&["info", "no/such"]).contains("invalid name"));
    assert!(fails(&["info", &unique("missing")]).contains("ENOENT"));

    // gc: `dead` is unused but persistent (made by the CLI): kept unless asked; `live` is
    // in use. Scoped to this test's names: other tests (and programs) run concurrently.
    let mine = |n: &str| n.rsplit_once('-').map(|(p, _)| format!("{p}-")).unwrap();
    let plan = |n: &str, extra: &[&str]| {
        let prefix = mine(n);
        let mut args = vec!["gc", "--dry-run", "--json", "--prefix", &prefix];
        args.extend_from_slice(extra);
        let rows = json_rows(&ok(&args));
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(plan(&live, &[])["action"], "keep");
    assert!(
        plan(&live, &[])["reason"]
            .as_str()
            .unwrap()
            .contains("in use")
    );
    assert_eq!(plan(&dead, &[])["action"], "keep");
    assert!(
        plan(&dead, &[])["reason"]
            .as_str()
            .unwrap()
            .contains("persistent")
    );
    assert_eq!(plan(&dead, &["--older-than", "1h"])["action"], "keep");
    assert_eq!(
        plan(&dead, &["--older-than", "0s"])["action"],
        "would remove"
    );
    assert_eq!(plan(&live, &["--include-persistent"])["action"], "keep");
    assert!(std::path::Path::new(&format!("/dev/shm/{dead}")).exists());
    ok(&["gc", "--prefix", &mine(&dead)]);
    assert!(std::path::Path::new(&format!("/dev/shm/{dead}")).exists());
    ok(&["gc", "--include-persistent", "--prefix", &mine(&dead)]);
    assert!(!std::path::Path::new(&format!("/dev/shm/{dead}")).exists());
    ok(&["gc", "--include-persistent", "--prefix", &mine(&live)]);
    assert!(std::path::Path::new(&format!("/dev/shm/{live}")).exists());
    // The one duration syntax: a usage error (exit 2), also for a bare number.
    for bad in ["soon", "7"] {
        let o = common::shmkit(&["gc", "--older-than", bad]);
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--older-than"),
            "{o:?}"
        );
    }

    ok(&["rm", &live]);
    assert!(!std::path::Path::new(&format!("/dev/shm/{live}")).exists());
    assert!(fails(&["rm", &live]).contains("ENOENT"));
}

#[test]
fn corrupted_header_is_one_clear_line() {
    let c = unique("corrupt");
    let _g = Guard(vec![c.clone()]);
    ok(&["value", "create", &c, "--type", "u64"]);
    let path = format!("/dev/shm/{c}");
    let mut b = std::fs::read(&path).unwrap();
    b[40] ^= 1; // creation time: only the checksum notices
    std::fs::write(&path, &b).unwrap();
    assert!(fails(&["value", "get", &c]).contains("checksum mismatch"));
    assert!(fails(&["info", &c]).contains("checksum"));
    let rows = ok(&["ls", "--json"]);
    assert!(rows.contains("\"corrupt\""), "{rows}");
}

/// A plain build has no benchmark (it would pull in the harness's peer crates); the
/// subcommand says where the benchmark is instead of a usage error.
#[cfg(not(feature = "bench"))]
#[test]
fn bench_without_the_feature_says_how_to_get_it() {
    let err = fails(&["bench", "--quick", "--json", "x.json"]);
    assert!(
        err.contains("shmkit-bench") && err.contains("--features bench"),
        "{err}"
    );
}

/// With `--features bench` the subcommand is the harness's driver (tested end to end in
/// compare/tests/report.rs).
#[cfg(feature = "bench")]
#[test]
fn bench_with_the_feature_runs_the_driver() {
    let err = fails(&["bench", "--quick", "--only", "no-such-thing"]);
    assert!(err.contains("spin-floor"), "{err}");
}

/// `shmkit --help` states the conventions every subcommand follows.
#[test]
fn help_states_the_conventions() {
    let help = ok(&["--help"]);
    for needle in [
        "Verbs",
        "Durations",
        "1.5s, 250ms",
        "JSON Lines",
        "--named",
        "Exit",
    ] {
        assert!(help.contains(needle), "{needle:?} not in {help}");
    }
    // Every timeout flag says it takes a duration.
    for cmd in [
        &["queue", "recv", "--help"][..],
        &["topic", "sub", "--help"],
        &["mq", "recv", "--help"],
        &["fifo", "send", "--help"],
        &["event", "wait", "--help"],
        &["sem", "wait", "--help"],
        &["mutex", "get", "--help"],
        &["latest", "get", "--help"],
    ] {
        assert!(ok(cmd).contains("--timeout <DURATION>"), "{cmd:?}");
    }
}
