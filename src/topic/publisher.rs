//! Publisher handles: [`Publisher<T>`], [`BytePublisher`] and their zero-copy loans.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytemuck::Pod;

use super::core::Core;
use super::errors::{Fail, SendTimeoutError, TrySendError};
use crate::error::{Error, Result};
use crate::queue::copy;

/// Publishes messages of type `T` on a [`Topic`](super::Topic).
///
/// Made by [`Topic::publisher`](super::Topic::publisher). Dropping it detaches it (when
/// the last publisher is gone, drained subscribers get `Disconnected`).
#[derive(Debug)]
pub struct Publisher<T: Pod> {
    core: Core,
    _t: PhantomData<fn(T)>,
}

impl<T: Pod> Publisher<T> {
    pub(super) fn from_core(core: Core) -> Self {
        Publisher {
            core,
            _t: PhantomData,
        }
    }

    #[inline]
    fn put(&self, p: u64, v: &T) {
        // SAFETY: the slot's data is `size_of::<T>()` bytes (checked against the header
        // at open), aligned for `T` and at least 8; `v` is a private `T`.
        unsafe {
            copy::store(
                (v as *const T).cast(),
                self.core.ring.data(p),
                size_of::<T>(),
            )
        };
        self.core.publish(p);
    }

    /// Publishes `v` if it can now (`Full`: `Block` policy and a subscriber is
    /// `capacity` behind, or another publisher holds the role).
    #[inline]
    pub fn try_send(&self, v: T) -> Result<(), TrySendError> {
        let p = self.core.try_claim().map_err(Fail::try_send)?;
        self.put(p, &v);
        Ok(())
    }

    /// Publishes `v`, waiting as long as it takes (`Block` policy).
    pub fn send(&self, v: T) -> Result<()> {
        let p = self
            .core
            .wait_for(true, None, || self.core.try_claim())
            .map_err(Fail::send)?;
        self.put(p, &v);
        Ok(())
    }

    /// Publishes `v`, waiting at most `timeout`.
    pub fn send_timeout(&self, v: T, timeout: Duration) -> Result<(), SendTimeoutError> {
        let p = self
            .core
            .wait_for(true, Some(timeout), || self.core.try_claim())
            .map_err(Fail::send_timeout)?;
        self.put(p, &v);
        Ok(())
    }

    /// Loans the next slot for writing in place (waiting as [`send`](Self::send) does).
    pub fn loan(&self) -> Result<Loan<'_, T>> {
        let p = self
            .core
            .wait_for(true, None, || self.core.try_claim())
            .map_err(Fail::send)?;
        Ok(Loan::new(&self.core, p))
    }

    /// [`loan`](Self::loan) if a slot is free now.
    pub fn try_loan(&self) -> Result<Loan<'_, T>, TrySendError> {
        let p = self.core.try_claim().map_err(Fail::try_send)?;
        Ok(Loan::new(&self.core, p))
    }

    /// [`loan`](Self::loan), waiting at most `timeout`.
    pub fn loan_timeout(&self, timeout: Duration) -> Result<Loan<'_, T>, SendTimeoutError> {
        let p = self
            .core
            .wait_for(true, Some(timeout), || self.core.try_claim())
            .map_err(Fail::send_timeout)?;
        Ok(Loan::new(&self.core, p))
    }

    /// Messages published on the topic so far (by anyone).
    pub fn published(&self) -> u64 {
        self.core.ring.tail().load(Ordering::Acquire)
    }

    /// Hook for `crate::aio`.
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    pub(crate) fn core(&self) -> &Core {
        &self.core
    }
}

/// A slot loaned for writing in place ([`Publisher::loan`]).
///
/// Derefs to the slot's `T` in shared memory (it holds an older message until
/// overwritten). [`publish`](Self::publish) makes it visible; dropping it unpublished
/// gives the position back (the next loan reuses it). Trusts every process with write
/// access to follow the protocol: see the module docs, "Trust".
#[must_use = "write the message and call `publish`"]
pub struct Loan<'a, T: Pod> {
    core: &'a Core,
    p: u64,
    done: bool,
    _t: PhantomData<&'a mut T>,
}

impl<'a, T: Pod> Loan<'a, T> {
    fn new(core: &'a Core, p: u64) -> Self {
        Loan {
            core,
            p,
            done: false,
            _t: PhantomData,
        }
    }

    /// Publishes the message.
    pub fn publish(mut self) {
        self.done = true;
        self.core.publish(self.p);
    }
}

impl<T: Pod> Deref for Loan<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // This handle holds the publisher role for position `p`: under the protocol nobody
        // else writes it (module docs, "Trust": what a peer breaking it can do).
        // SAFETY: a `T`-sized, `T`-aligned region of the mapping that lives as long as the
        // core; any bit pattern is a valid `T` (Pod).
        unsafe { &*(self.core.ring.data(self.p) as *const T) }
    }
}

impl<T: Pod> DerefMut for Loan<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes this the only reference from this
        // process.
        unsafe { &mut *(self.core.ring.data(self.p) as *mut T) }
    }
}

