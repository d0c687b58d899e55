//! `shmkit-bench` (the driver behind `shmkit bench`) end to end on the fastest workload:
//! the table, the JSON rows and the SVG.

use std::process::Command;

fn shmkit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shmkit-bench"))
}

#[test]
fn bench_writes_table_json_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let svg = dir.path().join("out.svg");
    let out = shmkit()
        .args([
            "--quick",
            "--workload",
            "lock",
            "--only",
            "pthread-mutex",
            "--json",
        ])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("## lock"), "{table}");
    assert!(table.contains("pthread-mutex"), "{table}");
    // The baseline always runs, so the ratio has a reference.
    assert!(table.contains("cas-spinlock"), "{table}");

    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(
        rows.len(),
        4,
        "2 mechanisms x uncontended/contended: {rows:?}"
    );
    for r in rows {
        for key in [
            "workload",
            "mechanism",
            "size",
            "median_ns",
            "p99_ns",
            "throughput_bytes_per_s",
            "ratio",
            "cpu_ns_per_op",
        ] {
            assert!(r.get(key).is_some(), "row lacks {key}: {r}");
        }
        assert_eq!(r["workload"], "lock");
        assert!(r["error"].is_null(), "{r}");
        assert!(r["median_ns"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
        // Both processes' CPU time over the measured interval, per lock+unlock.
        assert!(r["cpu_ns_per_op"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(table.contains(" cpu "), "{table}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    assert_eq!(
        svg.matches("<rect").count(),
        1 + 4,
        "background + one bar per row"
    );
}

#[test]
fn bench_rejects_unknown_mechanisms_and_workloads() {
    let out = shmkit()
        .args(["--quick", "--only", "no-such-thing"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-thing") && err.contains("spin-floor"),
        "{err}"
    );

    let out = shmkit().args(["--workload", "teleport"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("teleport"));
}
