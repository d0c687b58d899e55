//! # shmkit-compare
//!
//! The comparison harness of shmkit: every IPC mechanism against the others and against the
//! hardware floor, through the same workloads, in two real processes pinned to different
//! cores. The criterion benches in `compare/benches/` and the `shmkit bench` command both
//! use the adapters defined here, so each mechanism is written once.
//!
//! This crate is separate from the `shmkit` library on purpose: the peer crates it compares
//! against (raw_sync, shared_memory, ...) stay out of the library's dependency tree.
//!
//! ## Workloads ([`suite::Workload`])
//! - **rtt**: round trip of a 64 B / 4 KiB message ([`measure::rtt`]).
//! - **stream**: one-way throughput at 64 B ... 1 MiB ([`measure::stream`]), against
//!   single-process memcpy ([`measure::memcpy_bandwidth`]).
//! - **lock**: lock + unlock, uncontended in one process and contended by two
//!   ([`measure::lock_uncontended`], [`measure::lock_contended`]).
//! - **wake**: time from the notify call in one process to the waiter running in the other
//!   ([`measure::wake`]).
//! - **pool**: `Pool.map` over `available_parallelism` worker processes, not pinned:
//!   100,000 trivial tasks (tasks/s) and 1,000 tasks of 1 ms (overhead per task),
//!   `shmkit-pool` against `python-mp-pool` ([`pool`]); the program running it calls
//!   `shmkit::process::init(&shmkit_compare::pool::ENTRIES)` first in `main`.
//!
//! ## Adding a mechanism
//! 1. Write one adapter in a new file of `compare/src/`:
//!    - a message mechanism whose bytes travel in shared memory and that only differs in
//!      how a side sleeps and is woken: implement [`slot::Doorbell`] (see `bells.rs`:
//!      `sleep` on your side's bell, `ring` the other side's) and use
//!      `SlotChannel::<YourBell>`;
//!    - a mechanism that carries the bytes itself (a queue, a pipe-like object): implement
//!      [`Channel`] (`attach` after the fork, `send` / `recv` of exactly `size` bytes,
//!      every wait bounded); a mechanism that hands a received message out in memory of
//!      its own (its receive buffer, or zero-copy the shared slot) also implements
//!      [`Channel::has_recv_view`] / [`Channel::recv_view`], and the workloads check the
//!      message there instead of copying it into their buffer first (see
//!      `shmkit_queue.rs`);
//!    - a lock: implement [`locks::Lock`].
//!
//!    Create everything in the constructor (the parent, before the fork); the forked peer
//!    inherits the mappings and descriptors.
//! 2. Add one line to [`registry::channels`] or [`registry::locks`] with the stable id
//!    (`shmkit-event`, `shmkit-queue-spin`, ...), whether it spins or sleeps, its message
//!    limit, and a short note. The benches, `shmkit bench` and the integration tests pick
//!    it up from there.
//!
//! ```
//! use shmkit_compare::{registry, measure, Placement};
//! let floor = registry::channels().into_iter().find(|c| c.id == "spin-floor").unwrap();
//! let m = measure::rtt(&floor, 64, 100, 640, Placement::detect())?;
//! assert!(m.median_ns > 0.0);
//! # Ok::<(), shmkit::Error>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod bells;
pub mod channel;
pub mod fanout;
pub mod fdchan;
pub mod floor;
pub mod ipcchan;
pub mod locks;
pub mod measure;
pub mod mq;
pub mod payload;
pub mod pool;
pub mod proc;
pub mod registry;
pub mod shm;
pub mod shmkit_async;
pub mod shmkit_own;
pub mod shmkit_queue;
pub mod shmkit_topic;
pub mod slot;
pub mod suite;

pub use channel::{Channel, ChannelParams, ChannelSpec, Side, Style};
pub use proc::Placement;
