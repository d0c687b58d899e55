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
//! happens to the parent. Arguments and results are encoded with postcard, one item at a
//! time, in chunks of [`chunksize`](Pool::map_chunked) items per message.
//!
//! The parent keeps an in-flight table: every chunk, the worker it was given to, how
//! many of its results came back. A supervisor thread receives results and watches each
//! worker's pidfd; a worker's death is known from the kernel, never guessed from a pid.
//!
//! # Failure semantics
//! - **A worker dies mid-task** (SIGKILL, OOM killer, `abort`): the results it already
//!   sent are kept; the item it was running (each worker records its progress in a shared
//!   word before every item) fails with [`Error::Failed`] / [`Failure::Died`] naming the
//!   pid and the signal — or runs again, up to [`PoolOptions::retries`] times (default 0);
//!   items it had finished but not yet reported (a chunk's results are sent together) and
//!   the chunks queued behind it run again on other workers. The worker is replaced.
//!   `map` and every other wait return; nothing hangs.
//! - **A task panics**: its result is [`Failure::Panicked`] with the message; the worker
//!   catches the panic and goes on.
//! - **Arguments or a result cannot be (de)serialised** (or exceed
//!   [`PoolOptions::max_message`]): that item's result is [`Failure::Codec`]; the pool goes
//!   on.
//! - **The parent dies**, however: every worker has `PR_SET_PDEATHSIG(SIGKILL)` and is
//!   gone at once; the queues are anonymous, so `/dev/shm` holds nothing of the pool.
//!
//! `close` stops submissions, `join` waits for the work and the workers,
//! `terminate` (and dropping the pool) kills the workers and fails what is left.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::spawn::{Proc, Spec, decode, encode, launch};
use super::{Entry, Failure, Role, StartMethod};
use crate::error::{Error, Result};
use crate::pipe::Pipe;
use crate::queue::ByteQueue;
use crate::segment::SegmentOptions;
use crate::value::Array;

/// Task message: `T`, chunk id (u64 LE), item count (u32 LE), then per item its length
/// (u32 LE) and bytes. `Q`: quit.
const TASK: u8 = b'T';
const QUIT: u8 = b'Q';
/// Result message: chunk id (u64), index of the first item in the chunk (u32), count
/// (u32), then per item: status (u8), length (u32), bytes.
const RES_HEADER: usize = 16;
const ST_OK: u8 = 0;
const ST_PANIC: u8 = 1;
const ST_CODEC: u8 = 2;
/// Chunks a worker holds at most (one running, one queued).
const PER_WORKER: usize = 2;
/// How often the supervisor looks at the workers' pidfds while results flow.
const WATCH: Duration = Duration::from_millis(20);

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
            max_message: 64 * 1024,
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

    /// Replace a worker after it ran this many items (Python's `maxtasksperchild`).
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

    /// Largest task or result message (default 64 KiB); a single item's encoded argument
    /// or result must fit, chunks are split to fit.
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes.max(1024);
        self
    }

    /// How workers start (default [`StartMethod::Spawn`]).
    pub fn start_method(mut self, m: StartMethod) -> Self {
        self.method = m;
        self
    }

    /// Starts the pool.
    pub fn build<A, R>(self, entry: &'static Entry<A, R>) -> Result<Pool<A, R>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        Pool::start(entry, self)
    }
}

type ItemResult = std::result::Result<Vec<u8>, (Failure, String)>;

struct Chunk {
    job: u64,
    /// Index in the job of `items[0]`.
    first: usize,
    items: Vec<Vec<u8>>,
    /// Results received (items `0..reported`).
    reported: usize,
    /// `reported` when the chunk was last given to a worker: the worker's item 0.
    base: usize,
    /// Times this chunk's first item was re-run after a worker died on it.
    attempts: u32,
}

#[derive(Default)]
struct Job {
    ready: BTreeMap<usize, ItemResult>,
    /// Items submitted and not yet handed to the caller.
    outstanding: usize,
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
    chunks: HashMap<u64, Chunk>,
    jobs: HashMap<u64, Job>,
    next_id: u64,
    closed: bool,
    /// Set by terminate / a fatal error: every wait returns this.
    dead: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
    role: &'static dyn Role,
    opts: PoolOptions,
    results_fd: OwnedFd,
    progress: Array<u64>,
    progress_fd: OwnedFd,
}

