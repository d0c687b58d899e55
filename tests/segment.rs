//! Segments and typed values across real processes.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use common::{ShmGuard, child, role, unique, wait_bounded, wait_ok};
use shmkit::segment::{HeaderError, Kind};
use shmkit::{Array, ElemInfo, Error, Layout, Segment, Value};

const LIMIT: Duration = Duration::from_secs(60);

fn bytes_layout(n: u64) -> Layout {
    Layout::new(Kind::Bytes, ElemInfo::bytes(n))
}

#[test]
fn racing_open_or_create_has_exactly_one_initializer() {
    if let Some(r) = role() {
        assert_eq!(r, "racer");
        let name = &common::args()[0];
        // Wait (bounded) for the parent's go signal on stdin so all racers start together.
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        let (seg, created) = Segment::open_or_create(name, &bytes_layout(4096), |p| {
            p.fill(0xAB);
            Ok(())
        })
        .unwrap();
        // SAFETY: the payload is only written by the initializer, before publication.
        let all = unsafe { std::slice::from_raw_parts(seg.payload_ptr(), 4096) };
        assert!(
            all.iter().all(|&b| b == 0xAB),
            "saw an uninitialised payload"
        );
        common::tell(if created { "created" } else { "opened" });
        std::process::exit(0);
    }
    for round in 0..5 {
        let name = unique("race");
        let _g = ShmGuard::new(&name);
        let mut kids: Vec<_> = (0..8)
            .map(|_| {
                child(
                    "racing_open_or_create_has_exactly_one_initializer",
                    "racer",
                    &[&name],
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
            })
            .collect();
        for k in &mut kids {
            k.stdin.take().unwrap().write_all(b"go\n").unwrap();
        }
        let mut created = 0;
        for k in &mut kids {
            let out = common::Listener::new(k.stdout.take().unwrap()).next(LIMIT);
            wait_ok(k, LIMIT);
            match out.as_str() {
                "created" => created += 1,
                "opened" => {}
                other => panic!("round {round}: unexpected child output {other:?}"),
            }
        }
        assert_eq!(created, 1, "round {round}: {created} initializers");
    }
}

#[test]
fn atomic_adds_from_several_processes_sum_exactly() {
    const PER_CHILD: u64 = 200_000;
    const CHILDREN: u64 = 4;
    if let Some(r) = role() {
        assert_eq!(r, "adder");
        let v = Value::<u64>::open(&common::args()[0]).unwrap();
        for _ in 0..PER_CHILD {
            v.fetch_add(1);
        }
        std::process::exit(0);
    }
    let name = unique("adds");
    let _g = ShmGuard::new(&name);
    let v = Value::<u64>::create(&name, 0).unwrap();
    let mut kids: Vec<_> = (0..CHILDREN)
        .map(|_| {
            child(
                "atomic_adds_from_several_processes_sum_exactly",
                "adder",
                &[&name],
            )
            .spawn()
            .unwrap()
        })
        .collect();
    for k in &mut kids {
        wait_ok(k, LIMIT);
    }
    assert_eq!(v.load(), PER_CHILD * CHILDREN);
}

#[test]
fn anonymous_segments_are_shared_after_fork() {
    let a = Array::<u32>::anonymous(16, 0).unwrap();
    // SAFETY: the child only touches the shared array and then _exits, no allocation or
    // locks from the parent's other threads are used.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            for i in 0..16 {
                let _ = a.fetch_add(i, i as u32 * 3);
            }
            // SAFETY: _exit is async-signal-safe and skips the parent's atexit handlers.
            unsafe { libc::_exit(0) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            assert_eq!(a.to_vec(), (0..16).map(|i| i * 3).collect::<Vec<u32>>());
            assert!(a.segment().unwrap().backing().path().is_none());
        }
    }
}

#[test]
fn wrong_kind_type_or_len_is_a_clear_error() {
    let name = unique("mismatch");
    let _g = ShmGuard::new(&name);
    Value::<u64>::create(&name, 5).unwrap();
    let e = Value::<u32>::open(&name).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Mismatch {
                what: "element type",
                ..
            }
        ),
        "{e}"
    );
    let e = Value::<i64>::open(&name).unwrap_err(); // same size, different type tag
    assert!(
        matches!(
            e,
            Error::Mismatch {
                what: "element type",
                ..
            }
        ),
        "{e}"
    );
    let e = Array::<u64>::open(&name).unwrap_err();
    assert!(matches!(e, Error::Mismatch { what: "kind", .. }), "{e}");
    assert!(
        e.to_string().contains(&name) && e.to_string().contains("shmkit info"),
        "{e}"
    );
    let e = Value::<u64>::create(&name, 1).unwrap_err();
    assert!(e.is_already_exists(), "{e}");
    assert_eq!(
        Value::<u64>::open(&name).unwrap().load(),
        5,
        "failed create must not touch it"
    );

    let arr = unique("mismatch-arr");
    let _g2 = ShmGuard::new(&arr);
    Array::<u16>::create(&arr, 10, 1).unwrap();
    let e = Array::<u16>::open_or_create(&arr, 11, 0).unwrap_err();
    assert!(matches!(e, Error::Mismatch { what: "length", .. }), "{e}");
    assert_eq!(Array::<u16>::open(&arr).unwrap().len(), 10);
}

