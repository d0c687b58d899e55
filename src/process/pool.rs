//! [`Pool`]: Python's `multiprocessing.Pool`, fed through shmkit queues, that never hangs
//! on a dead worker and never leaks one (feature `process`).
//!
//! ```no_run
//! use shmkit::process::{Entry, Pool};
//!
//! fn square(x: u64) -> u64 { x * x }
//! static SQUARE: Entry<u64, u64> = shmkit::entry!(square);
//!
//! fn main() -> shmkit::Result<()> {
//!     shmkit::process::init(&[&SQUARE]);
//!     let pool = Pool::new(&SQUARE, 4)?;
//!     assert_eq!(pool.map(0..10)?, (0..10).map(|x| x * x).collect::<Vec<_>>());
//!     let r = pool.apply_async(7)?;
//!     assert_eq!(r.get(Some(std::time::Duration::from_secs(1)))?, 49);
//!     Ok(())
//! }
//! ```
//!
//! # How it works
//! Each worker is a [`Process`](super::Process)-style child (started with
//! [`StartMethod::Spawn`] by default) running the pool's [`Entry`] on every task. Tasks
//! go to a worker through its own anonymous [`ByteQueue`] (a sealed memfd, inherited by
//! the worker across `exec`); results come back through one shared anonymous
//! `ByteQueue`. Nothing has a name in `/dev/shm`, so nothing is left there whatever
//! happens to the parent.
//!
//! Work travels in batches, never item by item: the caller's thread encodes a chunk of
//! [`chunksize`](Pool::map_chunked) arguments with postcard, back to back, into one
//! buffer, a few hundred per call of the codec (a chunk whose encoding exceeds
//! [`PoolOptions::max_message`] becomes several messages); a worker runs a whole
//! message and sends its results back in one message; the supervisor thread files that
//! message, as received, under the index of its first item; the caller decodes the
//! results from it in order, straight into its `Vec`. Per item there is one encode, one
//! decode and the call itself: no allocation, lock or wake-up. A plain-data entry
//! (`entry!(pod f)`, argument and result [`bytemuck::Pod`]) goes further: its items
//! travel back to back without framing; the caller gathers a few hundred arguments at a
//! time in a small buffer of `A` and appends them to the message as bytes in one copy
//! (no call or length check per item); a worker runs a message's items in one tight
//! loop with `f` inlined (the macro generates the loop for `f`); and the caller copies
//! a message's results into its `Vec` in one pass. `shmkit bench --workload pool`
//! measures both (`shmkit-pool`, `shmkit-pool-pod`) against Python's
//! `multiprocessing.Pool`. The parent keeps each message's encoded arguments until its
//! results are in, to run them again if its worker dies.
//!
//! The parent keeps an in-flight table: every message, the worker it was given to, how
//! many of its results came back. A supervisor thread receives results and watches each
//! worker's pidfd; a worker's death is known from the kernel, never guessed from a pid.
//!
//! # Failure semantics
//! - **A worker dies mid-task** (SIGKILL, OOM killer, `abort`): the results it already
//!   sent are kept; the item it was running (each worker records its progress in a shared
//!   word before every item) fails with [`Error::Failed`] / [`Failure::Died`] naming the
//!   pid and the signal — or runs again, up to [`PoolOptions::retries`] times (default 0);
//!   items it had finished but not yet reported (a message's results are sent together)
//!   and the messages queued behind it run again on other workers. The worker is
//!   replaced. `map` and every other wait return; nothing hangs.
//! - **A task panics**: its result is [`Failure::Panicked`] with the message; the worker
//!   catches the panic and goes on.
//! - **Arguments or a result cannot be (de)serialised** (or one alone exceeds
//!   [`PoolOptions::max_message`], a plain-data one included: the item still runs, its
//!   result is not delivered): that item's result is [`Failure::Codec`]; the pool goes
//!   on.
//! - **A worker sends a malformed result message** (a bug, or a hostile process writing
//!   the queue): it is killed and handled as a dead worker.
//! - **The parent dies**, however: every worker has `PR_SET_PDEATHSIG(SIGKILL)` and is
//!   gone at once; the queues are anonymous, so `/dev/shm` holds nothing of the pool.
//!
//! `close` stops submissions, `join` waits for the work and the workers,
//! `terminate` (and dropping the pool) kills the workers and fails what is left.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::spawn::{EncodeError, EncodeRun, Pack, Proc, Spec, launch};
use super::{Entry, Failure, Role, StartMethod};
use crate::error::{Error, Result};
use crate::pipe::Pipe;
use crate::queue::{ByteQueue, WaitStrategy};
use crate::segment::SegmentOptions;
use crate::value::Array;

/// Task message: `T`, message id (u64 LE), item count (u32 LE), then per item its length
/// (u32 LE) and bytes; `F` (an entry whose argument and result have fixed sizes), the
/// same header, then the items back to back. `Q`: quit.
const TASK: u8 = b'T';
const TASK_FIXED: u8 = b'F';
const QUIT: u8 = b'Q';
const TASK_HEADER: usize = 13;
/// Result message: message id (u64), index of the first item in the task message (u32),
/// count (u32), kind (u8); kind `R`: per item a record: status (u8), length (u32), bytes;
/// kind `F`: `count` successful results of the entry's fixed result size, back to back.
const RES_HEADER: usize = 17;
const RES_RECORDS: u8 = b'R';
const RES_FIXED: u8 = b'F';
const REC_HEADER: usize = 5;
const ST_OK: u8 = 0;
const ST_PANIC: u8 = 1;
const ST_CODEC: u8 = 2;
/// Task messages a worker holds at most (one running, one queued).
const PER_WORKER: usize = 2;
/// How often the supervisor looks at the workers' pidfds while results flow.
const WATCH: Duration = Duration::from_millis(20);
/// Progress words are this many `u64`s apart: one cache line per worker, so that
/// workers storing theirs before every item do not contend.
const STRIDE: usize = 8;
/// Result messages the supervisor receives before it takes the lock to file them.
const DRAIN: usize = 32;
/// Arguments gathered before one call encodes them into a message (plain data: one
/// copy).
const STAGE: usize = 512;

/// Options of a [`Pool`].
#[derive(Clone, Debug)]
pub struct PoolOptions {
    workers: usize,
    max_tasks_per_child: Option<u64>,
    retries: u32,
    max_message: usize,
    method: StartMethod,
    start_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_tasks_per_child: None,
            retries: 0,
            max_message: 256 * 1024,
            method: StartMethod::Spawn,
            start_timeout: Duration::from_secs(30),
        }
    }
}

