//! Publish/subscribe topics: one publisher (or several), many subscribers, every
//! subscriber receives every message.
//!
//! - [`Topic<T>`]: fixed-size messages of a `Pod` type;
//! - [`ByteTopic`]: variable-length byte messages up to a maximum set at creation;
//!
//! both in a [`Segment`] of kind [`Kind::Topic`] / [`Kind::ByteTopic`]: a ring of
//! `capacity` slots and a table of participant entries (one per [`Publisher`] and
//! [`Subscriber`] handle, each owning its entry through its liveness token, like the
//! queue's participants).
//!
//! ```
//! use shmkit::topic::{Policy, Topic, TryRecvError};
//! let name = format!("doc-topic-{}", std::process::id());
//! let topic: Topic<u64> = Topic::options()
//!     .capacity(8)
//!     .max_subscribers(4)
//!     .policy(Policy::Overwrite)
//!     .create(&name)?;
//! let publisher = topic.publisher()?;
//! let early = topic.subscribe()?;
//! publisher.send(1)?;
//! // A late joiner asks for up to 2 messages of history.
//! let late = topic.subscribe_with_history(2)?;
//! let mut loan = publisher.loan()?; // zero-copy: write the slot in place
//! *loan = 2;
//! loan.publish();
//! assert_eq!((early.recv()?, early.recv()?), (1, 2));
//! assert_eq!((late.recv()?, late.recv()?), (1, 2));
//! // Overwrite: a subscriber that falls behind is told how much it missed.
//! for i in 0..20 {
//!     publisher.send(100 + i)?;
//! }
//! assert!(matches!(early.try_recv(), Err(TryRecvError::Lagged(_))));
//! assert_eq!(early.try_recv()?, 113); // the oldest message still retained
//! drop(publisher);
//! // Once every publisher is gone, a drained subscriber is told so.
//! loop {
//!     match late.try_recv() {
//!         Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
//!         Err(e) => break assert!(e.is_disconnected()),
//!     }
//! }
//! shmkit::Segment::unlink(&name)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Delivery
//!
//! A subscriber receives every message published after it subscribed, in order, plus
//! (with [`Topic::subscribe_with_history`]) up to `k` messages published before, `k <
//! capacity`. What happens when a subscriber falls `capacity` messages behind is the
//! topic's [`Policy`], chosen at creation:
//!
//! - [`Policy::Overwrite`] (default): the publisher never waits. The lagging subscriber's
//!   next receive returns `Lagged(n)` (`n` messages it will never see), and the one after
//!   that the oldest message still retained — as `tokio::sync::broadcast` does.
//! - [`Policy::Block`]: the publisher waits (spin, then sleep; bounded by its timeout)
//!   until the slowest **live** subscriber has read the slot it would overwrite. A
//!   subscriber that dies is noticed within a few milliseconds (its liveness token) and
//!   retired: it never blocks the publisher for longer. A new subscriber's *history* is
//!   not protected (it may be overwritten before it is read: `Lagged`).
//!
//! One publisher by default: a second live [`Topic::publisher`] is refused (the role
//! passes on when the holder drops or dies). [`TopicOptions::publishers`] allows several;
//! they then take the publisher role per message (a short lock in shared memory whose
//! dead holder is replaced), so messages from different publishers are totally ordered.
//!
//! Once a publisher has attached and every publisher is gone (dropped, or died: noticed
//! by a sweep of liveness tokens at most every 10 ms while a subscriber waits),
//! subscribers receive what is left, then `Disconnected`.
//!
//! # Zero copy
//!
//! [`Publisher::loan`] hands out the next slot to write in place; [`Loan::publish`]
//! makes it visible. [`Subscriber::recv_ref`] (Block policy only) hands out a view of
//! the message in place; the slot stays protected until the view drops. Under Overwrite
//! the publisher may reuse any slot at any time, so only the copying receive is offered.
//!
//! # Async (feature `async`)
//!
//! `Subscriber::recv_async`, `ByteSubscriber::recv_async`, `Publisher::send_async`,
//! `Publisher::loan_async`, `BytePublisher::send_async`: std futures on the same futex
//! words, woken through `crate::aio`'s waiter thread; no cost on the fast path (a future
//! completes in its first poll when it can), cancellation-safe, `&mut self` so that the
//! futures are `Send`.
//!
//! # Crash consistency
//!
//! Each slot carries a sequence word (a seqlock): odd while the publisher writes
//! position `p`, `2p + 2` once message `p` is complete. A subscriber copies a message
//! out, then checks that the word did not change; a slot rewritten meanwhile is detected
//! and reported as `Lagged`, never returned torn. A publisher killed mid-write leaves an
//! odd word: subscribers see nothing new, then `Disconnected` (or the next publisher's
//! message for that position). See `ring.rs` and ARCHITECTURE.md, "Topic".
//!
//! # Trust
//!
//! As for the queue (see [`crate::queue`], "Trust", and docs/trust-model.md): a peer
//! with write access can make messages wrong or missing, make receives fail with
//! `Lagged`, `Disconnected` or [`Error::Corrupt`], or make a `Block` publisher wait until
//! its timeout; never a panic, a hang past a timeout, or an access outside the segment.
//! The ring's geometry comes from the checksummed header; slot addresses from a position
//! modulo the capacity; lengths are checked before use. The copying calls move slot bytes
//! with volatile loads and stores. [`Loan`] and [`View`] are references into shared
//! memory: sound only if every process with write access follows the protocol, and
//! memory-safe in practice only because the data is `Pod` / bytes.
//!
//! # Threads
//!
//! Handles are `Send`, not `Sync` (per-handle positions in `Cell`s): one handle per
//! thread.

