//! `iceoryx2` (peer crate, 0.10) in the comparison: `iceoryx2-pubsub` (publish/subscribe,
//! polling receiver; also in the `fanout` workload through [`FanService`]),
//! `iceoryx2-pubsub-event` (the same, plus an event service to sleep on) and
//! `iceoryx2-reqres` (request/response, polling, rtt and wake only).
//!
//! Each run gets its own iceoryx2 [`Config`]: a unique file prefix for the shared-memory
//! objects in `/dev/shm` (`iox2_shmkit_<pid>_<n>_`) and a unique root directory for the
//! static configs, node files and event sockets (`/tmp/iceoryx2/shmkit-<pid>-<n>/`). The
//! forked peer leaves through `_exit` and never drops its iceoryx2 objects, so the
//! parent's [`Drop`] first drops its own ports and node, then removes every
//! `/dev/shm` entry with the run's prefix and the run's root directory: a run leaves
//! nothing behind whatever the peer did.
//!
//! Set-up: the parent creates its node and the services in the constructor (before the
//! fork); after the fork each side creates its own ports (the peer with a node of its own,
//! opening the services), and [`Channel::attach`] waits, bounded, until the other side's
//! ports are registered, so no message is sent into a service nobody reads yet. The
//! pub/sub adapters then exchange one untimed sample each way: only once a subscriber has
//! received does iceoryx2 count the connection as connected on both ends, and before that
//! a publisher facing a full subscriber buffer drops the sample instead of waiting (seen
//! as "no subscriber received the sample" in the stream workload's first burst).
//!
//! Payload: `[u8]` slices of the message size (`initial_max_slice_len` = size). The sender
//! loans an uninitialised sample (`loan_slice_uninit`), writes the whole message into it
//! (`write_from_slice`) and sends it; the receiver checks the payload in place, in the
//! received sample ([`Channel::recv_view`]: zero-copy, iceoryx2's point), and releases the
//! sample by dropping it.
//!
//! Waits: the polling variants spin on `receive()` (and iceoryx2 itself spins when a full
//! subscriber buffer pushes back on the publisher); the event variant, after a `receive()`
//! that found nothing, sleeps in `Listener::timed_wait` until the sender's `notify()`
//! after each send. Every wait is bounded by [`WAIT_LIMIT`]: the polls by the clock, the
//! listener by its timeout, the publisher's back-pressure by a handler that gives up
//! after [`WAIT_LIMIT`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use iceoryx2::port::BackpressureAction;
use iceoryx2::port::client::Client;
use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::server::Server;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use nix::unistd::Pid;
use shmkit::{Error, Result};

use crate::channel::{Channel, ChannelParams, Side};
use crate::slot::WAIT_LIMIT;

type Ipc = ipc::Service;
type PubSub = iceoryx2::service::port_factory::publish_subscribe::PortFactory<Ipc, [u8], ()>;
type Event = iceoryx2::service::port_factory::event::PortFactory<Ipc>;
type ReqRes =
    iceoryx2::service::port_factory::request_response::PortFactory<Ipc, [u8], (), [u8], ()>;
type IoxClient = Client<Ipc, [u8], (), [u8], ()>;
type IoxServer = Server<Ipc, [u8], (), [u8], ()>;
type PendingResponse = iceoryx2::pending_response::PendingResponse<Ipc, [u8], (), [u8], ()>;
type ActiveRequest = iceoryx2::active_request::ActiveRequest<Ipc, [u8], (), [u8], ()>;

/// Runs made by this process (part of the unique prefix).
static RUNS: AtomicU64 = AtomicU64::new(0);

fn err(op: &'static str, e: impl std::fmt::Debug) -> Error {
    Error::invalid("iceoryx2", op, format!("{e:?}"))
}

fn disconnected(op: &'static str, detail: impl Into<String>) -> Error {
    Error::Disconnected {
        resource: "iceoryx2".into(),
        op,
        detail: Some(detail.into()),
    }
}

