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

#[test]
fn baseline_compares_each_row_with_an_earlier_run() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.json");
    let new = dir.path().join("new.json");
    let run = |json: &std::path::Path, baseline: Option<&std::path::Path>| {
        let mut cmd = shmkit();
        cmd.args([
            "--quick",
            "--workload",
            "lock",
            "--only",
            "shmkit-mutex",
            "--json",
        ])
        .arg(json);
        if let Some(b) = baseline {
            cmd.arg("--baseline").arg(b);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run(&old, None);
    assert!(!first.contains("vs base"), "{first}");
    let second = run(&new, Some(&old));
    assert!(second.contains("vs base"), "{second}");
    assert!(
        second.contains(&format!("## against {}", old.display())),
        "{second}"
    );
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&new).unwrap()).unwrap();
    for r in rows.as_array().unwrap() {
        // Every row has a counterpart in the old run.
        assert!(r["change"].as_f64().is_some(), "{r}");
        assert!(r["noise_band"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["outside_noise"].is_boolean(), "{r}");
    }

    // A baseline that is not a --json file fails before anything runs.
    std::fs::write(&old, "{}").unwrap();
    let out = shmkit()
        .args(["--quick", "--workload", "lock", "--baseline"])
        .arg(&old)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a JSON array"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