impl PoolOptions {
    /// Number of workers (default: the number of CPUs this process may use).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Replace a worker after it ran this many items (Python's `maxtasksperchild`); a
    /// worker is given no new message once it reached the count, finishes the one it
    /// runs and is replaced.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = Some(n.max(1));
        self
    }

    /// How many times an item whose worker died while running it is run again (default
    /// 0: it fails with [`Failure::Died`]).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Largest task or result message (default 256 KiB): the size of the queues' slots.
    /// A chunk whose encoded arguments (or results) exceed it travels as several
    /// messages; a single item's encoded argument or result must fit.
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes.clamp(1024, 1 << 30);
        self
    }

    /// How workers start (default [`StartMethod::Spawn`]).
    pub fn start_method(mut self, m: StartMethod) -> Self {
        self.method = m;
        self
    }

    /// Starts the pool.
    pub fn build<A: 'static, R: 'static>(self, entry: &'static Entry<A, R>) -> Result<Pool<A, R>> {
        Pool::start(entry, self)
    }
}

/// One task message's items, in flight or pending.
struct Part {
    job: u64,
    /// Index in the job of the first item.
    first: usize,
    count: usize,
    /// Per item: length (u32 LE) and encoded argument.
    bytes: Vec<u8>,
    /// Results received (items `0..reported`).
    reported: usize,
    /// Times the item running when a worker died was run again.
    attempts: u32,
}

/// Results filed under the index of their first item.
enum Batch {
    /// A worker's result message, validated: `count` records from [`RES_HEADER`], or
    /// `count` results of `fixed` bytes each.
    Records {
        msg: Vec<u8>,
        count: usize,
        fixed: Option<usize>,
    },
    /// One item that failed in the parent (encoding) or with its worker.
    Failed(Failure, String),
}

impl Batch {
    fn count(&self) -> usize {
        match self {
            Batch::Records { count, .. } => *count,
            Batch::Failed(..) => 1,
        }
    }
}

#[derive(Default)]
struct Job {
    batches: BTreeMap<usize, Batch>,
}

struct Worker {
    proc: Proc,
    tasks: ByteQueue,
    assigned: VecDeque<u64>,
    items_given: u64,
    quitting: bool,
}

struct State {
    workers: Vec<Option<Worker>>,
    pending: VecDeque<u64>,
    parts: HashMap<u64, Part>,
    jobs: HashMap<u64, Job>,
    next_id: u64,
    closed: bool,
    /// Set by terminate / a fatal error: every wait returns this.
    dead: Option<String>,
    /// Encode buffers of finished messages, for the next ones.
    spare: Vec<Vec<u8>>,
}

impl State {
    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn file(&mut self, job: u64, index: usize, batch: Batch) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.batches.insert(index, batch);
        }
    }

    fn check_open(&self) -> Result<()> {
        if let Some(why) = &self.dead {
            return Err(pool_dead(why));
        }
        if self.closed {
            return Err(Error::invalid("pool", "submit", "the pool is closed"));
        }
        Ok(())
    }
}

struct Shared {
    state: Mutex<State>,
    /// The entry's argument and result sizes, when both are fixed.
    fixed: Option<(usize, usize)>,
    changed: Condvar,
    stop: AtomicBool,
    role: &'static dyn Role,
    opts: PoolOptions,
    results_fd: OwnedFd,
    progress: Array<u64>,
    progress_fd: OwnedFd,
}

/// A pool of worker processes. See the [module docs](self).
pub struct Pool<A: 'static, R: 'static> {
    shared: Arc<Shared>,
    supervisor: Option<std::thread::JoinHandle<()>>,
    entry: &'static Entry<A, R>,
}

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves consistent-enough state for waiters.
    s.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Python's default chunk size: `len / (4 * workers)`, rounded up.
fn default_chunksize(len: usize, workers: usize) -> usize {
    len.div_ceil(4 * workers).max(1)
}

impl<A: 'static, R: 'static> Pool<A, R> {
    /// A pool of `workers` workers running `entry` (see [`PoolOptions`] for more).
    pub fn new(entry: &'static Entry<A, R>, workers: usize) -> Result<Self> {
        PoolOptions::default().workers(workers).build(entry)
    }

    /// Options, finished with [`PoolOptions::build`].
    pub fn options() -> PoolOptions {
        PoolOptions::default()
    }