fn timeout(op: &'static str) -> Error {
    Error::Timeout {
        resource: "iceoryx2".into(),
        op,
        timeout: WAIT_LIMIT,
    }
}

/// Spins until `ready` holds, bounded by [`WAIT_LIMIT`].
fn poll_until(op: &'static str, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        if ready()? {
            return Ok(());
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins & 0x3FF == 0 && start.elapsed() > WAIT_LIMIT {
            return Err(timeout(op));
        }
    }
}

/// The files of one run: its config (unique prefix and root directory) and what `Drop`
/// removes.
struct Run {
    config: Config,
    prefix: String,
    root: std::path::PathBuf,
}

impl Run {
    fn new() -> Result<Run> {
        // iceoryx2 logs every failure it returns on stderr; the harness reports errors
        // itself.
        set_log_level(LogLevel::Fatal);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("iox2_shmkit_{pid}_{n}_");
        let root = format!("/tmp/iceoryx2/shmkit-{pid}-{n}/");
        let mut config = Config::default();
        config.global.prefix =
            FileName::new(prefix.as_bytes()).map_err(|e| err("config prefix", e))?;
        config
            .global
            .set_root_path(&Path::new(root.as_bytes()).map_err(|e| err("config root", e))?);
        Ok(Run {
            config,
            prefix,
            root: root.into(),
        })
    }

    fn node(&self) -> Result<Node<Ipc>> {
        NodeBuilder::new()
            .config(&self.config)
            .signal_handling_mode(SignalHandlingMode::Disabled)
            .create::<Ipc>()
            .map_err(|e| err("create node", e))
    }