pub(crate) mod core;
mod errors;
#[cfg(any(fuzzing, test))]
mod fuzz;
#[cfg(all(test, shmkit_loom))]
mod loom;
mod publisher;
mod ring;
mod subscriber;

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::queue::WaitStrategy;
use crate::segment::{ElemInfo, Kind, Layout, Segment, SegmentOptions};

pub use errors::{RecvError, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};
/// The topic ring's fuzz driver (`fuzz/fuzz_targets/topic.rs`); built only for cargo fuzz
/// (`--cfg fuzzing`) and this crate's tests: not part of the API.
#[cfg(any(fuzzing, test))]
pub use fuzz::fuzz_topic;
pub use publisher::{ByteLoan, BytePublisher, Loan, Publisher};
pub use ring::{MAX_CAPACITY, MAX_ENTRIES};
pub use subscriber::{ByteSubscriber, Subscriber, View};

use self::core::{Core, owner_alive};
use ring::{Geometry, OWNER_DEAD, ROLE_PUB, ROLE_SUB, Ring};

/// Version of the ring layout, stored in `params[3]`.
const TOPIC_VERSION: u64 = 1;
const FLAG_BLOCK: u32 = 1;
const FLAG_MULTI: u32 = 2;
const KNOWN_FLAGS: u32 = FLAG_BLOCK | FLAG_MULTI;
/// Largest byte message.
pub const MAX_MESSAGE: usize = 1 << 30;

/// What the publisher does when a subscriber is `capacity` messages behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Wait (bounded) for the slowest live subscriber.
    Block,
    /// Never wait; the lagging subscriber gets `Lagged(n)`.
    #[default]
    Overwrite,
}

/// The topic's shape, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub policy: Policy,
    pub multi: bool,
}

/// Options for creating and opening topics ([`ByteTopicOptions`] for byte topics).
#[derive(Clone, Debug)]
pub struct TopicOptions<T> {
    capacity: u64,
    max_subscribers: u64,
    publishers: u64,
    policy: Policy,
    wait: WaitStrategy,
    segment: SegmentOptions,
    _t: PhantomData<fn() -> T>,
}

