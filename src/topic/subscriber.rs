//! Subscriber handles: [`Subscriber<T>`], [`ByteSubscriber`] and the zero-copy [`View`].

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytemuck::Pod;

use super::Policy;
use super::core::Core;
use super::errors::{Fail, RecvError, RecvTimeoutError, TryRecvError};
use super::ring::{Ring, Slot};
use crate::error::Error;
use crate::queue::copy;

/// Receives every message published on a [`Topic`](super::Topic) after it subscribed.
///
/// Made by [`Topic::subscribe`](super::Topic::subscribe); dropping it unsubscribes (a
/// `Block` publisher stops waiting for it).
#[derive(Debug)]
pub struct Subscriber<T: Pod> {
    core: Core,
    _t: PhantomData<fn() -> T>,
}

impl<T: Pod> Subscriber<T> {
    pub(super) fn from_core(core: Core) -> Self {
        Subscriber {
            core,
            _t: PhantomData,
        }
    }

    /// Copies message `c` into `v` (an out-parameter: moving a large `T` through
    /// `Result`s costs store-forwarding stalls on the hot path).
    #[inline]
    fn read(v: &mut T, ring: &Ring, c: u64) {
        // A concurrent rewrite only changes the bytes, which the caller then discards
        // (the sequence word changed).
        // SAFETY: the slot's data is `size_of::<T>()` bytes, 8-aligned, in the mapping;
        // `v` is a private `T` and any bytes are a valid `T` (Pod).
        unsafe { copy::load(ring.data(c), (v as *mut T).cast(), size_of::<T>()) };
    }

    /// The next message if there is one now.
    #[inline]
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut v = T::zeroed();
        match self.core.try_read(|r, c| {
            Self::read(&mut v, r, c);
            Ok(())
        }) {
            Ok(()) => Ok(v),
            Err(f) => Err(f.try_recv()),
        }
    }

    /// The next message, waiting as long as it takes.
    pub fn recv(&self) -> Result<T, RecvError> {
        let mut v = T::zeroed();
        match self.core.wait_for(false, None, || {
            self.core.try_read(|r, c| {
                Self::read(&mut v, r, c);
                Ok(())
            })
        }) {
            Ok(()) => Ok(v),
            Err(f) => Err(f.recv()),
        }
    }

    /// The next message, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let mut v = T::zeroed();
        match self.core.wait_for(false, Some(timeout), || {
            self.core.try_read(|r, c| {
                Self::read(&mut v, r, c);
                Ok(())
            })
        }) {
            Ok(()) => Ok(v),
            Err(f) => Err(f.recv_timeout()),
        }
    }

    /// The next message in place, if there is one now (`Block` policy only: under
    /// `Overwrite` the publisher may rewrite any slot; use [`try_recv`](Self::try_recv)).
    pub fn try_recv_ref(&self) -> Result<View<'_, T>, TryRecvError> {
        self.view_attempt().map_err(Fail::try_recv)
    }

    /// The next message in place, waiting at most `timeout` (`None`: forever). `Block`
    /// policy only.
    pub fn recv_ref(&self, timeout: Option<Duration>) -> Result<View<'_, T>, RecvTimeoutError> {
        self.core
            .wait_for(false, timeout, || self.view_attempt())
            .map_err(Fail::recv_timeout)
    }

    fn view_attempt(&self) -> Result<View<'_, T>, Fail> {
        if self.core.shape.policy != Policy::Block {
            return Err(Error::invalid(
                self.core.resource(),
                "recv_ref",
                "zero-copy receive needs a topic with Policy::Block (under Overwrite the \
                 publisher may rewrite the slot while it is read); use recv",
            )
            .into());
        }
        // Check readiness without moving the cursor; the view advances it on drop.
        let c = self.core.cursor.get();
        match self.core.ring.look(c) {
            Ok(Slot::Ready(_)) => Ok(View {
                core: &self.core,
                c,
                _t: PhantomData,
            }),
            _ => self
                .core
                .try_read(|_, _| Err(Fail::Blocked))
                .map(|()| unreachable_view()),
        }
    }

    /// Messages published that this subscriber has not read (approximate).
    pub fn lag(&self) -> u64 {
        let t = self.core.ring.tail().load(Ordering::Acquire);
        t.saturating_sub(self.core.cursor.get())
    }

    /// Hook for `crate::aio`.
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    pub(crate) fn core(&self) -> &Core {
        &self.core
    }
}