    /// Removes everything the run created, also what the `_exit`ed peer left.
    fn remove_files(&self) {
        if let Ok(dir) = std::fs::read_dir("/dev/shm") {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
        // The shared parent directory goes too when no other run uses it.
        let _ = std::fs::remove_dir("/tmp/iceoryx2");
    }
}

fn name(s: &str) -> Result<ServiceName> {
    ServiceName::new(s).map_err(|e| err("service name", e))
}

/// Back-pressure: retry (iceoryx2 spins) while the subscriber's buffer is full, give up
/// after [`WAIT_LIMIT`] so a dead subscriber cannot hang the sender.
fn bounded_backpressure(info: &iceoryx2::port::BackpressureInfo) -> BackpressureAction {
    if info.elapsed_time > WAIT_LIMIT {
        BackpressureAction::DiscardDataAndFail
    } else {
        BackpressureAction::Retry
    }
}

/// Creates or opens a pub/sub service of `[u8]` slices that drops nothing: no safe
/// overflow, history 0, subscriber buffers of up to `depth` samples, one publisher.
fn pubsub_service(
    node: &Node<Ipc>,
    name: &ServiceName,
    depth: usize,
    subscribers: usize,
    create: bool,
) -> Result<PubSub> {
    let b = node
        .service_builder(name)
        .publish_subscribe::<[u8]>()
        .enable_safe_overflow(false)
        .subscriber_max_buffer_size(depth)
        .subscriber_max_borrowed_samples(1)
        .history_size(0)
        .max_publishers(1)
        .max_subscribers(subscribers)
        .max_nodes(subscribers + 1);
    if create {
        b.create().map_err(|e| err("pub/sub service", e))
    } else {
        b.open().map_err(|e| err("pub/sub service", e))
    }
}

/// A publisher of `size`-byte slices, one loan at a time, waiting (bounded) on full
/// subscriber buffers.
fn publisher(service: &PubSub, size: usize) -> Result<Publisher<Ipc, [u8], ()>> {
    service
        .publisher_builder()
        .initial_max_slice_len(size)
        .max_loaned_samples(1)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .set_backpressure_handler(bounded_backpressure)
        .create()
        .map_err(|e| err("create publisher", e))
}

/// A subscriber buffering up to `depth` samples.
fn subscriber(service: &PubSub, depth: usize) -> Result<Subscriber<Ipc, [u8], ()>> {
    service
        .subscriber_builder()
        .buffer_size(depth)
        .create()
        .map_err(|e| err("create subscriber", e))
}

// ---------------------------------------------------------------------------------------
// publish/subscribe

/// The services of a pub/sub channel: index 0 carries parent -> child, 1 child -> parent.
struct PubSubServices {
    data: [PubSub; 2],
    events: Option<[Event; 2]>,
}

/// The ports of one side.
struct PubSubPorts {
    tx: Publisher<Ipc, [u8], ()>,
    rx: Subscriber<Ipc, [u8], ()>,
    notify: Option<Notifier<Ipc>>,
    listen: Option<Listener<Ipc>>,
}

struct PubSubInner {
    // Field order is drop order: ports, then services, then nodes.
    ports: Option<PubSubPorts>,
    own: Option<(PubSubServices, Node<Ipc>)>,
    parent: (PubSubServices, Node<Ipc>),
}

/// `iceoryx2-pubsub` and `iceoryx2-pubsub-event`.
pub struct PubSubChannel {
    inner: Option<PubSubInner>,
    run: Run,
    size: usize,
    depth: usize,
    event: bool,
    tag: String,
}

/// `iceoryx2-pubsub`: polling receiver.
pub fn pubsub(p: ChannelParams) -> Result<Box<dyn Channel>> {
    PubSubChannel::boxed(p, false)
}

/// `iceoryx2-pubsub-event`: the receiver sleeps on an event service.
pub fn pubsub_event(p: ChannelParams) -> Result<Box<dyn Channel>> {
    PubSubChannel::boxed(p, true)
}

impl PubSubChannel {
    fn boxed(p: ChannelParams, event: bool) -> Result<Box<dyn Channel>> {
        let run = Run::new()?;
        let tag = format!("shmkit/{}", std::process::id());
        let depth = p.depth.max(1);
        let mut ch = PubSubChannel {
            inner: None,
            run,
            size: p.size,
            depth,
            event,
            tag,
        };
        let node = ch.run.node()?;
        let services = ch.services(&node, true)?;
        ch.inner = Some(PubSubInner {
            ports: None,
            own: None,
            parent: (services, node),
        });
        Ok(Box::new(ch))
    }