impl<T> Default for TopicOptions<T> {
    fn default() -> Self {
        TopicOptions {
            capacity: 256,
            max_subscribers: 16,
            publishers: 1,
            policy: Policy::default(),
            wait: WaitStrategy::default(),
            segment: SegmentOptions::default(),
            _t: PhantomData,
        }
    }
}

impl<T> TopicOptions<T> {
    /// Slots, rounded up to a power of two (default 256; 2 ..= [`MAX_CAPACITY`]).
    pub fn capacity(mut self, n: u64) -> Self {
        self.capacity = n;
        self
    }
    /// Most subscribers at once (default 16).
    pub fn max_subscribers(mut self, n: u64) -> Self {
        self.max_subscribers = n;
        self
    }
    /// Most publishers at once (default 1; more turns on the per-message publisher role).
    pub fn publishers(mut self, n: u64) -> Self {
        self.publishers = n;
        self
    }
    /// Slow-subscriber policy (default [`Policy::Overwrite`]).
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }
    /// How this process's handles wait (default: spin 50 µs, then sleep).
    pub fn wait(mut self, w: WaitStrategy) -> Self {
        self.wait = w;
        self
    }
    /// Segment options (permissions, open timeout, unlink on drop).
    pub fn segment(mut self, s: SegmentOptions) -> Self {
        self.segment = s;
        self
    }

    fn layout(
        &self,
        resource: &str,
        kind: Kind,
        data_len: u64,
        align: u64,
        elem: ElemInfo,
    ) -> Result<(Layout, Geometry)> {
        let bad = |why: String| Error::invalid(resource, "create topic", why);
        if self.capacity < 2 || self.capacity > MAX_CAPACITY {
            return Err(bad(format!(
                "capacity {} is out of range 2..={MAX_CAPACITY}",
                self.capacity
            )));
        }
        if self.publishers == 0 {
            return Err(bad("publishers must be at least 1".into()));
        }
        let cap = self.capacity.next_power_of_two();
        let entries = self.max_subscribers.saturating_add(self.publishers);
        let geo = Geometry::new(cap, data_len, align, entries).ok_or_else(|| {
            bad(format!(
                "no ring fits capacity {cap}, {data_len}-byte messages aligned to {align}, {entries} participants \
                 (alignment at most 64, at most {MAX_ENTRIES} participants, 1 TiB in total)"
            ))
        })?;
        let flags = if self.policy == Policy::Block {
            FLAG_BLOCK
        } else {
            0
        } | if self.publishers > 1 { FLAG_MULTI } else { 0 };
        let layout = Layout::new(kind, elem)
            .with_payload_len(geo.total as u64)
            .with_flags(flags)
            .with_params([cap, entries, data_len, TOPIC_VERSION]);
        Ok((layout, geo))
    }
}

fn init_ring(geo: Geometry) -> impl FnOnce(&mut [u8]) -> Result<()> {
    move |payload| {
        if payload.len() < geo.total {
            return Err(Error::invalid(
                "<topic>",
                "create topic",
                "payload shorter than the ring",
            ));
        }
        // SAFETY: the payload is ours alone during initialisation, `geo.total` bytes long
        // and 64-byte aligned (segment payloads are).
        let ring = unsafe { Ring::new(payload.as_mut_ptr(), geo) };
        ring.init();
        Ok(())
    }
}

/// The part of a topic handle that is the same for both forms.
#[derive(Clone)]
struct Shared {
    seg: Arc<Segment>,
    ring: Ring,
    shape: Shape,
    wait: WaitStrategy,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic")
            .field("resource", &self.seg.resource())
            .field("capacity", &self.ring.geo.cap)
            .field("policy", &self.shape.policy)
            .field("multi", &self.shape.multi)
            .finish()
    }
}

