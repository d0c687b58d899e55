//! `Pipe` between real processes: a child started with the end passed as fd 3, a forked
//! child, a peer SIGKILLed mid-message, bounded waits, hostile packets.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use shmkit::Error;
use shmkit::pipe::{CHUNK, Pipe};

const LIMIT: Duration = Duration::from_secs(60);

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ salt).collect()
}

const SIZES: &[usize] = &[
    0,
    1,
    64,
    CHUNK - 1,
    CHUNK,
    CHUNK + 1,
    3 * CHUNK + 5,
    1 << 20,
];

/// The child's end of the pipe, inherited as descriptor 3.
fn inherited() -> Pipe {
    // SAFETY: the parent passed the pipe end as fd 3 (Pipe::pass_to); nothing else in
    // this process owns fd 3.
    Pipe::try_from(unsafe { OwnedFd::from_raw_fd(3) }).expect("fd 3 is a pipe end")
}

fn spawn_with_pipe(test: &str, role: &str) -> (Pipe, std::process::Child) {
    let (mine, theirs) = Pipe::pair().unwrap();
    let mut cmd = common::child(test, role, &[]);
    theirs.pass_to(&mut cmd, 3);
    let child = cmd.spawn().unwrap();
    drop(cmd); // closes our copy of the child's end
    (mine, child)
}

#[test]
fn echo_with_child_process() {
    if let Some(role) = common::role() {
        assert_eq!(role, "echo");
        let mut p = inherited();
        loop {
            match p.recv_timeout(LIMIT) {
                Ok(m) => p.send(&m).unwrap(),
                Err(Error::Disconnected { .. }) => std::process::exit(0),
                Err(e) => panic!("{e}"),
            }
        }
    }
    let (mut p, mut c) = spawn_with_pipe("echo_with_child_process", "echo");
    for (i, &n) in SIZES.iter().enumerate() {
        let m = pattern(n, i as u8);
        p.send_timeout(&m, LIMIT).unwrap();
        assert!(p.poll(Some(LIMIT)).unwrap());
        let back = p.recv_timeout(LIMIT).unwrap();
        assert!(back == m, "size {n}: echo differs");
    }
    drop(p); // EOF for the child, which then exits 0
    common::wait_ok(&mut c, LIMIT);
}

#[test]
fn forked_child_then_end_of_stream() {
    let (mut parent, child_end) = Pipe::pair().unwrap();
    // SAFETY: the child only calls sendmsg (no allocation for messages of one packet)
    // and _exit.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            drop(parent);
            let mut code = 0;
            for i in 0..100u32 {
                if child_end.send(&i.to_le_bytes()).is_err() {
                    code = 1;
                }
            }
            // SAFETY: _exit is async-signal-safe and ends the forked child at once.
            unsafe { libc::_exit(code) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(child_end);
            for i in 0..100u32 {
                assert_eq!(parent.recv_timeout(LIMIT).unwrap(), i.to_le_bytes());
            }
            let e = parent.recv_timeout(LIMIT).unwrap_err();
            assert!(matches!(e, Error::Disconnected { .. }), "{e}");
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
}

#[test]
fn peer_killed_midway_gives_whole_messages_then_disconnected() {
    if let Some(role) = common::role() {
        assert_eq!(role, "flood");
        let p = inherited();
        for i in 0u8.. {
            // Large messages: the kill lands in the middle of one most of the time.
            p.send(&pattern(200_000, i)).unwrap();
        }
        unreachable!();
    }
    let (mut p, mut c) = spawn_with_pipe(
        "peer_killed_midway_gives_whole_messages_then_disconnected",
        "flood",
    );
    let mut i = 0u8;
    for _ in 0..5 {
        assert!(p.recv_timeout(LIMIT).unwrap() == pattern(200_000, i));
        i = i.wrapping_add(1);
    }
    c.kill().unwrap();
    c.wait().unwrap();
    loop {
        match p.recv_timeout(LIMIT) {
            Ok(m) => {
                assert!(m == pattern(200_000, i), "torn message after kill");
                i = i.wrapping_add(1);
            }
            Err(Error::Disconnected { .. }) => break,
            Err(e) => panic!("expected a clean Disconnected, got {e}"),
        }
    }
    let e = p.send(b"anyone?").unwrap_err();
    assert!(matches!(e, Error::Disconnected { .. }), "{e}");
}

#[test]
fn bounded_waits() {
    let (mut a, b) = Pipe::pair().unwrap();
    assert!(!a.poll(Some(Duration::from_millis(20))).unwrap());
    assert!(matches!(a.try_recv(), Err(Error::WouldBlock { .. })));
    let t = Instant::now();
    let e = a.recv_timeout(Duration::from_millis(50)).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(50));
    // Fill b -> a until try_send refuses.
    let mut n = 0;
    while b.try_send(&[1u8; 1024]).is_ok() {
        n += 1;
        assert!(n < 100_000, "never filled");
    }
    assert!(matches!(b.try_send(b"x"), Err(Error::WouldBlock { .. })));
    let e = b.send_timeout(b"x", Duration::from_millis(30)).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    for _ in 0..n {
        assert_eq!(a.try_recv().unwrap(), [1u8; 1024]);
    }
    assert!(matches!(
        b.try_send(&vec![0; CHUNK + 1]),
        Err(Error::MessageTooLarge { .. })
    ));
    // A timeout too large for a deadline means "no deadline", not a panic.
    b.send_timeout(b"big", Duration::MAX).unwrap();
    assert_eq!(a.recv_timeout(Duration::MAX).unwrap(), b"big");
    // Empty messages are messages, not end-of-stream.
    b.send(b"").unwrap();
    assert_eq!(a.recv_timeout(LIMIT).unwrap(), b"");
    drop(b);
    assert!(a.poll(Some(LIMIT)).unwrap(), "EOF is readable");
    assert!(matches!(a.recv(), Err(Error::Disconnected { .. })));
}