    fn services(&self, node: &Node<Ipc>, create: bool) -> Result<PubSubServices> {
        let data = |dir: &str| -> Result<PubSub> {
            let name = name(&format!("{}/{dir}", self.tag))?;
            pubsub_service(node, &name, self.depth, 1, create)
        };
        let event = |dir: &str| -> Result<Event> {
            let b = node
                .service_builder(&name(&format!("{}/{dir}-event", self.tag))?)
                .event()
                .max_notifiers(1)
                .max_listeners(1)
                .max_nodes(2);
            if create {
                b.create().map_err(|e| err("event service", e))
            } else {
                b.open().map_err(|e| err("event service", e))
            }
        };
        Ok(PubSubServices {
            data: [data("ping")?, data("pong")?],
            events: if self.event {
                Some([event("ping")?, event("pong")?])
            } else {
                None
            },
        })
    }
}

impl Channel for PubSubChannel {
    fn attach(&mut self, side: Side, _peer: Pid) -> Result<()> {
        let mut inner = self
            .inner
            .take()
            .ok_or_else(|| disconnected("attach", "channel already torn down"))?;
        if side == Side::Child {
            let node = self.run.node()?;
            let services = self.services(&node, false)?;
            inner.own = Some((services, node));
        }
        let services = match &inner.own {
            Some((s, _)) => s,
            None => &inner.parent.0,
        };
        let (out, back) = (side.index(), side.peer().index());
        let tx = publisher(&services.data[out], self.size)?;
        let rx = subscriber(&services.data[back], self.depth)?;
        let (notify, listen) = match &services.events {
            Some(ev) => (
                Some(
                    ev[out]
                        .notifier_builder()
                        .create()
                        .map_err(|e| err("create notifier", e))?,
                ),
                Some(
                    ev[back]
                        .listener_builder()
                        .create()
                        .map_err(|e| err("create listener", e))?,
                ),
            ),
            None => (None, None),
        };
        // Wait until the other side's ports exist, so the first message has a reader.
        poll_until("attach: wait for the peer's ports", || {
            let ready = services.data[out].dynamic_config().number_of_subscribers() >= 1
                && services.data[back].dynamic_config().number_of_publishers() >= 1
                && services.events.as_ref().is_none_or(|ev| {
                    ev[out].dynamic_config().number_of_listeners() >= 1
                        && ev[back].dynamic_config().number_of_notifiers() >= 1
                });
            Ok(ready)
        })?;
        // Handshake: one sample each way, outside the workload. A publisher's first send
        // creates its side of the connection, a subscriber's receive attaches the other
        // side; until both happened, a publisher that finds the subscriber's buffer full
        // does not wait but drops the sample ("no connected receiver"), which the stream
        // workload's first burst would hit.
        let hello = vec![0u8; self.size];
        poll_until("attach: hello reaches the peer's subscriber", || {
            let delivered = tx
                .loan_slice_uninit(self.size)
                .map_err(|e| err("loan_slice_uninit", e))?
                .write_from_slice(&hello)
                .send()
                .map_err(|e| err("send", e))?;
            Ok(delivered > 0)
        })?;
        poll_until("attach: handshake", || {
            Ok(rx.receive().map_err(|e| err("receive", e))?.is_some())
        })?;
        inner.ports = Some(PubSubPorts {
            tx,
            rx,
            notify,
            listen,
        });
        self.inner = Some(inner);
        Ok(())
    }

    #[inline]
    fn send(&mut self, _side: Side, msg: &[u8]) -> Result<()> {
        let ports = self
            .inner
            .as_ref()
            .and_then(|i| i.ports.as_ref())
            .ok_or_else(|| disconnected("send", "not attached"))?;
        // A sample no subscriber received went to nobody: sending it again cannot
        // duplicate it. Under load iceoryx2 occasionally reports no connected subscriber
        // for a moment after the attach handshake; retry, bounded by WAIT_LIMIT.
        let start = Instant::now();
        loop {
            let sample = ports
                .tx
                .loan_slice_uninit(msg.len())
                .map_err(|e| err("loan_slice_uninit", e))?;
            let sample = sample.write_from_slice(msg);
            if sample.send().map_err(|e| err("send", e))? > 0 {
                break;
            }
            if start.elapsed() > WAIT_LIMIT {
                return Err(disconnected("send", "no subscriber received the sample"));
            }
            std::thread::yield_now();
        }
        if let Some(n) = &ports.notify {
            n.notify().map_err(|e| err("notify", e))?;
        }
        Ok(())
    }

    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        self.recv_view(side, len, &mut |m| buf.copy_from_slice(m))
    }

    fn has_recv_view(&self) -> bool {
        true
    }

    #[inline]
    fn recv_view(&mut self, _side: Side, len: usize, read: &mut dyn FnMut(&[u8])) -> Result<()> {
        let ports = self
            .inner
            .as_ref()
            .and_then(|i| i.ports.as_ref())
            .ok_or_else(|| disconnected("recv", "not attached"))?;
        let start = Instant::now();
        let mut spins = 0u32;
        let sample = loop {
            if let Some(s) = ports.rx.receive().map_err(|e| err("receive", e))? {
                break s;
            }
            if let Some(l) = &ports.listen {
                let left = WAIT_LIMIT.saturating_sub(start.elapsed());
                if left.is_zero() {
                    return Err(timeout("receive"));
                }
                l.timed_wait(|_| {}, left)
                    .map_err(|e| err("listener timed_wait", e))?;
            } else {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins & 0x3FF == 0 && start.elapsed() > WAIT_LIMIT {
                    return Err(timeout("receive"));
                }
            }
        };
        let payload = sample.payload();
        if payload.len() != len {
            return Err(Error::corrupt(
                "iceoryx2",
                format!("received {} bytes, expected {len}", payload.len()),
            ));
        }
        read(payload);
        // Dropping the sample hands it back to the publisher.
        Ok(())
    }
}

