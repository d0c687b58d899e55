//! The list of mechanisms. Adding one = one adapter (a [`Doorbell`](crate::slot::Doorbell),
//! a [`Channel`] or a [`Lock`](crate::locks::Lock)) plus one line here.

use crate::bells::{CondVar, EventFd, Futex, RawSyncEvent, RtSignal, Sem, Spin};
use crate::channel::{Channel, ChannelSpec, Style};
use crate::fdchan::FdChannel;
use crate::floor::FloorChannel;
use crate::ipcchan::IpcChannel;
use crate::locks::{CasSpinlock, LockSpec, PthreadMutex, RawSyncMutex};
use crate::mpmc::{MpmcSpec, MqMpmc, ShmkitMpmc, UnixMpmc};
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

/// Channels that keep one message in flight by design (request/response): rtt and wake
/// only; their stream rows say so.
pub const RTT_ONLY: [&str; 1] = ["iceoryx2-reqres"];

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
            note: "shmkit::queue::Queue<[u8; size]> SPSC, WaitStrategy::Spin both sides; reserve + SendSlot::send_ref / recv_ref, one copy each way; 1 slot (rtt, wake), 8 (stream)",
            make: crate::shmkit_queue::queue_spin,
        },
        ChannelSpec {
            id: "shmkit-queue",
            style: Sleeping,
            max_msg: None,
            note: "shmkit::queue::Queue<[u8; size]> SPSC, default wait (spins up to 50 us, then futex) both sides; one copy each way; 1 slot (rtt, wake), 8 (stream)",
            make: crate::shmkit_queue::queue_adaptive,
        },
        ChannelSpec {
            id: "shmkit-queue-park",
            style: Sleeping,
            max_msg: None,
            note: "shmkit::queue::Queue<[u8; size]> SPSC, WaitStrategy::Park both sides (futex, no spin); one copy each way; 1 slot (rtt, wake), 8 (stream)",
            make: crate::shmkit_queue::queue_park,
        },
        ChannelSpec {
            id: "shmkit-topic-spin",
            style: Spinning,
            max_msg: None,
            note: "shmkit::topic::Topic<[u8; size]> Policy::Block, one subscriber, WaitStrategy::Spin both sides; loan+publish / recv_ref, one copy each way; 2 slots (rtt, wake), 8 (stream)",
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
            note: "shmkit::queue::ByteQueue SPSC, default wait (spins up to 50 us, then futex), send_timeout / recv_timeout into a Vec; max_message = size, 1 slot (rtt, wake), 8 (stream)",
            make: crate::shmkit_queue::bytequeue,
        },
        ChannelSpec {
            id: "shmkit-bytequeue-zc",
            style: Sleeping,
            max_msg: None,
            note: "ByteQueue as shmkit-bytequeue, zero-copy: sender writes the payload into reserve() (SendBytes::write_from_slice), receiver sums it in the slot (recv_ref), then releases",
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
        ChannelSpec {
            id: "iceoryx2-pubsub",
            style: Spinning,
            max_msg: None,
            note: "peer crate iceoryx2 0.10 publish/subscribe of [u8] slices: loan_slice_uninit + write_from_slice + send, polling receive, checked in the sample (zero-copy)",
            make: crate::iceoryx2::pubsub,
        },
        ChannelSpec {
            id: "iceoryx2-pubsub-event",
            style: Sleeping,
            max_msg: None,
            note: "as iceoryx2-pubsub, plus an iceoryx2 event service: notify after each send, the receiver sleeps in Listener::timed_wait when receive finds nothing",
            make: crate::iceoryx2::pubsub_event,
        },
        ChannelSpec {
            id: "iceoryx2-reqres",
            style: Spinning,
            max_msg: None,
            note: "peer crate iceoryx2 0.10 request/response of [u8] slices, client = measuring side, polling both sides, one request in flight",
            make: crate::iceoryx2::reqres,
        },
        ChannelSpec {
            id: "ipmpsc",
            style: Sleeping,
            max_msg: None,
            note: "peer crate ipmpsc 0.5, two one-way channels (file-backed ring, pshared mutex + condvar); send_timeout of one bincode byte string, recv_timeout of a borrowed &[u8] (zero-copy context)",
            make: crate::ipmpsc::IpmpscChannel::boxed,
        },
        ChannelSpec {
            id: "ipmpsc-spin",
            style: Spinning,
            max_msg: None,
            note: "as ipmpsc, the receiver polls ZeroCopyContext::try_recv (spin_loop between polls) instead of sleeping; the send still takes the pshared mutex and broadcasts the condvar",
            make: crate::ipmpsc::IpmpscChannel::spinning,
        },
        ChannelSpec {
            id: "shmem-ipc",
            style: Sleeping,
            max_msg: None,
            note: "peer crate shmem-ipc 0.3, two memfd byte rings with eventfd signals; send_raw / receive_raw copy in and out, poll on the eventfd when full / empty",
            make: crate::shmem_ipc::ShmemIpcChannel::boxed,
        },
        ChannelSpec {
            id: "shmem-ipc-spin",
            style: Spinning,
            max_msg: None,
            note: "as shmem-ipc, both sides poll the unsignalled ring ends (sender_mut().send / receiver_mut().recv, spin_loop between polls), no eventfd",
            make: crate::shmem_ipc::ShmemIpcChannel::spinning,
        },
    ]
}

/// The mechanisms of the `mpmc` workload (P producer processes to C consumer processes,
/// [`crate::mpmc`]).
pub fn mpmc() -> Vec<MpmcSpec> {
    vec![
        MpmcSpec {
            id: "shmkit-queue",
            style: Style::Sleeping,
            note: "shmkit::queue::Queue<[u8; 64]> MPMC, default wait (spins up to 50 us, then futex); reserve+commit / recv_ref; 64 slots",
            make: ShmkitMpmc::boxed,
        },
        MpmcSpec {
            id: "shmkit-queue-park",
            style: Style::Sleeping,
            note: "as shmkit-queue, WaitStrategy::Park (futex, no spin)",
            make: ShmkitMpmc::parked,
        },
        MpmcSpec {
            id: "posix-mq",
            style: Style::Sleeping,
            note: "one queue for all, mq_timedsend / mq_timedreceive, depth <= msg_max",
            make: MqMpmc::boxed,
        },
        MpmcSpec {
            id: "unix-socket",
            style: Style::Sleeping,
            note: "socketpair(AF_UNIX, SOCK_DGRAM) per producer-consumer pair; producers round-robin over consumers, consumers poll",
            make: UnixMpmc::boxed,
        },
    ]
}

/// The channels (ids of [`channels`]) of the `sizes` workload: one-way throughput from
/// 16 B to 16 MiB.
pub fn sizes() -> &'static [&'static str] {
    &[
        "shmkit-bytequeue",
        "shmkit-bytequeue-zc",
        "pipe",
        "unix-socket",
        "shared_memory",
        "iceoryx2-pubsub",
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
    let _ = (Rtt, Stream, Wake);
    Vec::new()
}