    fn start(entry: &'static Entry<A, R>, opts: PoolOptions) -> Result<Self> {
        // Parked waits (here and on the workers' task queues): on a machine with as many
        // workers as cores, a waiter spinning its 50 µs steals the core the caller encodes
        // on; a message carries a whole chunk, so one wake-up per message is cheap.
        let results = ByteQueue::options()
            .wait(WaitStrategy::Park)
            .capacity((opts.workers * 4).next_power_of_two() as u64)
            .anonymous(opts.max_message)?;
        let results_fd = results
            .segment()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::os("pool", "dup", super::spawn::errno_of(&e)))?;
        let progress = Array::<u64>::anonymous(opts.workers * STRIDE, 0)?;
        let progress_fd = progress
            .segment()
            .ok_or_else(|| Error::invalid("pool", "start", "progress array without a segment"))?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::os("pool", "dup", super::spawn::errno_of(&e)))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                workers: (0..opts.workers).map(|_| None).collect(),
                pending: VecDeque::new(),
                parts: HashMap::new(),
                jobs: HashMap::new(),
                next_id: 1,
                closed: false,
                dead: None,
                spare: Vec::new(),
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            fixed: entry.fixed_sizes(),
            role: entry,
            opts,
            results_fd,
            progress,
            progress_fd,
        });
        {
            let mut st = lock(&shared);
            for slot in 0..shared.opts.workers {
                let w = spawn_worker(&shared, slot)?;
                st.workers[slot] = Some(w);
            }
        }
        let sh = shared.clone();
        let supervisor = std::thread::Builder::new()
            .name("shmkit-pool".into())
            .spawn(move || supervise(&sh, results))
            .map_err(|e| {
                Error::os(
                    "pool",
                    "spawn supervisor thread",
                    super::spawn::errno_of(&e),
                )
            })?;
        Ok(Pool {
            shared,
            supervisor: Some(supervisor),
            entry,
        })
    }

    /// The workers' pids (slots whose worker is being replaced are left out).
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.shared)
            .workers
            .iter()
            .flatten()
            .map(|w| w.proc.pid)
            .collect()
    }

    /// Encodes `items` (indices from `first` in `job`) in chunks of `chunksize`, each
    /// chunk one message or more, and hands them to workers as they are ready. Encoding
    /// happens outside the lock. Returns the number of items.
    fn submit(
        &self,
        job: u64,
        first: usize,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<usize> {
        lock(&self.shared).check_open()?;
        let limit = self.shared.opts.max_message - TASK_HEADER;
        if let (Some(pack), Some((asize, _))) = (self.entry.arg.pack, self.shared.fixed) {
            if asize <= limit {
                return self.submit_packed(job, first, items, chunksize, pack, asize);
            }
        }
        // Arguments are gathered a few hundred at a time and encoded by one call of the
        // codec (no call per item); an argument that does not fit after the others
        // starts the next message, one that fails (or fits no message) alone is filed
        // as that item's failure.
        let mut enc = Encoder::new(&self.shared, job, first, chunksize, false);
        let encode = self.entry.arg.encode_run;
        let mut it = items.into_iter();
        let mut stage: Vec<A> = Vec::with_capacity(STAGE.min(chunksize));
        let mut n = 0;
        loop {
            stage.clear();
            let room = chunksize.saturating_sub(enc.count).max(1);
            stage.extend(it.by_ref().take(STAGE.min(room)));
            if stage.is_empty() {
                break;
            }
            let mut k = 0;
            while k < stage.len() {
                let (done, err) = enc.push_run(&stage[k..], encode, limit);
                k += done;
                let Some(err) = err else {
                    break;
                };
                let idx = first + n + k;
                let m = match err {
                    EncodeError::Full if enc.count > 0 => {
                        enc.flush(idx)?;
                        continue;
                    }
                    EncodeError::Full => format!(
                        "the encoded argument {} exceeds the pool's max_message ({} bytes)",
                        std::any::type_name::<A>(),
                        self.shared.opts.max_message
                    ),
                    EncodeError::Other(m) => m,
                };
                enc.flush(idx)?;
                let mut st = lock(&self.shared);
                st.file(
                    job,
                    idx,
                    Batch::Failed(Failure::Codec(m), format!("pool task {job}.{idx}")),
                );
                drop(st);
                self.shared.changed.notify_all();
                enc.first = idx + 1;
                k += 1;
            }
            n += stage.len();
            if enc.count >= chunksize {
                enc.flush(first + n)?;
            }
        }
        enc.flush(first + n)?;
        Ok(n)
    }

    /// [`submit`](Self::submit) for plain-data arguments (`entry!(pod f)`): items are
    /// gathered in a small buffer of `A` (it stays in cache) and appended to the message
    /// as their bytes, one copy per [`STAGE`] items: no call or length check per item.
    /// A message holds `chunksize` items, or as many as fit in `max_message`.
    fn submit_packed(
        &self,
        job: u64,
        first: usize,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
        pack: Pack<A>,
        asize: usize,
    ) -> Result<usize> {
        let limit = self.shared.opts.max_message - TASK_HEADER;
        let per = chunksize.min(limit.checked_div(asize).unwrap_or(usize::MAX));
        let mut it = items.into_iter();
        let mut stage: Vec<A> = Vec::with_capacity(STAGE.min(per));
        let mut enc = Encoder::new(&self.shared, job, first, chunksize, true);
        let mut n = 0;
        loop {
            stage.clear();
            stage.extend(it.by_ref().take(STAGE.min(per - enc.count)));
            if stage.is_empty() {
                break;
            }
            if enc.count == 0 {
                enc.buf.clear();
                enc.buf.reserve(per.saturating_mul(asize));
            }
            pack(&stage, &mut enc.buf);
            enc.pos = enc.buf.len();
            enc.count += stage.len();
            n += stage.len();
            if enc.count >= per {
                enc.flush(first + n)?;
            }
        }
        enc.flush(first + n)?;
        Ok(n)
    }

    fn new_job(&self) -> u64 {
        let mut st = lock(&self.shared);
        let id = st.id();
        st.jobs.insert(id, Job::default());
        id
    }

    /// Runs `entry(a)` on a worker; the handle's [`get`](AsyncResult::get) waits for it.
    pub fn apply_async(&self, a: A) -> Result<AsyncResult<R>> {
        let job = self.new_job();
        let r = AsyncResult {
            shared: self.shared.clone(),
            job,
            decode: self.entry.ret.from_bytes,
        };
        self.submit(job, 0, std::iter::once(a), 1)?;
        Ok(r)
    }

    /// Runs `entry(a)` on a worker and waits for the result (Python's `apply`).
    pub fn apply(&self, a: A) -> Result<R> {
        self.apply_async(a)?.get(None)
    }

    /// `entry` over every item, results in order; the first failed item is the error
    /// (use [`imap`](Self::imap) to see every item's outcome). Chunk size as Python's:
    /// `len / (4 * workers)`, rounded up (an input whose length is not known up front is
    /// collected first to learn it).
    pub fn map(&self, items: impl IntoIterator<Item = A>) -> Result<Vec<R>> {
        let it = items.into_iter();
        let workers = self.shared.opts.workers;
        match it.size_hint() {
            (lo, Some(hi)) if lo == hi => self.map_chunked(it, default_chunksize(lo, workers)),
            _ => {
                let items: Vec<A> = it.collect();
                let chunk = default_chunksize(items.len(), workers);
                self.map_chunked(items, chunk)
            }
        }
    }

    /// [`map`](Self::map) with an explicit chunk size. Waits for every item even after
    /// one failed, so that no work of this call is left running when it returns.
    pub fn map_chunked(
        &self,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>> {
        let job = self.new_job();
        let _forget = Forget(&self.shared, job);
        let n = self.submit(job, 0, items, chunksize.max(1))?;
        let mut out = Vec::with_capacity(n);
        let mut first_err = None;
        let mut next = 0;
        while next < n {
            let batch = take_batch(&self.shared, job, Some(next), None)?;
            let count = batch.count();
            if first_err.is_none() {
                // Plain results: decoded as one run.
                if let (
                    Batch::Records {
                        msg,
                        count,
                        fixed: Some(size),
                    },
                    Some(extend),
                ) = (&batch, self.entry.ret.extend_from)
                {
                    // (no let chain: the library builds at its MSRV, 1.85)
                    if let Some(run) = msg.get(RES_HEADER..RES_HEADER + count * size) {
                        extend(run, *count, &mut out);
                        next += count;
                        continue;
                    }
                }
                let mut items = Items::new(job, next, batch);
                while let Some((_, r)) = items.next(self.entry.ret.from_bytes) {
                    match r {
                        Ok(v) => out.push(v),
                        Err(e) => {
                            first_err = Some(e);
                            break;
                        }
                    }
                }
            }
            next += count;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// A streaming, ordered `map`: yields each item's outcome in input order, keeping at
    /// most about `4 * workers * chunksize` items in flight (bounded memory whatever the
    /// input's length).
    pub fn imap<I: IntoIterator<Item = A>>(
        &self,
        items: I,
        chunksize: usize,
    ) -> Imap<'_, A, R, I::IntoIter> {
        self.imap_inner(items, chunksize, true)
    }

    /// [`imap`](Self::imap), yielding `(index, outcome)` as items complete.
    pub fn imap_unordered<I: IntoIterator<Item = A>>(
        &self,
        items: I,
        chunksize: usize,
    ) -> Imap<'_, A, R, I::IntoIter> {
        self.imap_inner(items, chunksize, false)
    }

    fn imap_inner<I: IntoIterator<Item = A>>(
        &self,
        items: I,
        chunksize: usize,
        ordered: bool,
    ) -> Imap<'_, A, R, I::IntoIter> {
        let job = self.new_job();
        let chunksize = chunksize.max(1);
        Imap {
            pool: self,
            items: items.into_iter(),
            job,
            chunksize,
            window: 4 * self.shared.opts.workers * chunksize,
            submitted: 0,
            yielded: 0,
            exhausted: false,
            ordered,
            cur: None,
        }
    }

    /// No more submissions (Python's `close`).
    pub fn close(&self) {
        lock(&self.shared).closed = true;
    }

    /// Waits for every submitted item to finish and the workers to exit; call
    /// [`close`](Self::close) first. Results not yet taken stay available to their
    /// handles.
    pub fn join(&mut self, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = lock(&self.shared);
        if !st.closed {
            return Err(Error::invalid("pool", "join", "close the pool first"));
        }
        while st.dead.is_none() && (!st.pending.is_empty() || !st.parts.is_empty()) {
            st = wait(&self.shared, st, deadline, "join")?;
        }
        for w in st.workers.iter_mut().flatten() {
            let _ = w.tasks.try_send(&[QUIT]);
            w.quitting = true;
        }
        let mut workers: Vec<Worker> = st.workers.iter_mut().filter_map(Option::take).collect();
        drop(st);
        for w in &mut workers {
            w.proc.wait_exit(deadline)?;
        }
        self.stop_supervisor();
        Ok(())
    }

    /// Kills every worker (`SIGKILL`) and fails everything not finished (Python's
    /// `terminate`). Dropping the pool does the same.
    pub fn terminate(&mut self) {
        {
            let mut st = lock(&self.shared);
            if st.dead.is_none() {
                st.dead = Some("the pool was terminated".into());
            }
            st.closed = true;
            for w in st.workers.iter().flatten() {
                let _ = w.proc.signal(libc::SIGKILL);
            }
            // Proc's drop reaps each.
            st.workers.iter_mut().for_each(|w| drop(w.take()));
            st.pending.clear();
            st.parts.clear();
            self.shared.changed.notify_all();
        }
        self.stop_supervisor();
    }

    fn stop_supervisor(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.supervisor.take() {
            let _ = h.join();
        }
    }
}

