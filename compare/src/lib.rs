//! # shmkit-compare
//!
//! The comparison harness of shmkit: every IPC mechanism against the others and against the
//! hardware floor, through the same workloads, in two real processes pinned to different
//! cores. The criterion benches in `compare/benches/` and the benchmark driver
//! ([`report`]: the `shmkit-bench` binary, and `shmkit bench` when the CLI is built with
//! its `bench` feature) both use the adapters defined here, so each mechanism is written
//! once. The measurement examples (`compare/examples/`) live here too.
//!
//! This crate is separate from the `shmkit` library on purpose: the peer crates it compares
//! against (raw_sync, shared_memory, ...) stay out of the library's dependency tree, and
//! out of the `shmkit` command's unless it is built with `--features bench`.
//!
//! ## Workloads ([`suite::Workload`])
//! - **rtt**: round trip of a 64 B / 4 KiB message ([`measure::rtt`]).
//! - **stream**: one-way throughput at 64 B ... 1 MiB ([`measure::stream`]), against
//!   single-process memcpy ([`measure::memcpy_bandwidth`]).
//! - **lock**: lock + unlock, uncontended in one process and contended by two
//!   ([`measure::lock_uncontended`], [`measure::lock_contended`]).
//! - **wake**: time from the notify call in one process to the waiter running in the other
//!   ([`measure::wake`]).
//! - **mpmc**: P producer processes to C consumer processes (P, C in 1, 2, 4, 8),
//!   aggregate messages per second ([`mpmc`]).
//! - **sizes**: one-way throughput from 16 B to 16 MiB in powers of 4
//!   ([`measure::stream_shaped`]), against memcpy.
//! - **pool**: `Pool.map` over `available_parallelism` worker processes, not pinned:
//!   100,000 trivial tasks (tasks/s) and 1,000 tasks of 1 ms (overhead per task),
//!   `shmkit-pool` against `python-mp-pool` ([`pool`]); the program running it calls
//!   `shmkit::process::init(&shmkit_compare::pool::ENTRIES)` first in `main`.
//!
//! Python's `multiprocessing` (`python-mp-pipe`, `-queue`, `-simplequeue`) takes part in
//! rtt and stream through a script with both ends in Python ([`python_mp`]); it is not a
//! [`Channel`], so it has no line in the registry.
//!
//! - **bridge**: shmkit through `shmkit-bridge` and zenoh (`shmkit-bridge`) against zenoh
//!   used directly (`zenoh-pubsub`) and a TCP socket pair (`tcp-loopback`), rtt and
//!   stream at 64 B and 64 KiB, measured by the bridge crate's own program run as an
//!   external process so that zenoh stays out of this crate's build ([`bridge`]).
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
//!    - a lock: implement [`locks::Lock`];
//!    - a many-to-many mechanism for the `mpmc` workload: implement
//!      [`mpmc::MpmcChannel`].
//!
//!    Create everything in the constructor (the parent, before the fork); the forked peer
//!    inherits the mappings and descriptors.
//! 2. Add one line to [`registry::channels`], [`registry::locks`] or [`registry::mpmc`]
//!    (and the id to [`registry::sizes`] for the size sweep) with the stable id
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
pub mod bridge;
pub mod channel;
pub mod fanout;
pub mod fdchan;
pub mod floor;
pub mod iceoryx2;
pub mod ipcchan;
pub mod ipmpsc;
pub mod locks;
pub mod measure;
pub mod mpmc;
pub mod mq;
pub mod payload;
pub mod pool;
pub mod proc;
pub mod python_mp;
pub mod registry;
pub mod report;
pub mod shm;
pub mod shmem_ipc;
pub mod shmkit_async;
pub mod shmkit_own;
pub mod shmkit_queue;
pub mod shmkit_topic;
pub mod slot;
pub mod suite;

pub use channel::{Channel, ChannelParams, ChannelSpec, Side, Style};
pub use proc::Placement;