impl<T: Pod> Drop for Loan<'_, T> {
    fn drop(&mut self) {
        if !self.done {
            self.core.abandon();
        }
    }
}

/// Publishes byte messages on a [`ByteTopic`](super::ByteTopic).
#[derive(Debug)]
pub struct BytePublisher {
    core: Core,
    max: usize,
}

impl BytePublisher {
    pub(super) fn from_core(core: Core, max: usize) -> Self {
        BytePublisher { core, max }
    }

    fn check(&self, len: usize) -> Result<(), Fail> {
        if len > self.max {
            return Err(Error::MessageTooLarge {
                resource: self.core.resource(),
                op: "publish",
                len,
                max: self.max,
                advice: Some("create the topic with a larger max_message".into()),
            }
            .into());
        }
        Ok(())
    }

    #[inline]
    fn put(&self, p: u64, msg: &[u8]) {
        // SAFETY: `msg.len() <= max = data_len` (checked first); the slot's data is
        // 8-aligned; `msg` is private memory.
        unsafe { copy::store(msg.as_ptr(), self.core.ring.data(p), msg.len()) };
        self.core
            .ring
            .len_word(p)
            .store(msg.len() as u64, Ordering::Relaxed);
        self.core.publish(p);
    }

    fn claim(&self, len: usize, timeout: Option<Option<Duration>>) -> Result<u64, Fail> {
        self.check(len)?;
        match timeout {
            None => self.core.try_claim(),
            Some(t) => self.core.wait_for(true, t, || self.core.try_claim()),
        }
    }

    /// Publishes `msg` if it can now.
    #[inline]
    pub fn try_send(&self, msg: &[u8]) -> Result<(), TrySendError> {
        let p = self.claim(msg.len(), None).map_err(Fail::try_send)?;
        self.put(p, msg);
        Ok(())
    }

    /// Publishes `msg`, waiting as long as it takes (`Block` policy).
    pub fn send(&self, msg: &[u8]) -> Result<()> {
        let p = self.claim(msg.len(), Some(None)).map_err(Fail::send)?;
        self.put(p, msg);
        Ok(())
    }

    /// Publishes `msg`, waiting at most `timeout`.
    pub fn send_timeout(&self, msg: &[u8], timeout: Duration) -> Result<(), SendTimeoutError> {
        let p = self
            .claim(msg.len(), Some(Some(timeout)))
            .map_err(Fail::send_timeout)?;
        self.put(p, msg);
        Ok(())
    }

    /// Loans the next slot for a message of `len` bytes, written in place.
    pub fn loan(&self, len: usize) -> Result<ByteLoan<'_>> {
        let p = self.claim(len, Some(None)).map_err(Fail::send)?;
        Ok(ByteLoan::new(&self.core, p, len))
    }

    /// [`loan`](Self::loan) if a slot is free now.
    pub fn try_loan(&self, len: usize) -> Result<ByteLoan<'_>, TrySendError> {
        let p = self.claim(len, None).map_err(Fail::try_send)?;
        Ok(ByteLoan::new(&self.core, p, len))
    }

    /// [`loan`](Self::loan), waiting at most `timeout`.
    pub fn loan_timeout(
        &self,
        len: usize,
        timeout: Duration,
    ) -> Result<ByteLoan<'_>, SendTimeoutError> {
        let p = self
            .claim(len, Some(Some(timeout)))
            .map_err(Fail::send_timeout)?;
        Ok(ByteLoan::new(&self.core, p, len))
    }

    /// Largest message.
    pub fn max_message(&self) -> usize {
        self.max
    }

    /// Messages published on the topic so far (by anyone).
    pub fn published(&self) -> u64 {
        self.core.ring.tail().load(Ordering::Acquire)
    }

    /// Hook for `crate::aio`.
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    pub(crate) fn core(&self) -> &Core {
        &self.core
    }
}

/// A byte slot loaned for writing in place ([`BytePublisher::loan`]); derefs to the
/// message's `len` bytes. Same trust as [`Loan`].
#[must_use = "write the message and call `publish`"]
pub struct ByteLoan<'a> {
    core: &'a Core,
    p: u64,
    len: usize,
    done: bool,
}

impl<'a> ByteLoan<'a> {
    fn new(core: &'a Core, p: u64, len: usize) -> Self {
        ByteLoan {
            core,
            p,
            len,
            done: false,
        }
    }

    /// Publishes the message.
    pub fn publish(mut self) {
        self.done = true;
        self.core
            .ring
            .len_word(self.p)
            .store(self.len as u64, Ordering::Relaxed);
        self.core.publish(self.p);
    }
}

impl Deref for ByteLoan<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len <= data_len` (checked by `claim`); the region lives as long as the
        // core; protocol and trust as for `Loan::deref`.
        unsafe { std::slice::from_raw_parts(self.core.ring.data(self.p), self.len) }
    }
}

impl DerefMut for ByteLoan<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`; `&mut self` makes this the only reference here.
        unsafe { std::slice::from_raw_parts_mut(self.core.ring.data(self.p), self.len) }
    }
}

impl Drop for ByteLoan<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.core.abandon();
        }
    }
}