impl<A: 'static, R: 'static> Drop for Pool<A, R> {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.shared);
            st.dead.get_or_insert_with(|| "the pool was dropped".into());
            for w in st.workers.iter().flatten() {
                let _ = w.proc.signal(libc::SIGKILL);
            }
            st.workers.iter_mut().for_each(|w| drop(w.take()));
            self.shared.changed.notify_all();
        }
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.supervisor.take() {
            let _ = h.join();
        }
    }
}

/// Builds one task message's items in the caller's thread.
struct Encoder<'a> {
    shared: &'a Shared,
    job: u64,
    /// Index of the first item of `buf`.
    first: usize,
    count: usize,
    /// Initialised bytes (postcard encodes into a slice); items in `..pos`.
    buf: Vec<u8>,
    pos: usize,
    /// Items expected per message, to size `buf` once the first item is encoded.
    expect: usize,
    /// Items are appended to `buf` ([`Pool::submit_packed`]): `buf` holds exactly the
    /// items, and a reused buffer is handed over empty, not zeroed.
    packed: bool,
}

impl<'a> Encoder<'a> {
    fn new(shared: &'a Shared, job: u64, first: usize, expect: usize, packed: bool) -> Self {
        Encoder {
            shared,
            job,
            first,
            count: 0,
            buf: Vec::new(),
            pos: 0,
            expect,
            packed,
        }
    }

    /// Appends as many of `items` as fit before `limit` (growing the buffer up to it),
    /// encoded by `run`; returns how many, and why the next one was not appended.
    fn push_run<T>(
        &mut self,
        items: &[T],
        run: EncodeRun<T>,
        limit: usize,
    ) -> (usize, Option<EncodeError>) {
        let mut total = 0;
        loop {
            // A reused buffer may be longer than a message may be: never past `limit`.
            let end = self.buf.len().min(limit);
            let before = self.count;
            let (done, used, err) = match self.buf.get_mut(self.pos..end) {
                Some(room) => run(&items[total..], room),
                None => (0, 0, Some(EncodeError::Full)),
            };
            self.pos += used;
            self.count += done;
            total += done;
            if before == 0 && self.count > 0 {
                // Size the buffer for the chunk from its first items.
                let per = self.pos.div_ceil(self.count);
                let want = (per.saturating_mul(self.expect) / 8 * 9).min(limit);
                if want > self.buf.len() {
                    self.buf.resize(want, 0);
                }
            }
            match err {
                Some(EncodeError::Full) if end < limit => {
                    let grown = (end * 2).clamp(256, limit);
                    if grown > self.buf.len() {
                        self.buf.resize(grown, 0);
                    }
                }
                e => return (total, e),
            }
        }
    }

    /// Hands the items encoded so far to the pool as one message; the next item is
    /// `next`.
    fn flush(&mut self, next: usize) -> Result<()> {
        if self.count > 0 {
            let mut bytes = std::mem::take(&mut self.buf);
            bytes.truncate(self.pos);
            let part = Part {
                job: self.job,
                first: self.first,
                count: self.count,
                bytes,
                reported: 0,
                attempts: 0,
            };
            let mut st = lock(self.shared);
            st.check_open()?;
            let id = st.id();
            st.parts.insert(id, part);
            st.pending.push_back(id);
            dispatch(self.shared, &mut st);
            // The next message reuses a finished one's buffer (already initialised).
            if let Some(mut b) = st.spare.pop() {
                if self.packed {
                    b.clear();
                } else {
                    let cap = b.capacity();
                    b.resize(cap, 0);
                }
                self.buf = b;
            }
        }
        self.first = next;
        self.count = 0;
        self.pos = 0;
        Ok(())
    }
}

fn pool_dead(why: &str) -> Error {
    Error::Disconnected {
        resource: "pool".into(),
        op: "wait",
        detail: Some(why.to_owned()),
    }
}

fn failed(failure: Failure, resource: String) -> Error {
    Error::Failed { resource, failure }
}

/// Forgets a job when dropped: results arriving later are dropped.
struct Forget<'a>(&'a Shared, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.0).jobs.remove(&self.1);
    }
}

/// Waits on the condition variable until `deadline`.
fn wait<'a>(
    shared: &'a Shared,
    st: MutexGuard<'a, State>,
    deadline: Option<Instant>,
    op: &'static str,
) -> Result<MutexGuard<'a, State>> {
    match deadline {
        None => Ok(shared.changed.wait(st).unwrap_or_else(|p| p.into_inner())),
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Err(Error::Timeout {
                    resource: "pool".into(),
                    op,
                    timeout: Duration::ZERO,
                });
            }
            Ok(shared
                .changed
                .wait_timeout(st, d - now)
                .unwrap_or_else(|p| p.into_inner())
                .0)
        }
    }
}