#[test]
fn truncated_and_corrupted_segments_are_refused() {
    let name = unique("corrupt");
    let _g = ShmGuard::new(&name);
    let path = format!("/dev/shm/{name}");
    let header_err = |e: Error| match e {
        Error::Header { source, .. } => source,
        other => panic!("expected a header error, got {other}"),
    };
    Array::<u64>::create(&name, 8, 9).unwrap();
    let pristine = std::fs::read(&path).unwrap();
    let write = |bytes: &[u8]| std::fs::write(&path, bytes).unwrap();

    // Truncations.
    write(&pristine[..100]);
    assert_eq!(
        header_err(Array::<u64>::open(&name).unwrap_err()),
        HeaderError::TooShort { len: 100 }
    );
    write(&pristine[..300]);
    assert!(matches!(
        header_err(Array::<u64>::open(&name).unwrap_err()),
        HeaderError::LengthMismatch {
            header: 320,
            actual: 300
        }
    ));
    // Corruptions of an immutable field, the magic, and the element count.
    let mut b = pristine.clone();
    b[24] ^= 0xff; // creator pid
    write(&b);
    assert!(matches!(
        header_err(Array::<u64>::open(&name).unwrap_err()),
        HeaderError::ChecksumMismatch { .. }
    ));
    let mut b = pristine.clone();
    b[0] = b'X';
    write(&b);
    let e = Array::<u64>::open(&name).unwrap_err();
    assert!(
        e.to_string().contains("--raw"),
        "foreign advice missing: {e}"
    );
    let mut b = pristine.clone();
    b[88..96].copy_from_slice(&u64::MAX.to_le_bytes()); // elem_count
    write(&b);
    assert!(matches!(
        header_err(Array::<u64>::open(&name).unwrap_err()),
        HeaderError::ElementsOutOfBounds { .. }
    ));
    // A bad state word.
    let mut b = pristine.clone();
    b[16] = 9;
    write(&b);
    assert!(matches!(
        header_err(Array::<u64>::open(&name).unwrap_err()),
        HeaderError::BadState { found: 9 }
    ));
    // Restored, it opens again.
    write(&pristine);
    assert_eq!(Array::<u64>::open(&name).unwrap().to_vec(), vec![9; 8]);
}

#[test]
fn creator_killed_during_init_is_detected_and_recovered() {
    if let Some(r) = role() {
        assert_eq!(r, "stuck-creator");
        let name = &common::args()[0];
        let _ = Segment::create(name, &bytes_layout(64), |p| {
            p[0] = 1;
            common::tell("initialising");
            // Block until the parent kills us (bounded: the parent kills well before).
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
            std::process::exit(3);
        });
        unreachable!();
    }
    let name = unique("stuck");
    let _g = ShmGuard::new(&name);
    let mut kid = child(
        "creator_killed_during_init_is_detected_and_recovered",
        "stuck-creator",
        &[&name],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let listener = common::Listener::new(kid.stdout.take().unwrap());
    assert_eq!(listener.next(LIMIT), "initialising");

    // While the creator lives, openers wait (bounded) and time out.
    let e = Segment::options()
        .timeout(Duration::from_millis(50))
        .open(&name)
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let ins =
        shmkit::segment::inspect_path(std::path::Path::new(&format!("/dev/shm/{name}"))).unwrap();
    assert!(ins.initializing);

    kid.kill().unwrap();
    let st = wait_bounded(&mut kid, LIMIT);
    assert!(!st.success());
    let _stdin = kid.stdin.take();

    // After its death: a clear Abandoned error naming the creator's pid...
    match Segment::open(&name).unwrap_err() {
        Error::Abandoned { pid, .. } => assert_eq!(pid, kid.id()),
        other => panic!("expected Abandoned, got {other}"),
    }
    // ...and open_or_create re-initialises it in place.
    let (seg, created) = Segment::open_or_create(&name, &bytes_layout(64), |p| {
        p[0] = 2;
        Ok(())
    })
    .unwrap();
    assert!(created);
    assert_eq!(seg.creator().pid, std::process::id());
    // SAFETY: initialised before publication; nobody writes it now.
    assert_eq!(unsafe { *seg.payload_ptr() }, 2);
    let (_again, created) = Segment::open_or_create(&name, &bytes_layout(64), |_| Ok(())).unwrap();
    assert!(!created);
}

#[test]
fn failed_or_panicking_init_leaves_nothing_behind() {
    let name = unique("failinit");
    let _g = ShmGuard::new(&name);
    let e = Segment::create(&name, &bytes_layout(8), |_| {
        Err(Error::invalid("x", "init", "no"))
    })
    .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }));
    assert!(Segment::open(&name).unwrap_err().is_not_found());
    let r =
        std::panic::catch_unwind(|| Segment::create(&name, &bytes_layout(8), |_| panic!("boom")));
    assert!(r.is_err());
    assert!(Segment::open(&name).unwrap_err().is_not_found());
    // No temporary objects of ours are left either.
    let prefix = format!(".shmkit-init.{}.", std::process::id());
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn mode_is_applied_exactly_and_unlink_on_drop_removes_only_ours() {
    let name = unique("mode");
    let _g = ShmGuard::new(&name);
    let path = format!("/dev/shm/{name}");
    let seg = Segment::options()
        .mode(0o640)
        .unlink_on_drop(true)
        .create(&name, &bytes_layout(1), |_| Ok(()))
        .unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    // Replace the object under the name: dropping `seg` must not remove the new one.
    Segment::unlink(&name).unwrap();
    let _new = Segment::create(&name, &bytes_layout(1), |_| Ok(())).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    drop(seg);
    assert!(
        std::fs::metadata(&path).is_ok(),
        "dropped handle removed a replacement"
    );
}

