//! `shmkit latest`: create, get, set on real cells (scalars and byte strings), waiting
//! with --after, and the errors: a live writer holding the role, a too-long string, a
//! wrong type, a torn value.

mod common;

use common::{Guard, fails, ok, unique};

#[test]
fn scalar_create_get_set() {
    let name = unique("latest");
    let _g = Guard(vec![name.clone()]);
    assert!(ok(&["latest", "create", &name, "--type", "i32", "--init", "-7"]).contains("= -7"));
    assert_eq!(ok(&["latest", "get", &name]), "-7\n");
    // Each `set` is a new process: the previous writer is gone, its role is taken over.
    assert_eq!(ok(&["latest", "set", &name, "--", "-8"]), "1\n");
    assert_eq!(ok(&["latest", "set", &name, "9"]), "2\n");
    let j = common::json_one(&ok(&["latest", "get", &name, "--json"]));
    assert_eq!(
        (
            j["data"].as_i64(),
            j["version"].as_u64(),
            j["type"].as_str()
        ),
        (Some(9), Some(2), Some("i32"))
    );
    // --after an old version returns at once; --after the current one times out.
    assert_eq!(ok(&["latest", "get", &name, "--after", "1"]), "9\n");
    assert!(
        fails(&["latest", "get", &name, "--after", "2", "--timeout", "20ms"]).contains("timed out")
    );
    assert!(fails(&["latest", "set", &name, "x"]).contains("not a i32"));
    assert!(ok(&["ls"]).contains(&name));
    // The wrong command for the kind: a clear error.
    assert!(fails(&["value", "get", &name]).contains("kind"));
}

#[test]
fn byte_string_create_get_set() {
    let name = unique("latest-bytes");
    let _g = Guard(vec![name.clone()]);
    ok(&["latest", "create", &name, "--bytes", "8"]);
    assert_eq!(ok(&["latest", "get", &name]), "\n");
    assert_eq!(ok(&["latest", "set", &name, "hi there"]), "1\n");
    assert_eq!(ok(&["latest", "get", &name]), "hi there\n");
    let j = common::json_one(&ok(&["latest", "get", &name, "--json"]));
    assert_eq!(
        (&j["data"], &j["encoding"], &j["version"]),
        (&"hi there".into(), &"utf8".into(), &1.into())
    );
    assert_eq!(
        common::json_one(&ok(&["latest", "set", &name, "x", "--json"]))["version"],
        2
    );
    assert!(common::json_one(&ok(&["latest", "stat", &name, "--json"]))["kind"] == "latest");
    assert!(fails(&["queue", "rm", &name]).contains("kind mismatch"));
    assert!(ok(&["latest", "rm", &name]).contains("removed"));
    ok(&["latest", "create", &name, "--bytes", "8"]);
    ok(&["latest", "set", &name, "hi there"]);
    assert!(fails(&["latest", "set", &name, "123456789"]).contains("exceeds the limit of 8"));
    // --bytes with --type or --init is a usage error (clap: exit status 2).
    let o = common::shmkit(&[
        "latest",
        "create",
        &unique("x"),
        "--bytes",
        "4",
        "--init",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn live_writer_holds_the_role_and_a_torn_value_is_an_error() {
    use shmkit::latest::Latest;
    let name = unique("latest-role");
    let _g = Guard(vec![name.clone()]);
    ok(&["latest", "create", &name, "--type", "u64", "--init", "3"]);
    // This process becomes the writer and stops in the middle of a write.
    let mut w = Latest::<u64>::open(&name).unwrap();
    w.write_torn_for_test(&4, 0).unwrap();
    assert!(fails(&["latest", "set", &name, "5"]).contains("writer role"));
    assert!(fails(&["latest", "get", &name]).contains("would block"));
    // Once it is gone (dropped: role released), the next writer repairs the value.
    drop(w);
    // (exit status 3, as for every "the peer is gone" error)
    let o = common::shmkit(&["latest", "get", &name]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("half-written"), "{e}");
    assert_eq!(ok(&["latest", "set", &name, "5"]), "1\n");
    assert_eq!(ok(&["latest", "get", &name]), "5\n");
}
