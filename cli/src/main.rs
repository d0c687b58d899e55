//! `shmkit`: list, inspect and clean up shared-memory segments; read and write values and
//! arrays; send and receive over queues; benchmark every mechanism.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod queue;
mod segments;
mod sync;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Segments(c) => segments::run(c),
        Command::Sync(c) => sync::run(c),
        Command::Mq(c) => transports::run_mq(c),
        Command::Fifo(c) => transports::run_fifo(c),
        Command::Bench(a) => bench::run(a),
        Command::Queue(c) => queue::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmkit: {e}");
            ExitCode::FAILURE
        }
    }
}