/// Takes the batch of `job` starting at item `index` (or the first one there when
/// `None`) once it is there; returns it with its first item's index.
fn take_batch_at(
    shared: &Shared,
    job: u64,
    index: Option<usize>,
    deadline: Option<Instant>,
) -> Result<(usize, Batch)> {
    let mut st = lock(shared);
    loop {
        if let Some(j) = st.jobs.get_mut(&job) {
            let got = match index {
                Some(i) => j.batches.remove(&i).map(|b| (i, b)),
                None => j.batches.pop_first(),
            };
            if let Some(r) = got {
                return Ok(r);
            }
        }
        if let Some(why) = &st.dead {
            return Err(pool_dead(why));
        }
        st = wait(shared, st, deadline, "get")?;
    }
}

fn take_batch(
    shared: &Shared,
    job: u64,
    index: Option<usize>,
    deadline: Option<Instant>,
) -> Result<Batch> {
    take_batch_at(shared, job, index, deadline).map(|(_, b)| b)
}

/// Parses the record at `pos` of a result message: status, body, next position.
fn record(msg: &[u8], pos: usize) -> Option<(u8, &[u8], usize)> {
    let &status = msg.get(pos)?;
    let len = u32::from_le_bytes(msg.get(pos + 1..pos + REC_HEADER)?.try_into().ok()?) as usize;
    let end = (pos + REC_HEADER).checked_add(len)?;
    Some((status, msg.get(pos + REC_HEADER..end)?, end))
}

/// The outcomes of one batch, decoded one at a time.
struct Items {
    job: u64,
    index: usize,
    batch: Batch,
    pos: usize,
    left: usize,
}

impl Items {
    fn new(job: u64, index: usize, batch: Batch) -> Self {
        let left = batch.count();
        Items {
            job,
            index,
            batch,
            pos: RES_HEADER,
            left,
        }
    }

    fn next<R>(
        &mut self,
        decode: fn(&[u8]) -> std::result::Result<R, Failure>,
    ) -> Option<(usize, Result<R>)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let i = self.index;
        self.index += 1;
        let job = self.job;
        let name = || format!("pool task {job}.{i}");
        let r = match &mut self.batch {
            Batch::Failed(f, res) => Err(failed(f.clone(), std::mem::take(res))),
            Batch::Records {
                msg,
                fixed: Some(size),
                ..
            } => {
                // Validated when filed: `count` results of `size` bytes.
                let body = msg.get(self.pos..self.pos + *size).unwrap_or_default();
                self.pos += *size;
                decode(body).map_err(|f| failed(f, name()))
            }
            Batch::Records { msg, .. } => match record(msg, self.pos) {
                // Validated when filed: a record is always there.
                None => Err(Error::corrupt(name(), "result record missing")),
                Some((status, body, next)) => {
                    self.pos = next;
                    match status {
                        ST_OK => decode(body).map_err(|f| failed(f, name())),
                        ST_PANIC => Err(failed(
                            Failure::Panicked(String::from_utf8_lossy(body).into()),
                            name(),
                        )),
                        _ => Err(failed(
                            Failure::Codec(String::from_utf8_lossy(body).into()),
                            name(),
                        )),
                    }
                }
            },
        };
        Some((i, r))
    }
}

/// The outcome of [`Pool::apply_async`].
#[must_use = "the task runs anyway, but its result and any error are only seen through `get`"]
pub struct AsyncResult<R> {
    shared: Arc<Shared>,
    job: u64,
    decode: fn(&[u8]) -> std::result::Result<R, Failure>,
}

impl<R> AsyncResult<R> {
    /// Whether the result is there.
    pub fn ready(&self) -> bool {
        lock(&self.shared)
            .jobs
            .get(&self.job)
            .is_some_and(|j| !j.batches.is_empty())
    }

    /// Waits for the result at most `timeout` (`None`: forever); [`Error::Timeout`]
    /// leaves it pending (ask again). The result is handed out once.
    pub fn get(&self, timeout: Option<Duration>) -> Result<R> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let b = take_batch(&self.shared, self.job, None, deadline).map_err(|e| match e {
            Error::Timeout { op, .. } => Error::Timeout {
                resource: format!("pool task {}", self.job),
                op,
                timeout: timeout.unwrap_or_default(),
            },
            e => e,
        })?;
        lock(&self.shared).jobs.remove(&self.job);
        match Items::new(self.job, 0, b).next(self.decode) {
            Some((_, r)) => r,
            None => Err(Error::corrupt(
                format!("pool task {}", self.job),
                "empty result",
            )),
        }
    }
}

impl<R> Drop for AsyncResult<R> {
    fn drop(&mut self) {
        // Nobody will take the result: a result arriving later is dropped.
        lock(&self.shared).jobs.remove(&self.job);
    }
}

/// The iterator of [`Pool::imap`] / [`Pool::imap_unordered`].
pub struct Imap<'p, A: 'static, R: 'static, I> {
    pool: &'p Pool<A, R>,
    items: I,
    job: u64,
    chunksize: usize,
    window: usize,
    submitted: usize,
    yielded: usize,
    exhausted: bool,
    ordered: bool,
    /// The batch being yielded from.
    cur: Option<Items>,
}

impl<A: 'static, R: 'static, I: Iterator<Item = A>> Iterator for Imap<'_, A, R, I> {
    /// Ordered: the item's outcome. Unordered: the same; use
    /// [`Imap::next_indexed`] to learn the index.
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_indexed().map(|(_, r)| r)
    }
}

impl<A: 'static, R: 'static, I: Iterator<Item = A>> Imap<'_, A, R, I> {
    /// The next outcome with the index of its item in the input.
    pub fn next_indexed(&mut self) -> Option<(usize, Result<R>)> {
        while !self.exhausted && self.submitted - self.yielded < self.window {
            let batch: Vec<A> = self.items.by_ref().take(self.chunksize).collect();
            if batch.is_empty() {
                self.exhausted = true;
                break;
            }
            match self
                .pool
                .submit(self.job, self.submitted, batch, self.chunksize)
            {
                Ok(n) => self.submitted += n,
                Err(e) => {
                    self.exhausted = true;
                    self.submitted = self.yielded; // nothing more to wait for
                    self.cur = None;
                    return Some((self.yielded, Err(e)));
                }
            }
        }
        loop {
            let decode = self.pool.entry.ret.from_bytes;
            if let Some(r) = self.cur.as_mut().and_then(|c| c.next(decode)) {
                self.yielded += 1;
                return Some(r);
            }
            if self.yielded >= self.submitted {
                return None;
            }
            // Ordered: the batch that starts where the last one ended.
            let want = self.ordered.then_some(self.yielded);
            match take_batch_at(&self.pool.shared, self.job, want, None) {
                Ok((i, b)) => self.cur = Some(Items::new(self.job, i, b)),
                Err(e) => {
                    self.exhausted = true;
                    self.submitted = self.yielded;
                    self.cur = None;
                    return Some((self.yielded, Err(e)));
                }
            }
        }
    }
}

