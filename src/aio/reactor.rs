//! The waiter threads: each blocks in `futex_waitv(2)` on every (word, expected value)
//! registered with it plus a private control word, and wakes the `Waker`s of a word when
//! the word changes (or a registration's re-check time comes).
//!
//! Invariants:
//! - a thread never dereferences a registered address: the kernel reads it (inside
//!   `futex_waitv`, or a zero-timeout `FUTEX_WAIT` that only compares). A future that is
//!   leaked (`mem::forget`) after its mapping is gone therefore leaves at worst an entry
//!   that faults in the kernel (`EFAULT`) and is fired and dropped;
//! - an entry leaves the table when it is fired (its waker is called once, outside the
//!   lock) or when its [`Registration`] is dropped, whichever comes first;
//! - a registration that the sleeping thread is not already waiting on bumps the control
//!   word (under the lock) and wakes it; the thread snapshots the table and the control
//!   value under the same lock, so a registration is either in its snapshot or makes its
//!   `futex_waitv` return (`EAGAIN` or woken).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use nix::errno::Errno;

/// `futex_waitv(2)` (Linux 5.16): the same number on x86_64 and aarch64.
const SYS_FUTEX_WAITV: libc::c_long = 449;
const FUTEX2_SIZE_U32: u32 = 0x02;
const FUTEX2_PRIVATE: u32 = 128;
/// The kernel's limit of words per `futex_waitv` call.
const WAITV_MAX: usize = 128;
/// Distinct (word, value) pairs one thread watches, besides its control word. Past that,
/// another thread is started.
pub(crate) const PER_THREAD: usize = WAITV_MAX - 1;

/// `struct futex_waitv` of `<linux/futex.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

struct Entry {
    id: u64,
    addr: usize,
    expected: u32,
    waker: Waker,
    deadline: Option<Instant>,
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    /// Distinct (address, expected value) pairs of `entries`, with how many entries each.
    pairs: Vec<(usize, u32, usize)>,
    /// The pairs and the time limit of the `futex_waitv` in progress (valid while
    /// `sleeping`).
    armed: Vec<(usize, u32)>,
    armed_until: Option<Instant>,
    sleeping: bool,
    next_id: u64,
    /// A `futex_waitv` error that is not transient: registering fails with it.
    failed: Option<Errno>,
}

/// One waiter thread and its table.
pub(crate) struct Shard {
    state: Mutex<State>,
    /// Private futex word: bumped to make the thread take a new snapshot.
    control: AtomicU32,
}

/// A registered wait; dropping it removes the entry (no system call).
pub(crate) struct Registration {
    shard: Arc<Shard>,
    id: u64,
}

impl Registration {
    /// True once the entry was fired.
    pub(crate) fn fired(&self) -> bool {
        !self.shard.lock().entries.iter().any(|e| e.id == self.id)
    }

    /// True while the entry was not fired; updates its waker to `waker`.
    pub(crate) fn pending(&self, waker: &Waker) -> bool {
        let mut st = self.shard.lock();
        match st.entries.iter_mut().find(|e| e.id == self.id) {
            Some(e) => {
                if !e.waker.will_wake(waker) {
                    e.waker = waker.clone();
                }
                true
            }
            None => false,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut st = self.shard.lock();
        if let Some(i) = st.entries.iter().position(|e| e.id == self.id) {
            let e = st.entries.swap_remove(i);
            st.unpair(e.addr, e.expected);
            // A pair the thread still waits on costs at most one spurious loop of the
            // thread when the word changes; no need to wake it now.
        }
    }
}

impl State {
    fn unpair(&mut self, addr: usize, expected: u32) {
        if let Some(i) = self
            .pairs
            .iter()
            .position(|p| p.0 == addr && p.1 == expected)
        {
            self.pairs[i].2 -= 1;
            if self.pairs[i].2 == 0 {
                self.pairs.swap_remove(i);
            }
        }
    }

