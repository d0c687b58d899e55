//! [`Event::wait_async`], [`Event::wait_timeout_async`].

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Parked, Spot};
use crate::error::Result;
use crate::sync::Event;

/// Bit 0 of the event word: the flag (see `sync/event.rs`).
const SET: u32 = 1;

impl Event {
    /// Waits until the flag is set (or set and cleared again meanwhile), without blocking
    /// the thread: the async form of [`Event::wait`]. Returns at once if it is set.
    ///
    /// Cancellation-safe (nothing to undo). Costs `set` nothing while no waiter is
    /// registered; see [`crate::aio`] for the mechanism.
    ///
    /// ```
    /// use shmkit::sync::Event;
    /// let ev = Event::anonymous()?;
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| ev.set());                  // e.g. another process
    ///     rt.block_on(ev.wait_async())
    /// })?;
    /// assert!(ev.is_set());
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    pub async fn wait_async(&self) -> Result<()> {
        self.wait_until_async(None).await.map(|_| ())
    }

    /// [`Event::wait_async`] with a time limit: `Ok(true)` if set, `Ok(false)` if
    /// `timeout` passed first (like [`Event::wait_timeout`]). The limit is kept by the
    /// waiter thread, so no timer of the executor is needed.
    pub async fn wait_timeout_async(&self, timeout: Duration) -> Result<bool> {
        // A deadline Instant cannot represent is no deadline.
        self.wait_until_async(Instant::now().checked_add(timeout))
            .await
    }

    async fn wait_until_async(&self, deadline: Option<Instant>) -> Result<bool> {
        let (word, sleepers) = self.raw().wait_words();
        let start = word.load(Ordering::SeqCst);
        // Set now, or a `set` since the first poll (even if cleared again).
        let attempt = || {
            let cur = word.load(Ordering::SeqCst);
            (cur & SET != 0 || (cur >> 1) != (start >> 1)).then_some(())
        };
        let mut parked = Parked::default();
        std::future::poll_fn(|cx| {
            parked.poll(
                cx,
                || Spot {
                    word,
                    sleepers,
                    // The setter writes the word (SeqCst), then reads `sleepers`
                    // (SeqCst): count in with SeqCst, then read the word.
                    begin: || {
                        sleepers.fetch_add(1, Ordering::SeqCst);
                        word.load(Ordering::SeqCst)
                    },
                },
                attempt,
                || None,
                deadline,
                || self.segment().resource(),
            )
        })
        .await
        .map(|r| r.is_some())
    }
}