impl Shared {
    /// Checks a segment's topic parameters (header already checksummed).
    fn open(
        seg: Segment,
        kind: Kind,
        data_len: Option<u64>,
        align: u64,
        wait: WaitStrategy,
    ) -> Result<Shared> {
        if seg.header().kind() != kind {
            return Err(Error::Mismatch {
                resource: seg.resource(),
                what: "kind",
                expected: kind.name(),
                found: seg.header().kind().name(),
            });
        }
        let raw = &seg.header().raw;
        let flags = seg.header().kind_flags();
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Error::corrupt(
                seg.resource(),
                format!("unknown topic flags {flags:#x}"),
            ));
        }
        if raw.params[3] != TOPIC_VERSION {
            return Err(Error::Mismatch {
                resource: seg.resource(),
                what: "topic ring version",
                expected: TOPIC_VERSION.to_string(),
                found: raw.params[3].to_string(),
            });
        }
        if let Some(len) = data_len {
            if raw.params[2] != len {
                return Err(Error::Mismatch {
                    resource: seg.resource(),
                    what: "message size",
                    expected: len.to_string(),
                    found: raw.params[2].to_string(),
                });
            }
        }
        let geo =
            Geometry::new(raw.params[0], raw.params[2], align, raw.params[1]).ok_or_else(|| {
                Error::corrupt(
                    seg.resource(),
                    format!("topic parameters {:?} are out of range", raw.params),
                )
            })?;
        if geo.total as u64 != raw.payload_len || seg.payload_len() < geo.total {
            return Err(Error::corrupt(
                seg.resource(),
                format!(
                    "ring needs {} bytes, payload has {}",
                    geo.total, raw.payload_len
                ),
            ));
        }
        let shape = Shape {
            policy: if flags & FLAG_BLOCK != 0 {
                Policy::Block
            } else {
                Policy::Overwrite
            },
            multi: flags & FLAG_MULTI != 0,
        };
        // SAFETY: the payload is valid for `payload_len >= geo.total` bytes while `seg`
        // lives (kept in the Arc next to the ring), 64-byte aligned, and every process
        // accesses it through the ring protocol.
        let ring = unsafe { Ring::new(seg.payload_ptr(), geo) };
        Ok(Shared {
            seg: Arc::new(seg),
            ring,
            shape,
            wait,
        })
    }

    fn core(&self) -> Result<Core> {
        Core::new(self.seg.clone(), self.ring, self.shape, self.wait)
    }

    fn publisher(&self) -> Result<Core> {
        let core = self.core()?;
        core.attach_publisher()?;
        Ok(core)
    }

    fn subscriber(&self, history: u64) -> Result<Core> {
        let core = self.core()?;
        core.subscribe(history);
        Ok(core)
    }

    fn subscribers(&self) -> u64 {
        self.ring.peers(ROLE_SUB).load(Ordering::Acquire) & (ring::EVER - 1)
    }

    fn stat(&self) -> TopicStat {
        let r = &self.ring;
        let tail = r.tail().load(Ordering::Acquire);
        let mut participants = Vec::new();
        for i in 0..r.geo.entries {
            let o = r.owner(i).load(Ordering::Acquire);
            if o == 0 {
                continue;
            }
            let roles = r.roles(i).load(Ordering::Acquire);
            let cursor = r.cursor(i).load(Ordering::Acquire);
            let subscriber = roles & ROLE_SUB != 0;
            participants.push(ParticipantStat {
                entry: i,
                pid: (o >> 32) as u32,
                publisher: roles & ROLE_PUB != 0,
                subscriber,
                cursor,
                lag: if subscriber {
                    tail.saturating_sub(cursor)
                } else {
                    0
                },
                alive: o & OWNER_DEAD == 0 && owner_alive(&self.seg, o),
            });
        }
        TopicStat {
            capacity: r.geo.cap,
            message_bytes: r.geo.data_len as u64,
            policy: self.shape.policy,
            multi_publisher: self.shape.multi,
            published: tail,
            peer_deaths: r.peer_deaths().load(Ordering::Relaxed),
            participants,
        }
    }
}