    /// Removes the entries `fire` selects and collects their wakers.
    fn fire(&mut self, wakers: &mut Vec<Waker>, mut fire: impl FnMut(&Entry) -> bool) {
        let mut i = 0;
        while i < self.entries.len() {
            if fire(&self.entries[i]) {
                let e = self.entries.swap_remove(i);
                self.unpair(e.addr, e.expected);
                wakers.push(e.waker);
            } else {
                i += 1;
            }
        }
    }
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The table stays consistent under every panic-free path; a poisoned lock can
        // only come from a panicking waker, which does not run under the lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an entry if this thread has room for its pair.
    fn try_add(
        self: &Arc<Self>,
        word: &AtomicU32,
        expected: u32,
        waker: &Waker,
        deadline: Option<Instant>,
    ) -> Option<Result<Registration, Errno>> {
        let addr = word.as_ptr() as usize;
        let mut st = self.lock();
        if let Some(e) = st.failed {
            return Some(Err(e));
        }
        match st.pairs.iter().position(|p| p.0 == addr && p.1 == expected) {
            Some(i) => st.pairs[i].2 += 1,
            None if st.pairs.len() < PER_THREAD => st.pairs.push((addr, expected, 1)),
            None => return None,
        }
        let id = st.next_id;
        st.next_id += 1;
        st.entries.push(Entry {
            id,
            addr,
            expected,
            waker: waker.clone(),
            deadline,
        });
        // A thread already asleep on this very pair, until no later than this entry's
        // deadline, needs no new snapshot (a second waiter on one word, say).
        let soon_enough = match (deadline, st.armed_until) {
            (None, _) => true,
            (Some(d), Some(a)) => a <= d,
            (Some(_), None) => false,
        };
        let covered = soon_enough && st.armed.contains(&(addr, expected));
        let wake = st.sleeping && !covered;
        if wake {
            self.control.fetch_add(1, Ordering::Relaxed);
        }
        drop(st);
        if wake {
            wake_private(&self.control);
        }
        Some(Ok(Registration {
            shard: self.clone(),
            id,
        }))
    }

    fn start() -> Result<Arc<Shard>, Errno> {
        let shard = Arc::new(Shard {
            state: Mutex::new(State::default()),
            control: AtomicU32::new(0),
        });
        let s = shard.clone();
        // The thread needs no signal: it starts with every one blocked (a new thread
        // inherits its creator's mask), leaving them to the application's threads — a
        // SignalListener requires its signal blocked in every thread, this one included.
        use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
        let mut old = SigSet::empty();
        pthread_sigmask(
            SigmaskHow::SIG_SETMASK,
            Some(&SigSet::all()),
            Some(&mut old),
        )?;
        let spawned = std::thread::Builder::new()
            .name("shmkit-futex-waiter".into())
            .stack_size(256 * 1024)
            .spawn(move || s.run());
        pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
        spawned.map_err(|e| e.raw_os_error().map_or(Errno::EAGAIN, Errno::from_raw))?;
        Ok(shard)
    }

