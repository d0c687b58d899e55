//! Named pipes across real processes: many writers never interleave frames, bounded opens
//! and receives, vanished peers as errors (never SIGPIPE deaths), Python interop.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use shmkit::Error;
use shmkit::fifo::{Fifo, MAX_ATOMIC_PAYLOAD};

const LIMIT: Duration = Duration::from_secs(60);

fn new_fifo(tag: &str) -> (PathBuf, common::PathGuard) {
    let path = std::env::temp_dir().join(common::unique(tag));
    Fifo::create(&path, 0o600).expect("mkfifo");
    (path.clone(), common::PathGuard(path))
}

/// Deterministic message `seq` of writer `w`: header (w, seq), then a pattern; lengths
/// cover 0 extra bytes up to the atomic maximum.
fn message(w: u32, seq: u32) -> Vec<u8> {
    let len = match seq % 5 {
        0 => 8,
        1 => MAX_ATOMIC_PAYLOAD,
        _ => 8 + (seq.wrapping_mul(2654435761) as usize) % (MAX_ATOMIC_PAYLOAD - 8),
    };
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&w.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    while m.len() < len {
        m.push((w as usize * 31 + seq as usize * 7 + m.len()) as u8);
    }
    m
}

fn check(m: &[u8]) -> (u32, u32) {
    assert!(m.len() >= 8, "short frame of {} bytes", m.len());
    let w = u32::from_le_bytes(m[0..4].try_into().unwrap());
    let seq = u32::from_le_bytes(m[4..8].try_into().unwrap());
    assert_eq!(
        m,
        &message(w, seq)[..],
        "frame {w}/{seq} is torn or interleaved"
    );
    (w, seq)
}

#[test]
fn many_writers_never_interleave() {
    const WRITERS: u32 = 4;
    const PER: u32 = 2000;
    if let Some(role) = common::role() {
        assert_eq!(role, "writer");
        let a = common::args();
        let w: u32 = a[1].parse().unwrap();
        let tx = Fifo::open_writer(&a[0], Some(LIMIT)).unwrap();
        for seq in 0..PER {
            tx.send_timeout(&message(w, seq), LIMIT).unwrap();
        }
        std::process::exit(0);
    }
    let (path, _g) = new_fifo("fifomany");
    let mut rx = Fifo::open_reader(&path).unwrap();
    let p = path.to_str().unwrap();
    let mut kids: Vec<_> = (0..WRITERS)
        .map(|w| {
            common::child(
                "many_writers_never_interleave",
                "writer",
                &[p, &w.to_string()],
            )
            .spawn()
            .unwrap()
        })
        .collect();
    let mut next = [0u32; WRITERS as usize];
    let mut buf = Vec::new();
    for _ in 0..WRITERS * PER {
        rx.recv_into(&mut buf, Some(LIMIT)).unwrap();
        let (w, seq) = check(&buf);
        assert_eq!(seq, next[w as usize], "writer {w} out of order");
        next[w as usize] += 1;
    }
    for c in &mut kids {
        common::wait_ok(c, LIMIT);
    }
    let e = rx.recv_timeout(LIMIT).unwrap_err();
    assert!(matches!(e, Error::Disconnected { .. }), "{e}");
}

#[test]
fn bounded_opens_and_receives() {
    let (path, _g) = new_fifo("fifotime");
    // No reader: the writer's open gives up after the timeout.
    let t = Instant::now();
    let e = Fifo::open_writer(&path, Some(Duration::from_millis(60))).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(60));
    assert!(t.elapsed() < Duration::from_secs(10));
    let mut rx = Fifo::open_reader(&path).unwrap();
    // Reader without any writer yet: waits, bounded.
    let e = rx.recv_timeout(Duration::from_millis(40)).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { .. })));
    let tx = Fifo::open_writer(&path, Some(Duration::ZERO)).unwrap();
    let t = Instant::now();
    let e = rx.recv_timeout(Duration::from_millis(40)).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(40));
    // Too large: refused, nothing written.
    let e = tx.send(&vec![0u8; MAX_ATOMIC_PAYLOAD + 1]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::MessageTooLarge {
                max: MAX_ATOMIC_PAYLOAD,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("PIPE_BUF"), "{e}");
    // Fill the pipe: try_send reports WouldBlock, a timed send times out.
    let big = vec![7u8; MAX_ATOMIC_PAYLOAD];
    let mut sent = 0;
    while tx.try_send(&big).is_ok() {
        sent += 1;
        assert!(sent < 10_000, "pipe never filled");
    }
    assert!(matches!(tx.try_send(b"x"), Err(Error::WouldBlock { .. })) || sent > 0);
    let e = tx
        .send_timeout(&big, Duration::from_millis(30))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    for _ in 0..sent {
        assert_eq!(rx.try_recv().unwrap(), big);
    }
    // A timeout too large for a deadline means "no deadline", not a panic.
    tx.send_timeout(b"max", Duration::MAX).unwrap();
    assert_eq!(rx.recv_timeout(Duration::MAX).unwrap(), b"max");
    // A symlink is refused (O_NOFOLLOW), a regular file is not a FIFO.
    let link = std::env::temp_dir().join(common::unique("fifolink"));
    let _lg = common::PathGuard(link.clone());
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let e = Fifo::open_reader(&link).unwrap_err();
    assert_eq!(e.errno(), Some(nix::errno::Errno::ELOOP), "{e}");
    let e = Fifo::remove(&link).unwrap_err();
    assert!(e.to_string().contains("not a FIFO"), "{e}");
}