/// (`try_read` with a reader that never succeeds only returns errors.)
#[cold]
fn unreachable_view<'a, T: Pod>() -> View<'a, T> {
    unreachable!("a reader that always fails never yields a message")
}

/// A message read in place ([`Subscriber::recv_ref`]): derefs to the `T` in its slot,
/// which the publisher does not rewrite until the view drops (`Block` policy). Trusts
/// every process with write access to follow the protocol: see the module docs, "Trust".
#[must_use = "dropping it at once releases the message unread"]
pub struct View<'a, T: Pod> {
    core: &'a Core,
    c: u64,
    _t: PhantomData<&'a T>,
}

impl<T: Pod> Deref for View<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // Under Block the publisher writes this slot again (position `c + cap`) only once
        // this subscriber's cursor is past `c`, when the view drops; a peer that breaks the
        // protocol can change the bytes (module docs, "Trust").
        // SAFETY: a `T`-sized, `T`-aligned region of the mapping, alive as long as the
        // core; any bit pattern is a valid `T` (Pod).
        unsafe { &*(self.core.ring.data(self.c) as *const T) }
    }
}

impl<T: Pod> Drop for View<'_, T> {
    fn drop(&mut self) {
        self.core.advance(self.c.wrapping_add(1));
    }
}

/// Receives every byte message published on a [`ByteTopic`](super::ByteTopic) after it
/// subscribed.
#[derive(Debug)]
pub struct ByteSubscriber {
    core: Core,
    max: usize,
}

impl ByteSubscriber {
    pub(super) fn from_core(core: Core, max: usize) -> Self {
        ByteSubscriber { core, max }
    }

    /// Reads message `c` into `buf` (replacing its contents; no allocation once `buf`
    /// has `max_message` capacity).
    #[inline]
    fn read_into(&self, ring: &Ring, c: u64, buf: &mut Vec<u8>) -> Result<usize, Fail> {
        let len = ring.len_word(c).load(Ordering::Relaxed);
        if len > self.max as u64 {
            // Rechecked by the caller: a rewrite in progress is `Lagged`, a stable bad
            // length is corruption.
            return Err(self.core.corrupt(format!(
                "message length {len} exceeds the topic's maximum {}",
                self.max
            )));
        }
        let len = len as usize;
        buf.clear();
        buf.reserve(len);
        // SAFETY: `len <= max = data_len`: the slot's data is readable for `len` bytes,
        // 8-aligned; `buf` has capacity for `len` bytes and is private. `set_len` after
        // the copy initialised them.
        unsafe {
            copy::load(ring.data(c), buf.as_mut_ptr(), len);
            buf.set_len(len);
        }
        Ok(len)
    }

    /// The next message into `buf` (its length returned), if there is one now.
    #[inline]
    pub fn try_recv(&self, buf: &mut Vec<u8>) -> Result<usize, TryRecvError> {
        self.core
            .try_read(|r, c| self.read_into(r, c, buf))
            .map_err(Fail::try_recv)
    }

    /// The next message into `buf`, waiting as long as it takes.
    pub fn recv(&self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        self.core
            .wait_for(false, None, || {
                self.core.try_read(|r, c| self.read_into(r, c, buf))
            })
            .map_err(Fail::recv)
    }

    /// The next message into `buf`, waiting at most `timeout`.
    pub fn recv_timeout(
        &self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        self.core
            .wait_for(false, Some(timeout), || {
                self.core.try_read(|r, c| self.read_into(r, c, buf))
            })
            .map_err(Fail::recv_timeout)
    }

    /// Largest message.
    pub fn max_message(&self) -> usize {
        self.max
    }

    /// Messages published that this subscriber has not read (approximate).
    pub fn lag(&self) -> u64 {
        let t = self.core.ring.tail().load(Ordering::Acquire);
        t.saturating_sub(self.core.cursor.get())
    }

    /// Hook for `crate::aio`.
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    pub(crate) fn core(&self) -> &Core {
        &self.core
    }
}