    /// The thread's loop. Never returns; the thread ends with the process.
    fn run(&self) -> ! {
        let mut waitv: Vec<FutexWaitv> = Vec::with_capacity(WAITV_MAX);
        let mut wakers: Vec<Waker> = Vec::new();
        loop {
            let deadline = {
                let mut st = self.lock();
                waitv.clear();
                waitv.push(FutexWaitv {
                    val: u64::from(self.control.load(Ordering::Relaxed)),
                    uaddr: self.control.as_ptr() as u64,
                    flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
                    reserved: 0,
                });
                let State { pairs, armed, .. } = &mut *st;
                armed.clear();
                for &(addr, expected, _) in pairs.iter() {
                    armed.push((addr, expected));
                    // Shared (not FUTEX2_PRIVATE): the word may live in memory shared
                    // with other processes, whose wakers use FUTEX_WAKE on it.
                    waitv.push(FutexWaitv {
                        val: u64::from(expected),
                        uaddr: addr as u64,
                        flags: FUTEX2_SIZE_U32,
                        reserved: 0,
                    });
                }
                st.sleeping = true;
                st.armed_until = st.entries.iter().filter_map(|e| e.deadline).min();
                st.armed_until
            };
            let r = futex_waitv(&waitv, deadline);
            let mut st = self.lock();
            st.sleeping = false;
            match r {
                Ok(0) | Err(Errno::EINTR | Errno::ETIMEDOUT) => {}
                Ok(i) => {
                    let addr = waitv.get(i).map_or(0, |w| w.uaddr as usize);
                    let before = wakers.len();
                    st.fire(&mut wakers, |e| e.addr == addr);
                    if wakers.len() == before {
                        // Every waiter of this word left meanwhile: the wake-up was meant
                        // for someone else (a semaphore's `post` wakes one sleeper only).
                        // Pass it on; for wake-all words it is merely spurious. An address
                        // no longer mapped is EFAULT, not a fault.
                        wake_shared(addr, 1);
                    }
                    // futex_waitv reports one woken word (the last of the vector), but
                    // wake-ups that raced for other words of it were taken too. A word
                    // with waiters left shows its new value in the next snapshot (EAGAIN,
                    // below); a word whose waiters all left would lose its wake-up, so
                    // pass one on if its value moved (wakers change it first).
                    for w in &waitv[1..] {
                        let (a, val) = (w.uaddr as usize, w.val as u32);
                        if a != addr
                            && !st.entries.iter().any(|e| e.addr == a)
                            && !still_equal(a, val)
                        {
                            wake_shared(a, 1);
                        }
                    }
                }
                Err(Errno::EAGAIN)
                    if u64::from(self.control.load(Ordering::Relaxed)) != waitv[0].val =>
                {
                    // A new registration: take a new snapshot; if a watched word changed
                    // as well, the next call says so.
                }
                Err(Errno::EAGAIN | Errno::EFAULT) => {
                    // Some word no longer holds its value (or is no longer mapped): find
                    // which, one compare each.
                    for w in &waitv[1..] {
                        if !still_equal(w.uaddr as usize, w.val as u32) {
                            let (addr, val) = (w.uaddr as usize, w.val as u32);
                            st.fire(&mut wakers, |e| e.addr == addr && e.expected == val);
                        }
                    }
                }
                Err(e) => {
                    // Not expected from a valid call: fail every waiter (they report the
                    // error) instead of spinning on it.
                    st.failed = Some(e);
                    st.fire(&mut wakers, |_| true);
                }
            }
            if deadline.is_some() {
                let now = Instant::now();
                st.fire(&mut wakers, |e| e.deadline.is_some_and(|d| d <= now));
            }
            drop(st);
            if !wakers.is_empty() {
                for w in wakers.drain(..) {
                    w.wake();
                }
                // A woken task usually registers its next wait at once. When it runs on
                // this CPU, let it do so before the next snapshot: its registration then
                // finds this thread awake and needs no control wake-up (and this thread
                // no second trip through futex_waitv). Not a sleep: it returns at once
                // when nothing else is runnable here.
                std::thread::yield_now();
            }
        }
    }
}

/// This process's waiter threads, and the fork generation they belong to (bit 31 set;
/// 0 before first use).
static SHARDS: Mutex<(u32, Vec<Arc<Shard>>)> = Mutex::new((0, Vec::new()));

/// Forks this process went through (counted in the child), since the first registration.
static FORKS: AtomicU32 = AtomicU32::new(0);

extern "C" fn forked_child() {
    // Async-signal-safe: one atomic add.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Registers the fork counter's child handler (once).
fn watch_forks() -> Result<(), Errno> {
    static RC: std::sync::OnceLock<libc::c_int> = std::sync::OnceLock::new();
    // SAFETY: the handler is an `extern "C" fn` with no arguments that only performs an
    // atomic add, valid for the whole life of the process.
    let rc = *RC.get_or_init(|| unsafe { libc::pthread_atfork(None, None, Some(forked_child)) });
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw(rc))
    }
}

/// Registers a wait for `word` to differ from `expected` (or for `deadline`): `waker` is
/// woken once, from a waiter thread. Starts a thread on first use and whenever every
/// thread watches [`PER_THREAD`] distinct pairs.
pub(crate) fn register(
    word: &AtomicU32,
    expected: u32,
    waker: &Waker,
    deadline: Option<Instant>,
) -> Result<Registration, Errno> {
    let mut g = SHARDS.lock().unwrap_or_else(|p| p.into_inner());
    // Generation 0: never used. `getpid` is a system call; the fork counter is a load.
    let generation = FORKS.load(Ordering::Relaxed) | 1 << 31;
    if g.0 != generation {
        // First use, or a forked child: its parent's threads do not exist here.
        supported()?;
        watch_forks()?;
        g.0 = FORKS.load(Ordering::Relaxed) | 1 << 31;
        g.1.clear();
    }
    for s in &g.1 {
        if let Some(r) = s.try_add(word, expected, waker, deadline) {
            return r;
        }
    }
    let s = Shard::start()?;
    g.1.push(s.clone());
    s.try_add(word, expected, waker, deadline)
        .unwrap_or(Err(Errno::EAGAIN))
}

/// Whether the kernel has `futex_waitv` (`ENOSYS` before Linux 5.16).
fn supported() -> Result<(), Errno> {
    // SAFETY: an empty list is rejected with EINVAL before anything is read.
    let r = unsafe {
        libc::syscall(
            SYS_FUTEX_WAITV,
            std::ptr::null::<FutexWaitv>(),
            0u32,
            0u32,
            std::ptr::null::<libc::timespec>(),
            libc::CLOCK_MONOTONIC,
        )
    };
    match Errno::result(r) {
        Err(Errno::ENOSYS) => Err(Errno::ENOSYS),
        _ => Ok(()),
    }
}

