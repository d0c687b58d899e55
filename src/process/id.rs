//! Knowing whether a process is alive, robustly against pid reuse.
//!
//! shmkit identifies a process by its pid **and** its start time (`/proc/PID/stat` field
//! 22, clock ticks since boot) plus a hash of the boot id. A pid that was reused by a new
//! process has a different start time, so it is not mistaken for the original; a record
//! from a previous boot (a file-backed segment) never matches a live process. See
//! ARCHITECTURE.md, "Knowing that a peer died".
//!
//! **This is a diagnostic only.** A pid reused within the same clock tick keeps the same
//! start time, and a process in another PID namespace has another pid: no decision in
//! shmkit rests on it. Whether a lock owner, a queue participant or a segment's holders
//! are alive is decided by locks the kernel holds for them ([`crate::liveness`]), and a
//! creator that died while initialising is detected by the `flock` it held.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use crate::segment::header::fnv1a64;

/// A process identity that survives pid reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// The pid.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// Hash of the boot id the process ran under.
    pub boot_tag: u64,
}

/// Whether a recorded process still runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// The same process (pid and start time match) is running.
    Alive,
    /// It exited (or is a zombie), or the pid now belongs to another process.
    Dead,
    /// `/proc` could not tell (e.g. hidepid mount option).
    Unknown,
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Liveness::Alive => "alive",
            Liveness::Dead => "dead",
            Liveness::Unknown => "unknown",
        })
    }
}

impl ProcessId {
    /// The calling process.
    ///
    /// ```
    /// let me = shmkit::process::ProcessId::current();
    /// assert_eq!(me.pid, std::process::id());
    /// assert_eq!(me.liveness(), shmkit::process::Liveness::Alive);
    /// ```
    pub fn current() -> Self {
        let pid = std::process::id();
        let start_time = stat_of(pid).map(|s| s.start_time).unwrap_or(0);
        ProcessId {
            pid,
            start_time,
            boot_tag: boot_tag(),
        }
    }

    /// Whether this process is still running.
    pub fn liveness(&self) -> Liveness {
        if self.boot_tag != 0 && boot_tag() != 0 && self.boot_tag != boot_tag() {
            return Liveness::Dead;
        }
        if self.pid == 0 || self.pid > i32::MAX as u32 {
            return Liveness::Dead;
        }
        match stat_of(self.pid) {
            Ok(s) if s.state == 'Z' || s.state == 'X' => Liveness::Dead,
            Ok(s) if self.start_time != 0 && s.start_time != self.start_time => Liveness::Dead,
            Ok(_) => Liveness::Alive,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Liveness::Dead,
            Err(_) => Liveness::Unknown,
        }
    }
}

/// Hash of `/proc/sys/kernel/random/boot_id`, or 0 when it cannot be read.
pub fn boot_tag() -> u64 {
    static TAG: OnceLock<u64> = OnceLock::new();
    *TAG.get_or_init(|| {
        std::fs::read("/proc/sys/kernel/random/boot_id")
            .map(|b| fnv1a64(b.trim_ascii()))
            .unwrap_or(0)
    })
}

struct Stat {
    state: char,
    start_time: u64,
}

fn stat_of(pid: u32) -> std::io::Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| std::io::Error::other("unparsable /proc/PID/stat"))
}

/// Parses the fields shmkit needs from a `/proc/PID/stat` line. The command name (field
/// 2) may contain spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 is `state`; field 22 `starttime` is 19 fields later.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_time })
}

/// A file's identity: (device, inode), as `stat` reports them.
pub type FileId = (u64, u64);

/// For every file mapped by some process, the pids that map it, read from
/// `/proc/*/maps` (processes this user may not inspect are skipped).
///
/// Keyed by device and inode, not by path: a mapping keeps the path it was made through
/// (shmkit maps a temporary name before publishing the segment under its real one), so
/// paths in `maps` can be stale.
pub fn mapped_files() -> HashMap<FileId, Vec<u32>> {
    let mut out: HashMap<FileId, Vec<u32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(maps) = std::fs::read_to_string(entry.path().join("maps")) else {
            continue;
        };
        let mut seen: Vec<FileId> = Vec::new();
        for line in maps.lines() {
            let Some(id) = parse_maps_line(line) else {
                continue;
            };
            if !seen.contains(&id) {
                seen.push(id);
                out.entry(id).or_default().push(pid);
            }
        }
    }
    out
}

/// (device, inode) of a `/proc/PID/maps` line that maps a file.
fn parse_maps_line(line: &str) -> Option<FileId> {
    // address perms offset dev inode [pathname]
    let mut f = line.split_ascii_whitespace();
    let dev = f.nth(3)?;
    let ino: u64 = f.next()?.parse().ok()?;
    if ino == 0 {
        return None;
    }
    let (major, minor) = dev.split_once(':')?;
    let major = u64::from_str_radix(major, 16).ok()?;
    let minor = u64::from_str_radix(minor, 16).ok()?;
    Some((nix::sys::stat::makedev(major, minor), ino))
}

/// The (device, inode) of `path`, without following a final symlink.
pub fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Pids that currently map the file at `path`.
pub fn pids_mapping(path: &Path) -> Vec<u32> {
    file_id(path)
        .and_then(|id| mapped_files().remove(&id))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_handles_odd_comm() {
        let line =
            "1234 (a) b) (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.start_time, 987654);
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S 1").is_none());
    }

    #[test]
    fn maps_lines_give_device_and_inode() {
        let l = "7f40-7f41 rw-s 00000000 00:1b 87                         /dev/shm/x (deleted)";
        assert_eq!(
            parse_maps_line(l),
            Some((nix::sys::stat::makedev(0, 0x1b), 87))
        );
        assert_eq!(parse_maps_line("7f40-7f41 r--p 00000000 00:00 0 "), None);
        assert_eq!(parse_maps_line("garbage"), None);
        // This test binary maps itself.
        let exe = std::env::current_exe().unwrap();
        assert!(pids_mapping(&exe).contains(&std::process::id()));
    }

    #[test]
    fn dead_and_reused_pids_are_dead() {
        let me = ProcessId::current();
        assert_ne!(me.start_time, 0);
        let reused = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert_eq!(reused.liveness(), Liveness::Dead);
        let other_boot = ProcessId {
            boot_tag: me.boot_tag ^ 1,
            ..me
        };
        assert_eq!(other_boot.liveness(), Liveness::Dead);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        // Reaped: either gone, or (rarely) reused by a process with another start time.
        let gone = ProcessId {
            pid,
            start_time: 1,
            boot_tag: me.boot_tag,
        };
        assert_eq!(gone.liveness(), Liveness::Dead);
    }
}
