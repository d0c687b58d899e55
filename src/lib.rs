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
//! | primitive | what it is | pick it when | cost (this machine, see README) |
//! |-----------|------------|--------------|------|
//! | [`Segment`] | named / file-backed / anonymous mapping with a header | you define the layout | one `mmap` |
//! | [`Value`] | one `Pod` value, atomics for integers | a shared counter or flag | an atomic op |
//! | [`Array`] | `[T; n]` of `Pod` | shared tables, foreign shm objects | memory speed |
//! | [`sync`] | robust `Mutex<T>`/`MutexArray<T>`, `Condvar`, `Event`, `RwLock`, `Barrier`, semaphores | locking, signalling; survives a holder's death | uncontended lock+unlock ~ a robust pthread mutex |
//! | [`MessageQueue`](mq::MessageQueue) | POSIX `mq_open` queue, priorities, pollable | small prioritised messages, interop with other programs | two copies + syscall per message |
//! | [`Pipe`](pipe::Pipe) | anonymous duplex message channel (`SOCK_SEQPACKET`) | parent and child, like Python's `Pipe()` | two copies + syscall per message |
//! | [`SignalListener`](signal::SignalListener) | real-time signal + 64-bit payload via `signalfd` | wake a known pid, no shared object at all | one signal delivery |
//! | [`Fifo`](fifo::Fifo) | named pipe, framed messages (atomic up to 4092 B) or bytes | many writers, one reader, any language | two copies + syscall per message |
//! | [`Queue`], [`ByteQueue`] | bounded SPSC/MPMC ring, spin-then-park, zero-copy, joinable | the fast path between processes | 64-byte round trip 1.9–3x a shared cache line, spinning (README) |
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
    "shmkit supports Linux only (it relies on /dev/shm, futexes, robust pthread mutexes and \
     POSIX message queues as Linux implements them)"
);

pub mod error;
mod fdwait;
pub mod fifo;
pub mod frame;
pub mod liveness;
pub mod mq;
pub mod name;
pub mod pipe;
pub mod process;
pub mod queue;
pub mod segment;
pub mod signal;
pub mod sync;
pub mod value;

pub use error::{Error, Result};
pub use name::{Name, NameKind};
pub use queue::{ByteQueue, Queue};
pub use segment::{ElemInfo, Layout, Segment};
pub use value::{Array, Value};
