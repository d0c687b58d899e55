//! The fuzz entry point of the ring ([`fuzz_ring`], driven by `fuzz/fuzz_targets/queue.rs`).
//!
//! Two modes, chosen by the input's third byte:
//! - **hostile**: a prefix of the input overwrites words of a fresh ring (control block,
//!   participant entries, slots), then the operations run. Any outcome but a panic, an
//!   out-of-bounds access or a hang is fine: corrupt states give [`Corrupt`] or "would
//!   block".
//! - **clean** (MPMC): the ring starts fresh and the operations run against a model of
//!   the participants (owner words with fake liveness, attached roles, tasks held, kills
//!   between or in the middle of operations, takeovers of dead entries). Invariants
//!   checked after every operation: no `Corrupt`; a peer count never says "none left"
//!   while a live participant holds the role, and equals the live holders after a sweep;
//!   a `Disconnected` verdict (as `Core::check_gone` reaches it) only with no live
//!   producer and no message left; every death counted at most once; `take_lost` reports
//!   exactly the tasks dead consumers held, once.
//!
//! Flag bit 2 gives the ring a stash (`requeue_lost`): receives with a task count go
//! through the stash (as `Queue::recv_task`), done frees the stash slot, and a re-queue
//! operation moves gone consumers' stashed tasks back (hostile: from garbage states).
//! Clean invariants: a re-queue moves exactly the stashed tasks of dead or departed
//! consumers (all of them unless the ring is full), never a live one's; `take_lost`
//! reports only unstashed tasks and returns the number still stashed by the gone.

use std::cell::RefCell;
use std::sync::atomic::Ordering;

use super::ring::{
    Blocked, Corrupt, EVER, Geometry, ROLE_CONSUMER, ROLE_PRODUCER, ROLE_RECEIVER, ROLE_SENDER,
    Ring,
};

/// One participant of the model.
#[derive(Clone, Copy, Debug)]
struct Part {
    entry: usize,
    owner: u64,
    alive: bool,
    /// [`ROLE_SENDER`] / [`ROLE_RECEIVER`] attached.
    roles: u64,
    /// Joinable tasks received and not marked done.
    tasks: u64,
    /// Stash slots holding this participant's tasks (bit j: slot j).
    stash: u64,
}

/// The model of a clean run.
#[derive(Default)]
struct Model {
    parts: Vec<Part>,
    /// Owner words handed out so far (each registration draws a new one).
    drawn: u64,
    /// Roles anybody ever attached.
    ever: u64,
    /// Messages published and not yet received.
    msgs: u64,
    kills: u64,
    /// Tasks held by participants when they died / reported lost by `take_lost`.
    dead_tasks: u64,
    reported: u64,
    /// Stashed tasks of dead or departed participants, not yet re-queued.
    orphaned: u64,
}

impl Model {
    fn live(&self, role: u64) -> u64 {
        self.parts
            .iter()
            .filter(|p| p.alive && p.roles & role != 0)
            .count() as u64
    }
}

const MAX_PARTS: usize = 4;
const COUNT: u64 = EVER - 1;

