//! [`Semaphore::wait_async`], [`BoundedSemaphore::wait_async`] and their timeout forms.
//!
//! `post` wakes **one** sleeper. The waiter thread is one kernel sleeper for all async
//! waiters of a semaphore; when `post` picks it, it wakes them all and one takes the
//! permit. Two ways the wake-up could otherwise be lost for a blocking sleeper are
//! closed: a future woken but dropped before it took the permit passes the wake-up on
//! (one `FUTEX_WAKE` if the count is positive), and a wake-up that reaches the waiter
//! thread after every async waiter of that word left is passed on by the thread.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Parked, Spot};
use crate::error::{Error, Result};
use crate::sync::semaphore::RawSemaphore;
use crate::sync::{BoundedSemaphore, Semaphore};

/// Takes a permit, waiting until `deadline`: `Ok(false)` when it passed.
async fn acquire(raw: &RawSemaphore, deadline: Option<Instant>, resource: &str) -> Result<bool> {
    let (count, sleepers) = raw.wait_words();
    struct Forward<'a> {
        parked: Parked<'a>,
        count: &'a std::sync::atomic::AtomicU32,
    }
    impl Drop for Forward<'_> {
        fn drop(&mut self) {
            // Woken (a `post` chose us) but dropped before taking the permit: pass the
            // wake-up on, or a blocking sleeper could sleep on next to a free permit.
            let woken = self.parked.woken();
            self.parked.release();
            if woken && self.count.load(Ordering::SeqCst) > 0 {
                super::reactor::wake_shared(self.count.as_ptr() as usize, 1);
            }
        }
    }
    let mut f = Forward {
        parked: Parked::default(),
        count,
    };
    let r = std::future::poll_fn(|cx| {
        f.parked.poll(
            cx,
            || Spot {
                word: count,
                sleepers,
                // `post` increments the count (SeqCst), then reads `sleepers` (SeqCst).
                begin: || {
                    sleepers.fetch_add(1, Ordering::SeqCst);
                    count.load(Ordering::SeqCst)
                },
            },
            || match raw.try_wait_in(resource) {
                Ok(()) => Some(Ok(())),
                Err(Error::WouldBlock { .. }) => None,
                Err(e) => Some(Err(e)),
            },
            || None,
            deadline,
            || resource.to_owned(),
        )
    })
    .await;
    // Completed (or failed) in the poll that returned: nothing to forward.
    f.parked.release();
    match r? {
        Some(r) => r.map(|()| true),
        None => Ok(false),
    }
}

fn timed_out(resource: &str, timeout: Duration) -> Error {
    Error::Timeout {
        resource: resource.to_owned(),
        op: "semaphore wait_async",
        timeout,
    }
}

async fn acquire_timeout(raw: &RawSemaphore, timeout: Duration, resource: &str) -> Result<()> {
    // A deadline Instant cannot represent is no deadline.
    if acquire(raw, Instant::now().checked_add(timeout), resource).await? {
        Ok(())
    } else {
        Err(timed_out(resource, timeout))
    }
}

impl Semaphore {
    /// Takes a permit without blocking the thread: the async form of
    /// [`Semaphore::wait`]. Completes in its first poll when a permit is free.
    ///
    /// Cancellation-safe: the permit is taken only in the poll that returns `Ok`; a
    /// future dropped after a `post` chose it passes that wake-up on.
    ///
    /// ```
    /// use shmkit::sync::Semaphore;
    /// let s = Semaphore::anonymous(0)?;
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// std::thread::scope(|sc| {
    ///     sc.spawn(|| s.post());                 // e.g. another process
    ///     rt.block_on(s.wait_async())
    /// })?;
    /// assert_eq!(s.value(), 0);
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    pub async fn wait_async(&self) -> Result<()> {
        let resource = self.segment().resource();
        acquire(self.raw(), None, &resource).await.map(drop)
    }

    /// [`Semaphore::wait_async`] with a time limit: [`Error::Timeout`] after `timeout`
    /// (kept by the waiter thread: no executor timer needed).
    pub async fn wait_timeout_async(&self, timeout: Duration) -> Result<()> {
        let resource = self.segment().resource();
        acquire_timeout(self.raw(), timeout, &resource).await
    }
}

impl BoundedSemaphore {
    /// The async form of [`BoundedSemaphore::wait`]; see [`Semaphore::wait_async`].
    pub async fn wait_async(&self) -> Result<()> {
        let resource = self.segment().resource();
        acquire(self.raw_hook(), None, &resource).await.map(drop)
    }

    /// The async form of [`BoundedSemaphore::wait_timeout`].
    pub async fn wait_timeout_async(&self, timeout: Duration) -> Result<()> {
        let resource = self.segment().resource();
        acquire_timeout(self.raw_hook(), timeout, &resource).await
    }
}