impl<A: 'static, R: 'static, I> Drop for Imap<'_, A, R, I> {
    fn drop(&mut self) {
        lock(&self.pool.shared).jobs.remove(&self.job);
    }
}

// ---------------------------------------------------------------------------------------
// Parent: workers, dispatch, supervision

fn spawn_worker(shared: &Shared, slot: usize) -> Result<Worker> {
    let tasks = ByteQueue::options()
        .capacity(4)
        .anonymous(shared.opts.max_message)?;
    let dup = |fd: BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map_err(|e| Error::os("pool", "dup", super::spawn::errno_of(&e)))
    };
    let fds = vec![
        dup(tasks.segment().as_fd())?,
        dup(shared.results_fd.as_fd())?,
        dup(shared.progress_fd.as_fd())?,
    ];
    let proc = launch(
        Spec {
            kind: "worker",
            role: shared.role,
            name: format!("PoolWorker-{}", slot + 1),
            method: shared.opts.method,
            fds,
        },
        shared.opts.start_timeout,
    )?;
    // A replacement must not inherit its predecessor's progress.
    let _ = shared.progress.store(slot * STRIDE, 0);
    proc.conn.send(&(slot as u64).to_le_bytes())?;
    Ok(Worker {
        proc,
        tasks,
        assigned: VecDeque::new(),
        items_given: 0,
        quitting: false,
    })
}

/// The byte offset of item `k` in a part's bytes (walking the length prefixes, or `k`
/// times the fixed argument size).
fn item_offset(bytes: &[u8], k: usize, fixed: Option<(usize, usize)>) -> usize {
    if let Some((size, _)) = fixed {
        return k.saturating_mul(size).min(bytes.len());
    }
    let mut pos = 0;
    for _ in 0..k {
        let len = bytes
            .get(pos..pos + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        pos = (pos + 4 + len).min(bytes.len());
    }
    pos
}

/// Hands pending messages to workers with room.
fn dispatch(shared: &Shared, st: &mut State) {
    let max_tasks = shared.opts.max_tasks_per_child;
    let State {
        workers,
        pending,
        parts,
        ..
    } = st;
    let mut oversized = Vec::new();
    while let Some(&id) = pending.front() {
        let Some(part) = parts.get(&id) else {
            pending.pop_front();
            continue;
        };
        if TASK_HEADER + part.bytes.len() > shared.opts.max_message {
            // The encoder never builds one; should one exist, its items fail rather
            // than cost every worker in turn.
            pending.pop_front();
            oversized.extend(parts.remove(&id));
            continue;
        }
        let best = workers
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.as_ref().map(|w| (i, w)))
            .filter(|(_, w)| {
                !w.quitting
                    && w.assigned.len() < PER_WORKER
                    && max_tasks.is_none_or(|m| w.items_given < m)
            })
            .min_by_key(|(_, w)| w.assigned.len())
            .map(|(i, _)| i);
        let Some(w) = best.and_then(|slot| workers[slot].as_mut()) else {
            break;
        };
        // Parts waiting here were never run, or had their reported items cut off
        // (`requeue`): the whole part goes.
        let body = &part.bytes;
        match w
            .tasks
            .reserve(TASK_HEADER + body.len(), Some(Duration::ZERO))
        {
            Ok(mut m) => {
                m[0] = if shared.fixed.is_some() {
                    TASK_FIXED
                } else {
                    TASK
                };
                m[1..9].copy_from_slice(&id.to_le_bytes());
                m[9..13].copy_from_slice(&(part.count as u32).to_le_bytes());
                m[TASK_HEADER..].copy_from_slice(body);
                m.commit();
            }
            Err(_) => {
                // Its queue is full or broken, which the accounting above rules out for
                // a sound worker: kill it; the supervisor replaces it and runs its
                // messages elsewhere (a worker left "quitting" but alive would strand
                // them); this one stays pending. (A message too large for any queue
                // cannot reach here: the encoder never writes past `max_message`.)
                let _ = w.proc.signal(libc::SIGKILL);
                w.quitting = true;
                continue;
            }
        }
        w.assigned.push_back(id);
        w.items_given += part.count as u64;
        pending.pop_front();
    }
    for part in oversized {
        for k in 0..part.count {
            let (job, idx) = (part.job, part.first + k);
            st.file(
                job,
                idx,
                Batch::Failed(
                    Failure::Codec(format!(
                        "a task message of {} bytes exceeds the pool's max_message",
                        part.bytes.len()
                    )),
                    format!("pool task {job}.{idx}"),
                ),
            );
        }
    }
    let workers = &mut st.workers;
    // Workers that reached max_tasks_per_child and finished: ask them to quit.
    if let Some(m) = max_tasks {
        for w in workers.iter_mut().flatten() {
            if !w.quitting && w.items_given >= m && w.assigned.is_empty() {
                w.quitting = w.tasks.try_send(&[QUIT]).is_ok();
            }
        }
    }
}

fn supervise(shared: &Shared, results: ByteQueue) {
    // The parent counts as a producer: the queue never reads as disconnected while
    // workers are being replaced.
    results.attach_producer();
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    let mut last_watch = Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        let mut buf = Vec::new();
        let got = results.recv_timeout(&mut buf, WATCH).is_ok();
        if got {
            // Receive what is there, then file it under one lock.
            msgs.push(buf);
            while msgs.len() < DRAIN {
                let mut b = Vec::new();
                if results.try_recv(&mut b).is_err() {
                    break;
                }
                msgs.push(b);
            }
            let mut st = lock(shared);
            for m in msgs.drain(..) {
                apply_results(&mut st, m, shared.fixed);
            }
            dispatch(shared, &mut st);
            drop(st);
            shared.changed.notify_all();
        }
        if !got || last_watch.elapsed() >= WATCH {
            last_watch = Instant::now();
            watch_workers(shared, &results);
        }
    }
}