/// A pool of worker processes. See the [module docs](self).
pub struct Pool<A, R> {
    shared: Arc<Shared>,
    supervisor: Option<std::thread::JoinHandle<()>>,
    _t: PhantomData<fn(A) -> R>,
}

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves consistent-enough state for waiters.
    s.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl<A, R> Pool<A, R>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    /// A pool of `workers` workers running `entry` (see [`PoolOptions`] for more).
    pub fn new(entry: &'static Entry<A, R>, workers: usize) -> Result<Self> {
        PoolOptions::default().workers(workers).build(entry)
    }

    /// Options, finished with [`PoolOptions::build`].
    pub fn options() -> PoolOptions {
        PoolOptions::default()
    }

    fn start(entry: &'static Entry<A, R>, opts: PoolOptions) -> Result<Self> {
        let results = ByteQueue::options()
            .capacity((opts.workers * 4).next_power_of_two() as u64)
            .anonymous_bytes(opts.max_message)?;
        let results_fd = results
            .segment()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::os("pool", "dup", super::spawn::errno_of(&e)))?;
        let progress = Array::<u64>::anonymous(opts.workers, 0)?;
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
                chunks: HashMap::new(),
                jobs: HashMap::new(),
                next_id: 1,
                closed: false,
                dead: None,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
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
            _t: PhantomData,
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

    /// Submits items as a new job in chunks of `chunksize`; returns the job id.
    fn submit(
        &self,
        st: &mut State,
        job: u64,
        first: usize,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<usize> {
        if let Some(why) = &st.dead {
            return Err(pool_dead(why));
        }
        if st.closed {
            return Err(Error::invalid("pool", "submit", "the pool is closed"));
        }
        let limit = self.shared.opts.max_message - 32;
        let mut n = 0;
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut cur_first = first;
        let mut cur_len = 0usize;
        let jobst = st.jobs.entry(job).or_default();
        let mut chunks = Vec::new();
        for a in items {
            let idx = first + n;
            n += 1;
            jobst.outstanding += 1;
            match encode(&a, Vec::new()) {
                Ok(b) if b.len() + 4 <= limit => {
                    if !cur.is_empty() && (cur.len() >= chunksize || cur_len + b.len() + 4 > limit)
                    {
                        chunks.push((cur_first, std::mem::take(&mut cur)));
                        cur_len = 0;
                    }
                    if cur.is_empty() {
                        cur_first = idx;
                    }
                    cur_len += b.len() + 4;
                    cur.push(b);
                }
                Ok(b) => {
                    let f = Failure::Codec(format!(
                        "the encoded argument ({} bytes) exceeds the pool's max_message ({} bytes)",
                        b.len(),
                        self.shared.opts.max_message
                    ));
                    jobst
                        .ready
                        .insert(idx, Err((f, format!("pool task {job}.{idx}"))));
                }
                Err(f) => {
                    jobst
                        .ready
                        .insert(idx, Err((f, format!("pool task {job}.{idx}"))));
                }
            }
            if !cur.is_empty() && cur.len() >= chunksize {
                chunks.push((cur_first, std::mem::take(&mut cur)));
                cur_len = 0;
            }
        }
        if !cur.is_empty() {
            chunks.push((cur_first, cur));
        }
        for (first, items) in chunks {
            let id = st.next_id;
            st.next_id += 1;
            st.chunks.insert(
                id,
                Chunk {
                    job,
                    first,
                    items,
                    reported: 0,
                    base: 0,
                    attempts: 0,
                },
            );
            st.pending.push_back(id);
        }
        dispatch(&self.shared, st);
        self.shared.changed.notify_all();
        Ok(n)
    }

    fn new_job(st: &mut State) -> u64 {
        let id = st.next_id;
        st.next_id += 1;
        id
    }

    /// Runs `entry(a)` on a worker; the handle's [`get`](AsyncResult::get) waits for it.
    pub fn apply_async(&self, a: A) -> Result<AsyncResult<R>> {
        let mut st = lock(&self.shared);
        let job = Self::new_job(&mut st);
        self.submit(&mut st, job, 0, std::iter::once(a), 1)?;
        Ok(AsyncResult {
            shared: self.shared.clone(),
            job,
            _r: PhantomData,
        })
    }

    /// Runs `entry(a)` on a worker and waits for the result (Python's `apply`).
    pub fn apply(&self, a: A) -> Result<R> {
        self.apply_async(a)?.get(None)
    }

    /// `entry` over every item, results in order; the first failed item is the error
    /// (use [`imap`](Self::imap) to see every item's outcome). Chunk size as Python's:
    /// `len / (4 * workers)`, rounded up.
    pub fn map(&self, items: impl IntoIterator<Item = A>) -> Result<Vec<R>> {
        let items: Vec<A> = items.into_iter().collect();
        let w = self.shared.opts.workers * 4;
        let chunk = items.len().div_ceil(w).max(1);
        self.map_chunked(items, chunk)
    }

    /// [`map`](Self::map) with an explicit chunk size.
    pub fn map_chunked(
        &self,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>> {
        let mut st = lock(&self.shared);
        let job = Self::new_job(&mut st);
        let n = self.submit(&mut st, job, 0, items, chunksize.max(1))?;
        drop(st);
        let mut out = Vec::with_capacity(n);
        let mut first_err = None;
        for i in 0..n {
            match take_result(&self.shared, job, Some(i), None) {
                Ok((_, Ok(b))) => match decode::<R>(&b) {
                    Ok(r) => out.push(r),
                    Err(f) => {
                        first_err.get_or_insert(failed(f, format!("pool task {job}.{i}")));
                    }
                },
                Ok((_, Err((f, res)))) => {
                    first_err.get_or_insert(failed(f, res));
                }
                Err(e) => {
                    forget_job(&self.shared, job);
                    return Err(e);
                }
            }
        }
        forget_job(&self.shared, job);
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
        let job = Self::new_job(&mut lock(&self.shared));
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
        while st.dead.is_none() && (!st.pending.is_empty() || !st.chunks.is_empty()) {
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
            st.chunks.clear();
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

impl<A, R> Drop for Pool<A, R> {
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

fn forget_job(shared: &Shared, job: u64) {
    lock(shared).jobs.remove(&job);
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

/// Takes item `index` of `job` (or any item when `None`) once it is ready.
fn take_result(
    shared: &Shared,
    job: u64,
    index: Option<usize>,
    deadline: Option<Instant>,
) -> Result<(usize, ItemResult)> {
    let mut st = lock(shared);
    loop {
        if let Some(j) = st.jobs.get_mut(&job) {
            let got = match index {
                Some(i) => j.ready.remove(&i).map(|r| (i, r)),
                None => j.ready.pop_first(),
            };
            if let Some(r) = got {
                j.outstanding -= 1;
                return Ok(r);
            }
        }
        if let Some(why) = &st.dead {
            return Err(pool_dead(why));
        }
        st = wait(shared, st, deadline, "get")?;
    }
}

/// The outcome of [`Pool::apply_async`].
pub struct AsyncResult<R> {
    shared: Arc<Shared>,
    job: u64,
    _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Whether the result is there.
    pub fn ready(&self) -> bool {
        lock(&self.shared)
            .jobs
            .get(&self.job)
            .is_some_and(|j| !j.ready.is_empty())
    }

    /// Waits for the result at most `timeout` (`None`: forever); [`Error::Timeout`]
    /// leaves it pending (ask again). The result is handed out once.
    pub fn get(&self, timeout: Option<Duration>) -> Result<R> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let r = take_result(&self.shared, self.job, None, deadline).map_err(|e| match e {
            Error::Timeout { op, .. } => Error::Timeout {
                resource: format!("pool task {}", self.job),
                op,
                timeout: timeout.unwrap_or_default(),
            },
            e => e,
        })?;
        forget_job(&self.shared, self.job);
        match r.1 {
            Ok(b) => decode(&b).map_err(|f| failed(f, format!("pool task {}", self.job))),
            Err((f, res)) => Err(failed(f, res)),
        }
    }
}

impl<R> Drop for AsyncResult<R> {
    fn drop(&mut self) {
        // Nobody will take the result: a result arriving later is dropped.
        forget_job(&self.shared, self.job);
    }
}

/// The iterator of [`Pool::imap`] / [`Pool::imap_unordered`].
pub struct Imap<'p, A, R, I> {
    pool: &'p Pool<A, R>,
    items: I,
    job: u64,
    chunksize: usize,
    window: usize,
    submitted: usize,
    yielded: usize,
    exhausted: bool,
    ordered: bool,
}

impl<A, R, I> Iterator for Imap<'_, A, R, I>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    I: Iterator<Item = A>,
{
    /// Ordered: the item's outcome. Unordered: the same; use
    /// [`Imap::next_indexed`] to learn the index.
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_indexed().map(|(_, r)| r)
    }
}

impl<A, R, I> Imap<'_, A, R, I>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    I: Iterator<Item = A>,
{
    /// The next outcome with the index of its item in the input.
    pub fn next_indexed(&mut self) -> Option<(usize, Result<R>)> {
        while !self.exhausted && self.submitted - self.yielded < self.window {
            let batch: Vec<A> = self.items.by_ref().take(self.chunksize).collect();
            if batch.is_empty() {
                self.exhausted = true;
                break;
            }
            let mut st = lock(&self.pool.shared);
            match self
                .pool
                .submit(&mut st, self.job, self.submitted, batch, self.chunksize)
            {
                Ok(n) => self.submitted += n,
                Err(e) => {
                    self.exhausted = true;
                    self.submitted = self.yielded; // nothing more to wait for
                    return Some((self.yielded, Err(e)));
                }
            }
        }
        if self.yielded == self.submitted {
            return None;
        }
        let want = self.ordered.then_some(self.yielded);
        let r = take_result(&self.pool.shared, self.job, want, None);
        self.yielded += 1;
        Some(match r {
            Ok((i, Ok(b))) => (
                i,
                decode(&b).map_err(|f| failed(f, format!("pool task {}.{i}", self.job))),
            ),
            Ok((i, Err((f, res)))) => (i, Err(failed(f, res))),
            Err(e) => {
                self.exhausted = true;
                self.submitted = self.yielded;
                (self.yielded - 1, Err(e))
            }
        })
    }
}

impl<A, R, I> Drop for Imap<'_, A, R, I> {
    fn drop(&mut self) {
        forget_job(&self.pool.shared, self.job);
    }
}

// ---------------------------------------------------------------------------------------
// Parent: workers, dispatch, supervision

fn spawn_worker(shared: &Shared, slot: usize) -> Result<Worker> {
    let tasks = ByteQueue::options()
        .capacity(4)
        .anonymous_bytes(shared.opts.max_message)?;
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
    let _ = shared.progress.store(slot, 0);
    proc.conn.send(&(slot as u64).to_le_bytes())?;
    Ok(Worker {
        proc,
        tasks,
        assigned: VecDeque::new(),
        items_given: 0,
        quitting: false,
    })
}

/// Hands pending chunks to workers with room.
fn dispatch(shared: &Shared, st: &mut State) {
    let max_tasks = shared.opts.max_tasks_per_child;
    while let Some(&id) = st.pending.front() {
        let Some(chunk) = st.chunks.get(&id) else {
            st.pending.pop_front();
            continue;
        };
        let best = st
            .workers
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
        let Some(slot) = best else { break };
        let items = &chunk.items[chunk.reported..];
        let mut msg = Vec::with_capacity(13 + items.iter().map(|b| b.len() + 4).sum::<usize>());
        msg.push(TASK);
        msg.extend_from_slice(&id.to_le_bytes());
        msg.extend_from_slice(&(items.len() as u32).to_le_bytes());
        for b in items {
            msg.extend_from_slice(&(b.len() as u32).to_le_bytes());
            msg.extend_from_slice(b);
        }
        let n = items.len() as u64;
        let Some(w) = st.workers[slot].as_mut() else {
            break;
        };
        if w.tasks.try_send(&msg).is_err() {
            // Full or broken: leave it for the supervisor to sort out.
            w.quitting = true;
            continue;
        }
        w.assigned.push_back(id);
        w.items_given += n;
        st.pending.pop_front();
        if let Some(c) = st.chunks.get_mut(&id) {
            c.base = c.reported;
        }
    }
    // Workers that reached max_tasks_per_child and finished: ask them to quit.
    if let Some(m) = max_tasks {
        for w in st.workers.iter_mut().flatten() {
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
    let mut buf = Vec::new();
    let mut last_watch = Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        let got = results.recv_timeout(&mut buf, WATCH).is_ok();
        if got {
            let mut st = lock(shared);
            apply_results(shared, &mut st, &buf);
            // Drain what is there under one lock.
            while results.try_recv(&mut buf).is_ok() {
                apply_results(shared, &mut st, &buf);
            }
            dispatch(shared, &mut st);
            shared.changed.notify_all();
        }
        if !got || last_watch.elapsed() >= WATCH {
            last_watch = Instant::now();
            watch_workers(shared, &results, &mut buf);
        }
    }
}

fn apply_results(shared: &Shared, st: &mut State, msg: &[u8]) {
    let _ = shared;
    if msg.len() < RES_HEADER {
        return;
    }
    let id = u64::from_le_bytes(msg[0..8].try_into().unwrap_or_default());
    let from = u32::from_le_bytes(msg[8..12].try_into().unwrap_or_default()) as usize;
    let count = u32::from_le_bytes(msg[12..16].try_into().unwrap_or_default()) as usize;
    let Some(chunk) = st.chunks.get_mut(&id) else {
        return; // a chunk already failed or re-run: stale results
    };
    // Partial flushes of one chunk arrive in order, each continuing where the last
    // ended (a dead worker's messages are applied before its chunk is given to another).
    let _ = from;
    let mut pos = RES_HEADER;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let Some(&st_byte) = msg.get(pos) else { break };
        let Some(len) = msg
            .get(pos + 1..pos + 5)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
        else {
            break;
        };
        let Some(body) = msg.get(pos + 5..pos + 5 + len) else {
            break;
        };
        pos += 5 + len;
        out.push((st_byte, body.to_vec()));
    }
    let job = chunk.job;
    let first = chunk.first;
    let start = chunk.reported;
    let total = chunk.items.len();
    let take = out.len().min(total - start);
    chunk.reported += take;
    let done = chunk.reported == total;
    let mut jobst = st.jobs.get_mut(&job);
    for (k, (s, body)) in out.into_iter().take(take).enumerate() {
        let idx = first + start + k;
        let res = format!("pool task {job}.{idx}");
        let r = match s {
            ST_OK => Ok(body),
            ST_PANIC => Err((
                Failure::Panicked(String::from_utf8_lossy(&body).into()),
                res,
            )),
            _ => Err((Failure::Codec(String::from_utf8_lossy(&body).into()), res)),
        };
        if let Some(j) = jobst.as_mut() {
            j.ready.insert(idx, r);
        }
    }
    if done {
        st.chunks.remove(&id);
        for w in st.workers.iter_mut().flatten() {
            if let Some(p) = w.assigned.iter().position(|&c| c == id) {
                w.assigned.remove(p);
                break;
            }
        }
    }
}

/// Looks at every worker's pidfd; a dead worker's chunks are failed or re-queued and it
/// is replaced.
fn watch_workers(shared: &Shared, results: &ByteQueue, buf: &mut Vec<u8>) {
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
        if let Some(mut w) = st.workers[slot].take() {
            // Everything the worker sent before it died is in the queue: apply it first.
            while results.try_recv(buf).is_ok() {
                apply_results(shared, &mut st, buf);
            }
            let status = w.proc.wait_exit(None).ok();
            let progress = shared.progress.load(slot).unwrap_or(0);
            let mut first = true;
            for id in w.assigned.drain(..) {
                let Some(chunk) = st.chunks.get_mut(&id) else {
                    continue;
                };
                if first {
                    first = false;
                    // Progress word: chunk id (low 32 bits) << 32 | index within the
                    // part of the chunk the worker was given.
                    let running = if progress & 0xffff_ffff == id & 0xffff_ffff {
                        Some((progress >> 32) as usize)
                    } else {
                        None
                    };
                    if let (Some(k), Some(status)) = (running, status) {
                        let idx_in_chunk = chunk.base + k;
                        if idx_in_chunk < chunk.items.len() {
                            if chunk.attempts < shared.opts.retries {
                                chunk.attempts += 1;
                            } else {
                                // Items before it (finished, unreported) run again; it fails.
                                let job = chunk.job;
                                let idx = chunk.first + idx_in_chunk;
                                let pid = w.proc.pid;
                                chunk.items.remove(idx_in_chunk);
                                // Split: the failed item leaves the chunk; keep indices right by
                                // turning the rest into its own chunk.
                                let rest: Vec<Vec<u8>> =
                                    chunk.items.drain(idx_in_chunk..).collect();
                                let rest_first = idx + 1;
                                let keep_empty = chunk.items.len() == chunk.reported;
                                if let Some(j) = st.jobs.get_mut(&job) {
                                    j.ready.insert(
                                        idx,
                                        Err((
                                            Failure::Died { pid, status },
                                            format!("pool task {job}.{idx} (worker pid {pid})"),
                                        )),
                                    );
                                }
                                if !rest.is_empty() {
                                    let nid = st.next_id;
                                    st.next_id += 1;
                                    st.chunks.insert(
                                        nid,
                                        Chunk {
                                            job,
                                            first: rest_first,
                                            items: rest,
                                            reported: 0,
                                            base: 0,
                                            attempts: 0,
                                        },
                                    );
                                    st.pending.push_front(nid);
                                }
                                if keep_empty {
                                    st.chunks.remove(&id);
                                    continue;
                                }
                            }
                        }
                    }
                }
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
    let tasks = ByteQueue::options().bytes_from_segment(open(t)?)?;
    let results = ByteQueue::options().bytes_from_segment(open(r)?)?;
    let progress = Array::<u64>::from_segment(open(p)?)?;
    let slot_msg = pipe.recv()?;
    let slot = slot_msg
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| Error::corrupt("pool worker", "bad slot message"))? as usize;
    let max = results.max_message();
    let mut msg = Vec::new();
    let mut out = Vec::with_capacity(max.min(1 << 20));
    let mut item = Vec::new();
    loop {
        match tasks.recv(&mut msg) {
            Ok(()) => {}
            Err(_) => return Ok(()), // the parent is gone
        }
        match msg.first() {
            Some(&TASK) if msg.len() >= 13 => {}
            _ => return Ok(()), // quit (or garbage: leave, the parent replaces us)
        }
        let id = u64::from_le_bytes(msg[1..9].try_into().unwrap_or_default());
        let count = u32::from_le_bytes(msg[9..13].try_into().unwrap_or_default()) as usize;
        let mut pos = 13;
        let header = |out: &mut Vec<u8>, from: usize| {
            out.clear();
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(from as u32).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        };
        let mut from = 0;
        let mut n = 0u32;
        header(&mut out, 0);
        for k in 0..count {
            let Some(len) = msg
                .get(pos..pos + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
            else {
                break;
            };
            let Some(arg) = msg.get(pos + 4..pos + 4 + len) else {
                break;
            };
            pos += 4 + len;
            // Before running the item: which one this worker is on (read by the parent
            // only after our death).
            let _ = progress.store(slot, ((k as u64) << 32) | (id & 0xffff_ffff));
            item.clear();
            let mut status = match role.call(arg, &mut item) {
                Ok(()) => ST_OK,
                Err(Failure::Panicked(m)) => {
                    item = m.into_bytes();
                    ST_PANIC
                }
                Err(Failure::Codec(m)) => {
                    item = m.into_bytes();
                    ST_CODEC
                }
                Err(f) => {
                    item = f.to_string().into_bytes();
                    ST_CODEC
                }
            };
            if RES_HEADER + 5 + item.len() > max {
                item = format!(
                    "the encoded result ({} bytes) exceeds the pool's max_message ({max} bytes)",
                    item.len()
                )
                .into_bytes();
                status = ST_CODEC;
            }
            if out.len() + 5 + item.len() > max {
                // Flush what is there; this item starts the next message.
                out[12..16].copy_from_slice(&n.to_le_bytes());
                results.send(&out).map_err(Error::from)?;
                from += n as usize;
                n = 0;
                header(&mut out, from);
            }
            out.push(status);
            out.extend_from_slice(&(item.len() as u32).to_le_bytes());
            out.extend_from_slice(&item);
            n += 1;
        }
        out[12..16].copy_from_slice(&n.to_le_bytes());
        results.send(&out).map_err(Error::from)?;
    }
}