/// Fuzz entry point: see the module documentation. Public only for
/// `fuzz/fuzz_targets/queue.rs`.
#[doc(hidden)]
pub fn fuzz_ring(data: &[u8]) {
    let (params, rest) = data.split_at(data.len().min(3));
    let cap = 1u64 << (params.first().copied().unwrap_or(0) % 4);
    let handles = 1 + params.get(1).copied().unwrap_or(0) as u64 % 3;
    let flags = params.get(2).copied().unwrap_or(0);
    let spsc = flags & 1 == 1;
    let clean = flags & 2 == 2 && !spsc;
    let depth = if flags & 4 == 4 && !spsc {
        1 + u64::from(params.get(1).copied().unwrap_or(0) >> 4) % 3
    } else {
        0
    };
    let Some(geo) = Geometry::new(cap, 8, 8, handles).and_then(|g| g.with_stash(depth)) else {
        return;
    };
    let mut buf = vec![0u64; geo.total.div_ceil(8) + 16];
    // Align the base to 128 bytes inside the buffer.
    let raw = buf.as_mut_ptr() as usize;
    let pad = (raw.next_multiple_of(128) - raw) / 8;
    let base = buf[pad..].as_mut_ptr() as *mut u8;
    // SAFETY: `buf` holds geo.total bytes after `pad` words and outlives `ring`; it is
    // 128-aligned and only this thread uses it.
    let ring = unsafe { Ring::new(base, geo) };
    ring.init();
    let ops = if clean {
        rest
    } else {
        let state_len = rest.len().min(geo.total / 2);
        let (state, ops) = rest.split_at(state_len);
        // Overwrite words of the state with fuzz bytes, 9 bytes each: offset byte + value.
        for chunk in state.chunks_exact(9) {
            let word = (chunk[0] as usize * 8) % geo.total;
            let v = u64::from_le_bytes(chunk[1..9].try_into().unwrap_or([0; 8]));
            // SAFETY: `word` < total and 8-aligned.
            unsafe { (base.add(word) as *mut u64).write(v) };
        }
        ops
    };
    // Fake liveness: odd owner words are alive unless the model killed them (hostile
    // owner words in the state are judged by their parity alone).
    let dead = RefCell::new(Vec::<u64>::new());
    let alive = |owner: u64| owner & 1 == 1 && !dead.borrow().contains(&owner);
    let mut m = Model::default();
    let mut run = Run {
        ring: &ring,
        alive: &alive,
        dead: &dead,
        clean,
        spsc,
        sp: 0,
        cp: 0,
        spsc_started: false,
    };
    run.register(&mut m, 0);
    for &op in ops.iter().take(256) {
        if let Err(c) = run.op(&mut m, op) {
            assert!(
                !clean,
                "clean ring reported corruption after op {op:#x}: {c:?}"
            );
            if spsc {
                return;
            }
        }
        if clean {
            run.check(&m);
        }
    }
}

struct Run<'a> {
    ring: &'a Ring,
    alive: &'a dyn Fn(u64) -> bool,
    dead: &'a RefCell<Vec<u64>>,
    clean: bool,
    spsc: bool,
    sp: u64,
    cp: u64,
    spsc_started: bool,
}

