//! `shmkit`: list, inspect and clean up shared-memory segments; read and write values and
//! arrays; send and receive over queues; benchmark every mechanism (`shmkit bench`, only
//! when built with the `bench` feature: the harness and its peer crates are not part of a
//! plain `cargo install`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod duration;
mod latest;
mod out;
mod queue;
mod segments;
mod sync;
mod topic;
mod transports;
mod values;

/// The conventions every subcommand follows (`shmkit --help`; docs/cli.md says the same).
const CONVENTIONS: &str = "\
Conventions:
  Verbs      the same across kinds: create, get (read), set, send/recv (pub/sub on
             topics), stat, rm; `shmkit ls` lists every object, `shmkit info` shows one.
             Kinds: value array mutex sem event rwlock barrier condvar queue topic
             latest (segments in /dev/shm), mq (POSIX message queues), fifo.
  Durations  every --timeout (and gc --older-than) takes a number and a unit:
             1.5s, 250ms, 10us, 2m, 12h, 7d (units ns us ms s m h d). A bare number
             is refused (`--timeout 100` would be ambiguous). The old --timeout-ms
             spelling is kept as a hidden alias and follows the same rule.
  --json     on every command that prints data: JSON Lines, one object per line
             (one line for one object; one per object for ls/gc; one per message
             for recv/sub, written as each is received). Every object has \"kind\"
             (as `ls` shows it, or mq, fifo, posix-semaphore), \"name\" and \"op\"
             (the verb); read values are in \"data\" (a number, or a list for
             arrays); messages carry \"len\", \"encoding\" (utf8 or hex) and \"data\".
  --named    POSIX named semaphores (sem_open) instead of segment semaphores.
  Exit       0 ok; 1 error (one line on stderr, also for a closed or full stdout);
             2 usage error; 3 the peer is gone (no producer or writer left).";

/// Inter-process communication toolkit for Linux.
#[derive(Parser, Debug)]
#[command(
    name = "shmkit",
    version,
    about,
    propagate_version = true,
    after_help = CONVENTIONS
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Segments(segments::Command),
    /// Create, read and update a shared `Value`.
    #[command(subcommand)]
    Value(values::ValueCmd),
    /// Create, update and dump a shared `Array`.
    #[command(subcommand)]
    Array(values::ArrayCmd),
    #[command(flatten)]
    Sync(sync::Command),
    /// POSIX message queues: create, send, recv, stat, rm, ls.
    #[command(subcommand)]
    Mq(transports::MqCommand),
    /// Named pipes (FIFOs): create, send, recv, rm.
    #[command(subcommand)]
    Fifo(transports::FifoCommand),
    /// Benchmark every IPC mechanism against the others and the hardware floor.
    #[cfg(feature = "bench")]
    Bench(shmkit_compare::report::Args),
    /// Not built in: says how to get the benchmark (the `bench` feature, or the
    /// harness's own `shmkit-bench` binary).
    #[cfg(not(feature = "bench"))]
    #[command(hide = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Shared-memory queues (bytes or numbers): create, send, recv, stat, rm.
    #[command(subcommand)]
    Queue(queue::Command),
    /// Last-value cells (one writer, lock-free readers): create, get, set, stat, rm.
    #[command(subcommand)]
    Latest(latest::Command),
    /// Publish/subscribe topics: create, pub, sub, stat, rm.
    #[command(subcommand)]
    Topic(topic::Command),
}

fn main() -> ExitCode {
    // First: a `shmkit bench --workload pool` worker (this executable, re-executed by
    // shmkit::process) runs its entry here and exits; otherwise this only registers the
    // entries and returns.
    #[cfg(feature = "bench")]
    shmkit::process::init(&shmkit_compare::pool::ENTRIES);
    let mut out = out::Out::new();
    let result = match Cli::try_parse() {
        Ok(cli) => match cli.command {
            Command::Segments(c) => segments::run(c, &mut out),
            Command::Value(c) => values::value(c, &mut out),
            Command::Array(c) => values::array(c, &mut out),
            Command::Sync(c) => sync::run(c, &mut out),
            Command::Mq(c) => transports::run_mq(c, &mut out),
            Command::Fifo(c) => transports::run_fifo(c, &mut out),
            #[cfg(feature = "bench")]
            Command::Bench(a) => out
                .flush()
                .and_then(|()| shmkit_compare::report::run(a, &mut std::io::stdout().lock())),
            #[cfg(not(feature = "bench"))]
            Command::Bench { .. } => Err(shmkit::Error::Unsupported {
                what: "shmkit bench",
                reason: "this shmkit was built without the `bench` feature (it keeps the \
                         comparison harness and its peer crates out of a plain install); run \
                         `cargo run --release -p shmkit-compare --bin shmkit-bench`, or \
                         build with `cargo install --path cli --features bench`"
                    .into(),
            }),
            Command::Queue(c) => queue::run(c, &mut out),
            Command::Latest(c) => latest::run(c, &mut out),
            Command::Topic(c) => topic::run(c, &mut out),
        },
        // --help and --version go to stdout: through the checked writer.
        Err(e) if !e.use_stderr() => write!(out, "{}", e.render()),
        // Usage errors keep clap's format and exit status (2).
        Err(e) => e.exit(),
    };
    // Flush what was printed even when the command failed (`rm a b` printed `removed a`).
    match result.and(out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            out::warn(format_args!("{e}"));
            // 3: the peer is gone (e.g. `queue recv` on a queue whose producers all left).
            if matches!(e, shmkit::Error::Disconnected { .. }) {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
