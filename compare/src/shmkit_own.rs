//! shmkit's own primitives as they land: `shmkit-event`, `shmkit-semaphore` and
//! `shmkit-condvar` as doorbells of a [`SlotChannel`](crate::slot::SlotChannel) (payload in
//! shared memory, exactly like the OS mechanisms they compete with), `shmkit-mutex` as a
//! lock. Each object lives in its own anonymous segment, inherited by the forked peer.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shmkit::sync::{Condvar, Event, Mutex, Semaphore};
use shmkit::{Error, Result};

use crate::channel::Side;
use crate::locks::Lock;
use crate::slot::Doorbell;

/// One `shmkit::sync::Event` per side: `set` rings, `wait_timeout` + `clear` sleeps. The
/// slot protocol re-checks its word after every sleep, so clearing after the wake cannot
/// lose a ring.
pub struct ShmkitEvent {
    events: [Event; 2],
}

impl Doorbell for ShmkitEvent {
    const SLEEPS: bool = true;
    fn create(_mem: *mut u8) -> Result<Self> {
        Ok(ShmkitEvent {
            events: [Event::anonymous()?, Event::anonymous()?],
        })
    }
    fn sleep(&self, side: Side, _: &AtomicU32, _: u32, timeout: Duration) -> Result<()> {
        let ev = &self.events[side.index()];
        if ev.wait_timeout(timeout)? {
            ev.clear();
        }
        Ok(())
    }
    fn ring(&self, to: Side, _: &AtomicU32) -> Result<()> {
        self.events[to.index()].set();
        Ok(())
    }
}

/// One `shmkit::sync::Semaphore` per side: `post` rings, `wait_timeout` sleeps.
pub struct ShmkitSemaphore {
    sems: [Semaphore; 2],
}

impl Doorbell for ShmkitSemaphore {
    const SLEEPS: bool = true;
    fn create(_mem: *mut u8) -> Result<Self> {
        Ok(ShmkitSemaphore {
            sems: [Semaphore::anonymous(0)?, Semaphore::anonymous(0)?],
        })
    }
    fn sleep(&self, side: Side, _: &AtomicU32, _: u32, timeout: Duration) -> Result<()> {
        match self.sems[side.index()].wait_timeout(timeout) {
            Ok(()) => Ok(()),
            Err(e) if e.is_timeout() => Ok(()),
            Err(e) => Err(e),
        }
    }
    fn ring(&self, to: Side, _: &AtomicU32) -> Result<()> {
        self.sems[to.index()].post()
    }
}

/// A `shmkit::sync::Mutex<()>` + `Condvar` per side. The waiter checks the slot word with
/// the mutex held before waiting; the ringer takes the mutex before notifying, so the
/// notify cannot fall between the check and the wait.
pub struct ShmkitCondvar {
    pairs: [(Mutex<()>, Condvar); 2],
}

impl Doorbell for ShmkitCondvar {
    const SLEEPS: bool = true;
    fn create(_mem: *mut u8) -> Result<Self> {
        let pair = || -> Result<(Mutex<()>, Condvar)> {
            Ok((Mutex::anonymous(())?, Condvar::anonymous()?))
        };
        Ok(ShmkitCondvar {
            pairs: [pair()?, pair()?],
        })
    }
    fn sleep(&self, side: Side, word: &AtomicU32, seen: u32, timeout: Duration) -> Result<()> {
        let (m, cv) = &self.pairs[side.index()];
        let guard = m.lock()?.into_guard();
        if word.load(Ordering::SeqCst) == seen {
            let (relocked, _) = cv.wait_timeout(guard, timeout)?;
            drop(relocked.into_guard());
        }
        Ok(())
    }
    fn ring(&self, to: Side, _: &AtomicU32) -> Result<()> {
        let (m, cv) = &self.pairs[to.index()];
        let guard = m.lock()?.into_guard();
        cv.notify_one();
        drop(guard);
        Ok(())
    }
}

/// `shmkit::sync::Mutex<()>`: robust, error-checking pshared pthread mutex behind a guard.
pub struct ShmkitMutex {
    m: Mutex<()>,
}

impl ShmkitMutex {
    /// A mutex in a fresh anonymous segment.
    pub fn boxed() -> Result<Box<dyn Lock>> {
        Ok(Box::new(ShmkitMutex {
            m: Mutex::anonymous(())?,
        }))
    }
}

impl Lock for ShmkitMutex {
    fn lock(&self) -> Result<()> {
        Err(Error::invalid(
            "shmkit-mutex",
            "lock",
            "guard-based: use critical()",
        ))
    }
    fn unlock(&self) -> Result<()> {
        Err(Error::invalid(
            "shmkit-mutex",
            "unlock",
            "guard-based: use critical()",
        ))
    }
    #[inline]
    fn critical(&self, f: &mut dyn FnMut()) -> Result<()> {
        let r = self.m.lock()?;
        if r.owner_died() {
            return Err(Error::Disconnected {
                resource: "shmkit-mutex".into(),
                op: "lock",
                detail: Some("the other process died holding the lock".into()),
            });
        }
        let guard = r.into_guard();
        f();
        drop(guard);
        Ok(())
    }
}
