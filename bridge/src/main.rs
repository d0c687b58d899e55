//! `shmkit-bridge`: forwards shmkit byte topics and byte queues over zenoh.
//!
//! ```text
//! shmkit-bridge --listen tcp/10.0.0.2:7447 --in robot/cam=topic:cam-b
//! shmkit-bridge --connect tcp/10.0.0.2:7447 --out topic:cam-a=robot/cam --stats 1000
//! shmkit-bridge --config bridge.json
//! ```
//!
//! Semantics (order, at-most-once, what happens while the remote is down): see
//! bridge/README.md. Lines on stdout: `ready`, `route N matched|unmatched` (out routes:
//! a remote subscriber appeared / went), `stats route=N ...` (periodic with `--stats`, and
//! at exit on SIGTERM/SIGINT). Errors go to stderr.

mod route;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;
use zenoh::Wait;
use zenoh::qos::CongestionControl;
use zenoh::sample::Locality;

use route::{Counters, CreateSizes, Dir, RouteSpec, Sink, Source};

#[derive(Parser, Debug)]
#[command(
    name = "shmkit-bridge",
    about = "Forward shmkit topics and byte queues over zenoh"
)]
struct Cli {
    /// Local -> zenoh: `topic:NAME=key/expr` or `queue:NAME=key/expr` (repeatable).
    #[arg(long = "out", value_name = "LOCAL=KEY")]
    outs: Vec<String>,
    /// Zenoh -> local: `key/expr=topic:NAME` or `key/expr=queue:NAME` (repeatable).
    #[arg(long = "in", value_name = "KEY=LOCAL")]
    ins: Vec<String>,
    /// Zenoh endpoint to listen on, e.g. `tcp/10.0.0.2:7447` (repeatable).
    #[arg(long)]
    listen: Vec<String>,
    /// Zenoh endpoint to connect to, e.g. `tcp/10.0.0.2:7447` (repeatable; retried).
    #[arg(long)]
    connect: Vec<String>,
    /// Zenoh mode: `peer` (default) or `client`.
    #[arg(long)]
    mode: Option<String>,
    /// JSON config file (routes and endpoints; flags add to it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Messages an out route holds while no remote subscriber matches, and an in route
    /// holds while its local side is full (default 1024).
    #[arg(long)]
    backlog: Option<usize>,
    /// Print a stats line per route every this many milliseconds (0: only at exit).
    #[arg(long)]
    stats: Option<u64>,
    /// Capacity of a local object the bridge has to create (default 256).
    #[arg(long)]
    capacity: Option<u64>,
    /// max_message of a local object the bridge has to create (default 65536).
    #[arg(long)]
    max_message: Option<usize>,
}

/// The config file: every field optional; flags add routes and endpoints, and override
/// the scalars.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    mode: Option<String>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    connect: Vec<String>,
    backlog: Option<usize>,
    stats_ms: Option<u64>,
    capacity: Option<u64>,
    max_message: Option<usize>,
    #[serde(default)]
    routes: Vec<RouteSpec>,
}

#[derive(Debug)]
struct Settings {
    mode: String,
    listen: Vec<String>,
    connect: Vec<String>,
    backlog: usize,
    stats_ms: u64,
    sizes: CreateSizes,
    routes: Vec<RouteSpec>,
}

fn settings(cli: Cli, matches: &clap::ArgMatches) -> Result<Settings, String> {
    let file: FileConfig = match &cli.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("reading config {}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("config {}: {e}", p.display()))?
        }
        None => FileConfig::default(),
    };
    // Routes are numbered in order: the file's, then the flags' as given.
    let mut routes = file.routes;
    let mut flags: Vec<(usize, Dir, &String)> = Vec::new();
    for (dir, id, values) in [(Dir::Out, "outs", &cli.outs), (Dir::In, "ins", &cli.ins)] {
        let at = matches.indices_of(id).into_iter().flatten();
        flags.extend(at.zip(values).map(|(i, v)| (i, dir, v)));
    }
    flags.sort_by_key(|f| f.0);
    for (_, dir, s) in flags {
        routes.push(RouteSpec::parse(dir, s)?);
    }
    if routes.is_empty() {
        return Err("no route: give --out, --in or a config file with routes".into());
    }
    let mode = cli.mode.or(file.mode).unwrap_or_else(|| "peer".into());
    if mode != "peer" && mode != "client" {
        return Err(format!("mode `{mode}`: expected peer or client"));
    }
    let backlog = cli.backlog.or(file.backlog).unwrap_or(1024);
    if backlog == 0 {
        return Err("backlog must be at least 1".into());
    }
    Ok(Settings {
        mode,
        listen: file.listen.into_iter().chain(cli.listen).collect(),
        connect: file.connect.into_iter().chain(cli.connect).collect(),
        backlog,
        stats_ms: cli.stats.or(file.stats_ms).unwrap_or(0),
        sizes: CreateSizes {
            capacity: cli.capacity.or(file.capacity).unwrap_or(256),
            max_message: cli.max_message.or(file.max_message).unwrap_or(64 * 1024),
        },
        routes,
    })
}