#[test]
fn large_send_timeout_ends_stream_cleanly() {
    let (mut a, b) = Pipe::pair().unwrap();
    // Nobody reads: a 4 MiB message cannot complete.
    let e = b
        .send_timeout(&vec![3u8; 4 << 20], Duration::from_millis(50))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let e = a.recv_timeout(LIMIT).unwrap_err();
    assert!(matches!(e, Error::Disconnected { .. }), "{e}");
}

#[test]
fn hostile_packets_are_corrupt_errors() {
    for packet in [
        &[9u8, 1, 2][..],
        &[2u8, 1, 0, 0, 0, 0, 0, 0, 0],
        &[2u8, 0, 0],
        &[3u8, 5],
    ] {
        let (mut a, b) = Pipe::pair().unwrap();
        let raw: OwnedFd = b.into();
        nix::sys::socket::send(raw.as_raw_fd(), packet, nix::sys::socket::MsgFlags::empty())
            .unwrap();
        let e = a.recv_timeout(LIMIT).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{packet:?}: {e}");
    }
    // Not a socket at all.
    let f = std::fs::File::open("/dev/null").unwrap();
    assert!(Pipe::try_from(OwnedFd::from(f)).is_err());
}

#[test]
fn partial_large_message_resumes_after_timeout() {
    let (mut a, b) = Pipe::pair().unwrap();
    let raw: OwnedFd = b.into();
    let total = 3 * CHUNK;
    let msg = pattern(total, 42);
    let packet = |body: &[u8], trailer: &[u8]| {
        let mut p = body.to_vec();
        p.extend_from_slice(trailer);
        nix::sys::socket::send(raw.as_raw_fd(), &p, nix::sys::socket::MsgFlags::empty()).unwrap();
    };
    let mut first_trailer = (total as u64).to_le_bytes().to_vec();
    first_trailer.push(2);
    packet(&msg[..CHUNK], &first_trailer);
    assert!(matches!(a.try_recv(), Err(Error::WouldBlock { .. })));
    packet(&msg[CHUNK..2 * CHUNK], &[3]);
    let e = a.recv_timeout(Duration::from_millis(20)).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    packet(&msg[2 * CHUNK..], &[3]);
    assert!(a.try_recv().unwrap() == msg, "resumed message differs");
    // And the stream is in step afterwards.
    packet(b"next", &[1]);
    assert_eq!(a.try_recv().unwrap(), b"next");
}
