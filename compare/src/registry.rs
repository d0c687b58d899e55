//! The list of mechanisms. Adding one = one adapter (a [`Doorbell`](crate::slot::Doorbell),
//! a [`Channel`] or a [`Lock`](crate::locks::Lock)) plus one line here.

use crate::bells::{CondVar, EventFd, Futex, RawSyncEvent, RtSignal, Sem, Spin};
use crate::channel::{Channel, ChannelSpec, Style};
use crate::fdchan::FdChannel;
use crate::floor::FloorChannel;
use crate::ipcchan::IpcChannel;
use crate::locks::{CasSpinlock, LockSpec, PthreadMutex, RawSyncMutex};
use crate::mq::MqChannel;
use crate::shm::SharedMem;
use crate::shmkit_own::{
    ShmkitCondvar, ShmkitEvent, ShmkitFifo, ShmkitMq, ShmkitMutex, ShmkitPipe, ShmkitSemaphore,
    ShmkitSignal,
};
use crate::slot::SlotChannel;
use crate::suite::Workload;

fn boxed<C: Channel + 'static>(c: C) -> Box<dyn Channel> {
    Box::new(c)
}

/// Every message-passing mechanism, the floor first. Used by rtt, stream and wake.
pub fn channels() -> Vec<ChannelSpec> {
    use Style::{Sleeping, Spinning};
    vec![
        ChannelSpec {
            id: "spin-floor",
            style: Spinning,
            max_msg: None,
            note: "classic ping-pong: turn word + message per direction, receiver spins; the floor",
            make: FloorChannel::boxed,
        },
        ChannelSpec {
            id: "futex",
            style: Sleeping,
            max_msg: None,
            note: "raw FUTEX_WAIT/WAKE on the slot word, no spin phase",
            make: |p| Ok(boxed(SlotChannel::<Futex>::new(p)?)),
        },
        ChannelSpec {
            id: "pipe",
            style: Sleeping,
            max_msg: None,
            note: "two pipe(2)s, blocking read/write",
            make: FdChannel::pipe,
        },
        ChannelSpec {
            id: "fifo",
            style: Sleeping,
            max_msg: None,
            note: "two mkfifo(3) FIFOs, blocking read/write",
            make: FdChannel::fifo,
        },
        ChannelSpec {
            id: "unix-socket",
            style: Sleeping,
            max_msg: None,
            note: "socketpair(AF_UNIX, SOCK_STREAM)",
            make: FdChannel::unix_socket,
        },
        ChannelSpec {
            id: "eventfd",
            style: Sleeping,
            max_msg: None,
            note: "payload in shm, eventfd poll+read/write",
            make: |p| Ok(boxed(SlotChannel::<EventFd>::new(p)?)),
        },
        ChannelSpec {
            id: "posix-mq",
            style: Sleeping,
            max_msg: Some(crate::mq::msgsize_max()),
            note: "mq_timedsend/mq_timedreceive, depth <= msg_max",
            make: MqChannel::boxed,
        },
        ChannelSpec {
            id: "rt-signal",
            style: Sleeping,
            max_msg: None,
            note: "payload in shm, sigqueue + sigtimedwait",
            make: |p| Ok(boxed(SlotChannel::<RtSignal>::new(p)?)),
        },
        ChannelSpec {
            id: "sem-pshared",
            style: Sleeping,
            max_msg: None,
            note: "payload in shm, sem_post/sem_timedwait",
            make: |p| Ok(boxed(SlotChannel::<Sem>::new(p)?)),
        },
        ChannelSpec {
            id: "pthread-mutex-condvar",
            style: Sleeping,
            max_msg: None,
            note: "payload in shm, pshared mutex + condvar",
            make: |p| Ok(boxed(SlotChannel::<CondVar>::new(p)?)),
        },
        ChannelSpec {
            id: "shmkit-event",
            style: Sleeping,
            max_msg: None,
            note: "payload in shm, shmkit::sync::Event set / wait_timeout + clear",
            make: |p| Ok(boxed(SlotChannel::<ShmkitEvent>::new(p)?)),
        },
        ChannelSpec {
            id: "shmkit-event-async",
            style: Sleeping,
            max_msg: None,
            note: "as shmkit-event, the sleeper awaits Event::wait_timeout_async on a tokio current-thread runtime",
            make: |p| {
                Ok(boxed(
                    SlotChannel::<crate::shmkit_async::ShmkitEventAsync>::new(p)?,
                ))
            },
        },
        ChannelSpec {
            id: "shmkit-semaphore",
            style: Sleeping,
            max_msg: None,
            note: "payload in shm, shmkit::sync::Semaphore post / wait_timeout",
            make: |p| Ok(boxed(SlotChannel::<ShmkitSemaphore>::new(p)?)),
        },
        ChannelSpec {
            id: "shmkit-condvar",
            style: Sleeping,
            max_msg: None,
            note: "payload in shm, shmkit::sync::Mutex + Condvar (futex seq word)",
            make: |p| Ok(boxed(SlotChannel::<ShmkitCondvar>::new(p)?)),
        },
        ChannelSpec {
            id: "shmkit-signal",
            style: Sleeping,
            max_msg: None,
            note: "payload in shm, shmkit::signal notify (sigqueue) / signalfd listener",
            make: |p| Ok(boxed(SlotChannel::<ShmkitSignal>::new(p)?)),
        },
        ChannelSpec {
            id: "shmkit-fifo",
            style: Sleeping,
            max_msg: Some(shmkit::fifo::MAX_ATOMIC_PAYLOAD),
            note: "shmkit::fifo framed messages (atomic frames <= PIPE_BUF)",
            make: ShmkitFifo::boxed,
        },
        ChannelSpec {
            id: "shmkit-pipe",
            style: Sleeping,
            max_msg: None,
            note: "shmkit::pipe::Pipe (SOCK_SEQPACKET pair, multi-packet messages)",
            make: ShmkitPipe::boxed,
        },
        ChannelSpec {
            id: "shmkit-mq",
            style: Sleeping,
            max_msg: Some(crate::mq::msgsize_max()),
            note: "shmkit::mq::MessageQueue send_timeout / recv_timeout",
            make: ShmkitMq::boxed,
        },
        ChannelSpec {
            id: "shmkit-queue-spin",
            style: Spinning,
            max_msg: None,
            note: "shmkit::queue::Queue<[u8; size]> SPSC, WaitStrategy::Spin both sides; reserve+commit / recv_ref, one copy each way; 256 slots (rtt, wake), 8 (stream)",
            make: crate::shmkit_queue::queue_spin,
        },
        ChannelSpec {
            id: "shmkit-queue-park",
            style: Sleeping,
            max_msg: None,
            note: "shmkit::queue::Queue<[u8; size]> SPSC, WaitStrategy::Park both sides (futex, no spin); one copy each way; 256 slots (rtt, wake), 8 (stream)",
            make: crate::shmkit_queue::queue_park,
        },
        ChannelSpec {
            id: "shmkit-topic-spin",
            style: Spinning,
            max_msg: None,
            note: "shmkit::topic::Topic<[u8; size]> Policy::Block, one subscriber, WaitStrategy::Spin both sides; loan+publish / recv_ref, one copy each way; 256 slots (rtt, wake), 8 (stream)",
            make: crate::shmkit_topic::topic_spin,
        },
        ChannelSpec {
            id: "shmkit-topic-park",
            style: Sleeping,
            max_msg: None,
            note: "shmkit::topic::Topic<[u8; size]> as shmkit-topic-spin, WaitStrategy::Park both sides (futex, no spin)",
            make: crate::shmkit_topic::topic_park,
        },
        ChannelSpec {
            id: "shmkit-queue-async",
            style: Sleeping,
            max_msg: None,
            note: "shmkit::queue::Queue<[u8; size]> SPSC as shmkit-queue-park, reserve_async + commit / recv_ref_async (one copy each way) on a tokio current-thread runtime per side, woken through shmkit's futex_waitv thread; block_on only when it must wait",
            make: crate::shmkit_async::queue_async,
        },
        ChannelSpec {
            id: "shmkit-bytequeue",
            style: Sleeping,
            max_msg: None,
            note: "shmkit::queue::ByteQueue SPSC, default wait (spins up to 50 us, then futex), send_timeout / recv_timeout into a Vec; max_message = size, 256 slots (rtt, wake), 8 (stream)",
            make: crate::shmkit_queue::bytequeue,
        },
        ChannelSpec {
            id: "shmkit-bytequeue-zc",
            style: Sleeping,
            max_msg: None,
            note: "ByteQueue as shmkit-bytequeue, zero-copy: sender writes the payload into reserve(), receiver sums it in the slot (recv_ref), then releases",
            make: crate::shmkit_queue::bytequeue_zc,
        },
        ChannelSpec {
            id: "raw_sync-event",
            style: Sleeping,
            max_msg: None,
            note: "peer crate raw_sync 0.1.5 Event (auto-reset)",
            make: |p| Ok(boxed(SlotChannel::<RawSyncEvent>::new(p)?)),
        },
        ChannelSpec {
            id: "shared_memory",
            style: Spinning,
            max_msg: None,
            note: "peer crate shared_memory 0.12.4 mapping, spin slots",
            make: |p| {
                Ok(boxed(SlotChannel::<Spin>::with_mem(
                    p,
                    SharedMem::shared_memory_crate,
                )?))
            },
        },
        ChannelSpec {
            id: "ipc-channel",
            style: Sleeping,
            max_msg: None,
            note: "peer crate ipc-channel 0.23 bytes_channel (SOCK_SEQPACKET), a Vec per recv",
            make: IpcChannel::boxed,
        },
    ]
}