/// What zenoh may add to a sample's payload in a message (key expression, encoding,
/// timestamp, extensions): the headroom of [`rx_limit`].
const RX_HEADROOM: usize = 64 * 1024;

/// zenoh's limit on one reassembled message (`transport/link/rx/max_message_size`, 1 GiB
/// by default): the largest sample an in route accepts plus [`RX_HEADROOM`]. A remote's
/// message above it is dropped by zenoh while being reassembled, before it reaches the
/// bridge (so it is not in `dropped_oversize`); one between the route's limit and this
/// reaches the route and is counted there.
fn rx_limit(locals: &[Local]) -> usize {
    let largest = locals
        .iter()
        .map(|l| match l {
            Local::In(_, max) => *max,
            Local::Out(..) => 0,
        })
        .max()
        .unwrap_or(0);
    largest.saturating_add(RX_HEADROOM)
}

/// The zenoh configuration: only the endpoints named, no multicast scouting, connect
/// retried quickly and forever, reassembly bounded by `rx_max` bytes.
fn zenoh_config(s: &Settings, rx_max: usize) -> Result<zenoh::Config, String> {
    let mut c = zenoh::Config::default();
    let json = |v: &Vec<String>| serde_json::to_string(v).expect("strings serialise");
    let mut set = |k: &str, v: String| {
        c.insert_json5(k, &v)
            .map_err(|e| format!("zenoh config {k}={v}: {e}"))
    };
    set("mode", format!("\"{}\"", s.mode))?;
    set("scouting/multicast/enabled", "false".into())?;
    set("listen/endpoints", json(&s.listen))?;
    set("connect/endpoints", json(&s.connect))?;
    // Connect in the background, forever (also in client mode), and soon after a loss.
    set("connect/timeout_ms", "-1".into())?;
    set("connect/exit_on_failure", "false".into())?;
    set(
        "connect/retry",
        "{period_init_ms: 100, period_max_ms: 500, period_increase_factor: 2}".into(),
    )?;
    set("transport/link/rx/max_message_size", rx_max.to_string())?;
    Ok(c)
}

/// A running route: its counters, its worker and (in routes) its zenoh subscriber.
struct Running {
    spec: RouteSpec,
    counters: Arc<Counters>,
    worker: JoinHandle<()>,
    subscriber: Option<zenoh::pubsub::Subscriber<()>>,
}

fn print_stats(routes: &[Running]) {
    for (i, r) in routes.iter().enumerate() {
        println!("stats route={i} {} {}", r.spec, r.counters);
    }
}

/// A route's local end, opened (or created) before the zenoh session so that the
/// session's receive limit can follow the routes' sizes; with its effective max_message.
enum Local {
    Out(Source, usize),
    In(Sink, usize),
}

fn open_locals(s: &Settings) -> Result<Vec<Local>, String> {
    let mut locals = Vec::new();
    for (id, spec) in s.routes.iter().enumerate() {
        let fail = |e: shmkit::Error| format!("route {id} ({spec}): local object: {e}");
        let cap = |local_max: usize| spec.max_message.map_or(local_max, |m| m.min(local_max));
        locals.push(match spec.dir {
            Dir::Out => {
                let (src, local_max) = Source::open(spec, s.sizes).map_err(fail)?;
                Local::Out(src, cap(local_max))
            }
            Dir::In => {
                let (sink, local_max) = Sink::open(spec, s.sizes).map_err(fail)?;
                Local::In(sink, cap(local_max))
            }
        });
    }
    Ok(locals)
}

