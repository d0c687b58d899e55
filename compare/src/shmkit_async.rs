//! shmkit's async forms in the comparison: `shmkit-queue-async` (`Queue<[u8; N]>`,
//! `reserve_async` + commit / `recv_ref_async`: one copy each way, as
//! `shmkit-queue-park` does with `reserve` / `recv_ref`) and `shmkit-event-async` (`Event::wait_timeout_async`
//! as a doorbell of the slot channel), each side awaiting on its own tokio current-thread
//! runtime (time driver only, for the bounds; no I/O driver), built in
//! [`Channel::attach`] / [`Doorbell::attach`], i.e. after the fork.
//!
//! Like a task that is already running, a transfer that can complete at once does so
//! without entering the runtime (`reserve` / `recv_ref` with a zero timeout, exactly the
//! futures' first poll); only a transfer that has to wait goes through `block_on`.
//!
//! They measure what an async waiter costs on top of the blocking forms they are
//! compared with (`shmkit-queue-park`, `shmkit-event`): the hand-off from shmkit's waiter
//! thread (blocked in `futex_waitv`) to the runtime thread, and the registration of each
//! wait (see `shmkit::aio`).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use bytemuck::Pod;
use nix::unistd::Pid;
use shmkit::queue::{Mode, Queue};
use shmkit::sync::Event;
use shmkit::{Error, Result};
use tokio::runtime::Runtime;

use crate::channel::{Channel, ChannelParams, Side};
use crate::slot::{Doorbell, WAIT_LIMIT};

fn runtime(id: &'static str) -> Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Error::invalid(id, "tokio runtime", e.to_string()))
}

/// Runs `f` on `rt`, bounded by [`WAIT_LIMIT`].
fn bounded<R>(
    rt: Option<&Runtime>,
    id: &'static str,
    f: impl std::future::Future<Output = Result<R>>,
) -> Result<R> {
    let rt = rt.ok_or_else(|| Error::invalid(id, "transfer", "attach was not called"))?;
    rt.block_on(async { tokio::time::timeout(WAIT_LIMIT, f).await })
        .map_err(|_| Error::Timeout {
            resource: id.to_owned(),
            op: "async transfer",
            timeout: WAIT_LIMIT,
        })?
}

/// `Queue<T>` both ways (SPSC, like `shmkit-queue-park`), async on both sides.
pub struct AsyncQueueChannel<T: Pod> {
    queues: [Queue<T>; 2],
    rt: Option<Runtime>,
}

const QUEUE_ID: &str = "shmkit-queue-async";

/// `shmkit-queue-async`.
pub fn queue_async(p: ChannelParams) -> Result<Box<dyn Channel>> {
    match p.size {
        16 => AsyncQueueChannel::<[u8; 16]>::boxed(p),
        64 => AsyncQueueChannel::<[u8; 64]>::boxed(p),
        4096 => AsyncQueueChannel::<[u8; 4096]>::boxed(p),
        65536 => AsyncQueueChannel::<[u8; 65536]>::boxed(p),
        1048576 => AsyncQueueChannel::<[u8; 1048576]>::boxed(p),
        other => Err(Error::invalid(
            QUEUE_ID,
            "create",
            format!(
                "Queue<[u8; N]> is instantiated for N in {:?} only, not {other}",
                crate::shmkit_queue::TYPED_SIZES
            ),
        )),
    }
}

impl<T: Pod + Send> AsyncQueueChannel<T> {
    fn boxed(p: ChannelParams) -> Result<Box<dyn Channel>> {
        let cap = if p.depth <= 1 {
            crate::shmkit_queue::RTT_CAPACITY
        } else {
            p.depth as u64
        };
        let opts = Queue::<T>::options().mode(Mode::Spsc).capacity(cap);
        Ok(Box::new(AsyncQueueChannel {
            queues: [opts.anonymous()?, opts.anonymous()?],
            rt: None,
        }))
    }
}

impl<T: Pod + Send> Channel for AsyncQueueChannel<T> {
    fn attach(&mut self, side: Side, _: Pid) -> Result<()> {
        if side == Side::Child {
            self.queues = [self.queues[0].try_clone()?, self.queues[1].try_clone()?];
        }
        self.rt = Some(runtime(QUEUE_ID)?);
        Ok(())
    }

    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        if msg.len() != size_of::<T>() {
            return Err(Error::invalid(QUEUE_ID, "send", "wrong message length"));
        }
        let q = &mut self.queues[side.index()];
        // What the future's first poll does, without entering the runtime (a task that
        // is already running pays no `block_on`).
        match q.reserve(Some(Duration::ZERO)) {
            Ok(mut slot) => {
                bytemuck::bytes_of_mut(&mut *slot).copy_from_slice(msg);
                slot.commit();
                return Ok(());
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e.into()),
        }
        bounded(self.rt.as_ref(), QUEUE_ID, async {
            let mut slot = q.reserve_async().await?;
            bytemuck::bytes_of_mut(&mut *slot).copy_from_slice(msg);
            slot.commit();
            Ok(())
        })
    }

    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        if buf.len() != size_of::<T>() {
            return Err(Error::invalid(QUEUE_ID, "recv", "wrong message length"));
        }
        let q = &mut self.queues[side.peer().index()];
        match q.recv_ref(Some(Duration::ZERO)) {
            Ok(slot) => {
                buf.copy_from_slice(bytemuck::bytes_of(&*slot));
                return Ok(());
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e.into()),
        }
        bounded(self.rt.as_ref(), QUEUE_ID, async {
            let slot = q.recv_ref_async().await?;
            buf.copy_from_slice(bytemuck::bytes_of(&*slot));
            Ok(())
        })
    }
}

/// One `shmkit::sync::Event` per side, like `shmkit-event`, but the sleeper awaits
/// `wait_timeout_async` on a current-thread runtime.
pub struct ShmkitEventAsync {
    events: [Event; 2],
    rt: Option<Runtime>,
}

impl Doorbell for ShmkitEventAsync {
    const SLEEPS: bool = true;
    fn create(_mem: *mut u8) -> Result<Self> {
        Ok(ShmkitEventAsync {
            events: [Event::anonymous()?, Event::anonymous()?],
            rt: None,
        })
    }
    fn attach(&mut self, _side: Side, _peer: Pid) -> Result<()> {
        self.rt = Some(runtime("shmkit-event-async")?);
        Ok(())
    }
    fn sleep(&self, side: Side, _: &AtomicU32, _: u32, timeout: Duration) -> Result<()> {
        let ev = &self.events[side.index()];
        let rt = self.rt.as_ref().ok_or_else(|| {
            Error::invalid("shmkit-event-async", "sleep", "attach was not called")
        })?;
        if rt.block_on(ev.wait_timeout_async(timeout))? {
            ev.clear();
        }
        Ok(())
    }
    fn ring(&self, to: Side, _: &AtomicU32) -> Result<()> {
        self.events[to.index()].set();
        Ok(())
    }
}
