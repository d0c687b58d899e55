//! The fuzz entry point of the topic ring ([`fuzz_topic`], driven by
//! `fuzz/fuzz_targets/topic.rs`).
//!
//! Two modes, chosen by bit 0 of the input's third byte:
//! - **hostile**: a prefix of the input overwrites words of a fresh ring (control block,
//!   participant entries, slot sequence and length words), then the operations run. Any
//!   outcome but a panic, an out-of-bounds access or a hang is fine.
//! - **clean**: the ring starts fresh; one publisher writes position `p` with the value
//!   `p`; subscribers (up to three) read, lag, die and are swept, against a model.
//!   Checked after every operation: no `Corrupt`; a message read is the one at the
//!   cursor; under `Block` (bit 1), the publisher writes only what [`Ring::room`] allows
//!   and then no live subscriber is ever overwritten; under `Overwrite`, recovering from
//!   a lag moves the cursor forward to a message still retained; a dead subscriber is
//!   discounted once and then never blocks the publisher.

use std::cell::RefCell;
use std::sync::atomic::Ordering;

use super::ring::{Geometry, ROLE_PUB, ROLE_SUB, Ring, Slot, diff};

/// Fuzz entry point: see the module documentation. Public only for
/// `fuzz/fuzz_targets/topic.rs`.
#[doc(hidden)]
pub fn fuzz_topic(data: &[u8]) {
    let (params, rest) = data.split_at(data.len().min(3));
    let cap = 2u64 << (params.first().copied().unwrap_or(0) % 3);
    let entries = 2 + params.get(1).copied().unwrap_or(0) as u64 % 3;
    let flags = params.get(2).copied().unwrap_or(0);
    let clean = flags & 1 == 1;
    let block = flags & 2 == 2;
    let Some(geo) = Geometry::new(cap, 16, 8, entries) else {
        return;
    };
    let mut buf = vec![0u64; geo.total.div_ceil(8) + 16];
    let raw = buf.as_mut_ptr() as usize;
    let pad = (raw.next_multiple_of(128) - raw) / 8;
    let base = buf[pad..].as_mut_ptr() as *mut u8;
    // SAFETY: `buf` holds geo.total bytes after `pad` words, outlives `ring`, is
    // 128-aligned and used by this thread only.
    let ring = unsafe { Ring::new(base, geo) };
    ring.init();
    let ops = if clean {
        rest
    } else {
        let state_len = rest.len().min(geo.total / 2);
        let (state, ops) = rest.split_at(state_len);
        for chunk in state.chunks_exact(9) {
            let word = (chunk[0] as usize * 8) % geo.total;
            let v = u64::from_le_bytes(chunk[1..9].try_into().unwrap_or([0; 8]));
            // SAFETY: `word` < total and 8-aligned.
            unsafe { (base.add(word) as *mut u64).write(v) };
        }
        ops
    };
    // Fake liveness: odd owner words are alive unless killed.
    let dead = RefCell::new(Vec::<u64>::new());
    let alive = |o: u64| o & 1 == 1 && !dead.borrow().contains(&o);
    // The publisher.
    let Some(pe) = ring.register(1, &alive) else {
        return;
    };
    ring.attach(pe, ROLE_PUB);
    if ring.take_lock(pe, &alive).is_err() {
        return;
    }
    let mut p = ring.tail().load(Ordering::Relaxed);
    // Subscribers: (entry, owner, cursor, alive).
    let mut subs: Vec<(usize, u64, u64, bool)> = Vec::new();
    let mut drawn = 1u64;
    for &op in ops.iter().take(512) {
        let k = (op >> 3) as usize;
        match op & 7 {
            // Publish, if the policy allows.
            0..=2 => {
                if block {
                    // As `Core::try_claim`: a blocker found dead is retired, then retry.
                    let mut ok = false;
                    for _ in 0..4 {
                        match ring.room(p) {
                            Ok(_) => {
                                ok = true;
                                break;
                            }
                            Err(i) => {
                                let o = ring.owner(i).load(Ordering::Acquire);
                                if clean {
                                    assert!(
                                        subs.iter().any(|s| s.0 == i),
                                        "a non-subscriber blocks"
                                    );
                                }
                                if alive(o) || !ring.note_dead_entry(i, o) {
                                    break;
                                }
                            }
                        }
                    }
                    if !ok {
                        if clean {
                            assert!(subs.iter().any(|s| s.3), "blocked with no live subscriber");
                        }
                        continue;
                    }
                }
                ring.begin_write(p);
                // SAFETY: data_len is 16 bytes, 8-aligned.
                unsafe { (ring.data(p) as *mut u64).write_volatile(p) };
                ring.len_word(p).store(8, Ordering::Relaxed);
                ring.finish_write(p);
                p = p.wrapping_add(1);
            }
            // Subscribe (with history k % cap).
            3 => {
                drawn += 2;
                if let Some(e) = ring.register(drawn, &alive) {
                    let c = ring.start(k as u64 % cap);
                    let c = ring.subscribe(e, c);
                    subs.push((e, drawn, c, true));
                }
            }
            // Read.
            4 | 5 => {
                let n = subs.len().max(1);
                let Some(s) = subs.get_mut(k % n) else {
                    continue;
                };
                if !s.3 {
                    continue;
                }
                let c = s.2;
                match ring.look(c) {
                    Ok(Slot::Ready(seq)) => {
                        // SAFETY: as above.
                        let v = unsafe { (ring.data(c) as *const u64).read_volatile() };
                        if ring.still(c, seq) {
                            if clean {
                                assert_eq!(v, c, "wrong message at cursor");
                            }
                            s.2 = c.wrapping_add(1);
                            ring.cursor(s.0).store(s.2, Ordering::Release);
                        }
                    }
                    Ok(Slot::NotYet) => {
                        if clean {
                            assert!(diff(c, p) >= 0, "published message not visible");
                        }
                    }
                    Ok(Slot::Overwritten(q)) => {
                        let n = ring.recover(c, q);
                        assert!(diff(n, c) > 0, "recover did not move forward");
                        if clean {
                            // Only history can be lost under Block (never a live read).
                            assert!(
                                !block || diff(c, p) < -(cap as i64),
                                "Block overwrote a live subscriber"
                            );
                            assert!(diff(n, p.wrapping_sub(cap)) > 0 && diff(n, p) <= 0);
                        }
                        s.2 = n;
                        ring.cursor(s.0).store(n, Ordering::Release);
                    }
                    Err(e) => assert!(!clean, "corrupt in a clean run: {e:?}"),
                }
            }
            // Kill a subscriber.
            6 => {
                if let Some(s) = {
                    let n = subs.len().max(1);
                    subs.get_mut(k % n)
                } {
                    if s.3 {
                        s.3 = false;
                        dead.borrow_mut().push(s.1);
                    }
                }
            }
            // Sweep (a blocked publisher would).
            _ => {
                let live = ring.sweep(ROLE_SUB, &alive);
                if clean {
                    let want = subs.iter().filter(|s| s.3).count() as u64;
                    assert_eq!(live, want, "sweep miscounted");
                    let count = ring.peers(ROLE_SUB).load(Ordering::Relaxed) & 0xffff_ffff;
                    assert_eq!(count, want, "peer count disagrees with the sweep");
                }
            }
        }
    }
}

#[cfg(all(test, not(shmkit_loom)))]
mod tests {
    use super::fuzz_topic;

    /// Deterministic runs of the fuzz driver (the real fuzzing is `cargo fuzz run topic`),
    /// also under Miri.
    #[test]
    fn driver_runs_clean_and_hostile() {
        let mut x = 0x1234_5678_9abc_def1u64;
        let cases = if cfg!(miri) { 4 } else { 300 };
        for case in 0..cases {
            let mut d = vec![case as u8, (case / 3) as u8, (case % 4) as u8];
            for _ in 0..200 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                d.push(x as u8);
            }
            fuzz_topic(&d);
        }
    }
}