/// `futex_waitv` on `waitv` until `deadline` (monotonic). Returns the index of the word
/// that woke us.
fn futex_waitv(waitv: &[FutexWaitv], deadline: Option<Instant>) -> Result<usize, Errno> {
    let ts = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(Duration::from)
            .unwrap_or_default();
        crate::sync::futex::duration_to_timespec(now.saturating_add(left))
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // The kernel only reads the array and the words it names (faults there are EFAULT,
    // not signals).
    // SAFETY: `waitv` is a live array of `waitv.len()` (1..=128) initialised
    // `futex_waitv`s; `ts_ptr` is null or a live absolute CLOCK_MONOTONIC timespec.
    let r = unsafe {
        libc::syscall(
            SYS_FUTEX_WAITV,
            waitv.as_ptr(),
            waitv.len() as u32,
            0u32,
            ts_ptr,
            libc::CLOCK_MONOTONIC,
        )
    };
    Errno::result(r).map(|i| i as usize)
}

/// Whether the 32-bit word at `addr` still holds `val`, asked of the kernel
/// (`FUTEX_WAIT` with a zero timeout compares, then times out at once): an unmapped
/// address is `EFAULT` (false), never a fault in this process.
fn still_equal(addr: usize, val: u32) -> bool {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: FUTEX_WAIT only reads the word, through the kernel's fault-tolerant
    // access; `zero` is a live timespec; uaddr2 and val3 are ignored. Shared (not
    // private), like the registrations.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr as *const u32,
            libc::FUTEX_WAIT,
            val,
            &zero as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    Errno::result(r) == Err(Errno::ETIMEDOUT)
}

/// `FUTEX_WAKE` of `n` sleepers on the shared word at `addr`, through the kernel only.
pub(crate) fn wake_shared(addr: usize, n: i32) {
    // SAFETY: FUTEX_WAKE does not dereference the word in this process (an unmapped
    // address is EFAULT) nor the other arguments.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr as *const u32,
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

fn wake_private(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned 32-bit word of this process; FUTEX_WAKE does not
    // dereference the other arguments.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// (waiter threads, registered waits) in this process.
pub(crate) fn census() -> (usize, usize) {
    let g = SHARDS.lock().unwrap_or_else(|p| p.into_inner());
    if g.0 != FORKS.load(Ordering::Relaxed) | 1 << 31 {
        return (0, 0);
    }
    (g.1.len(), g.1.iter().map(|s| s.lock().entries.len()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn wait_for(flag: &Flag) {
        let t = Instant::now();
        while !flag.0.load(Ordering::SeqCst) {
            assert!(t.elapsed() < Duration::from_secs(20), "never woken");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_changed_word_wakes_once_and_leaves_the_table() {
        let word = AtomicU32::new(5);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let reg = register(&word, 5, &Waker::from(flag.clone()), None).unwrap();
        assert!(reg.pending(&Waker::from(flag.clone())));
        word.store(6, Ordering::SeqCst);
        crate::sync::futex::wake(&word, i32::MAX).unwrap();
        wait_for(&flag);
        assert!(!reg.pending(&Waker::from(flag.clone())));
    }

    #[test]
    fn a_deadline_fires_without_a_change() {
        let word = AtomicU32::new(0);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let at = Instant::now() + Duration::from_millis(5);
        let _reg = register(&word, 0, &Waker::from(flag.clone()), Some(at)).unwrap();
        wait_for(&flag);
        assert!(Instant::now() >= at);
    }

    #[test]
    fn a_leaked_wait_on_unmapped_memory_is_dropped_not_dereferenced() {
        use std::num::NonZeroUsize;
        let len = NonZeroUsize::new(4096).unwrap();
        // SAFETY: a fresh private anonymous mapping, unmapped below; nothing else uses it.
        let page = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                len,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_PRIVATE,
            )
        }
        .unwrap();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        {
            // SAFETY: the page is mapped, zeroed and aligned; the reference is not used
            // after the munmap below.
            let word = unsafe { page.cast::<AtomicU32>().as_ref() };
            // Like a future leaked with mem::forget: the registration is never dropped.
            std::mem::forget(register(word, 0, &Waker::from(flag.clone()), None).unwrap());
        }
        // SAFETY: `page` is the mapping made above, `len` its length; no reference into
        // it is used afterwards.
        unsafe { nix::sys::mman::munmap(page, len.get()) }.unwrap();
        // Make the thread take a new snapshot: its futex_waitv faults (EFAULT) in the
        // kernel, it asks about each word and drops the unmapped one, waking its waker.
        let other = AtomicU32::new(0);
        let other_flag = Arc::new(Flag(AtomicBool::new(false)));
        let _reg = register(&other, 1, &Waker::from(other_flag.clone()), None).unwrap();
        wait_for(&flag);
    }
}