#[test]
fn reader_killed_gives_disconnected_not_sigpipe() {
    if let Some(role) = common::role() {
        let a = common::args();
        match role.as_str() {
            "reader" => {
                let mut rx = Fifo::open_reader(&a[0]).unwrap();
                // Take one message, then hang around until killed.
                rx.recv_timeout(LIMIT).unwrap();
                std::thread::sleep(LIMIT);
            }
            "dfl-writer" => {
                // SIGPIPE with its default (deadly) action, and with a handler: neither
                // kills us nor runs.
                static HANDLED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                extern "C" fn on_pipe(_: libc::c_int) {
                    HANDLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                for handler in [
                    libc::SIG_DFL,
                    on_pipe as extern "C" fn(libc::c_int) as usize,
                ] {
                    // SAFETY: installing SIG_DFL or an async-signal-safe handler.
                    unsafe { libc::signal(libc::SIGPIPE, handler) };
                    let rx = Fifo::open_reader(&a[0]).unwrap();
                    let tx = Fifo::open_writer(&a[0], Some(LIMIT)).unwrap();
                    drop(rx);
                    let e = tx.send(b"into the void").unwrap_err();
                    assert!(matches!(e, Error::Disconnected { .. }), "{e}");
                }
                assert_eq!(HANDLED.load(std::sync::atomic::Ordering::SeqCst), 0);
                let pending = nix::sys::signal::SigSet::thread_get_mask().unwrap();
                assert!(
                    !pending.contains(nix::sys::signal::Signal::SIGPIPE),
                    "mask leaked"
                );
            }
            _ => unreachable!(),
        }
        std::process::exit(0);
    }
    let (path, _g) = new_fifo("fifokill");
    let p = path.to_str().unwrap();
    let mut c = common::child(
        "reader_killed_gives_disconnected_not_sigpipe",
        "reader",
        &[p],
    )
    .spawn()
    .unwrap();
    let tx = Fifo::open_writer(&path, Some(LIMIT)).unwrap();
    tx.send(b"one").unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    let e = tx.send_timeout(b"two", LIMIT).unwrap_err();
    assert!(matches!(e, Error::Disconnected { .. }), "{e}");

    let mut c = common::child(
        "reader_killed_gives_disconnected_not_sigpipe",
        "dfl-writer",
        &[p],
    )
    .spawn()
    .unwrap();
    common::wait_ok(&mut c, LIMIT);
}

#[test]
fn writer_killed_midway_leaves_whole_frames() {
    if let Some(role) = common::role() {
        assert_eq!(role, "flood");
        let tx = Fifo::open_writer(&common::args()[0], Some(LIMIT)).unwrap();
        for seq in 0.. {
            tx.send(&message(9, seq)).unwrap();
        }
        unreachable!();
    }
    let (path, _g) = new_fifo("fifowkill");
    let mut rx = Fifo::open_reader(&path).unwrap();
    let mut c = common::child(
        "writer_killed_midway_leaves_whole_frames",
        "flood",
        &[path.to_str().unwrap()],
    )
    .spawn()
    .unwrap();
    let mut next = 0;
    let mut buf = Vec::new();
    for _ in 0..300 {
        rx.recv_into(&mut buf, Some(LIMIT)).unwrap();
        assert_eq!(check(&buf).1, next);
        next += 1;
    }
    c.kill().unwrap();
    c.wait().unwrap();
    loop {
        match rx.recv_into(&mut buf, Some(LIMIT)) {
            Ok(()) => {
                assert_eq!(check(&buf).1, next);
                next += 1;
            }
            Err(Error::Disconnected { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn byte_stream() {
    use std::io::{Read, Write};
    let (path, _g) = new_fifo("fifostream");
    let mut rx = Fifo::open_reader(&path).unwrap();
    let mut tx = Fifo::open_writer(&path, Some(LIMIT)).unwrap();
    let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let writer = std::thread::spawn(move || {
        tx.write_all(&data).unwrap();
        data
    });
    let mut got = Vec::new();
    rx.read_to_end(&mut got).unwrap();
    assert_eq!(got, writer.join().unwrap());
}

fn require_python() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import struct, os"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "python3 is needed for the FIFO interop test");
}

#[test]
fn interop_with_python() {
    require_python();
    let (path, _g) = new_fifo("fifopy");
    let p = path.to_str().unwrap();
    // Python writes frames, we read them.
    let mut rx = Fifo::open_reader(&path).unwrap();
    let writer = r#"
import os, struct, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
for i in range(100):
    b = (b"py%d:" % i) * (i + 1)
    os.write(fd, struct.pack("<I", len(b)) + b)
os.close(fd)
"#;
    let mut c = std::process::Command::new("python3")
        .args(["-c", writer, p])
        .spawn()
        .unwrap();
    for i in 0..100 {
        let m = rx.recv_timeout(LIMIT).unwrap();
        assert_eq!(m, format!("py{i}:").repeat(i + 1).as_bytes());
    }
    common::wait_ok(&mut c, LIMIT);
    assert!(matches!(
        rx.recv_timeout(LIMIT),
        Err(Error::Disconnected { .. })
    ));
    drop(rx);
    // We write frames, Python reads and checks them. The writer opens only once Python
    // holds the read end: `open_writer` succeeds as soon as *any* process has it open, and
    // a child that another test thread is forking holds copies of our descriptors until its
    // `exec` closes them (the first reader's, too), so opening before Python reports
    // could reach that passing reader, and a send made after it went and before Python
    // opened would see `EPIPE`. Python opens without blocking (a blocking
    // open would wait for the writer), reports, and reads once told the writer is open:
    // before that a read would see end-of-file.
    let reader = r#"
import os, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
os.set_blocking(fd, True)
print("@@shmkit@@ open", flush=True)
assert sys.stdin.readline() == "go\n", "no go"
f = os.fdopen(fd, "rb", buffering=0)
def exact(n):
    b = b""
    while len(b) < n:
        c = f.read(n - len(b))
        assert c, "eof"
        b += c
    return b
for i in range(100):
    (n,) = struct.unpack("<I", exact(4))
    assert exact(n) == b"rs%d" % i
assert f.read(1) == b""
"#;
    let mut c = std::process::Command::new("python3")
        .args(["-c", reader, p])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let told = common::Listener::new(c.stdout.take().unwrap());
    assert_eq!(told.next(LIMIT), "open");
    let tx = Fifo::open_writer(&path, Some(LIMIT)).unwrap();
    {
        use std::io::Write;
        let mut go = c.stdin.take().unwrap();
        go.write_all(b"go\n").unwrap();
    }
    for i in 0..100 {
        tx.send(format!("rs{i}").as_bytes()).unwrap();
    }
    drop(tx);
    common::wait_ok(&mut c, LIMIT);
}

#[test]
fn hostile_writer_is_a_corrupt_error() {
    use std::io::Write;
    let (path, _g) = new_fifo("fifohostile");
    let mut rx = Fifo::open_reader(&path).unwrap();
    let mut raw = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // A valid frame, then a header announcing 1 GiB.
    raw.write_all(b"\x02\x00\x00\x00ok\x00\x00\x00\x40")
        .unwrap();
    assert_eq!(rx.recv_timeout(LIMIT).unwrap(), b"ok");
    let e = rx.recv_timeout(LIMIT).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    // A writer that closes in the middle of a frame.
    let (path, _g2) = new_fifo("fifotrunc");
    let mut rx = Fifo::open_reader(&path).unwrap();
    let mut raw = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    raw.write_all(b"\x09\x00\x00\x00abc").unwrap();
    drop(raw);
    let e = rx.recv_timeout(LIMIT).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

#[test]
fn server_reader_outlives_writers() {
    if let Some(role) = common::role() {
        assert_eq!(role, "client");
        let a = common::args();
        let tx = Fifo::open_writer(&a[0], Some(LIMIT)).unwrap();
        tx.send(a[1].as_bytes()).unwrap();
        std::process::exit(0);
    }
    let (path, _g) = new_fifo("fifoserver");
    let p = path.to_str().unwrap();
    let mut rx = Fifo::open_reader(&path).unwrap();
    rx.stay_open().unwrap();
    // Clients one after the other: each connects, sends, exits; the server never sees
    // end-of-stream.
    for i in 0..5 {
        let msg = format!("client {i}");
        let mut c = common::child("server_reader_outlives_writers", "client", &[p, &msg])
            .spawn()
            .unwrap();
        assert_eq!(rx.recv_timeout(LIMIT).unwrap(), msg.as_bytes());
        common::wait_ok(&mut c, LIMIT);
    }
    let e = rx.recv_timeout(Duration::from_millis(30)).unwrap_err();
    assert!(e.is_timeout(), "{e}");
}
