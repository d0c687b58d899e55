//! [`QueueOptions`]: the builder that creates and opens queues (mode, capacity, handles,
//! wait strategy, joinable, requeue_lost) and the ring layout it asks for.

use std::marker::PhantomData;

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::segment::{ElemInfo, Kind, Layout, Segment, SegmentOptions};

use super::ring::{Geometry, MAX_CAPACITY, MAX_HANDLES, MAX_STASH, Ring};
use super::{FLAG_JOINABLE, FLAG_REQUEUE, Mode, Queue, RING_VERSION, STASH_SHIFT, WaitStrategy};

/// Options for creating and opening queues.
///
/// ```
/// use shmkit::queue::{Mode, Queue, WaitStrategy};
/// let name = format!("doc-qopts-{}", std::process::id());
/// let q: Queue<u64> = Queue::options()
///     .mode(Mode::Spsc)
///     .capacity(1024)
///     .wait(WaitStrategy::Spin)
///     .create(&name)?;
/// assert_eq!(q.capacity(), 1024);
/// assert_eq!(q.mode(), Mode::Spsc);
/// // Opening with another mode is refused.
/// assert!(Queue::<u64>::options().mode(Mode::Mpmc).open(&name).is_err());
/// shmkit::Segment::unlink(&name)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct QueueOptions<T> {
    pub(super) mode: Option<Mode>,
    pub(super) capacity: u64,
    pub(super) max_handles: u64,
    pub(super) wait: WaitStrategy,
    pub(super) joinable: bool,
    pub(super) stash: u64,
    pub(super) segment: SegmentOptions,
    pub(super) _t: PhantomData<fn() -> T>,
}

impl<T> Default for QueueOptions<T> {
    fn default() -> Self {
        QueueOptions {
            mode: None,
            capacity: 256,
            max_handles: 64,
            wait: WaitStrategy::default(),
            joinable: false,
            stash: 0,
            segment: SegmentOptions::default(),
            _t: PhantomData,
        }
    }
}

impl<T> QueueOptions<T> {
    /// The mode (default on create: [`Mode::Mpmc`]); on open, the mode the segment must
    /// have (default: whatever it has).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Number of slots, rounded up to a power of two (default 256, at most
    /// [`MAX_CAPACITY`]).
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// How many handles may have the queue open at once (default 64, at most
    /// [`MAX_HANDLES`]); each takes a 128-byte participant entry.
    pub fn max_handles(mut self, n: u64) -> Self {
        self.max_handles = n;
        self
    }

    /// How this handle waits (default [`WaitStrategy::default`]: spin 50 µs, then sleep).
    pub fn wait(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Creates a joinable queue: consumers call [`Queue::task_done`], anyone can
    /// [`Queue::join`]. Costs one uncontended store per receive.
    pub fn joinable(mut self, yes: bool) -> Self {
        self.joinable = yes;
        self
    }

    /// Creates a joinable queue (implies [`joinable(true)`](Self::joinable); MPMC only)
    /// whose tasks survive their consumer: a consumer that receives with
    /// [`Queue::recv_task`] keeps a copy of each task it holds in its participant entry
    /// (at most `depth`, 1..=[`MAX_STASH`]; `depth × max_handles` slots of extra
    /// memory) until [`Task::done`](super::Task::done), and [`Queue::join`] sends the tasks of consumers that
    /// died back into the queue (see "Joinable queues" in the module docs). 0: off.
    pub fn requeue_lost(mut self, depth: u64) -> Self {
        self.stash = depth;
        if depth > 0 {
            self.joinable = true;
        }
        self
    }

    /// Segment options (permission mode, open timeout, unlink on drop).
    pub fn segment(mut self, segment: SegmentOptions) -> Self {
        self.segment = segment;
        self
    }

    pub(super) fn create_layout(
        &self,
        resource: &str,
        kind: Kind,
        data_len: u64,
        data_align: u64,
        elem: impl Fn(u64) -> ElemInfo,
    ) -> Result<(Layout, Geometry)> {
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(Error::invalid(
                resource,
                "create queue",
                format!(
                    "capacity {} is out of range 1..={MAX_CAPACITY}",
                    self.capacity
                ),
            ));
        }
        let cap = self.capacity.next_power_of_two();
        let geo = Geometry::new(cap, data_len, data_align, self.max_handles).ok_or_else(|| {
            Error::invalid(
                resource,
                "create queue",
                format!(
                    "no ring fits capacity {cap}, {data_len}-byte slots aligned to {data_align}, \
                     {} handles (alignment at most 64, at most {MAX_HANDLES} handles, 1 TiB in total)",
                    self.max_handles
                ),
            )
        })?;
        let mode = self.mode.unwrap_or(Mode::Mpmc);
        let mut flags = mode.flags() | if self.joinable { FLAG_JOINABLE } else { 0 };
        let mut geo = geo;
        if self.stash > 0 {
            if mode != Mode::Mpmc || kind != Kind::Queue {
                return Err(Error::invalid(
                    resource,
                    "create queue",
                    "requeue_lost needs an MPMC Queue<T> (re-queuing sends through the joiner's entry)",
                ));
            }
            geo = geo.with_stash(self.stash).ok_or_else(|| {
                Error::invalid(
                    resource,
                    "create queue",
                    format!(
                        "requeue_lost depth {} is out of range 0..={MAX_STASH} (or the stash does not fit)",
                        self.stash
                    ),
                )
            })?;
            flags |= FLAG_REQUEUE | (self.stash as u32) << STASH_SHIFT;
        }
        let layout = Layout::new(kind, elem(cap))
            .with_payload_len(geo.total as u64)
            .with_flags(flags)
            .with_params([cap, self.max_handles, data_len, RING_VERSION]);
        Ok((layout, geo))
    }
}

pub(super) fn init_ring(geo: Geometry) -> impl FnOnce(&mut [u8]) -> Result<()> {
    move |payload| {
        if payload.len() < geo.total {
            return Err(Error::invalid(
                "<queue>",
                "create queue",
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

impl<T: Pod> QueueOptions<T> {
    pub(super) fn layout(&self, resource: &str) -> Result<(Layout, Geometry)> {
        self.create_layout(
            resource,
            Kind::Queue,
            size_of::<T>() as u64,
            align_of::<T>() as u64,
            ElemInfo::of::<T>,
        )
    }

    /// Creates a named queue (`O_EXCL`).
    pub fn create(&self, name: &str) -> Result<Queue<T>> {
        let (layout, geo) = self.layout(name)?;
        let seg = self.segment.create(name, &layout, init_ring(geo))?;
        Queue::from_parts(seg, self)
    }

    /// Opens a named queue.
    pub fn open(&self, name: &str) -> Result<Queue<T>> {
        Queue::from_parts(self.segment.open(name)?, self)
    }

    /// Opens the queue, or creates it with these options.
    pub fn open_or_create(&self, name: &str) -> Result<(Queue<T>, bool)> {
        let (layout, geo) = self.layout(name)?;
        let (seg, created) = self.segment.open_or_create(name, &layout, init_ring(geo))?;
        Ok((Queue::from_parts(seg, self)?, created))
    }

    /// Creates an anonymous queue (shared with children forked afterwards).
    pub fn anonymous(&self) -> Result<Queue<T>> {
        let (layout, geo) = self.layout("<anonymous queue>")?;
        let seg = self.segment.anonymous(&layout, init_ring(geo))?;
        Queue::from_parts(seg, self)
    }

    /// Views an opened segment as a queue.
    pub fn from_segment(&self, seg: Segment) -> Result<Queue<T>> {
        Queue::from_parts(seg, self)
    }
}