/// Files one result message.
fn apply_results(st: &mut State, msg: Vec<u8>, fixed: Option<(usize, usize)>) {
    let Some(h) = msg.get(..RES_HEADER) else {
        return;
    };
    let word = |r: std::ops::Range<usize>| {
        h[r].iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    };
    let (id, from, count) = (word(0..8), word(8..12) as usize, word(12..16) as usize);
    let kind = h[16];
    let Some(part) = st.parts.get_mut(&id) else {
        return; // a message already failed or run again elsewhere: stale results
    };
    // Results of one message arrive in order, each continuing where the last ended;
    // anything else (or records that do not parse) is a worker that broke the
    // protocol: it is killed, and its items are handled as a dead worker's.
    let left = part.count - part.reported;
    let mut ok = from == part.reported && count <= left && count > 0;
    let size = match (kind, fixed) {
        (RES_FIXED, Some((_, size))) => {
            ok &= count
                .checked_mul(size)
                .and_then(|n| n.checked_add(RES_HEADER))
                == Some(msg.len());
            Some(size)
        }
        (RES_RECORDS, _) => {
            let mut pos = RES_HEADER;
            for _ in 0..if ok { count } else { 0 } {
                match record(&msg, pos) {
                    Some((_, _, next)) => pos = next,
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            None
        }
        _ => {
            ok = false;
            None
        }
    };
    if !ok {
        if let Some(w) = st
            .workers
            .iter()
            .flatten()
            .find(|w| w.assigned.contains(&id))
        {
            let _ = w.proc.signal(libc::SIGKILL);
        }
        return;
    }
    let (job, index) = (part.job, part.first + part.reported);
    part.reported += count;
    if part.reported == part.count {
        if let Some(p) = st.parts.remove(&id) {
            if st.spare.len() < 2 * st.workers.len() + 2 {
                st.spare.push(p.bytes);
            }
        }
        for w in st.workers.iter_mut().flatten() {
            if let Some(p) = w.assigned.iter().position(|&c| c == id) {
                w.assigned.remove(p);
                break;
            }
        }
    }
    st.file(
        job,
        index,
        Batch::Records {
            msg,
            count,
            fixed: size,
        },
    );
}

/// Puts a part back in line under a new id (late results under the old one are then
/// ignored), without the items already reported.
fn requeue(st: &mut State, mut part: Part, front: &mut Vec<u64>, fixed: Option<(usize, usize)>) {
    if part.reported > 0 {
        let off = item_offset(&part.bytes, part.reported, fixed);
        part.bytes.drain(..off);
        part.first += part.reported;
        part.count -= part.reported;
        part.reported = 0;
    }
    if part.count == 0 {
        return;
    }
    let id = st.id();
    st.parts.insert(id, part);
    front.push(id);
}

/// Looks at every worker's pidfd; a dead worker's messages are failed or re-queued and
/// it is replaced.
fn watch_workers(shared: &Shared, results: &ByteQueue) {
    let mut st = lock(shared);
    if st.dead.is_some() {
        return;
    }
    let mut changed = false;
    for slot in 0..st.workers.len() {
        let alive = st.workers[slot].as_ref().is_some_and(|w| w.proc.is_alive());
        if alive {
            continue;
        }
        let Some(mut w) = st.workers[slot].take() else {
            continue;
        };
        // Everything the worker sent before it died is in the queue: file it first.
        let mut buf = Vec::new();
        while results.try_recv(&mut buf).is_ok() {
            apply_results(&mut st, std::mem::take(&mut buf), shared.fixed);
        }
        let status = w.proc.wait_exit(None).ok();
        let progress = shared.progress.load(slot * STRIDE).unwrap_or(0);
        let mut front = Vec::new();
        for (n, id) in w.assigned.drain(..).enumerate() {
            let Some(mut part) = st.parts.remove(&id) else {
                continue;
            };
            // Progress word: message id (low 32 bits) | index in the message << 32. Only
            // the first message assigned can be the one that was running.
            let running = (n == 0 && progress & 0xffff_ffff == id & 0xffff_ffff)
                .then_some((progress >> 32) as usize)
                .filter(|&k| k >= part.reported && k < part.count);
            if let (Some(k), Some(status)) = (running, status) {
                if part.attempts < shared.opts.retries {
                    part.attempts += 1;
                } else {
                    // It fails; the items after it become a part of their own, the
                    // finished but unreported ones before it run again.
                    let (job, idx, pid) = (part.job, part.first + k, w.proc.pid);
                    st.file(
                        job,
                        idx,
                        Batch::Failed(
                            Failure::Died { pid, status },
                            format!("pool task {job}.{idx} (worker pid {pid})"),
                        ),
                    );
                    let at = item_offset(&part.bytes, k, shared.fixed);
                    let after = item_offset(&part.bytes[at..], 1, shared.fixed) + at;
                    let rest = Part {
                        job,
                        first: idx + 1,
                        count: part.count - k - 1,
                        bytes: part.bytes.split_off(after),
                        reported: 0,
                        attempts: 0,
                    };
                    part.bytes.truncate(at);
                    part.count = k;
                    requeue(&mut st, part, &mut front, shared.fixed);
                    requeue(&mut st, rest, &mut front, shared.fixed);
                    continue;
                }
            }
            requeue(&mut st, part, &mut front, shared.fixed);
        }
        for id in front.into_iter().rev() {
            st.pending.push_front(id);
        }
        changed = true;
        match spawn_worker(shared, slot) {
            Ok(nw) => st.workers[slot] = Some(nw),
            Err(e) => {
                if st.workers.iter().all(Option::is_none) {
                    st.dead = Some(format!("no worker left and none could be started: {e}"));
                }
            }
        }
    }
    if changed {
        dispatch(shared, &mut st);
        shared.changed.notify_all();
    }
}

// ---------------------------------------------------------------------------------------
// Child: the worker loop

pub(crate) fn worker_main(role: &dyn Role, mut pipe: Pipe, fds: &[RawFd]) -> i32 {
    match worker_loop(role, &mut pipe, fds) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shmkit pool worker {}: {e}", std::process::id());
            1
        }
    }
}