impl Drop for PubSubChannel {
    fn drop(&mut self) {
        drop(self.inner.take());
        self.run.remove_files();
    }
}

// ---------------------------------------------------------------------------------------
// fanout: one publisher, several subscriber processes

/// The most subscribers a [`FanService`] takes (the fanout workload's largest count).
pub const FAN_MAX_SUBSCRIBERS: usize = 8;

/// `iceoryx2-pubsub` in the `fanout` workload ([`crate::fanout`]): one publish/subscribe
/// service of `[u8]` slices, created by the publisher's process before the fork; each
/// forked subscriber opens it with a node of its own ([`FanService::subscriber`]).
///
/// Configured so that no sample is dropped: no safe overflow, history 0, every
/// subscriber's buffer holds `depth` samples, and the publisher's back-pressure is
/// `RetryUntilDelivered` (bounded by [`WAIT_LIMIT`]). Unique names and cleanup as for the
/// channel adapters (see the module docs): `Drop` removes the run's files, also those of the
/// `_exit`ed subscribers.
pub struct FanService {
    // Dropped first, then the run's files are removed.
    inner: Option<(PubSub, Node<Ipc>)>,
    run: Run,
    size: usize,
    depth: usize,
    tag: String,
}

/// A subscriber of a [`FanService`] (in its own process).
pub struct FanSubscriber {
    // Field order is drop order.
    rx: Subscriber<Ipc, [u8], ()>,
    _own: (PubSub, Node<Ipc>),
}

/// The publisher of a [`FanService`].
pub struct FanPublisher {
    tx: Publisher<Ipc, [u8], ()>,
}

impl FanService {
    /// Creates the service for `subs` subscribers of `size`-byte samples, each buffering
    /// up to `depth` of them.
    pub fn new(subs: usize, size: usize, depth: usize) -> Result<FanService> {
        if subs > FAN_MAX_SUBSCRIBERS {
            return Err(Error::invalid(
                "iceoryx2-pubsub",
                "fanout",
                format!("at most {FAN_MAX_SUBSCRIBERS} subscribers, not {subs}"),
            ));
        }
        let run = Run::new()?;
        let mut fan = FanService {
            inner: None,
            tag: format!("shmkit/{}/fanout/{}", std::process::id(), run.prefix),
            run,
            size,
            depth: depth.max(1),
        };
        let node = fan.run.node()?;
        let service = fan.service(&node, true)?;
        fan.inner = Some((service, node));
        Ok(fan)
    }

    fn service(&self, node: &Node<Ipc>, create: bool) -> Result<PubSub> {
        let name = name(&self.tag)?;
        pubsub_service(node, &name, self.depth, FAN_MAX_SUBSCRIBERS, create)
    }

    /// Opens the service with a node of this process and subscribes (call in the forked
    /// subscriber).
    pub fn subscriber(&self) -> Result<FanSubscriber> {
        let node = self.run.node()?;
        let service = self.service(&node, false)?;
        let rx = subscriber(&service, self.depth)?;
        Ok(FanSubscriber {
            rx,
            _own: (service, node),
        })
    }

    /// The publisher (call once every subscriber exists: a sample reaches only the
    /// subscribers present when it is sent).
    pub fn publisher(&self) -> Result<FanPublisher> {
        let (service, _) = self
            .inner
            .as_ref()
            .ok_or_else(|| disconnected("publisher", "service torn down"))?;
        Ok(FanPublisher {
            tx: publisher(service, self.size)?,
        })
    }
}

