//! # shmkit
//!
//! Inter-process communication primitives for Linux built on shared memory: what Python's
//! `multiprocessing` gives a Python program (Value, Array, Lock, Event, Queue, Pipe), typed,
//! robust when a process dies, and measured against every other mechanism.
//!
//! Everything shmkit shares between processes lives in a [`Segment`]: a named, mapped
//! region whose first 256 bytes are a validated [`segment::Header`] saying what the rest
//! is. Typed views ([`Value`], [`Array`], ...) sit on top.
//!
//! | primitive | what it is | pick it when | cost (this machine, see README, docs/ and compare/README.md) |
//! |-----------|------------|--------------|------|
//! | [`Segment`] | named / file-backed / anonymous mapping with a header | you define the layout | one `mmap` |
//! | [`Value`] | one `Pod` value, atomics for integers | a shared counter or flag | an atomic op |
//! | [`Array`] | `[T; n]` of `Pod` | shared tables, foreign shm objects | memory speed |
//! | [`sync`] | robust `Mutex<T>`/`MutexArray<T>`, `Condvar`, `Event`, `RwLock`, `Barrier`, semaphores | locking, signalling; survives a holder's death | uncontended lock+unlock ~0.6x a robust pthread mutex (`shmkit-bench --workload lock`) |
//! | [`MessageQueue`](mq::MessageQueue) | POSIX `mq_open` queue, priorities, pollable | small prioritised messages, interop with other programs | two copies + syscall per message |
//! | [`Pipe`](pipe::Pipe) | anonymous duplex message channel (`SOCK_SEQPACKET`) | parent and child, like Python's `Pipe()` | two copies + syscall per message |
//! | [`SignalListener`](signal::SignalListener) | real-time signal + 64-bit payload via `signalfd` | wake a known pid, no shared object at all | one signal delivery |
//! | [`Fifo`](fifo::Fifo) | named pipe, framed messages (atomic up to 4092 B) or bytes | many writers, one reader, any language | two copies + syscall per message |
//! | [`Latest`](latest::Latest), [`Board`](latest::Board) | seqlock: one writer, lock-free readers, versioned | last-value state: quotes, configuration, sensor readings | a read of 8–64 B ~10 ns uncontended (`cargo bench -p shmkit-compare --bench latest`) |
//! | [`Queue`], [`ByteQueue`] | bounded SPSC/MPMC ring, spin-then-park, zero-copy, joinable | the fast path between processes | 64-byte round trip 1.9–3x a shared cache line, spinning (docs/queues.md) |
//! | [`topic`] | publish/subscribe ring: every subscriber gets every message; Block or Overwrite (`Lagged`) for slow subscribers | one writer, many readers (fan-out) | one write per message whatever the number of subscribers (`shmkit-bench --workload fanout`) |
//! | `aio` (features `async`, `tokio`) | `recv_async`/`send_async`, `Event::wait_async`, `AsyncFd` wrappers of the kernel transports | `.await` instead of blocking a thread; cancellation-safe | nothing on the fast paths; a blocked wait is woken through a `futex_waitv` thread (docs/queues.md) |
//! | `codec::Typed` (feature `serde`) | any serde value as one message of a `ByteQueue`, `Pipe`, `Fifo` or `MessageQueue` (postcard) | structs with strings, vectors, enums | an encode + a decode on top of the transport |
//!
//! shmkit is Linux-only (glibc, x86_64 and aarch64 are tested); it refuses to compile
//! elsewhere.
//!
//! ```
//! use shmkit::Value;
//! let name = format!("doc-lib-{}", std::process::id());
//! let counter = Value::<u64>::create(&name, 0)?;
//! counter.fetch_add(5);
//! let other = Value::<u64>::open(&name)?;
//! assert_eq!(other.load(), 5);
//! shmkit::Segment::unlink(&name)?;
//! # Ok::<(), shmkit::Error>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "shmkit supports Linux only (it relies on /dev/shm, futexes, open file description locks and \
     POSIX message queues as Linux implements them)"
);

// Not under the loom build: the models swap the queue's atomics for loom's, which the
// futex_waitv reactor cannot wait on (and tokio does not build under loom).
#[cfg(all(feature = "async", not(shmkit_loom)))]
pub mod aio;
#[cfg(feature = "serde")]
pub mod codec;
pub mod error;
mod fdwait;
pub mod fifo;
pub mod frame;
pub mod inspect;
pub mod latest;
pub mod liveness;
#[cfg(feature = "log")]
pub mod logging;
pub mod mq;
pub mod name;
pub mod pipe;
pub mod process;
pub mod queue;
pub mod segment;
pub mod signal;
pub mod sync;
pub mod topic;
pub mod value;

pub use error::{Error, Result};
pub use name::{Name, NameKind};
pub use queue::{ByteQueue, Queue};
pub use segment::{ElemInfo, Layout, Segment};
pub use value::{Array, Value};

/// bytemuck, re-exported so that a user needs no dependency of their own for `Pod` types.
///
/// [`Pod`] and [`Zeroable`] are re-exported at the root, traits and derive macros both.
/// The derives name `::bytemuck` in the code they generate; through the re-export, tell
/// them where it is with `#[bytemuck(crate = "shmkit::bytemuck")]`:
///
/// ```
/// #[derive(Clone, Copy, Debug, PartialEq, shmkit::Pod, shmkit::Zeroable)]
/// #[bytemuck(crate = "shmkit::bytemuck")]
/// #[repr(C)]
/// struct Point {
///     x: f64,
///     y: f64,
/// }
///
/// let q = shmkit::Queue::<Point>::options().anonymous()?;
/// q.send(Point { x: 1.0, y: 2.0 })?;
/// assert_eq!(q.recv()?, Point { x: 1.0, y: 2.0 });
/// # Ok::<(), shmkit::Error>(())
/// ```
pub use bytemuck;
pub use bytemuck::{Pod, Zeroable};

/// The Rust blocks of README.md and docs/*.md, compiled and run as doc tests
/// (`cargo test --doc`), so that every example a reader copies works.
#[cfg(doctest)]
mod doc_guides {
    #[doc = include_str!("../README.md")]
    mod readme {}
    #[doc = include_str!("../docs/bridge.md")]
    mod bridge {}
    #[doc = include_str!("../docs/cli.md")]
    mod cli {}
    #[doc = include_str!("../docs/development.md")]
    mod development {}
    #[doc = include_str!("../docs/guarantees.md")]
    mod guarantees {}
    #[doc = include_str!("../docs/latest.md")]
    mod latest {}
    #[doc = include_str!("../docs/overview.md")]
    mod overview {}
    #[doc = include_str!("../docs/processes.md")]
    mod processes {}
    #[doc = include_str!("../docs/queues.md")]
    mod queues {}
    #[doc = include_str!("../docs/sync.md")]
    mod sync {}
    #[doc = include_str!("../docs/topics.md")]
    mod topics {}
    #[doc = include_str!("../docs/transports.md")]
    mod transports {}
    #[doc = include_str!("../docs/trust-model.md")]
    mod trust_model {}
}
