//! `shmkit`: list, inspect and clean up shared-memory segments; read and write values and
//! arrays; send and receive over queues; benchmark every mechanism.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod out;
mod queue;
mod segments;
mod sync;
mod topic;
mod transports;

/// Inter-process communication toolkit for Linux.
#[derive(Parser, Debug)]
#[command(name = "shmkit", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Segments(segments::Command),
    #[command(flatten)]
    Sync(sync::Command),
    /// POSIX message queues: create, send, recv, info, rm, ls.
    #[command(subcommand)]
    Mq(transports::MqCommand),
    /// Named pipes (FIFOs): create, send, recv, rm.
    #[command(subcommand)]
    Fifo(transports::FifoCommand),
    /// Benchmark every IPC mechanism against the others and the hardware floor.
    Bench(bench::Args),
    /// Create, feed, drain and inspect shared-memory queues.
    #[command(subcommand)]
    Queue(queue::Command),
    /// Create, publish to, subscribe to and inspect publish/subscribe topics.
    #[command(subcommand)]
    Topic(topic::Command),
}

fn main() -> ExitCode {
    // First: a `shmkit bench --workload pool` worker (this executable, re-executed by
    // shmkit::process) runs its entry here and exits; otherwise this only registers the
    // entries and returns.
    shmkit::process::init(&shmkit_compare::pool::ENTRIES);
    let mut out = out::Out::new();
    let result = match Cli::try_parse() {
        Ok(cli) => match cli.command {
            Command::Segments(c) => segments::run(c, &mut out),
            Command::Sync(c) => sync::run(c, &mut out),
            Command::Mq(c) => transports::run_mq(c, &mut out),
            Command::Fifo(c) => transports::run_fifo(c, &mut out),
            Command::Bench(a) => bench::run(a, &mut out),
            Command::Queue(c) => queue::run(c, &mut out),
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
