//! `shmkit`: list, inspect and clean up shared-memory segments; read and write values and
//! arrays; send and receive over queues; benchmark every mechanism.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod segments;
mod sync;

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
    /// Benchmark every IPC mechanism against the others and the hardware floor.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Segments(c) => segments::run(c),
        Command::Sync(c) => sync::run(c),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmkit: {e}");
            ExitCode::FAILURE
        }
    }
}