fn start(
    session: &zenoh::Session,
    s: &Settings,
    locals: Vec<Local>,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<Running>, String> {
    let mut running = Vec::new();
    for ((id, spec), local) in s.routes.iter().enumerate().zip(locals) {
        let counters = Arc::new(Counters::default());
        let stop = stop.clone();
        let fail =
            |what: &str, e: &dyn std::fmt::Display| format!("route {id} ({spec}): {what}: {e}");
        let mut subscriber = None;
        let worker = match local {
            Local::Out(src, max) => {
                let publisher = session
                    .declare_publisher(spec.key.clone())
                    .congestion_control(CongestionControl::Block)
                    .allowed_destination(Locality::Remote)
                    .wait()
                    .map_err(|e| fail("zenoh publisher", &e))?;
                let matched = Arc::new(AtomicBool::new(false));
                let m = matched.clone();
                publisher
                    .matching_listener()
                    .callback(move |st| {
                        m.store(st.matching(), Ordering::Release);
                        println!(
                            "route {id} {}",
                            if st.matching() {
                                "matched"
                            } else {
                                "unmatched"
                            }
                        );
                    })
                    .background()
                    .wait()
                    .map_err(|e| fail("zenoh matching listener", &e))?;
                let c = counters.clone();
                let backlog = s.backlog;
                std::thread::Builder::new()
                    .name(format!("route-{id}"))
                    .spawn(move || {
                        route::run_out(id, src, max, publisher, matched, c, backlog, stop)
                    })
                    .map_err(|e| fail("thread", &e))?
            }
            Local::In(sink, max) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(s.backlog);
                let sub = session
                    .declare_subscriber(spec.key.clone())
                    .allowed_origin(Locality::Remote)
                    .callback(route::on_sample(max, tx, counters.clone()))
                    .wait()
                    .map_err(|e| fail("zenoh subscriber", &e))?;
                subscriber = Some(sub);
                let c = counters.clone();
                std::thread::Builder::new()
                    .name(format!("route-{id}"))
                    .spawn(move || route::run_in(id, sink, rx, c, stop))
                    .map_err(|e| fail("thread", &e))?
            }
        };
        running.push(Running {
            spec: spec.clone(),
            counters,
            worker,
            subscriber,
        });
    }
    Ok(running)
}

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let s = match Cli::from_arg_matches(&matches)
        .map_err(|e| e.to_string())
        .and_then(|cli| settings(cli, &matches))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shmkit-bridge: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // zenoh refuses tokio's current-thread scheduler: one worker thread.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shmkit-bridge: tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(s)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmkit-bridge: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(s: Settings) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let locals = open_locals(&s)?;
    let config = zenoh_config(&s, rx_limit(&locals))?;
    let session = zenoh::open(config)
        .await
        .map_err(|e| format!("zenoh session: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let routes = match start(&session, &s, locals, &stop) {
        Ok(r) => r,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
    };
    println!("ready");
    let period = Duration::from_millis(if s.stats_ms == 0 {
        3_600_000
    } else {
        s.stats_ms
    });
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => if s.stats_ms > 0 { print_stats(&routes) },
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut panicked = false;
    for r in &routes {
        // Workers look at the flag at least every `route::POLL`.
        while !r.worker.is_finished() {
            tokio::time::sleep(route::POLL).await;
        }
    }
    print_stats(&routes);
    for r in routes {
        panicked |= r.worker.join().is_err();
        drop(r.subscriber);
    }
    let _ = session.close().await;
    if panicked {
        return Err("a route worker panicked".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(args: &[&str]) -> Result<Settings, String> {
        let m = Cli::command()
            .try_get_matches_from(std::iter::once("shmkit-bridge").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        settings(Cli::from_arg_matches(&m).map_err(|e| e.to_string())?, &m)
    }

    #[test]
    fn routes_keep_the_order_given() {
        let s = from(&[
            "--in",
            "k/a=topic:a",
            "--out",
            "queue:b=k/b",
            "--in",
            "k/c=queue:c",
        ])
        .unwrap();
        let got: Vec<String> = s.routes.iter().map(|r| r.to_string()).collect();
        assert_eq!(got, ["k/a -> topic:a", "queue:b -> k/b", "k/c -> queue:c"]);
        assert_eq!((s.mode.as_str(), s.backlog, s.stats_ms), ("peer", 1024, 0));
        assert!(from(&[]).is_err(), "no route");
        assert!(from(&["--out", "topic:a=k", "--backlog", "0"]).is_err());
        assert!(from(&["--out", "topic:a=k", "--mode", "router"]).is_err());
    }

    #[test]
    fn config_file_then_flags() {
        let p = std::env::temp_dir().join(format!("shmkit-bridge-cfg-{}", std::process::id()));
        std::fs::write(
            &p,
            r#"{"connect": ["tcp/127.0.0.1:1"], "backlog": 7,
                "routes": [{"dir": "in", "kind": "queue", "name": "q", "key": "k/q", "max_message": 9}]}"#,
        )
        .unwrap();
        let s = from(&[
            "--config",
            p.to_str().unwrap(),
            "--out",
            "topic:t=k/t",
            "--backlog",
            "8",
        ]);
        let bad = std::fs::write(&p, r#"{"routes": [], "colour": 1}"#)
            .map(|()| from(&["--config", p.to_str().unwrap()]));
        let _ = std::fs::remove_file(&p);
        let s = s.unwrap();
        assert_eq!(s.connect, ["tcp/127.0.0.1:1"]);
        assert_eq!(s.backlog, 8, "a flag overrides the file");
        assert_eq!(s.routes.len(), 2);
        assert_eq!(s.routes[0].max_message, Some(9));
        assert!(bad.unwrap().unwrap_err().contains("unknown field"));
    }
}