/// [`Topic::stat`] for a named topic of either form and any message type (what
/// `shmkit topic stat` shows).
pub fn stat(name: &str) -> Result<TopicStat> {
    let seg = Segment::open(name)?;
    let kind = seg.header().kind();
    let align = match kind {
        Kind::Topic => seg.header().raw.elem_align,
        Kind::ByteTopic => 8,
        other => {
            return Err(Error::Mismatch {
                resource: seg.resource(),
                what: "kind",
                expected: "topic or bytetopic".into(),
                found: other.name(),
            });
        }
    };
    Ok(Shared::open(seg, kind, None, align, WaitStrategy::default())?.stat())
}

/// A snapshot of a topic's participants ([`Topic::stat`]); approximate while it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicStat {
    /// Slots.
    pub capacity: u64,
    /// Bytes of message per slot (the type's size, or a byte topic's `max_message`).
    pub message_bytes: u64,
    /// Slow-subscriber policy.
    pub policy: Policy,
    /// Whether several publishers are allowed.
    pub multi_publisher: bool,
    /// Messages published so far (the next position).
    pub published: u64,
    /// Participants found dead so far.
    pub peer_deaths: u64,
    /// Every taken participant entry.
    pub participants: Vec<ParticipantStat>,
}

/// One participant entry in a [`TopicStat`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantStat {
    /// Entry index.
    pub entry: usize,
    /// Pid of the owner (as it recorded it; a diagnostic).
    pub pid: u32,
    /// Attached as a publisher.
    pub publisher: bool,
    /// Attached as a subscriber.
    pub subscriber: bool,
    /// Subscriber: next position it reads.
    pub cursor: u64,
    /// Subscriber: messages published that it has not read.
    pub lag: u64,
    /// Whether the owner holds its liveness token (the kernel's word).
    pub alive: bool,
}

/// A typed topic: create or open it, then make [`Publisher`]s and [`Subscriber`]s.
#[derive(Debug, Clone)]
pub struct Topic<T: Pod> {
    shared: Shared,
    _t: PhantomData<fn() -> T>,
}

impl<T: Pod> Topic<T> {
    /// Options; finish with [`TopicOptions::create`] or [`TopicOptions::open`].
    pub fn options() -> TopicOptions<T> {
        TopicOptions::default()
    }
    /// Creates a named topic of `capacity` slots with default options.
    pub fn create(name: &str, capacity: u64) -> Result<Self> {
        Self::options().capacity(capacity).create(name)
    }
    /// Opens a named topic.
    pub fn open(name: &str) -> Result<Self> {
        Self::options().open(name)
    }
    /// A publisher handle (refused while another live one exists, unless the topic was
    /// created with several publishers).
    pub fn publisher(&self) -> Result<Publisher<T>> {
        Ok(Publisher::from_core(self.shared.publisher()?))
    }
    /// A subscriber that receives messages published from now on.
    pub fn subscribe(&self) -> Result<Subscriber<T>> {
        self.subscribe_with_history(0)
    }
    /// A subscriber that also receives up to `k` earlier messages still retained (at
    /// most `capacity - 1`).
    pub fn subscribe_with_history(&self, k: u64) -> Result<Subscriber<T>> {
        Ok(Subscriber::from_core(self.shared.subscriber(k)?))
    }
    /// Participants, their positions and liveness.
    pub fn stat(&self) -> TopicStat {
        self.shared.stat()
    }
    /// Subscribers attached now (one load; a subscriber that died counts until a
    /// publisher or [`stat`](Self::stat) notices).
    pub fn subscribers(&self) -> u64 {
        self.shared.subscribers()
    }
    /// Slots.
    pub fn capacity(&self) -> u64 {
        self.shared.ring.geo.cap
    }
    /// The slow-subscriber policy.
    pub fn policy(&self) -> Policy {
        self.shared.shape.policy
    }
    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.shared.seg
    }
}