impl Run<'_> {
    /// Participant `k` (an index into the model), if it is alive.
    fn live(&self, m: &Model, k: usize) -> Option<Part> {
        m.parts.get(k % MAX_PARTS).copied().filter(|p| p.alive)
    }

    fn part<'m>(&self, m: &'m mut Model, entry: usize) -> Option<&'m mut Part> {
        m.parts.iter_mut().find(|p| p.alive && p.entry == entry)
    }

    /// A new participant in model slot `k` (replacing a dead one), if an entry is free.
    fn register(&self, m: &mut Model, k: usize) {
        m.drawn += 1;
        let owner = m.drawn << 32 | (2 * m.drawn + 1);
        let Some(entry) = self.ring.register(owner, self.alive) else {
            return;
        };
        if self.clean {
            // The entry was free or its owner dead: no live participant holds it.
            assert!(
                self.part(m, entry).is_none(),
                "register gave away a live participant's entry {entry}"
            );
        }
        let p = Part {
            entry,
            owner,
            alive: true,
            roles: 0,
            tasks: 0,
            stash: 0,
        };
        let k = k % MAX_PARTS;
        if k < m.parts.len() && !m.parts[k].alive {
            m.parts[k] = p;
        } else if m.parts.len() < MAX_PARTS {
            m.parts.push(p);
        }
    }

    fn kill(&self, m: &mut Model, k: usize) {
        let Some(p) = m.parts.get_mut(k % MAX_PARTS).filter(|p| p.alive) else {
            return;
        };
        p.alive = false;
        m.kills += 1;
        m.dead_tasks += p.tasks;
        m.orphaned += u64::from(p.stash.count_ones());
        self.dead.borrow_mut().push(p.owner);
    }

    fn send(&self, m: &mut Model, p: Part, cancel: bool) -> Result<(), Corrupt> {
        match self.ring.mpmc_claim_send(p.entry)? {
            Ok(pos) => {
                if cancel {
                    self.ring.mpmc_cancel(p.entry, pos);
                } else {
                    // SAFETY: data(pos) is valid for data_len (8) bytes.
                    unsafe { self.ring.data(pos).cast::<u64>().write(pos) };
                    self.ring.mpmc_publish(p.entry, pos);
                    m.msgs += 1;
                }
            }
            Err(b) => self.recover(b)?,
        }
        Ok(())
    }

    /// Receives through `p` (counting a task if `count`); `Ok(true)` if it got one.
    fn recv(&self, m: &mut Model, p: Part, count: bool) -> Result<bool, Corrupt> {
        let r = self.ring;
        // A counted receive on a ring with a stash is `Queue::recv_task`.
        let slot = if count && r.geo.stash > 0 {
            match r.stash_free(p.entry) {
                Some(j) => Some(j),
                None => return Ok(false),
            }
        } else {
            None
        };
        match r.mpmc_claim_recv(p.entry, count)? {
            Ok(pos) => {
                // SAFETY: data(pos) is valid for 8 bytes.
                let v = unsafe { r.data(pos).cast::<u64>().read() };
                if let Some(j) = slot {
                    if self.clean {
                        let s = r.stash_state(p.entry, j).load(Ordering::Relaxed);
                        assert_eq!(
                            s, 0,
                            "stash slot {j} of entry {} handed out while used",
                            p.entry
                        );
                    }
                    // SAFETY: stash_data is valid for 8 bytes; the free slot is ours.
                    unsafe { r.stash_data(p.entry, j).cast::<u64>().write(v) };
                    r.stash_fill(p.entry, j, p.owner);
                }
                r.mpmc_release(p.entry, pos);
                self.took(m, p, count && slot.is_none());
                if let (Some(j), Some(q)) = (slot, self.part(m, p.entry)) {
                    q.stash |= 1 << j;
                }
                Ok(true)
            }
            Err(b) => {
                self.recover(b)?;
                Ok(false)
            }
        }
    }

    fn took(&self, m: &mut Model, p: Part, count: bool) {
        if self.clean {
            assert!(m.msgs > 0, "received a message nobody sent");
        }
        m.msgs = m.msgs.saturating_sub(1);
        if count {
            if let Some(q) = self.part(m, p.entry) {
                q.tasks += 1;
            }
        }
    }

    fn recover(&self, b: Blocked) -> Result<(), Corrupt> {
        self.ring.recover(b, self.alive).map(|_| ())
    }

    /// One operation: the low 4 bits choose it, the high 4 bits a participant (and, for
    /// some operations, a flag).
    fn op(&mut self, m: &mut Model, op: u8) -> Result<(), Corrupt> {
        let k = (op >> 4) as usize;
        let flag = op & 0x80 != 0;
        let role = if flag { ROLE_RECEIVER } else { ROLE_SENDER };
        let r = self.ring;
        match op % 16 {
            0 | 1 if self.spsc => self.spsc_op(op % 16 == 0)?,
            0 | 2 => {
                if let Some(p) = self.live(m, k) {
                    self.send(m, p, flag && op % 16 == 0)?;
                }
            }
            1 | 3 if flag => {
                // A batch receive (`Queue::recv_many`) of up to 1 + k % 4 messages.
                if let Some(p) = self.live(m, k) {
                    let count = op & 0x40 != 0;
                    match r.mpmc_claim_recv_many(p.entry, 1 + k as u64 % 4, count)? {
                        Ok((pos, n)) => {
                            if n > 1 {
                                r.mpmc_release_many(p.entry, pos, n);
                            } else {
                                r.mpmc_release(p.entry, pos);
                            }
                            for _ in 0..n {
                                self.took(m, p, count);
                            }
                        }
                        Err(b) => self.recover(b)?,
                    }
                }
            }
            1 | 3 => {
                if let Some(p) = self.live(m, k) {
                    self.recv(m, p, op & 0x40 != 0)?;
                }
            }
            4 => {
                let n = r.unfinished(self.alive);
                let held: u64 = m
                    .parts
                    .iter()
                    .filter(|p| p.alive)
                    .map(|p| p.tasks + u64::from(p.stash.count_ones()))
                    .sum();
                if self.clean {
                    assert!(n >= held, "unfinished {n} below the {held} tasks held");
                }
                let _ = r.len();
            }
            5 => {
                if let Some(p) = self.live(m, k) {
                    let which = if flag { ROLE_CONSUMER } else { ROLE_PRODUCER };
                    let _ = r.take_role(p.entry, which, self.alive);
                }
            }
            6 | 7 => {
                let role = if op % 16 == 6 {
                    ROLE_SENDER
                } else {
                    ROLE_RECEIVER
                };
                if let Some(p) = self.live(m, k) {
                    r.attach(p.entry, role);
                    m.ever |= role;
                    if let Some(q) = self.part(m, p.entry) {
                        q.roles |= role;
                    }
                }
            }
            8 | 9 => {
                // Detach (a producer's `close`).
                let role = if op % 16 == 8 {
                    ROLE_SENDER
                } else {
                    ROLE_RECEIVER
                };
                if let Some(p) = self.live(m, k) {
                    r.detach(p.entry, role);
                    if let Some(q) = self.part(m, p.entry) {
                        q.roles &= !role;
                    }
                }
            }
            10 => self.kill(m, k),
            11 => {
                // Claim, then die before publishing / releasing.
                if let Some(p) = self.live(m, k) {
                    if flag && op & 0x40 != 0 {
                        // A batch receive that dies holding its claim.
                        if let Ok((_, n)) = r.mpmc_claim_recv_many(p.entry, 3, true)? {
                            for _ in 0..n {
                                self.took(m, p, true);
                            }
                        }
                    } else if flag {
                        if let Ok(pos) = r.mpmc_claim_recv(p.entry, true)? {
                            self.took(m, p, true);
                            let _ = pos;
                        }
                    } else {
                        let _ = r.mpmc_claim_send(p.entry)?;
                    }
                    self.kill(m, k);
                }
            }
            12 => {
                let live = r.sweep(role, self.alive);
                if self.clean {
                    assert_eq!(live, m.live(role), "sweep: live holders of role {role}");
                    let want = if m.ever & role != 0 { EVER | live } else { 0 };
                    assert_eq!(
                        r.peers(role).load(Ordering::Relaxed),
                        want,
                        "peer count of role {role} after a sweep"
                    );
                }
            }
            13 if flag && r.geo.stash > 0 => {
                // A join's re-queuing pass, through participant k.
                if let Some(p) = self.live(m, k) {
                    let mut out = Vec::new();
                    let full = r.requeue_stashed(
                        p.entry,
                        p.owner,
                        false,
                        0..r.geo.max_handles,
                        self.alive,
                        &mut out,
                    )?;
                    let moved: u64 = out.iter().fold(0u64, |a, &(_, n)| a.saturating_add(n));
                    if self.clean {
                        assert!(
                            moved <= m.orphaned,
                            "re-queued {moved} of {} gone tasks: a live one's?",
                            m.orphaned
                        );
                        assert!(
                            full || moved == m.orphaned,
                            "re-queued {moved} of {} gone tasks",
                            m.orphaned
                        );
                    }
                    m.orphaned = m.orphaned.saturating_sub(moved);
                    m.msgs += moved;
                }
            }
            13 => {
                let mut out = Vec::new();
                let pending = r.take_lost(self.alive, &mut out);
                m.reported = m
                    .reported
                    .saturating_add(out.iter().fold(0u64, |a, &(_, n)| a.saturating_add(n)));
                if self.clean {
                    assert_eq!(m.reported, m.dead_tasks, "lost tasks reported: {out:?}");
                    assert_eq!(pending, m.orphaned, "stashed tasks of the gone");
                }
            }
            14 => match self.live(m, k) {
                // A handle dropped, or a new one opened (taking a free or dead entry).
                Some(p) => {
                    // A handle's drop gives its stashed tasks back first (best effort).
                    let mut out = Vec::new();
                    let range = p.entry..p.entry + 1;
                    let _ =
                        r.requeue_stashed(p.entry, p.owner, true, range, self.alive, &mut out)?;
                    let moved: u64 = out.iter().fold(0u64, |a, &(_, n)| a.saturating_add(n));
                    let gone = m.orphaned + u64::from(p.stash.count_ones());
                    if self.clean {
                        assert!(
                            moved <= gone,
                            "re-queued {moved} of {gone} gone tasks: a live one's?"
                        );
                    }
                    r.unregister(p.entry);
                    m.orphaned = gone.saturating_sub(moved);
                    m.msgs += moved;
                    m.parts.retain(|q| q.entry != p.entry || !q.alive);
                }
                None => self.register(m, k),
            },
            _ => {
                // A task marked done, then a receiver's disconnection check.
                if let Some(p) = self.live(m, k) {
                    if p.stash != 0 {
                        let j = p.stash.trailing_zeros() as usize;
                        let ok = r.stash_clear(p.entry, j, p.owner);
                        assert!(ok || !self.clean, "a live owner's stashed task was taken");
                        if let Some(q) = self.part(m, p.entry) {
                            q.stash &= !(1 << j);
                        }
                    } else if p.tasks > 0 {
                        r.outstanding(p.entry).fetch_sub(1, Ordering::Release);
                        if let Some(q) = self.part(m, p.entry) {
                            q.tasks -= 1;
                        }
                    }
                    self.check_gone(m, p)?;
                }
            }
        }
        Ok(())
    }

    /// `Core::check_gone` for a receive by `p`, by the count.
    fn check_gone(&self, m: &mut Model, p: Part) -> Result<(), Corrupt> {
        let r = self.ring;
        if !r.peers_gone(ROLE_SENDER) {
            return Ok(());
        }
        if self.recv(m, p, false)? {
            return Ok(());
        }
        if r.tail().load(Ordering::Acquire) == r.head().load(Ordering::Acquire) && self.clean {
            assert_eq!(m.live(ROLE_SENDER), 0, "Disconnected with a live producer");
            assert_eq!(m.msgs, 0, "Disconnected with messages left");
        }
        Ok(())
    }

    fn spsc_op(&mut self, send: bool) -> Result<(), Corrupt> {
        let r = self.ring;
        if !self.spsc_started {
            self.spsc_started = true;
            self.sp = r.spsc_producer_start()?;
            self.cp = r.spsc_consumer_start();
        }
        if send {
            // Every other send decides as the queue's fast path does (by `head` alone, the
            // slot unread), the others as its general path (the slot validated).
            let h = r.head().load(Ordering::Relaxed);
            let free = match r.spsc_free(self.sp, h) {
                Some(free) if self.sp & 1 == 0 => free,
                _ => r.spsc_can_send(self.sp, h)?,
            };
            if free {
                // SAFETY: data(sp) is valid for data_len (8) bytes.
                unsafe { r.data(self.sp).cast::<u64>().write(self.sp) };
                r.spsc_publish(self.sp);
                self.sp = self.sp.wrapping_add(1);
            }
        } else if r.spsc_can_recv(&mut self.cp)? {
            // SAFETY: data(cp) is valid for 8 bytes.
            let _ = unsafe { r.data(self.cp).cast::<u64>().read() };
            r.spsc_release(self.cp);
            self.cp = self.cp.wrapping_add(1);
        }
        Ok(())
    }

    /// Invariants after every operation of a clean run.
    fn check(&self, m: &Model) {
        let r = self.ring;
        for role in [ROLE_SENDER, ROLE_RECEIVER] {
            let w = r.peers(role).load(Ordering::Relaxed);
            assert_eq!(w & EVER != 0, m.ever & role != 0, "'ever' of role {role}");
            assert!(
                w & COUNT >= m.live(role),
                "count {w:#x} of role {role} below its {} live holders",
                m.live(role)
            );
            assert!(w & !(EVER | COUNT) == 0, "count word {w:#x}");
        }
        let deaths = r.peer_deaths().load(Ordering::Relaxed);
        assert!(
            deaths <= m.kills,
            "{deaths} deaths counted for {} kills",
            m.kills
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(x: &mut u64) -> u8 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x as u8
    }

    #[test]
    fn survives_garbage() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let lens = if cfg!(miri) { 60 } else { 300 };
        for len in 0..lens {
            let data: Vec<u8> = (0..len).map(|_| xorshift(&mut x)).collect();
            fuzz_ring(&data);
        }
    }

    #[test]
    fn clean_runs_keep_the_invariants() {
        let mut x = 0x0fed_cba9_8765_4321u64;
        let runs = if cfg!(miri) { 4 } else { 400 };
        for _ in 0..runs {
            let mut data: Vec<u8> = (0..200).map(|_| xorshift(&mut x)).collect();
            data[2] = 2;
            fuzz_ring(&data);
            data[2] = 6; // with a stash
            fuzz_ring(&data);
        }
    }
}