fn worker_loop(role: &dyn Role, pipe: &mut Pipe, fds: &[RawFd]) -> Result<()> {
    use std::os::fd::FromRawFd;
    let &[t, r, p] = fds else {
        return Err(Error::invalid(
            "pool worker",
            "start",
            "expected 3 descriptors",
        ));
    };
    let open = |fd: RawFd| {
        // SAFETY: the parent passed these descriptors to this process for the pool's
        // segments; nothing else in this process owns them.
        SegmentOptions::default().open_fd(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let tasks = ByteQueue::options()
        .wait(WaitStrategy::Park)
        .from_segment(open(t)?)?;
    let results = ByteQueue::options().from_segment(open(r)?)?;
    let progress = Array::<u64>::from_segment(open(p)?)?;
    let slot_msg = pipe.recv()?;
    let slot = slot_msg
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| Error::corrupt("pool worker", "bad slot message"))? as usize;
    let word = progress.atomic(slot * STRIDE)?;
    let max = results.max_message();
    let sizes = role.fixed_sizes();
    let mut msg = Vec::new();
    // Results are encoded in place (postcard into a slice) into this message buffer.
    let mut out = vec![0u8; max];
    let mut spill = Vec::new();
    loop {
        match tasks.recv(&mut msg) {
            Ok(()) => {}
            Err(_) => return Ok(()), // the parent is gone
        }
        // Fixed-size items (`F`) need an entry that has them; anything else is quit (or
        // garbage: leave, the parent replaces us).
        let fixed = match msg.first() {
            Some(&TASK) if msg.len() >= TASK_HEADER => None,
            Some(&TASK_FIXED) if msg.len() >= TASK_HEADER => match sizes {
                Some(s) => Some(s),
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        let id = u64::from_le_bytes(msg[1..9].try_into().unwrap_or_default());
        let count = u32::from_le_bytes(msg[9..13].try_into().unwrap_or_default()) as usize;
        let mut res = Results {
            out: &mut out,
            pos: RES_HEADER,
            id,
            from: 0,
            n: 0,
            kind: RES_RECORDS,
            results: &results,
        };
        let broken = match fixed {
            Some((asize, rsize)) => run_fixed(role, &msg, count, asize, rsize, word, &mut res)?,
            None => run_framed(role, &msg, count, word, &mut res, &mut spill)?,
        };
        if res.n > 0 {
            res.flush()?;
        }
        if broken {
            // A task message the parent did not write: exit, the parent handles our
            // items as a dead worker's.
            return Ok(());
        }
    }
}

/// Runs a task message of framed items (each preceded by its length), filing one record
/// per item. Returns whether the message was malformed.
fn run_framed(
    role: &dyn Role,
    msg: &[u8],
    count: usize,
    word: &AtomicU64,
    res: &mut Results<'_>,
    spill: &mut Vec<u8>,
) -> Result<bool> {
    let max = res.out.len();
    let mut pos = TASK_HEADER;
    for k in 0..count {
        let arg = msg
            .get(pos..pos + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .and_then(|len| msg.get(pos + 4..pos + 4 + len));
        let Some(arg) = arg else {
            return Ok(true);
        };
        pos += 4 + arg.len();
        // Before running the item: which one this worker is on (read by the parent
        // only after our death, which orders it; one cache line per worker).
        word.store(
            ((k as u64) << 32) | (res.id & 0xffff_ffff),
            Ordering::Relaxed,
        );
        if res.pos + REC_HEADER > max {
            res.flush()?;
        }
        let at = res.pos + REC_HEADER;
        match role.call_into(arg, &mut res.out[at..], spill) {
            Ok(Some(used)) => res.commit(ST_OK, used),
            Ok(None) => res.place(ST_OK, spill)?,
            Err(f) => res.fail(f)?,
        }
    }
    Ok(false)
}

/// Runs a task message of fixed-size items back to back: results go in runs of plain
/// values, a failure in a record of its own. Returns whether the message was malformed.
fn run_fixed(
    role: &dyn Role,
    msg: &[u8],
    count: usize,
    asize: usize,
    rsize: usize,
    word: &AtomicU64,
    res: &mut Results<'_>,
) -> Result<bool> {
    let max = res.out.len();
    let body = &msg[TASK_HEADER..];
    if count.checked_mul(asize) != Some(body.len()) {
        return Ok(true);
    }
    if rsize > max - RES_HEADER {
        // No result fits in a message: each item runs (into a scratch buffer) and fails
        // with a codec error, as an oversized serde result does.
        let mut scratch = vec![0u8; rsize];
        for k in 0..count {
            let arg = &body[k * asize..(k + 1) * asize];
            let (_, failure) = role.call_fixed(arg, 1, &mut scratch, word, res.id, k);
            res.switch(RES_RECORDS)?;
            res.fail(failure.unwrap_or_else(|| {
                Failure::Codec(format!(
                    "the result ({rsize} bytes) exceeds the pool's max_message ({max} bytes)"
                ))
            }))?;
        }
        return Ok(false);
    }
    let mut k = 0;
    while k < count {
        res.switch(RES_FIXED)?;
        let room = (max - res.pos).checked_div(rsize).unwrap_or(usize::MAX);
        if room == 0 {
            res.flush()?;
            continue;
        }
        let m = room.min(count - k);
        let at = res.pos;
        let (done, failure) = role.call_fixed(
            &body[k * asize..(k + m) * asize],
            m,
            &mut res.out[at..at + m * rsize],
            word,
            res.id,
            k,
        );
        if done == 0 && failure.is_none() {
            return Ok(true); // no progress: not a message this worker can run
        }
        res.pos += done * rsize;
        res.n += done as u32;
        k += done;
        if let Some(f) = failure {
            res.switch(RES_RECORDS)?;
            res.fail(f)?;
            k += 1;
        }
    }
    Ok(false)
}

/// A worker's result message being built: records from [`RES_HEADER`] to `pos`.
struct Results<'a> {
    out: &'a mut [u8],
    pos: usize,
    id: u64,
    /// Index in the task message of the first record.
    from: usize,
    n: u32,
    /// [`RES_RECORDS`] or [`RES_FIXED`].
    kind: u8,
    results: &'a ByteQueue,
}

impl Results<'_> {
    /// Completes the record at `pos` whose body (`len` bytes) is already in place.
    fn commit(&mut self, status: u8, len: usize) {
        let p = self.pos;
        self.out[p] = status;
        self.out[p + 1..p + REC_HEADER].copy_from_slice(&(len as u32).to_le_bytes());
        self.pos = p + REC_HEADER + len;
        self.n += 1;
    }

    /// Appends a record with `body`, sending what is there first if it does not fit; a
    /// body too large for any message becomes a codec error.
    fn place(&mut self, status: u8, body: &[u8]) -> Result<()> {
        let max = self.out.len();
        let room = max - RES_HEADER - REC_HEADER;
        if body.len() > room {
            let m = if status == ST_OK {
                format!(
                    "the encoded result ({} bytes) exceeds the pool's max_message ({max} bytes)",
                    body.len()
                )
            } else {
                String::from_utf8_lossy(&body[..room.min(body.len())]).into_owned()
            };
            let m = m.as_bytes();
            let status = if status == ST_OK { ST_CODEC } else { status };
            return self.place(status, &m[..m.len().min(room)]);
        }
        if self.pos + REC_HEADER + body.len() > max {
            self.flush()?;
        }
        let at = self.pos + REC_HEADER;
        self.out[at..at + body.len()].copy_from_slice(body);
        self.commit(status, body.len());
        Ok(())
    }

    /// A record of the item's failure.
    fn fail(&mut self, f: Failure) -> Result<()> {
        let (st, m) = match f {
            Failure::Panicked(m) => (ST_PANIC, m),
            Failure::Codec(m) => (ST_CODEC, m),
            f => (ST_CODEC, f.to_string()),
        };
        self.place(st, m.as_bytes())
    }

    /// Continues with results of `kind`, sending what is there first if it is of the
    /// other kind.
    fn switch(&mut self, kind: u8) -> Result<()> {
        if self.kind != kind && self.n > 0 {
            self.flush()?;
        }
        self.kind = kind;
        Ok(())
    }

    /// Sends the records so far as one message; the next one continues after them.
    fn flush(&mut self) -> Result<()> {
        self.out[0..8].copy_from_slice(&self.id.to_le_bytes());
        self.out[8..12].copy_from_slice(&(self.from as u32).to_le_bytes());
        self.out[12..16].copy_from_slice(&self.n.to_le_bytes());
        self.out[16] = self.kind;
        self.results
            .send(&self.out[..self.pos])
            .map_err(Error::from)?;
        self.from += self.n as usize;
        self.n = 0;
        self.pos = RES_HEADER;
        Ok(())
    }
}