impl<T: Pod> TopicOptions<T> {
    fn typed_layout(&self, resource: &str) -> Result<(Layout, Geometry)> {
        self.layout(
            resource,
            Kind::Topic,
            size_of::<T>() as u64,
            align_of::<T>() as u64,
            ElemInfo::of::<T>(0),
        )
    }
    fn wrap(&self, seg: Segment) -> Result<Topic<T>> {
        seg.check_elements(Kind::Topic, &ElemInfo::of::<T>(0), None)?;
        Ok(Topic {
            shared: Shared::open(
                seg,
                Kind::Topic,
                Some(size_of::<T>() as u64),
                align_of::<T>() as u64,
                self.wait,
            )?,
            _t: PhantomData,
        })
    }
    /// Creates a named topic (`O_EXCL`).
    pub fn create(&self, name: &str) -> Result<Topic<T>> {
        let (layout, geo) = self.typed_layout(name)?;
        self.wrap(self.segment.create(name, &layout, init_ring(geo))?)
    }
    /// Opens a named topic (its capacity, policy and publishers come from its header).
    pub fn open(&self, name: &str) -> Result<Topic<T>> {
        self.wrap(self.segment.open(name)?)
    }
    /// Opens the topic, or creates it with these options.
    pub fn open_or_create(&self, name: &str) -> Result<(Topic<T>, bool)> {
        let (layout, geo) = self.typed_layout(name)?;
        let (seg, created) = self.segment.open_or_create(name, &layout, init_ring(geo))?;
        Ok((self.wrap(seg)?, created))
    }
    /// Creates an anonymous topic (shared with children forked afterwards).
    pub fn anonymous(&self) -> Result<Topic<T>> {
        let (layout, geo) = self.typed_layout("<anonymous topic>")?;
        self.wrap(self.segment.anonymous(&layout, init_ring(geo))?)
    }
}

/// Options for byte topics ([`ByteTopic::options`]): the setters of [`TopicOptions`],
/// finished with [`create`](Self::create), [`open`](Self::open) or
/// [`anonymous`](Self::anonymous), which return a [`ByteTopic`].
#[derive(Clone, Debug, Default)]
pub struct ByteTopicOptions {
    inner: TopicOptions<u8>,
}

impl ByteTopicOptions {
    fn with(self, set: impl FnOnce(TopicOptions<u8>) -> TopicOptions<u8>) -> Self {
        ByteTopicOptions {
            inner: set(self.inner),
        }
    }
    /// See [`TopicOptions::capacity`].
    pub fn capacity(self, n: u64) -> Self {
        self.with(|o| o.capacity(n))
    }
    /// See [`TopicOptions::max_subscribers`].
    pub fn max_subscribers(self, n: u64) -> Self {
        self.with(|o| o.max_subscribers(n))
    }
    /// See [`TopicOptions::publishers`].
    pub fn publishers(self, n: u64) -> Self {
        self.with(|o| o.publishers(n))
    }
    /// See [`TopicOptions::policy`].
    pub fn policy(self, p: Policy) -> Self {
        self.with(|o| o.policy(p))
    }
    /// See [`TopicOptions::wait`].
    pub fn wait(self, w: WaitStrategy) -> Self {
        self.with(|o| o.wait(w))
    }
    /// See [`TopicOptions::segment`].
    pub fn segment(self, s: SegmentOptions) -> Self {
        self.with(|o| o.segment(s))
    }
}

/// A topic of variable-length byte messages.
#[derive(Debug, Clone)]
pub struct ByteTopic {
    shared: Shared,
    max: usize,
}