/// Every lock mechanism, the CAS spinlock (the lock floor) first.
pub fn locks() -> Vec<LockSpec> {
    vec![
        LockSpec {
            id: "cas-spinlock",
            style: Style::Spinning,
            note: "test-and-test-and-set on one AtomicU32",
            make: CasSpinlock::boxed,
        },
        LockSpec {
            id: "pthread-mutex",
            style: Style::Sleeping,
            note: "pshared pthread_mutex_t",
            make: PthreadMutex::plain,
        },
        LockSpec {
            id: "pthread-robust-mutex",
            style: Style::Sleeping,
            note: "pshared + PTHREAD_MUTEX_ROBUST",
            make: PthreadMutex::robust,
        },
        LockSpec {
            id: "shmkit-mutex",
            style: Style::Sleeping,
            note: "shmkit::sync::Mutex<()>: own futex mutex, robust by liveness token",
            make: ShmkitMutex::boxed,
        },
        LockSpec {
            id: "raw_sync-mutex",
            style: Style::Sleeping,
            note: "peer crate raw_sync 0.1.5 Mutex (pshared, not robust)",
            make: RawSyncMutex::boxed,
        },
    ]
}

/// A mechanism that cannot run here, with the reason (listed, never dropped silently).
#[derive(Debug, Clone, Copy)]
pub struct Unavailable {
    /// Stable id.
    pub id: &'static str,
    /// The workloads it would appear in.
    pub workloads: &'static [Workload],
    /// Why it is not measured.
    pub reason: &'static str,
}

/// Mechanisms from the issue that are not measured in this build.
pub fn unavailable() -> Vec<Unavailable> {
    use Workload::{Rtt, Stream, Wake};
    vec![Unavailable {
        id: "iceoryx2",
        workloads: &[Rtt, Stream, Wake],
        reason: "not built: iceoryx2 0.10 resolves to ~90 crates including bindgen + clang-sys \
                 (libclang) and C code built with cc, far over the ~2 min extra compile budget \
                 on this shared 2-core machine",
    }]
}