#[test]
fn file_backed_segments_refuse_symlinks_and_work_across_processes() {
    if let Some(r) = role() {
        assert_eq!(r, "file-adder");
        let v = Value::<i32>::open_file(&common::args()[0]).unwrap();
        v.fetch_add(-7);
        std::process::exit(0);
    }
    let dir = std::env::temp_dir().join(unique("filedir"));
    std::fs::create_dir(&dir).unwrap();
    let _dg = common::DirGuard(dir.clone());
    let path = dir.join("v.seg");
    let v = Value::<i32>::create_file(&path, 10).unwrap();
    let mut k = child(
        "file_backed_segments_refuse_symlinks_and_work_across_processes",
        "file-adder",
        &[path.to_str().unwrap()],
    )
    .spawn()
    .unwrap();
    wait_ok(&mut k, LIMIT);
    assert_eq!(v.load(), 3);
    let link = dir.join("link.seg");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let e = Value::<i32>::open_file(&link).unwrap_err();
    assert_eq!(e.errno(), Some(nix::errno::Errno::ELOOP), "{e}");
    let e = Value::<i32>::create_file(&link, 0).unwrap_err();
    assert!(e.is_already_exists(), "{e}");
}

#[test]
fn hostile_names_and_sizes_fail_before_any_syscall() {
    for bad in ["", "a/b", "..", "x y", ".shmkit-init.1.2.3"] {
        assert!(
            matches!(Value::<u8>::create(bad, 0), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
    }
    let huge = Layout::new(Kind::Bytes, ElemInfo::bytes(u64::MAX));
    let e = Segment::create(&unique("huge"), &huge, |_| Ok(())).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let mut odd = Layout::new(Kind::Array, ElemInfo::of::<u64>(2));
    odd.elem.align = 3;
    assert!(matches!(
        Segment::create(&unique("odd"), &odd, |_| Ok(())),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn foreign_python_segment_opens_as_typed_slice() {
    let name = unique("py");
    let _g = ShmGuard::new(&name);
    let script = format!(
        "from multiprocessing import shared_memory, resource_tracker\n\
         s = shared_memory.SharedMemory(name='{name}', create=True, size=32)\n\
         resource_tracker.unregister(s._name, 'shared_memory')\n\
         s.buf[:32] = bytes(range(32))\n\
         s.close()\n"
    );
    let st = std::process::Command::new("python3")
        .args(["-c", &script])
        .status()
        .expect("python3");
    assert!(st.success());
    let a = Array::<u32>::open_foreign(&name).unwrap();
    assert!(a.is_foreign());
    assert_eq!(a.len(), 8);
    assert_eq!(a.load(0).unwrap(), u32::from_le_bytes([0, 1, 2, 3]));
    a.store(7, 0xdead_beef).unwrap();
    let check = format!(
        "from multiprocessing import shared_memory, resource_tracker\n\
         s = shared_memory.SharedMemory(name='{name}')\n\
         resource_tracker.unregister(s._name, 'shared_memory')\n\
         assert bytes(s.buf[28:32]) == (0xdeadbeef).to_bytes(4, 'little'), bytes(s.buf[28:32])\n\
         s.close()\n"
    );
    let st = std::process::Command::new("python3")
        .args(["-c", &check])
        .status()
        .unwrap();
    assert!(st.success(), "python did not see our write");
    // A length that is not a multiple of the element size is refused.
    let e = Array::<[u8; 5]>::open_foreign(&name).unwrap_err();
    assert!(matches!(e, Error::Mismatch { what: "length", .. }), "{e}");
    // And a plain typed open says it is foreign.
    assert!(
        Array::<u32>::open(&name)
            .unwrap_err()
            .to_string()
            .contains("--raw")
    );
}
