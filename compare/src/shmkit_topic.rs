//! `shmkit::topic` in the comparison: `shmkit-topic-spin` and `shmkit-topic-park`
//! (`Topic<[u8; N]>`, N = the message size, [`Policy::Block`] so that no message is lost),
//! and the subscriber side of the `fanout` workload ([`crate::fanout`]).
//!
//! Two anonymous topics per channel, one per direction, created in the parent before the
//! fork. In [`Channel::attach`] each side subscribes to the topic it reads, takes the
//! publisher role of the topic it writes, and waits (bounded) until the other side has
//! subscribed, so that no message is published before its reader exists.
//!
//! Capacity as for the queue adapters ([`crate::shmkit_queue`]): the workload's depth,
//! at least 2 (a topic's minimum): 2 slots when one message is in flight (rtt, wake), 8
//! in the stream workload.
//!
//! Payload: the sender copies the harness's bytes into a loaned slot (`loan_timeout` +
//! `publish`), the receiver copies them out of `recv_ref` (zero-copy view) into its
//! buffer: one copy each way, like `shmkit-queue-spin`'s `reserve` / `recv_ref`.

use std::time::Instant;

use bytemuck::Pod;
use nix::unistd::Pid;
use shmkit::queue::WaitStrategy;
use shmkit::topic::{Policy, Publisher, Subscriber, Topic};
use shmkit::{Error, Result};

use crate::channel::{Channel, ChannelParams, Side};
use crate::shmkit_queue::{RTT_CAPACITY, TYPED_SIZES};
use crate::slot::WAIT_LIMIT;

/// `Topic<T>` both ways.
pub struct TopicChannel<T: Pod> {
    id: &'static str,
    topics: [Topic<T>; 2],
    publisher: Option<Publisher<T>>,
    subscriber: Option<Subscriber<T>>,
}

/// `shmkit-topic-spin`: Block policy, [`WaitStrategy::Spin`] on both sides.
pub fn topic_spin(p: ChannelParams) -> Result<Box<dyn Channel>> {
    typed(p, WaitStrategy::Spin, "shmkit-topic-spin")
}

/// `shmkit-topic-park`: Block policy, [`WaitStrategy::Park`] on both sides.
pub fn topic_park(p: ChannelParams) -> Result<Box<dyn Channel>> {
    typed(p, WaitStrategy::Park, "shmkit-topic-park")
}

fn typed(p: ChannelParams, wait: WaitStrategy, id: &'static str) -> Result<Box<dyn Channel>> {
    match p.size {
        16 => TopicChannel::<[u8; 16]>::boxed(p, wait, id),
        64 => TopicChannel::<[u8; 64]>::boxed(p, wait, id),
        4096 => TopicChannel::<[u8; 4096]>::boxed(p, wait, id),
        65536 => TopicChannel::<[u8; 65536]>::boxed(p, wait, id),
        1048576 => TopicChannel::<[u8; 1048576]>::boxed(p, wait, id),
        other => Err(Error::invalid(
            id,
            "create",
            format!("Topic<[u8; N]> is instantiated for N in {TYPED_SIZES:?} only, not {other}"),
        )),
    }
}

/// Waits (bounded by [`WAIT_LIMIT`]) until `topic` has at least `n` subscribers.
pub fn await_subscribers<T: Pod>(topic: &Topic<T>, n: u64, id: &'static str) -> Result<()> {
    let start = Instant::now();
    while topic.subscribers() < n {
        if start.elapsed() > WAIT_LIMIT {
            return Err(Error::Timeout {
                resource: id.into(),
                op: "wait for the peer to subscribe",
                timeout: WAIT_LIMIT,
            });
        }
        std::thread::yield_now();
    }
    Ok(())
}

impl<T: Pod> TopicChannel<T> {
    fn boxed(p: ChannelParams, wait: WaitStrategy, id: &'static str) -> Result<Box<dyn Channel>> {
        let cap = if p.depth <= 1 {
            RTT_CAPACITY.max(2) // a topic's minimum
        } else {
            (p.depth as u64).max(2)
        };
        let opts = Topic::<T>::options()
            .capacity(cap)
            .max_subscribers(1)
            .policy(Policy::Block)
            .wait(wait);
        Ok(Box::new(TopicChannel {
            id,
            topics: [opts.anonymous()?, opts.anonymous()?],
            publisher: None,
            subscriber: None,
        }))
    }

    fn wrong_len(&self, len: usize) -> Error {
        Error::invalid(
            self.id,
            "transfer",
            format!("{len} bytes, made for {}", size_of::<T>()),
        )
    }
}

impl<T: Pod> Channel for TopicChannel<T> {
    fn attach(&mut self, side: Side, _: Pid) -> Result<()> {
        self.subscriber = Some(self.topics[side.peer().index()].subscribe()?);
        self.publisher = Some(self.topics[side.index()].publisher()?);
        await_subscribers(&self.topics[side.index()], 1, self.id)
    }

    #[inline]
    fn send(&mut self, _: Side, msg: &[u8]) -> Result<()> {
        if msg.len() != size_of::<T>() {
            return Err(self.wrong_len(msg.len()));
        }
        let Some(p) = &self.publisher else {
            return Err(Error::invalid(self.id, "send", "not attached"));
        };
        let mut loan = p.loan_timeout(WAIT_LIMIT)?;
        bytemuck::bytes_of_mut(&mut *loan).copy_from_slice(msg);
        loan.publish();
        Ok(())
    }

    #[inline]
    fn recv(&mut self, _: Side, buf: &mut [u8]) -> Result<()> {
        if buf.len() != size_of::<T>() {
            return Err(self.wrong_len(buf.len()));
        }
        let Some(s) = &self.subscriber else {
            return Err(Error::invalid(self.id, "recv", "not attached"));
        };
        let v = s.recv_ref(Some(WAIT_LIMIT))?;
        buf.copy_from_slice(bytemuck::bytes_of(&*v));
        Ok(())
    }
}