impl Drop for FanService {
    fn drop(&mut self) {
        drop(self.inner.take());
        self.run.remove_files();
    }
}

impl FanPublisher {
    /// Loans a sample of `pattern.len()` bytes, writes `pattern` into it, lets `finish`
    /// edit it in place, sends it and returns how many subscribers received it.
    #[inline]
    pub fn send(&self, pattern: &[u8], finish: impl FnOnce(&mut [u8])) -> Result<usize> {
        let sample = self
            .tx
            .loan_slice_uninit(pattern.len())
            .map_err(|e| err("loan_slice_uninit", e))?;
        let mut sample = sample.write_from_slice(pattern);
        finish(sample.payload_mut());
        sample.send().map_err(|e| err("send", e))
    }
}

impl FanSubscriber {
    /// Polls `receive()` (bounded by [`WAIT_LIMIT`]) and hands the payload, in the
    /// received sample, to `read`; the sample is released afterwards. Every 1024 empty
    /// polls it yields the core (`sched_yield`): up to 9 processes share the cores, and a
    /// poller that never yields holds one for a whole time slice.
    #[inline]
    pub fn receive<R>(&self, read: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if let Some(s) = self.rx.receive().map_err(|e| err("receive", e))? {
                return Ok(read(s.payload()));
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins & 0x3FF == 0 {
                if start.elapsed() > WAIT_LIMIT {
                    return Err(timeout("receive"));
                }
                std::thread::yield_now();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// request/response

struct ReqResInner {
    // Field order is drop order.
    pending: Option<PendingResponse>,
    active: Option<ActiveRequest>,
    client: Option<IoxClient>,
    server: Option<IoxServer>,
    own: Option<(ReqRes, Node<Ipc>)>,
    parent: (ReqRes, Node<Ipc>),
}

/// `iceoryx2-reqres`: the parent is the client, the peer the server; one request in
/// flight. The parent's send is a request, the peer's send the response to the request it
/// received last.
pub struct ReqResChannel {
    inner: Option<ReqResInner>,
    run: Run,
    size: usize,
    tag: String,
}

/// `iceoryx2-reqres`: request/response, polling both sides.
pub fn reqres(p: ChannelParams) -> Result<Box<dyn Channel>> {
    if p.depth > 1 {
        return Err(Error::invalid(
            "iceoryx2-reqres",
            "create",
            "n/a: request/response keeps one request in flight (rtt and wake only)",
        ));
    }
    let run = Run::new()?;
    let tag = format!("shmkit/{}/reqres", std::process::id());
    let mut ch = ReqResChannel {
        inner: None,
        run,
        size: p.size,
        tag,
    };
    let node = ch.run.node()?;
    let service = ch.service(&node, true)?;
    ch.inner = Some(ReqResInner {
        pending: None,
        active: None,
        client: None,
        server: None,
        own: None,
        parent: (service, node),
    });
    Ok(Box::new(ch))
}

impl ReqResChannel {
    fn service(&self, node: &Node<Ipc>, create: bool) -> Result<ReqRes> {
        let b = node
            .service_builder(&name(&self.tag)?)
            .request_response::<[u8], [u8]>()
            .enable_safe_overflow_for_requests(false)
            .enable_safe_overflow_for_responses(false)
            .max_active_requests_per_client(1)
            .max_response_buffer_size(1)
            .max_servers(1)
            .max_clients(1)
            .max_nodes(2);
        if create {
            b.create().map_err(|e| err("request/response service", e))
        } else {
            b.open().map_err(|e| err("request/response service", e))
        }
    }

    fn inner(&mut self, op: &'static str) -> Result<&mut ReqResInner> {
        self.inner
            .as_mut()
            .ok_or_else(|| disconnected(op, "channel torn down"))
    }
}

impl Channel for ReqResChannel {
    fn attach(&mut self, side: Side, _peer: Pid) -> Result<()> {
        let size = self.size;
        if side == Side::Child {
            let node = self.run.node()?;
            let service = self.service(&node, false)?;
            self.inner("attach")?.own = Some((service, node));
        }
        let inner = self.inner("attach")?;
        let service = match &inner.own {
            Some((s, _)) => s,
            None => &inner.parent.0,
        };
        match side {
            Side::Parent => {
                let client = service
                    .client_builder()
                    .initial_max_slice_len(size)
                    .max_active_requests(1)
                    .create()
                    .map_err(|e| err("create client", e))?;
                inner.client = Some(client);
            }
            Side::Child => {
                let server = service
                    .server_builder()
                    .initial_max_slice_len(size)
                    .create()
                    .map_err(|e| err("create server", e))?;
                inner.server = Some(server);
            }
        }
        let service = match &inner.own {
            Some((s, _)) => s,
            None => &inner.parent.0,
        };
        poll_until("attach: wait for the peer's port", || {
            let d = service.dynamic_config();
            Ok(d.number_of_clients() >= 1 && d.number_of_servers() >= 1)
        })
    }

    #[inline]
    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        let inner = self.inner("send")?;
        match side {
            Side::Parent => {
                let client = inner
                    .client
                    .as_ref()
                    .ok_or_else(|| disconnected("send", "not attached"))?;
                let req = client
                    .loan_slice_uninit(msg.len())
                    .map_err(|e| err("loan request", e))?;
                let pending = req
                    .write_from_slice(msg)
                    .send()
                    .map_err(|e| err("send request", e))?;
                if pending.number_of_server_connections() == 0 {
                    return Err(disconnected("send request", "no server received it"));
                }
                inner.pending = Some(pending);
            }
            Side::Child => {
                let active = inner
                    .active
                    .take()
                    .ok_or_else(|| disconnected("send response", "no request to answer"))?;
                let resp = active
                    .loan_slice_uninit(msg.len())
                    .map_err(|e| err("loan response", e))?;
                resp.write_from_slice(msg)
                    .send()
                    .map_err(|e| err("send response", e))?;
            }
        }
        Ok(())
    }

    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        self.recv_view(side, len, &mut |m| buf.copy_from_slice(m))
    }

    fn has_recv_view(&self) -> bool {
        true
    }

    #[inline]
    fn recv_view(&mut self, side: Side, len: usize, read: &mut dyn FnMut(&[u8])) -> Result<()> {
        let inner = self.inner("recv")?;
        let check = |got: usize| -> Result<()> {
            if got == len {
                Ok(())
            } else {
                Err(Error::corrupt(
                    "iceoryx2-reqres",
                    format!("received {got} bytes, expected {len}"),
                ))
            }
        };
        let start = Instant::now();
        let mut spins = 0u32;
        let mut waited = || -> Result<()> {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins & 0x3FF == 0 && start.elapsed() > WAIT_LIMIT {
                return Err(timeout("receive"));
            }
            Ok(())
        };
        match side {
            Side::Parent => {
                let pending = inner
                    .pending
                    .take()
                    .ok_or_else(|| disconnected("receive response", "no request pending"))?;
                let resp = loop {
                    if let Some(r) = pending.receive().map_err(|e| err("receive response", e))? {
                        break r;
                    }
                    waited()?;
                };
                check(resp.payload().len())?;
                read(resp.payload());
            }
            Side::Child => {
                let server = inner
                    .server
                    .as_ref()
                    .ok_or_else(|| disconnected("receive request", "not attached"))?;
                let active = loop {
                    if let Some(r) = server.receive().map_err(|e| err("receive request", e))? {
                        break r;
                    }
                    waited()?;
                };
                check(active.payload().len())?;
                read(active.payload());
                inner.active = Some(active);
            }
        }
        Ok(())
    }
}

impl Drop for ReqResChannel {
    fn drop(&mut self) {
        drop(self.inner.take());
        self.run.remove_files();
    }
}