impl ByteTopic {
    /// Options; finish with [`create`](ByteTopicOptions::create) or
    /// [`open`](ByteTopicOptions::open), which return a `ByteTopic`.
    pub fn options() -> ByteTopicOptions {
        ByteTopicOptions::default()
    }
    /// Creates a named byte topic of `capacity` messages of at most `max_message` bytes.
    pub fn create(name: &str, capacity: u64, max_message: usize) -> Result<Self> {
        Self::options().capacity(capacity).create(name, max_message)
    }
    /// Opens a named byte topic.
    pub fn open(name: &str) -> Result<Self> {
        Self::options().open(name)
    }
    /// A publisher handle.
    pub fn publisher(&self) -> Result<BytePublisher> {
        Ok(BytePublisher::from_core(self.shared.publisher()?, self.max))
    }
    /// A subscriber that receives messages published from now on.
    pub fn subscribe(&self) -> Result<ByteSubscriber> {
        self.subscribe_with_history(0)
    }
    /// A subscriber that also receives up to `k` earlier messages still retained.
    pub fn subscribe_with_history(&self, k: u64) -> Result<ByteSubscriber> {
        Ok(ByteSubscriber::from_core(
            self.shared.subscriber(k)?,
            self.max,
        ))
    }
    /// Participants, their positions and liveness.
    pub fn stat(&self) -> TopicStat {
        self.shared.stat()
    }
    /// Subscribers attached now (one load; a subscriber that died counts until a
    /// publisher or [`stat`](Self::stat) notices).
    pub fn subscribers(&self) -> u64 {
        self.shared.subscribers()
    }
    /// Slots.
    pub fn capacity(&self) -> u64 {
        self.shared.ring.geo.cap
    }
    /// Largest message.
    pub fn max_message(&self) -> usize {
        self.max
    }
    /// The slow-subscriber policy.
    pub fn policy(&self) -> Policy {
        self.shared.shape.policy
    }
    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.shared.seg
    }
}

impl ByteTopicOptions {
    fn bytes_layout(&self, resource: &str, max_message: usize) -> Result<(Layout, Geometry)> {
        if max_message > MAX_MESSAGE {
            return Err(Error::invalid(
                resource,
                "create byte topic",
                format!("max_message {max_message} exceeds {MAX_MESSAGE}"),
            ));
        }
        self.inner.layout(
            resource,
            Kind::ByteTopic,
            max_message as u64,
            8,
            ElemInfo::bytes(0),
        )
    }
    fn wrap_bytes(&self, seg: Segment) -> Result<ByteTopic> {
        seg.check_elements(Kind::ByteTopic, &ElemInfo::bytes(0), None)?;
        let shared = Shared::open(seg, Kind::ByteTopic, None, 8, self.inner.wait)?;
        let max = shared.ring.geo.data_len;
        Ok(ByteTopic { shared, max })
    }
    /// Creates a named byte topic whose messages are at most `max_message` bytes.
    pub fn create(&self, name: &str, max_message: usize) -> Result<ByteTopic> {
        let (layout, geo) = self.bytes_layout(name, max_message)?;
        self.wrap_bytes(self.inner.segment.create(name, &layout, init_ring(geo))?)
    }
    /// Opens a named byte topic.
    pub fn open(&self, name: &str) -> Result<ByteTopic> {
        self.wrap_bytes(self.inner.segment.open(name)?)
    }
    /// Creates an anonymous byte topic (shared with children forked afterwards).
    pub fn anonymous(&self, max_message: usize) -> Result<ByteTopic> {
        let (layout, geo) = self.bytes_layout("<anonymous byte topic>", max_message)?;
        self.wrap_bytes(self.inner.segment.anonymous(&layout, init_ring(geo))?)
    }
}

/// Compile-time checks: handles are `Send`.
const _: () = {
    const fn send<T: Send>() {}
    send::<Publisher<u64>>();
    send::<Subscriber<u64>>();
    send::<BytePublisher>();
    send::<ByteSubscriber>();
    send::<Topic<u64>>();
};
